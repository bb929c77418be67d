//! Command-line flags: every knob of a run, with defaults sized for a whole run of about four minutes on a 2-core
//! machine.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Parser, Debug, Clone, Serialize)]
#[command(
    name = "acp-bench",
    version,
    about = "Full ACP checkout flows against the release server on a durable PostgreSQL cluster, \
             compared with pgbench on the same cluster in the same run"
)]
pub struct Args {
    /// How long each scenario runs: every closed-loop level, the GET-only run, the open-loop run and each pgbench
    /// run (e.g. 15s, 500ms, 2m; a bare number is seconds).
    #[arg(short = 'T', long, default_value = "15s", value_parser = parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,

    /// Load before each closed-loop and GET-only window, left out of its figures: every agent gets past its first
    /// flow, so the window sees a steady state rather than the start (at 512 agents a flow takes seconds).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub warmup: Duration,

    /// Virtual agents of the closed-loop flow levels (comma-separated); a 512 level gives the "flows/s at 512 ÷
    /// peak" figure.
    #[arg(short = 'N', long, value_delimiter = ',', default_value = "16,64,512")]
    pub agents: Vec<usize>,

    /// Agents of the GET-only scenario.
    #[arg(long, default_value_t = 16)]
    pub get_agents: usize,

    /// Rate of the open-loop run as a share of the peak closed-loop flows/s (0 skips the run).
    #[arg(long, default_value_t = 0.5)]
    pub open_loop_share: f64,

    /// In the open-loop run, the scheduled gap between a flow's consecutive requests.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub open_loop_step_gap: Duration,

    /// In the open-loop run, at most this many flows in flight; a flow due beyond it is counted as an error.
    #[arg(long, default_value_t = 4096)]
    pub open_loop_max_in_flight: usize,

    /// After the last scenario, wait up to this long for the remaining order webhooks.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub webhook_drain: Duration,

    /// Payment provider of the server.
    #[arg(long, value_enum, default_value_t = Psp::Simulator)]
    pub psp: Psp,

    /// Measure this acp-merchant binary instead of building one with `scripts/release-build`.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,

    /// The git commit `--server-bin` was built from, recorded in the results (the default build records its own).
    #[arg(long)]
    pub server_commit: Option<String>,

    /// Extra environment for the server, KEY=VALUE (repeatable), e.g. ACP_DB_MAX_CONNECTIONS=20.
    #[arg(long = "server-env", value_parser = parse_key_value)]
    pub server_env: Vec<(String, String)>,

    /// Name of the durable scripts/pg-local cluster (a `test*` name would turn durability off, so it is refused).
    #[arg(long, default_value = "bench", value_parser = parse_cluster_name)]
    pub cluster: String,

    /// Products (one variant each) of the generated catalog; flows spread over them.
    #[arg(long, default_value_t = 50)]
    pub products: usize,

    /// pgbench L1 clients (one ~500-byte row insert per transaction).
    #[arg(long, default_value_t = 64)]
    pub l1_clients: usize,

    /// pgbench L2 clients (select-only, `pgbench -S`).
    #[arg(long, default_value_t = 16)]
    pub l2_clients: usize,

    /// pgbench worker threads (-j) of both baselines.
    #[arg(long, default_value_t = 1)]
    pub pgbench_jobs: usize,

    /// Scale of `pgbench -i` for L2.
    #[arg(long, default_value_t = 1)]
    pub pgbench_scale: u32,

    /// Skip the pgbench baselines (the ratios are then not reported).
    #[arg(long)]
    pub skip_pgbench: bool,

    /// CPU list the server is pinned to (taskset -c).
    #[arg(long, default_value = "0")]
    pub server_cpus: String,

    /// CPU list of PostgreSQL, pgbench and this load generator.
    #[arg(long, default_value = "1")]
    pub load_cpus: String,

    /// Pin nothing.
    #[arg(long)]
    pub no_pin: bool,

    /// Where results go (relative paths are taken from the repository root).
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,

    /// The repository root (scripts/pg-local, scripts/release-build); default: the git top level of the current
    /// directory.
    #[arg(long)]
    pub repo: Option<PathBuf>,

    /// How long the server may take to answer /readyz (migrations included).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub ready_timeout: Duration,

    /// How many unexpected responses are printed in full (all are counted).
    #[arg(long, default_value_t = 5)]
    pub show_errors: usize,

    /// Keep the run's database afterwards (it is dropped by default).
    #[arg(long)]
    pub keep_db: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Psp {
    /// The server's built-in payment simulator.
    Simulator,
    /// The Stripe adapter against the fake Stripe of crates/test-support, served by this process.
    FakeStripe,
}

impl Psp {
    pub fn name(self) -> &'static str {
        match self {
            Psp::Simulator => "simulator",
            Psp::FakeStripe => "fake Stripe",
        }
    }
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `15s`, `500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("not a duration: {text:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    if key.is_empty() {
        return Err(format!("expected KEY=VALUE, got {text:?}"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn parse_cluster_name(text: &str) -> Result<String, String> {
    if text.starts_with("test") {
        return Err("clusters named test* run with fsync off; the benchmark needs a durable one".to_owned());
    }
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err("a cluster name is made of a-z, 0-9, _ and -".to_owned());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn test_clusters_are_refused_because_they_are_not_durable() {
        assert!(parse_cluster_name("test").is_err());
        assert!(parse_cluster_name("testbench").is_err());
        assert!(parse_cluster_name("Bench").is_err());
        assert_eq!(parse_cluster_name("bench"), Ok("bench".to_owned()));
    }

    #[test]
    fn server_env_needs_a_key() {
        assert_eq!(
            parse_key_value("ACP_DB_MAX_CONNECTIONS=20"),
            Ok(("ACP_DB_MAX_CONNECTIONS".to_owned(), "20".to_owned()))
        );
        assert!(parse_key_value("=1").is_err());
        assert!(parse_key_value("ACP_X").is_err());
    }

    #[test]
    fn defaults_parse() {
        let args = Args::try_parse_from(["acp-bench"]).expect("defaults parse");
        assert_eq!(args.agents, vec![16, 64, 512]);
        assert_eq!(args.duration, Duration::from_secs(15));
        assert_eq!(args.psp, Psp::Simulator);
    }
}
