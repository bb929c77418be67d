//! Test harness: a private PostgreSQL cluster, one fresh database per test (cloned from a migrated template),
//! the app on 127.0.0.1:0 in-process, and the built binary as a child process for tests that signal or kill it.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use acp_merchant::{catalog, config::Settings, db::MIGRATOR, localdb, startup::Application};
use sqlx::{Connection, Executor, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::OnceCell,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const BIN: &str = env!("CARGO_BIN_EXE_acp-merchant");
pub const AGENT_KEY: &str = "test_agent_key_0123456789abcdef";
pub const ADMIN_TOKEN: &str = "test_admin_token_0123456789abcdef";
/// An `ACP_SECRETS_KEYS` for tests that run in production mode (which refuses to start without one).
pub const PROD_SECRETS_KEYS: &str = "prod1:cHJvZC10ZXN0LWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE=";
/// The buyer-hash salt production tests configure (`ACP_ANALYTICS_SALT`, issue 13).
pub const PROD_ANALYTICS_SALT: &str = "prod-test-analytics-salt-0123456789";
/// An `ACP_ORDER_PAGE_KEY` for tests that run in production mode (issue 13: production requires one).
pub const PROD_ORDER_PAGE_KEY: &str = "prod-order-page-key-0123456789abcdefghij";

/// URL of the test cluster's maintenance database. `ACP_TEST_DATABASE_URL` points the suite at an existing
/// server; otherwise the private `test` cluster is provisioned (once per machine, under a lock).
pub fn admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("ACP_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => localdb::cluster_url("test").expect("provision the test PostgreSQL cluster"),
    })
}

/// Name of the migrated template database, derived from the migrations so a schema change gets a new one.
fn template_name() -> String {
    let mut hasher = DefaultHasher::new();
    for m in MIGRATOR.iter() {
        m.version.hash(&mut hasher);
        m.checksum.hash(&mut hasher);
    }
    include_str!("../../config/demo-catalog.jsonl").hash(&mut hasher);
    include_str!("../../config/demo-catalog.attributes.jsonl").hash(&mut hasher);
    format!("acp_tpl_{:016x}", hasher.finish())
}

/// Creates the template once per cluster. Several test processes may race here: a PostgreSQL advisory lock
/// serialises them, and the template appears under its final name only once fully migrated.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            let mut admin = PgConnection::connect(admin_url())
                .await
                .expect("connect to test cluster");
            admin.execute("select pg_advisory_lock(734201)").await.expect("lock");
            let exists: bool = sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .expect("query pg_database");
            if !exists {
                let building = format!("{name}_build");
                exec(&mut admin, &format!("drop database if exists {building} with (force)")).await;
                exec(&mut admin, &format!("create database {building}")).await;
                let pool = PgPool::connect(&localdb::with_database(admin_url(), &building))
                    .await
                    .expect("connect to template");
                MIGRATOR.run(&pool).await.expect("migrate template");
                load_demo_catalog(&pool).await;
                pool.close().await;
                exec(&mut admin, &format!("alter database {building} rename to {name}")).await;
            }
            admin
                .execute("select pg_advisory_unlock(734201)")
                .await
                .expect("unlock");
            name
        })
        .await
}

/// Every test database starts with the demo catalog (the same files the demo command loads).
async fn load_demo_catalog(pool: &PgPool) {
    let products = catalog::parse_products(include_str!("../../config/demo-catalog.jsonl")).expect("demo catalog");
    catalog::upsert_products(pool, &products)
        .await
        .expect("load demo catalog");
    let attributes =
        catalog::parse_attributes(include_str!("../../config/demo-catalog.attributes.jsonl")).expect("attributes");
    catalog::apply_attributes(pool, &attributes)
        .await
        .expect("load demo attributes");
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    conn.execute(sqlx::AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh copy of the migrated template.
    pub async fn migrated() -> Self {
        let template = template().await;
        Self::create(&format!("template {template}")).await
    }

    /// A fresh database with no schema at all.
    pub async fn empty() -> Self {
        Self::create("").await
    }

    async fn create(clause: &str) -> Self {
        let name = format!("t_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url())
            .await
            .expect("connect to test cluster");
        exec(&mut admin, &format!("create database {name} {clause}")).await;
        let url = localdb::with_database(admin_url(), &name);
        Self { name, url }
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside (or outside) some test's runtime; a thread with its own runtime works in both cases.
        let sql = format!("drop database if exists {} with (force)", self.name);
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(admin_url())
                    .await
                    .map_err(std::io::Error::other)?;
                admin
                    .execute(sqlx::AssertSqlSafe(sql))
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Settings every in-process test starts from: development, simulator PSP, a known agent key, port 0.
pub fn test_settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut pairs = vec![
        ("env", "development"),
        ("psp", "simulator"),
        ("database_url", database_url),
        ("listen_addr", "127.0.0.1:0"),
        ("agent_api_key", AGENT_KEY),
        ("admin_token", ADMIN_TOKEN),
        ("migrate_on_start", "false"),
        ("terms_of_use_url", "https://shop.example.com/legal/terms"),
        ("return_policy_url", "https://shop.example.com/legal/returns"),
        // Rate limits stay out of the way of every other test; tests/api/rate_limits.rs switches them on.
        ("rate_limit_enabled", "false"),
    ];
    pairs.extend_from_slice(overrides);
    Settings::from_pairs(&pairs).expect("valid test settings")
}

/// The app running in-process on its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    #[allow(dead_code)] // used by the lifecycle tests
    pub db: PgPool,
    /// The running app's own state (its pool, its checkout use cases), for tests that drive it directly.
    pub state: acp_merchant::http::AppState,
    /// The unauthenticated metrics listener, when the test set `metrics_addr` (issue 13).
    #[allow(dead_code)] // used by the metrics tests
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    // Declared last: dropped after the pool handle above.
    _database: TestDb,
}

/// The ACP version the lifecycle tests speak unless they say otherwise.
pub const API_VERSION: &str = "2026-04-17";

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request carrying every header an ACP agent sends: bearer key, `API-Version`, `Request-Id`, and on
    /// POST a fresh `Idempotency-Key` (override it with `.header(...)` to test replays).
    pub fn acp(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.acp_as(method, path, AGENT_KEY, API_VERSION)
    }

    /// Like [`TestApp::acp`] with a chosen bearer key and `API-Version` (reqwest appends headers rather than
    /// replacing them, so these cannot be overridden afterwards).
    pub fn acp_as(&self, method: reqwest::Method, path: &str, key: &str, version: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(method.clone(), self.url(path))
            .bearer_auth(key)
            .header("API-Version", version)
            .header("Request-Id", format!("req_{}", Uuid::new_v4().simple()));
        if method == reqwest::Method::POST {
            request = request.header("Idempotency-Key", Uuid::new_v4().to_string());
        }
        request
    }

    /// POST `body` with all ACP headers and a chosen `Idempotency-Key` (for replay and conflict tests).
    pub fn acp_post_keyed(&self, path: &str, key: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        agent_post(&format!("http://{}", self.addr), path, key, body)
    }

    /// POST `body` as JSON with all ACP headers.
    pub fn acp_post(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.acp(reqwest::Method::POST, path).json(body)
    }

    /// A request to the admin API, with the admin bearer token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN)
    }

    pub fn acp_get(&self, path: &str) -> reqwest::RequestBuilder {
        self.acp(reqwest::Method::GET, path)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    capture_logs();
    let database = TestDb::migrated().await;
    let settings = test_settings(&database.url, overrides);
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, shutdown.clone()).await.expect("build app");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        state,
        metrics_addr,
        client: http_client(),
        db: database.pool().await,
        shutdown,
        _database: database,
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// The built binary as a child process, with its stdout and stderr captured line by line.
pub struct ChildServer {
    child: Child,
    pub addr: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
}

/// A command for the built binary with a clean environment: no `ACP_*` or `DATABASE_URL` leaks in from the
/// developer's shell, and JSON logs.
pub fn binary(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("ACP_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.env("ACP_LOG_FORMAT", "json");
    cmd.envs(env.iter().copied());
    cmd.kill_on_drop(true);
    cmd
}

impl ChildServer {
    /// Starts `acp-merchant <args>` on 127.0.0.1:0 and waits until it logs the address it listens on.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = binary(args, &[("ACP_LISTEN_ADDR", "127.0.0.1:0")]);
        cmd.envs(env.iter().copied());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn acp-merchant");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        collect_lines(stdout, output.clone(), Some(addr_tx));
        collect_lines(stderr, output.clone(), None);
        let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("server did not start; output:\n{}", output.lock().unwrap().join("\n")));
        Self { child, addr, output }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("child still running")
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit and returns its exit code (None when killed by a signal).
    pub async fn wait(&mut self, within: Duration) -> Option<i32> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("server did not exit in time")
            .expect("wait for server");
        status.code()
    }

    /// Everything the process printed so far, stdout and stderr interleaved by arrival.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }
}

fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    addr_tx: Option<tokio::sync::mpsc::UnboundedSender<SocketAddr>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let (Some(tx), Some(addr)) = (&addr_tx, listening_addr(&line)) {
                let _ = tx.send(addr);
            }
            sink.lock().unwrap().push(line);
        }
    });
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    if json["message"] != "listening" {
        return None;
    }
    json["addr"].as_str()?.parse().ok()
}

/// Polls `check` every 50 ms until it returns true or `within` elapses; returns whether it became true.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every log line the in-process apps of this test binary wrote, at debug level, as the service formats them.
static CAPTURED_LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if let Ok(mut lines) = CAPTURED_LOGS.lock() {
            lines.extend(text.lines().map(str::to_owned));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a JSON subscriber that keeps every line for [`assert_logs_hold_no_tokens`].
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_env_filter("acp_merchant=debug,info")
            .with_writer(|| CaptureWriter)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// No payment token (every test token starts with `spt_`) appears in anything logged so far by any test of this
/// binary, while something was logged at all.
pub fn assert_logs_hold_no_tokens() {
    let lines = CAPTURED_LOGS.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("request completed")),
        "the capture saw no request logs"
    );
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains("spt_")).collect();
    assert!(leaks.is_empty(), "payment tokens reached the logs: {leaks:#?}");
}

/// Whether any in-process app of this test binary logged a line containing every one of `parts`.
pub fn logged(parts: &[&str]) -> bool {
    CAPTURED_LOGS
        .lock()
        .unwrap()
        .iter()
        .any(|line| parts.iter().all(|p| line.contains(p)))
}

/// An agent's POST to any server (in-process or a child process at `base`), with a chosen `Idempotency-Key`.
pub fn agent_post(base: &str, path: &str, key: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(AGENT_KEY)
        .header("API-Version", API_VERSION)
        .header("Idempotency-Key", key)
        .json(body)
}
