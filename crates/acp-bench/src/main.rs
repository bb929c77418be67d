//! acp-bench: the acp-merchant release binary under full ACP checkout flows on a durable PostgreSQL cluster,
//! next to pgbench's own limits on the same cluster in the same run (issue 14). See the README's "Benchmarks".
//!
//! One run: provision the cluster (scripts/pg-local, durable) and a fresh database → build or take the server →
//! start it pinned to its CPUs with the simulator (or the fake Stripe) and our webhook receiver → load a catalog →
//! closed-loop flow levels → GET-only → open loop at a share of the peak → webhook drain → pgbench L1 and L2 →
//! results in bench/results/. The server and the cluster are stopped at the end, also on error or Ctrl-C.

mod agent;
mod catalog;
mod cli;
mod cluster;
mod error;
mod pgbench;
mod procstat;
mod report;
mod scenarios;
mod server;
mod shell;
mod stats;
mod webhooks;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;

use crate::{
    agent::{Agent, Endpoint},
    cli::{Args, Psp},
    cluster::Cluster,
    error::BenchError,
    report::{Errors, Host, Pinning, Results, Rss, ScenarioResult, WebhookReport},
    scenarios::{ErrorLog, OpenLoopPlan, Tally, Window},
    server::Server,
};

/// Set in the environment of the re-executed, pinned process.
const PINNED_ENV: &str = "ACP_BENCH_PINNED";
const STRIPE_SECRET: &str = "sk_test_bench_0123456789";

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = pin_self(&args) {
        eprintln!("acp-bench: {e}");
        return ExitCode::from(2);
    }
    // One worker thread: the load generator lives on the load CPUs beside PostgreSQL and pgbench.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("acp-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_then_clean_up(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!("acp-bench: {errors} unexpected responses (must be 0)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("acp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether this run pins processes: asked for, and there are at least two CPUs to split.
fn pinning_enabled(args: &Args) -> bool {
    !args.no_pin && (std::env::var_os(PINNED_ENV).is_some() || online_cpus() >= 2)
}

/// Re-executes this process under `taskset -c <load CPUs>` (once), so the load generator shares its CPUs with
/// PostgreSQL and pgbench and never with the server.
fn pin_self(args: &Args) -> Result<(), BenchError> {
    if !pinning_enabled(args) || std::env::var_os(PINNED_ENV).is_some() {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(BenchError::io("cannot find this executable"))?;
    let error = std::process::Command::new("taskset")
        .arg("-c")
        .arg(&args.load_cpus)
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(PINNED_ENV, "1")
        .exec();
    Err(BenchError::io("cannot re-execute under taskset")(error))
}

fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(1)
}

/// What has to be stopped or dropped however the run ends.
#[derive(Default)]
struct Resources {
    cluster: Option<Cluster>,
    database: Option<String>,
    server: Option<Server>,
    keep_db: bool,
}

impl Resources {
    async fn clean_up(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        if let Some(cluster) = self.cluster.take() {
            if let Some(db) = self.database.take().filter(|_| !self.keep_db)
                && let Err(e) = cluster.drop_database(&db).await
            {
                eprintln!("acp-bench: could not drop database {db}: {e}");
            }
            if let Err(e) = cluster.stop().await {
                eprintln!("acp-bench: could not stop the cluster: {e}");
            }
        }
    }
}

/// Runs the benchmark, then stops what it started (also after an error or Ctrl-C). Returns the number of
/// unexpected responses.
async fn run_then_clean_up(args: Args) -> Result<u64, BenchError> {
    let mut resources = Resources {
        keep_db: args.keep_db,
        ..Resources::default()
    };
    let outcome = tokio::select! {
        outcome = run(&args, &mut resources) => outcome,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
    };
    resources.clean_up().await;
    outcome
}

/// The CPU lists of the server and of the load side, when pinning.
fn cpu_lists(args: &Args) -> (Option<&str>, Option<&str>) {
    if pinning_enabled(args) {
        (Some(args.server_cpus.as_str()), Some(args.load_cpus.as_str()))
    } else {
        (None, None)
    }
}

async fn repo_root(args: &Args) -> Result<PathBuf, BenchError> {
    if let Some(repo) = &args.repo {
        return Ok(repo.clone());
    }
    let top = shell::output(tokio::process::Command::new("git").args(["rev-parse", "--show-toplevel"])).await?;
    Ok(PathBuf::from(top.trim()))
}

async fn run(args: &Args, resources: &mut Resources) -> Result<u64, BenchError> {
    let started_at = chrono::Utc::now();
    let stamp = started_at.format("%Y%m%dT%H%M%SZ").to_string();
    let repo = repo_root(args).await?;
    let out_dir = repo.join(&args.out_dir);
    std::fs::create_dir_all(&out_dir).map_err(BenchError::io(format!("cannot create {}", out_dir.display())))?;
    let (server_cpus, load_cpus) = cpu_lists(args);

    let build = match &args.server_bin {
        Some(binary) => server::describe(binary.clone(), args.server_commit.clone()).await?,
        None => server::build(&repo).await?,
    };
    eprintln!(
        "server: {} ({})",
        build.version,
        build.commit.as_deref().unwrap_or("commit unknown")
    );

    let cluster = resources
        .cluster
        .insert(Cluster::provision(&repo, &args.cluster, load_cpus).await?);
    let postgres = cluster.facts().await?;
    let database = format!("acp_bench_{}", stamp.to_ascii_lowercase());
    cluster.create_database(&database).await?;
    resources.database = Some(database.clone());
    eprintln!(
        "PostgreSQL {} on port {}, database {database}",
        postgres.version, cluster.port
    );

    let (webhook_url, arrivals) = webhooks::start().await?;
    let fake_stripe = match args.psp {
        Psp::FakeStripe => Some(test_support::fake_stripe::FakeStripe::start(STRIPE_SECRET).await),
        Psp::Simulator => None,
    };
    let secrets = Secrets::generate();
    let env = server_env(
        args,
        &cluster.url(&database),
        &secrets,
        webhook_url,
        fake_stripe.as_ref(),
    );
    let log = out_dir.join(format!("{stamp}.server.log"));
    let server = resources
        .server
        .insert(Server::start(&build, server_cpus, &env, &log).await?);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    server.wait_ready(&client, args.ready_timeout).await?;
    catalog::load(&client, &server.base_url, &secrets.admin_token, args.products.max(1)).await?;
    let idle_rss = server.rss_bytes();
    eprintln!(
        "server ready at {} (pid {}), catalog of {} products loaded",
        server.base_url, server.pid, args.products
    );

    let pinning = Pinning {
        enabled: server_cpus.is_some(),
        server: server_cpus.and(server.cpus_allowed()),
        load_generator: load_cpus.and(procstat::cpus_allowed("self")),
        postgres: load_cpus.and(postgres.cpus_allowed.clone()),
        pgbench: load_cpus.map(str::to_owned),
    };
    let load = Load {
        agent: Agent::new(client, &server.base_url, &secrets.agent_key, args.psp),
        server,
        cluster,
        ticks: procstat::ticks_per_second(),
        errors: Arc::new(ErrorLog::new(args.show_errors)),
        variants: Arc::new((0..args.products.max(1)).map(catalog::variant_id).collect()),
    };
    let (scenarios, completed) = load.all_scenarios(args).await;
    let webhooks = webhook_report(&completed, &arrivals, args.webhook_drain).await;
    let rss = Rss {
        idle_bytes: idle_rss,
        peak_bytes: load.server.peak_rss_bytes(),
    };
    let baselines = baselines(args, load.cluster, &database, load_cpus).await;
    drop(fake_stripe);

    let errors_total = scenarios.iter().map(|s| s.errors).sum();
    let results = Results {
        started_at: started_at.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        args: args.clone(),
        host: Host {
            cpus: online_cpus(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|k| k.trim().to_owned()),
        },
        pinning,
        postgres,
        server: build,
        database,
        headline: report::headline(&scenarios, &baselines),
        scenarios,
        baselines,
        webhooks,
        rss,
        errors: Errors {
            total: errors_total,
            first: load.errors.first(),
        },
    };
    let md = report::write(&results, &out_dir, &stamp)?;
    println!("{md}");
    eprintln!(
        "results: {}",
        display_relative(&out_dir.join(format!("{stamp}.{{json,md}}")), &repo)
    );
    Ok(errors_total)
}

/// The credentials the server is started with: fresh per run, never printed.
struct Secrets {
    agent_key: String,
    admin_token: String,
    webhook_secret: String,
}

impl Secrets {
    fn generate() -> Self {
        let fresh = |prefix: &str| format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        Self {
            agent_key: fresh("bench_agent"),
            admin_token: fresh("bench_admin"),
            webhook_secret: fresh("whsec_bench"),
        }
    }
}

/// The server's whole configuration: development with the simulator (or Stripe pointed at the fake), our
/// webhook receiver, rate limits off, warn-level JSON logs; `--server-env` last, so it wins.
fn server_env(
    args: &Args,
    database_url: &str,
    secrets: &Secrets,
    webhook_url: String,
    fake_stripe: Option<&test_support::fake_stripe::FakeStripe>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", database_url),
        ("ACP_ENV", "development"),
        ("ACP_AGENT_API_KEY", &secrets.agent_key),
        ("ACP_ADMIN_TOKEN", &secrets.admin_token),
        ("ACP_AGENT_WEBHOOK_URL", &webhook_url),
        ("ACP_AGENT_WEBHOOK_SECRET", &secrets.webhook_secret),
        ("ACP_RATE_LIMIT_ENABLED", "false"),
        ("ACP_LOG_LEVEL", "warn"),
        ("ACP_LOG_FORMAT", "json"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    match fake_stripe {
        Some(fake) => env.extend([
            ("ACP_PSP".to_owned(), "stripe".to_owned()),
            ("ACP_STRIPE_SECRET_KEY".to_owned(), STRIPE_SECRET.to_owned()),
            ("ACP_STRIPE_API_BASE".to_owned(), fake.base_url()),
        ]),
        None => env.push(("ACP_PSP".to_owned(), "simulator".to_owned())),
    }
    env.extend(args.server_env.iter().cloned());
    env
}

/// Deliveries when the load ended, then after waiting up to `drain` for the backlog.
async fn webhook_report(
    completed: &HashMap<String, Instant>,
    arrivals: &webhooks::Arrivals,
    drain: Duration,
) -> WebhookReport {
    let at_end_of_load = webhooks::figures(completed, arrivals);
    eprintln!(
        "webhooks: {} of {} completed orders delivered; draining up to {drain:?}…",
        at_end_of_load.delivered, at_end_of_load.completed_orders
    );
    let drain_started = Instant::now();
    let after_drain = webhooks::drain(completed, arrivals, drain).await;
    WebhookReport {
        at_end_of_load,
        after_drain,
        drain_wait_secs: drain_started.elapsed().as_secs_f64(),
    }
}

/// pgbench L1 and L2 on the run's database. A failing baseline costs its ratio, not the run's other figures.
async fn baselines(args: &Args, cluster: &Cluster, database: &str, cpus: Option<&str>) -> Vec<pgbench::Baseline> {
    if args.skip_pgbench {
        return Vec::new();
    }
    let bench = pgbench::Pgbench {
        cluster,
        db: database,
        cpus,
        jobs: args.pgbench_jobs,
        duration: args.duration,
    };
    let mut baselines = Vec::new();
    for baseline in [
        bench.l1(args.l1_clients, &std::env::temp_dir()).await,
        bench.l2(args.l2_clients, args.pgbench_scale).await,
    ] {
        match baseline {
            Ok(b) => baselines.push(b),
            Err(e) => eprintln!("acp-bench: pgbench baseline failed: {e}"),
        }
    }
    baselines
}

fn display_relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).display().to_string()
}

fn absorb(completed: &mut HashMap<String, Instant>, sessions: &mut Vec<String>, tally: Tally) {
    completed.extend(tally.orders);
    sessions.extend(tally.sessions);
}

/// Everything a scenario needs, and the measurement around it (CPU of the server and of PostgreSQL, wall time).
struct Load<'a> {
    agent: Agent,
    server: &'a Server,
    cluster: &'a Cluster,
    ticks: u64,
    errors: Arc<ErrorLog>,
    variants: Arc<Vec<String>>,
}

/// CPU readings taken before a scenario.
struct Before {
    at: Instant,
    server: Option<u64>,
    postgres: Option<u64>,
}

impl Load<'_> {
    /// Every closed-loop level, GET-only, then the open loop at a share of the peak. Returns the scenarios and
    /// every order completed (with when), for the webhook figures.
    async fn all_scenarios(&self, args: &Args) -> (Vec<ScenarioResult>, HashMap<String, Instant>) {
        let mut completed: HashMap<String, Instant> = HashMap::new();
        let mut sessions: Vec<String> = Vec::new();
        let mut results: Vec<ScenarioResult> = Vec::new();
        for &agents in &args.agents {
            let (tally, result) = self.flows(agents, Window::after(args.warmup, args.duration)).await;
            absorb(&mut completed, &mut sessions, tally);
            results.push(result);
        }
        let window = Window::after(args.warmup, args.duration);
        let (tally, result) = self.gets(args.get_agents, window, Arc::new(sessions.clone())).await;
        absorb(&mut completed, &mut sessions, tally);
        results.push(result);
        let peak = results
            .iter()
            .filter(|s| s.name.starts_with("flows"))
            .map(|s| s.flows_per_sec)
            .fold(0.0, f64::max);
        let open_rate = peak * args.open_loop_share;
        if open_rate > 0.0 {
            let (tally, result) = self.open_loop(open_rate, args).await;
            absorb(&mut completed, &mut sessions, tally);
            results.push(result);
        }
        (results, completed)
    }

    fn before(&self) -> Before {
        Before {
            at: Instant::now(),
            server: self.server.cpu_ticks(),
            postgres: self.cluster.cpu_ticks(),
        }
    }

    async fn flows(&self, agents: usize, window: Window) -> (Tally, ScenarioResult) {
        eprintln!("flows: {agents} agents, measured after a warm-up…");
        let before = self.before();
        let (tally, wall) = scenarios::closed_loop(&self.agent, agents, window, &self.variants, &self.errors).await;
        let result = self.result(format!("flows @{agents}"), Some(agents), &tally, wall, before, None);
        (tally, result)
    }

    async fn gets(&self, agents: usize, window: Window, sessions: Arc<Vec<String>>) -> (Tally, ScenarioResult) {
        eprintln!("get: {agents} agents over {} sessions…", sessions.len());
        let before = self.before();
        let (tally, wall) = scenarios::get_only(&self.agent, agents, window, &sessions, &self.errors).await;
        let result = self.result("get".to_owned(), Some(agents), &tally, wall, before, None);
        (tally, result)
    }

    async fn open_loop(&self, rate: f64, args: &Args) -> (Tally, ScenarioResult) {
        eprintln!("open loop: {rate:.1} flows/s for {:?}…", args.duration);
        let before = self.before();
        let (tally, wall, plan) = scenarios::open_loop(
            &self.agent,
            rate,
            args.duration,
            args.open_loop_step_gap,
            args.open_loop_max_in_flight,
            &self.variants,
            &self.errors,
        )
        .await;
        let result = self.result("open loop".to_owned(), None, &tally, wall, before, Some(plan));
        (tally, result)
    }

    fn result(
        &self,
        name: String,
        agents: Option<usize>,
        tally: &Tally,
        wall: Duration,
        before: Before,
        open_loop: Option<OpenLoopPlan>,
    ) -> ScenarioResult {
        // Rates over the measurement window; CPU over the whole time the scenario ran (its tail included).
        let secs = wall.as_secs_f64().max(f64::EPSILON);
        let elapsed = before.at.elapsed();
        let posts: usize = Endpoint::ALL
            .iter()
            .filter(|e| e.is_post())
            .map(|e| tally.requests(*e))
            .sum();
        let result = ScenarioResult {
            name,
            agents,
            wall_secs: elapsed.as_secs_f64(),
            flows: tally.flows,
            flows_per_sec: tally.flows as f64 / secs,
            posts_per_sec: posts as f64 / secs,
            gets_per_sec: tally.requests(Endpoint::Get) as f64 / secs,
            errors: tally.errors,
            endpoints: tally.summaries(wall),
            updates: tally.updates_summary(wall),
            server_cpu_pct: procstat::cpu_percent(before.server, self.server.cpu_ticks(), elapsed, self.ticks),
            postgres_cpu_pct: procstat::cpu_percent(before.postgres, self.cluster.cpu_ticks(), elapsed, self.ticks),
            server_peak_rss_bytes: self.server.peak_rss_bytes(),
            open_loop,
        };
        eprintln!(
            "  {}: {:.1} flows/s, {:.0} POST/s, {:.0} GET/s, errors {}, server CPU {}, PostgreSQL CPU {}",
            result.name,
            result.flows_per_sec,
            result.posts_per_sec,
            result.gets_per_sec,
            result.errors,
            result
                .server_cpu_pct
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.0} %")),
            result
                .postgres_cpu_pct
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.0} %")),
        );
        result
    }
}
