//! `acp-merchant`: the command line. Exit codes: 0 success; 1 runtime failure (or unhealthy for `healthcheck`);
//! 2 usage error; 78 configuration error (EX_CONFIG), always with one line on stderr naming the setting.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use acp_merchant::{
    catalog,
    config::{DEMO_DEFAULTS, SERVE_DEFAULTS, Secret, Settings, Sources},
    db,
    http::extract::ENV_AGENT_ID,
    localdb,
    startup::{Application, cancel_on_signals},
    telemetry,
    webhooks::worker::WorkerConfig,
};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// The binary's allocator (see Cargo.toml: glibc malloc was the largest single cost in the issue-14 profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 78;

/// Agentic Commerce Protocol merchant checkout server.
#[derive(Parser)]
#[command(name = "acp-merchant", version, about)]
struct Cli {
    /// Configuration file (TOML) layered between the built-in defaults and the environment.
    #[arg(long, env = "ACP_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server and its background workers (ACP_ENV defaults to production).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Exit 0 when /healthz of the configured listen address answers (for container health checks).
    Healthcheck {
        /// Address to probe; defaults to ACP_LISTEN_ADDR (0.0.0.0 is probed on 127.0.0.1).
        #[arg(long, env = "ACP_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
        addr: String,
        /// Probe over HTTPS: set when the server serves TLS natively (any non-empty ACP_TLS_CERT).
        #[arg(long = "tls-cert", env = "ACP_TLS_CERT")]
        tls_cert: Option<String>,
    },
    /// Run only the webhook delivery worker (several may run against one database).
    Worker,
    /// One reconciler pass: settle payment attempts nobody runs any more (by asking the PSP) and cancel payments
    /// still waiting for 3-D Secure on ended sessions; prints what it did.
    Reconcile,
    /// Webhook tools for integrators.
    Webhook {
        #[command(subcommand)]
        action: WebhookAction,
    },
    /// Pricing rules (tax, shipping, promotions).
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Catalog import and export in the ACP product feed format (JSON lines).
    Catalog {
        #[command(subcommand)]
        action: CatalogAction,
    },
    /// Stored secrets (sealed with ACP_SECRETS_KEYS).
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Sign a checkout request as an agent would: prints the `Signature:` and `Timestamp:` header lines.
    Sign(SignArgs),
    /// Local demo: provision a private PostgreSQL when DATABASE_URL is unset, migrate and serve in development
    /// mode with the simulator PSP.
    Demo,
}

#[derive(Subcommand)]
enum WebhookAction {
    /// Check a Merchant-Signature header against a body: exit 0 when valid, 1 (with the reason) otherwise.
    Verify {
        #[arg(long)]
        secret: String,
        /// The Merchant-Signature header value, `t=<unix seconds>,v1=<hex>`.
        #[arg(long)]
        signature: String,
        /// File with the raw request body, exactly as received.
        #[arg(long)]
        body: PathBuf,
        /// Unix time to check the timestamp against (default: now).
        #[arg(long)]
        now: Option<u64>,
        /// Allowed distance between the signature's timestamp and now, in seconds.
        #[arg(long, default_value_t = acp_merchant::webhooks::signer::TOLERANCE_SECS)]
        tolerance: u64,
    },
}

/// `acp-merchant sign` (request signatures, issue 12).
#[derive(clap::Args)]
struct SignArgs {
    #[arg(long, value_parser = ["ed25519", "es256", "hmac-sha256"])]
    algorithm: String,
    /// Private key (PKCS#8 PEM, or base64url raw 32 bytes) for ed25519/es256; the shared secret for hmac-sha256.
    #[arg(long)]
    key_file: PathBuf,
    /// The Timestamp to sign (RFC 3339); default: now.
    #[arg(long)]
    timestamp: Option<String>,
    /// With --path: the signature covers method and path (agents set to `method_path_body`).
    #[arg(long, requires = "path")]
    method: Option<String>,
    /// The path with its query string, exactly as requested.
    #[arg(long, requires = "method")]
    path: Option<String>,
    /// The JSON body (`-` for standard input); none for an empty body.
    #[arg(long)]
    body_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SecretsAction {
    /// Re-seal every stored secret with the active (first) key of ACP_SECRETS_KEYS, in one transaction; a secret
    /// sealed with a key no longer configured is an error naming that key.
    Rotate,
}

#[derive(Subcommand)]
enum RulesAction {
    /// Validate and store a rules bundle (JSON, or TOML when the file ends in .toml), replacing the current one.
    Import { file: PathBuf },
}

#[derive(Subcommand)]
enum CatalogAction {
    /// Upsert every feed Product in FILE (one JSON object per line), then apply merchant-only attributes.
    Import {
        file: PathBuf,
        /// JSONL of merchant-only attributes keyed by variant id (stock, limits, tax category, weight, ...).
        #[arg(long)]
        attributes: Option<PathBuf>,
    },
    /// Write every product as a feed Product, one per line, to stdout.
    Export,
    /// Report the feed quality of FILE (feed Products as JSONL) without importing it: findings per product and
    /// variant, with a score (README, "Feed quality"). Exits with 1 when a line violates the feed schema.
    Check {
        file: PathBuf,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("acp-merchant: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let file = cli.config;
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(load(file, SERVE_DEFAULTS)?).await,
            Command::Migrate => migrate(load(file, SERVE_DEFAULTS)?).await,
            Command::Healthcheck { addr, tls_cert } => {
                healthcheck(&addr, tls_cert.is_some_and(|c| !c.trim().is_empty())).await
            }
            Command::Worker => worker(load(file, SERVE_DEFAULTS)?).await,
            Command::Reconcile => reconcile(load(file, SERVE_DEFAULTS)?).await,
            Command::Webhook { action } => webhook_command(action),
            Command::Rules { action } => rules_command(load(file, SERVE_DEFAULTS)?, action).await,
            // Checking a feed file reads nothing but the file: no settings, no database.
            Command::Catalog {
                action: CatalogAction::Check { file: feed, json },
            } => check_catalog(&feed, json),
            Command::Catalog { action } => catalog_command(load(file, SERVE_DEFAULTS)?, action).await,
            Command::Secrets { action } => secrets_command(load(file, SERVE_DEFAULTS)?, action).await,
            Command::Sign(args) => sign_command(&args),
            Command::Demo => demo(file).await,
        }
    });
    outcome.err().map_or(ExitCode::SUCCESS, ExitCode::from)
}

/// A command's outcome: `Err(code)` after the reason has been printed.
type Outcome = Result<(), u8>;

fn load(file: Option<PathBuf>, command_defaults: &'static [(&'static str, &'static str)]) -> Result<Settings, u8> {
    let sources = Sources {
        file,
        command_defaults,
        database_url_fallback: None,
    };
    Settings::load(&sources).map_err(|e| {
        eprintln!("acp-merchant: {e}");
        EXIT_CONFIG
    })
}

fn fail(context: &str, error: impl std::fmt::Display) -> u8 {
    tracing::error!(error = %error, "{context}");
    eprintln!("acp-merchant: {context}: {error}");
    EXIT_FAILURE
}

async fn serve(settings: Settings) -> Outcome {
    let traces = telemetry::init_with_traces(settings.log_format, &settings.log_level, &settings.otel);
    let served = serve_app(settings).await;
    if let Some(provider) = traces {
        // Sends the last batch of spans; the exporter blocks this thread, so it runs off the async workers.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            eprintln!("acp-merchant: the last traces could not be exported");
        }
    }
    served
}

async fn serve_app(settings: Settings) -> Outcome {
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let app = Application::build(settings, shutdown).await.map_err(|e| match e {
        // An unusable certificate or key is a configuration error: one line naming the variable, EX_CONFIG.
        acp_merchant::startup::StartupError::Tls(tls) => {
            eprintln!("acp-merchant: {tls}");
            EXIT_CONFIG
        }
        other => fail("cannot start", other),
    })?;
    app.run_until_stopped().await.map_err(|e| fail("server stopped", e))
}

async fn migrate(settings: Settings) -> Outcome {
    telemetry::init(settings.log_format, &settings.log_level);
    let pool = db::lazy_pool(&settings).map_err(|e| fail("cannot migrate", e))?;
    db::migrate(&pool).await.map_err(|e| fail("cannot migrate", e))?;
    // Secrets stored in clear by an older version are sealed right after the migrations.
    let sealed = acp_merchant::secrets::store::seal_clear_rows(&pool, &settings.secrets_keys)
        .await
        .map_err(|e| fail("cannot seal stored secrets", e))?;
    tracing::info!(sealed = sealed.sealed_from_clear, "migrations applied");
    Ok(())
}

async fn secrets_command(settings: Settings, action: SecretsAction) -> Outcome {
    telemetry::init(settings.log_format, &settings.log_level);
    let SecretsAction::Rotate = action;
    let pool = db::lazy_pool(&settings).map_err(|e| fail("cannot rotate", e))?;
    let done = acp_merchant::secrets::store::rotate(&pool, &settings.secrets_keys)
        .await
        .map_err(|e| fail("secrets rotate failed (nothing was changed)", e))?;
    println!(
        "re-sealed {} secrets with key `{}` ({} were in clear)",
        done.rotated + done.sealed_from_clear,
        settings.secrets_keys.active_key_id(),
        done.sealed_from_clear
    );
    pool.close().await;
    Ok(())
}

async fn worker(settings: Settings) -> Outcome {
    telemetry::init(settings.log_format, &settings.log_level);
    let pool = db::lazy_pool(&settings).map_err(|e| fail("cannot start", e))?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let config = WorkerConfig::from_settings(&settings, ENV_AGENT_ID).map_err(|e| fail("cannot start", e))?;
    acp_merchant::webhooks::worker::run(pool.clone(), config, shutdown).await;
    pool.close().await;
    tracing::info!("worker stopped");
    Ok(())
}

async fn reconcile(settings: Settings) -> Outcome {
    telemetry::init(settings.log_format, &settings.log_level);
    let pool = db::lazy_pool(&settings).map_err(|e| fail("cannot reconcile", e))?;
    let simulator = (settings.psp == acp_merchant::config::PspKind::Simulator)
        .then(|| acp_merchant::psp::simulator::Simulator::new(pool.clone()));
    let checkout = acp_merchant::startup::checkout(&settings, simulator).map_err(|e| fail("cannot reconcile", e))?;
    let report = checkout
        .reconcile_once(&pool)
        .await
        .map_err(|e| fail("reconcile failed", e))?;
    println!(
        "settled {} payment attempts, {} still unknown, canceled {} waiting payments",
        report.settled, report.still_open, report.retired
    );
    pool.close().await;
    Ok(())
}

fn webhook_command(action: WebhookAction) -> Outcome {
    let WebhookAction::Verify {
        secret,
        signature,
        body,
        now,
        tolerance,
    } = action;
    let bytes = std::fs::read(&body).map_err(|e| {
        eprintln!("acp-merchant: cannot read {}: {e}", body.display());
        EXIT_FAILURE
    })?;
    let now = now.unwrap_or_else(|| chrono::Utc::now().timestamp().max(0) as u64);
    match acp_merchant::webhooks::signer::verify(&secret, &signature, &bytes, now, tolerance) {
        Ok(()) => {
            println!("valid");
            Ok(())
        }
        Err(e) => {
            eprintln!("invalid: {e}");
            Err(EXIT_FAILURE)
        }
    }
}

fn sign_command(args: &SignArgs) -> Outcome {
    use acp_merchant::signatures::{Algorithm, SignKey, sign_request, timestamp_now};
    let usage = |message: String| {
        eprintln!("acp-merchant sign: {message}");
        2
    };
    let algorithm = Algorithm::parse(&args.algorithm).ok_or_else(|| usage("unknown algorithm".into()))?;
    let key_text = std::fs::read_to_string(&args.key_file)
        .map_err(|e| usage(format!("cannot read {}: {e}", args.key_file.display())))?;
    let key = SignKey::parse(algorithm, &key_text).map_err(|e| usage(format!("key: {e}")))?;
    let body = match args.body_file.as_deref() {
        None => Vec::new(),
        Some(path) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .map_err(|e| usage(format!("cannot read standard input: {e}")))?;
            bytes
        }
        Some(path) => std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?,
    };
    let timestamp = args.timestamp.clone().unwrap_or_else(timestamp_now);
    if chrono::DateTime::parse_from_rfc3339(&timestamp).is_err() {
        return Err(usage(format!("--timestamp {timestamp:?} is not an RFC 3339 date-time")));
    }
    let method_path = args.method.as_deref().zip(args.path.as_deref());
    let headers = sign_request(&key, &timestamp, method_path, &body).map_err(|e| usage(e.to_string()))?;
    println!("Signature: {}", headers.signature);
    println!("Timestamp: {}", headers.timestamp);
    Ok(())
}

async fn rules_command(settings: Settings, action: RulesAction) -> Outcome {
    telemetry::init(settings.log_format, &settings.log_level);
    let RulesAction::Import { file } = action;
    let text = std::fs::read_to_string(&file).map_err(|e| fail(&format!("cannot read {}", file.display()), e))?;
    let parsed: Result<acp_merchant::pricing::Rules, String> = if file.extension().is_some_and(|e| e == "toml") {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(&text))
            .extract()
            .map_err(|e| e.to_string())
    } else {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    let rules = parsed.map_err(|e| fail("invalid rules bundle", e))?;
    let pool = db::lazy_pool(&settings).map_err(|e| fail("rules", e))?;
    db::migrate(&pool).await.map_err(|e| fail("cannot migrate", e))?;
    let mut conn = pool.acquire().await.map_err(|e| fail("database", e))?;
    let version = acp_merchant::pricing::store::save(&mut conn, &rules)
        .await
        .map_err(|e| fail("rules refused", e))?;
    eprintln!("pricing rules stored (version {version})");
    Ok(())
}

async fn catalog_command(settings: Settings, action: CatalogAction) -> Outcome {
    telemetry::init(settings.log_format, &settings.log_level);
    let pool = db::lazy_pool(&settings).map_err(|e| fail("catalog", e))?;
    db::migrate(&pool).await.map_err(|e| fail("cannot migrate", e))?;
    match action {
        CatalogAction::Import { file, attributes } => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).map_err(|e| fail(&format!("cannot read {}", path.display()), e))
            };
            let products = catalog::parse_products(&read(&file)?).map_err(|e| fail("invalid catalog", e))?;
            let count = catalog::upsert_products(&pool, &products)
                .await
                .map_err(|e| fail("import failed", e))?;
            eprintln!("imported {count} products");
            if let Some(path) = attributes {
                let records = catalog::parse_attributes(&read(&path)?).map_err(|e| fail("invalid attributes", e))?;
                let n = catalog::apply_attributes(&pool, &records)
                    .await
                    .map_err(|e| fail("import failed", e))?;
                eprintln!("applied attributes to {n} variants");
            }
        }
        CatalogAction::Check { file, json } => return check_catalog(&file, json),
        CatalogAction::Export => {
            let text = catalog::export_jsonl(&pool)
                .await
                .map_err(|e| fail("export failed", e))?;
            print!("{text}");
        }
    }
    Ok(())
}

/// `catalog check`: needs no database, only the file.
fn check_catalog(file: &std::path::Path, json: bool) -> Outcome {
    let text = std::fs::read_to_string(file).map_err(|e| fail(&format!("cannot read {}", file.display()), e))?;
    let report = catalog::quality::check_feed(&text);
    if json {
        let printed = serde_json::to_string_pretty(&report).map_err(|e| fail("cannot print the report", e))?;
        println!("{printed}");
    } else {
        print!("{}", report.text());
    }
    if report.has_errors() { Err(EXIT_FAILURE) } else { Ok(()) }
}

/// The demo catalog, embedded so `demo` works from any directory.
const DEMO_CATALOG: &str = include_str!("../config/demo-catalog.jsonl");
const DEMO_ATTRIBUTES: &str = include_str!("../config/demo-catalog.attributes.jsonl");

async fn load_demo_catalog(pool: &sqlx::PgPool) -> Outcome {
    let products = catalog::parse_products(DEMO_CATALOG).map_err(|e| fail("invalid demo catalog", e))?;
    catalog::upsert_products(pool, &products)
        .await
        .map_err(|e| fail("cannot load demo catalog", e))?;
    let records = catalog::parse_attributes(DEMO_ATTRIBUTES).map_err(|e| fail("invalid demo attributes", e))?;
    catalog::apply_attributes(pool, &records)
        .await
        .map_err(|e| fail("cannot load demo catalog", e))?;
    Ok(())
}

async fn healthcheck(addr: &str, https: bool) -> Outcome {
    let Ok(mut addr) = addr.parse::<std::net::SocketAddr>() else {
        eprintln!("acp-merchant: configuration error: ACP_LISTEN_ADDR: `{addr}` is not an IP socket address");
        return Err(EXIT_CONFIG);
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    // The probe asks this host's own server whether it answers, sending nothing secret; the certificate names the
    // public host, not the address probed, so it is not verified here.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .tls_danger_accept_invalid_certs(https)
        .build()
        .map_err(|e| fail("healthcheck", e))?;
    let scheme = if https { "https" } else { "http" };
    match client.get(format!("{scheme}://{addr}/healthz")).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(fail("unhealthy", r.status())),
        Err(e) => Err(fail("unhealthy", e)),
    }
}

/// Name of the demo's database inside the local `dev` cluster.
const DEMO_DATABASE: &str = "acp_demo";

async fn demo(file: Option<PathBuf>) -> Outcome {
    let database_url_fallback = if std::env::var_os("DATABASE_URL").is_none_or(|v| v.is_empty()) {
        Some(provision_demo_database().await?)
    } else {
        None
    };
    let sources = Sources {
        file,
        command_defaults: DEMO_DEFAULTS,
        database_url_fallback,
    };
    let settings = Settings::load(&sources).map_err(|e| {
        eprintln!("acp-merchant: {e}");
        EXIT_CONFIG
    })?;
    telemetry::init(settings.log_format, &settings.log_level);
    let pool = db::lazy_pool(&settings).map_err(|e| fail("cannot start", e))?;
    db::migrate(&pool).await.map_err(|e| fail("cannot migrate", e))?;
    load_demo_catalog(&pool).await?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let key = settings.agent_api_key.clone();
    let app = Application::build(settings, shutdown)
        .await
        .map_err(|e| fail("cannot start", e))?;
    print_demo_banner(app.local_addr(), &key);
    app.run_until_stopped().await.map_err(|e| fail("server stopped", e))
}

async fn provision_demo_database() -> Result<String, u8> {
    eprintln!("acp-merchant demo: DATABASE_URL is unset; provisioning a local PostgreSQL cluster...");
    let admin = tokio::task::spawn_blocking(|| localdb::cluster_url("dev"))
        .await
        .map_err(|e| fail("cannot provision PostgreSQL", e))?
        .map_err(|e| fail("cannot provision PostgreSQL", e))?;
    localdb::ensure_database(&admin, DEMO_DATABASE)
        .await
        .map_err(|e| fail("cannot create the demo database", e))?;
    Ok(localdb::with_database(&admin, DEMO_DATABASE))
}

fn print_demo_banner(addr: std::net::SocketAddr, key: &Secret) {
    println!();
    println!("ACP merchant demo is running on http://{addr}");
    println!("  demo agent key (development only): {}", key.expose());
    println!(
        "  try:  curl -s http://{addr}/checkout_sessions -H 'Authorization: Bearer {}' \\",
        key.expose()
    );
    println!(
        "          -H 'API-Version: 2026-04-17' -H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' \\"
    );
    println!("          -d '{{\"currency\":\"usd\",\"line_items\":[{{\"id\":\"var_trail_tee_m_blue\"}}]}}'");
    println!(
        "  full checkout walk-through: scripts/demo-checkout http://{addr} {}",
        key.expose()
    );
    println!("  stop: Ctrl-C");
    println!();
}
