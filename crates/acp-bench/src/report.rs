//! The results: every figure as JSON, and the table (plus per-scenario and per-endpoint tables) as
//! Markdown, both under `bench/results/<UTC timestamp>.*`.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Serialize;

use crate::{
    agent::{Endpoint, Unexpected},
    cli::Args,
    cluster::PgFacts,
    error::BenchError,
    pgbench::Baseline,
    scenarios::OpenLoopPlan,
    server::ServerBuild,
    stats::Summary,
    webhooks::WebhookFigures,
};

/// The closed-loop level whose flows/s the issue compares with the peak.
pub const HIGH_LEVEL: usize = 512;

#[derive(Debug, Serialize)]
pub struct Results {
    pub started_at: String,
    pub finished_at: String,
    pub args: Args,
    pub host: Host,
    pub pinning: Pinning,
    pub postgres: PgFacts,
    pub server: ServerBuild,
    pub database: String,
    pub scenarios: Vec<ScenarioResult>,
    pub baselines: Vec<Baseline>,
    pub webhooks: WebhookReport,
    pub rss: Rss,
    pub headline: Headline,
    pub errors: Errors,
}

#[derive(Debug, Serialize)]
pub struct Host {
    pub cpus: usize,
    pub kernel: Option<String>,
}

/// CPU lists as /proc reports them for each process (None: not pinned or not readable).
#[derive(Debug, Serialize)]
pub struct Pinning {
    pub enabled: bool,
    pub server: Option<String>,
    pub load_generator: Option<String>,
    pub postgres: Option<String>,
    pub pgbench: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub agents: Option<usize>,
    pub wall_secs: f64,
    pub flows: u64,
    pub flows_per_sec: f64,
    pub posts_per_sec: f64,
    pub gets_per_sec: f64,
    pub errors: u64,
    pub endpoints: BTreeMap<Endpoint, Summary>,
    /// Both updates (address and option) together.
    pub updates: Summary,
    pub server_cpu_pct: Option<f64>,
    pub postgres_cpu_pct: Option<f64>,
    pub server_peak_rss_bytes: Option<u64>,
    pub open_loop: Option<OpenLoopPlan>,
}

#[derive(Debug, Serialize)]
pub struct WebhookReport {
    /// When the last scenario ended.
    pub at_end_of_load: WebhookFigures,
    /// After waiting up to `drain_wait_secs` more.
    pub after_drain: WebhookFigures,
    pub drain_wait_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct Rss {
    /// VmRSS once ready with the catalog loaded, before any load.
    pub idle_bytes: Option<u64>,
    /// VmHWM at the end of the load.
    pub peak_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Errors {
    pub total: u64,
    pub first: Vec<Unexpected>,
}

/// The figures, derived from the scenarios and baselines.
#[derive(Debug, Default, Serialize)]
pub struct Headline {
    /// The closed-loop level with the most POST/s, and that rate.
    pub post_level: Option<usize>,
    pub posts_per_sec: Option<f64>,
    pub l1_tps: Option<f64>,
    pub l1_ratio: Option<f64>,
    pub gets_per_sec: Option<f64>,
    pub l2_tps: Option<f64>,
    pub l2_ratio: Option<f64>,
    pub open_loop_flows_per_sec: Option<f64>,
    pub open_loop_p99_create_ms: Option<f64>,
    pub open_loop_p99_update_ms: Option<f64>,
    pub peak_level: Option<usize>,
    pub peak_flows_per_sec: Option<f64>,
    pub flows_per_sec_at_high_level: Option<f64>,
    pub high_level_ratio: Option<f64>,
    pub server_cpu_pct_at_peak: Option<f64>,
    pub postgres_cpu_pct_at_peak: Option<f64>,
}

pub fn headline(scenarios: &[ScenarioResult], baselines: &[Baseline]) -> Headline {
    let flows: Vec<&ScenarioResult> = scenarios.iter().filter(|s| s.name.starts_with("flows")).collect();
    let best_post = flows.iter().max_by(|a, b| a.posts_per_sec.total_cmp(&b.posts_per_sec));
    let peak = flows.iter().max_by(|a, b| a.flows_per_sec.total_cmp(&b.flows_per_sec));
    let high = flows.iter().find(|s| s.agents == Some(HIGH_LEVEL));
    let get = scenarios.iter().find(|s| s.name == "get");
    let open = scenarios.iter().find(|s| s.name == "open loop");
    let tps = |name: &str| baselines.iter().find(|b| b.name.starts_with(name)).map(|b| b.tps);
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?).filter(|r| r.is_finite());
    let posts_per_sec = best_post.map(|s| s.posts_per_sec);
    let gets_per_sec = get.map(|s| s.gets_per_sec);
    let (l1_tps, l2_tps) = (tps("L1"), tps("L2"));
    let peak_flows = peak.map(|s| s.flows_per_sec);
    let high_flows = high.map(|s| s.flows_per_sec);
    Headline {
        post_level: best_post.and_then(|s| s.agents),
        posts_per_sec,
        l1_tps,
        l1_ratio: ratio(posts_per_sec, l1_tps),
        gets_per_sec,
        l2_tps,
        l2_ratio: ratio(gets_per_sec, l2_tps),
        open_loop_flows_per_sec: open.and_then(|s| s.open_loop).map(|p| p.flows_per_sec),
        open_loop_p99_create_ms: open.and_then(|s| s.endpoints.get(&Endpoint::Create)).map(|e| e.p99_ms),
        open_loop_p99_update_ms: open
            .map(|s| s.updates.p99_ms)
            .filter(|_| open.is_some_and(|s| s.updates.count > 0)),
        peak_level: peak.and_then(|s| s.agents),
        peak_flows_per_sec: peak_flows,
        flows_per_sec_at_high_level: high_flows,
        high_level_ratio: ratio(high_flows, peak_flows),
        server_cpu_pct_at_peak: peak.and_then(|s| s.server_cpu_pct),
        postgres_cpu_pct_at_peak: peak.and_then(|s| s.postgres_cpu_pct),
    }
}

pub fn write(results: &Results, dir: &Path, stamp: &str) -> Result<String, BenchError> {
    let json_path = dir.join(format!("{stamp}.json"));
    let md_path = dir.join(format!("{stamp}.md"));
    let json = serde_json::to_string_pretty(results).map_err(|e| BenchError::Setup(format!("results JSON: {e}")))?;
    std::fs::write(&json_path, json + "\n").map_err(|source| BenchError::Write {
        path: json_path.clone(),
        source,
    })?;
    let md = markdown(results);
    std::fs::write(&md_path, &md).map_err(|source| BenchError::Write { path: md_path, source })?;
    Ok(md)
}

/// 12495.3 → "12 495"; small values keep two decimals.
pub fn num(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned();
    }
    if x.abs() < 10.0 {
        return format!("{x:.2}");
    }
    let digits = format!("{:.0}", x.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    if x < 0.0 { format!("-{grouped}") } else { grouped }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), num)
}

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".to_owned(), |b| format!("{:.0} MB", b as f64 / 1_000_000.0))
}

fn ratio_row(a: Option<f64>, b: Option<f64>, r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{} ÷ {} = **{r:.2}**", opt(a), opt(b)),
        None => format!("{} ÷ {}", opt(a), opt(b)),
    }
}

pub fn markdown(r: &Results) -> String {
    let h = &r.headline;
    let w = &r.webhooks;
    let mut md = String::new();
    let _ = writeln!(md, "# acp-bench {}\n", r.started_at);
    let _ = writeln!(
        md,
        "Server `{}` ({}), PSP {}, PostgreSQL {} (fsync {}, synchronous_commit {}), {} CPUs; pinning: server {}, \
         PostgreSQL {}, load generator {}, pgbench {}. Each scenario measured over {} s (closed-loop and GET-only \
         after a {} s warm-up).\n",
        r.server.version,
        r.server.commit.as_deref().unwrap_or("commit unknown"),
        r.args.psp.name(),
        r.postgres.version,
        r.postgres.settings.get("fsync").map_or("?", String::as_str),
        r.postgres
            .settings
            .get("synchronous_commit")
            .map_or("?", String::as_str),
        r.host.cpus,
        r.pinning.server.as_deref().unwrap_or("none"),
        r.pinning.postgres.as_deref().unwrap_or("none"),
        r.pinning.load_generator.as_deref().unwrap_or("none"),
        r.pinning.pgbench.as_deref().unwrap_or("none"),
        r.args.duration.as_secs_f64(),
        r.args.warmup.as_secs_f64(),
    );
    let level = |l: Option<usize>| l.map_or_else(|| "?".to_owned(), |l| l.to_string());
    md.push_str("| figure | measured | goal |\n|---|---|---|\n");
    let _ = writeln!(
        md,
        "| checkout POST/s ({} agents) ÷ durable single-row insert TPS @{} (L1) | {} | ≥ 0.5 |",
        level(h.post_level),
        r.args.l1_clients,
        ratio_row(h.posts_per_sec, h.l1_tps, h.l1_ratio)
    );
    let _ = writeln!(
        md,
        "| session GET/s ({} agents) ÷ select-only TPS @{} (L2) | {} | ≥ 0.5 |",
        r.args.get_agents,
        r.args.l2_clients,
        ratio_row(h.gets_per_sec, h.l2_tps, h.l2_ratio)
    );
    let _ = writeln!(
        md,
        "| p99 create / update, open loop at {:.0} % of the peak ({} flows/s), from the scheduled send time | {} / {} ms | < 15 ms |",
        r.args.open_loop_share * 100.0,
        opt(h.open_loop_flows_per_sec),
        ms(h.open_loop_p99_create_ms),
        ms(h.open_loop_p99_update_ms)
    );
    let _ = writeln!(
        md,
        "| flows/s at {HIGH_LEVEL} agents ÷ peak ({} agents) | {} | ≥ 0.8 |",
        level(h.peak_level),
        ratio_row(h.flows_per_sec_at_high_level, h.peak_flows_per_sec, h.high_level_ratio)
    );
    let _ = writeln!(
        md,
        "| order webhooks delivered during the run (lag p99) | {} of {} completed orders ({} s); after {} s more: {} ({} s), backlog {} | all of them, lag p99 < 2 s |",
        w.at_end_of_load.delivered,
        w.at_end_of_load.completed_orders,
        secs(w.at_end_of_load.lag_p99_ms),
        num(w.drain_wait_secs),
        w.after_drain.delivered,
        secs(w.after_drain.lag_p99_ms),
        w.after_drain.backlog
    );
    let _ = writeln!(
        md,
        "| RSS idle / peak | {} / {} | < 60 MB / < 200 MB |",
        mb(r.rss.idle_bytes),
        mb(r.rss.peak_bytes)
    );
    let _ = writeln!(
        md,
        "| CPU at the peak level: server / PostgreSQL (% of one core) | {} / {} | — |",
        pct(h.server_cpu_pct_at_peak),
        pct(h.postgres_cpu_pct_at_peak)
    );
    let _ = writeln!(md, "| unexpected responses | {} | 0 |\n", r.errors.total);

    md.push_str("## Scenarios\n\n| scenario | agents | ran (s) | flows/s | POST/s | GET/s | server CPU | PostgreSQL CPU | errors |\n|---|---|---|---|---|---|---|---|---|\n");
    for s in &r.scenarios {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            s.name,
            s.agents.map_or_else(|| "—".to_owned(), |a| a.to_string()),
            s.wall_secs,
            num(s.flows_per_sec),
            num(s.posts_per_sec),
            num(s.gets_per_sec),
            pct(s.server_cpu_pct),
            pct(s.postgres_cpu_pct),
            s.errors
        );
    }
    md.push_str("\n## Endpoints (ms)\n\n| scenario | endpoint | count | per s | p50 | p95 | p99 | max |\n|---|---|---|---|---|---|---|---|\n");
    for s in &r.scenarios {
        for (endpoint, e) in &s.endpoints {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                s.name,
                endpoint.name(),
                e.count,
                num(e.per_sec),
                e.p50_ms,
                e.p95_ms,
                e.p99_ms,
                e.max_ms
            );
        }
    }
    if !r.baselines.is_empty() {
        md.push_str(
            "\n## pgbench\n\n| baseline | clients | TPS | latency avg (ms) | command |\n|---|---|---|---|---|\n",
        );
        for b in &r.baselines {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | `{}` |",
                b.name,
                b.clients,
                num(b.tps),
                ms(b.latency_avg_ms),
                b.command
            );
        }
    }
    md.push_str("\n## PostgreSQL settings\n\n");
    for (k, v) in &r.postgres.settings {
        let _ = writeln!(md, "- {k} = {v}");
    }
    if !r.errors.first.is_empty() {
        md.push_str("\n## First unexpected responses\n\n");
        for e in &r.errors.first {
            let _ = writeln!(md, "- {e}");
        }
    }
    md
}

fn secs(ms: f64) -> String {
    format!("{:.2}", ms / 1000.0)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0} %"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str, agents: Option<usize>, flows: f64, posts: f64, gets: f64) -> ScenarioResult {
        ScenarioResult {
            name: name.to_owned(),
            agents,
            wall_secs: 1.0,
            flows: flows as u64,
            flows_per_sec: flows,
            posts_per_sec: posts,
            gets_per_sec: gets,
            errors: 0,
            endpoints: BTreeMap::new(),
            updates: Summary::default(),
            server_cpu_pct: Some(50.0),
            postgres_cpu_pct: Some(95.0),
            server_peak_rss_bytes: None,
            open_loop: None,
        }
    }

    fn baseline(name: &'static str, tps: f64) -> Baseline {
        Baseline {
            name,
            clients: 1,
            tps,
            latency_avg_ms: None,
            command: String::new(),
        }
    }

    #[test]
    fn headline_ratios_use_the_best_post_level_the_get_run_and_the_512_level() {
        let scenarios = [
            scenario("flows @16", Some(16), 150.0, 600.0, 0.0),
            scenario("flows @64", Some(64), 200.0, 800.0, 0.0),
            scenario("flows @512", Some(512), 180.0, 720.0, 0.0),
            scenario("get", Some(16), 0.0, 0.0, 3000.0),
        ];
        let baselines = [baseline("L1 insert", 8000.0), baseline("L2 select-only", 30000.0)];
        let h = headline(&scenarios, &baselines);
        assert_eq!(h.post_level, Some(64));
        assert_eq!(h.l1_ratio, Some(0.1));
        assert_eq!(h.l2_ratio, Some(0.1));
        assert_eq!(h.peak_level, Some(64));
        assert_eq!(h.high_level_ratio, Some(0.9));
    }

    #[test]
    fn missing_baselines_leave_ratios_out() {
        let h = headline(&[scenario("flows @16", Some(16), 1.0, 4.0, 0.0)], &[]);
        assert_eq!(h.l1_ratio, None);
        assert_eq!(h.high_level_ratio, None);
        assert_eq!(opt(h.l1_ratio), "n/a");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(num(12495.3), "12 495");
        assert_eq!(num(756.0), "756");
        assert_eq!(num(1234567.0), "1 234 567");
        assert_eq!(num(0.061), "0.06");
        assert_eq!(num(0.0), "0");
    }
}
