//! The compose deployment (compose.yaml + .env.example): the real binary starts, in production mode, with exactly
//! the environment compose gives the `server` and `worker` services once `.env.example`'s values are substituted
//! (the database host and the port are the only things changed: no Docker engine runs here).

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use serde_yaml_ng::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{ChildServer, TestDb, binary, eventually, http_client};

const COMPOSE: &str = include_str!("../../compose.yaml");
const ENV_EXAMPLE: &str = include_str!("../../.env.example");

/// Every secret compose must refuse to start without.
const REQUIRED: &[&str] = &[
    "POSTGRES_PASSWORD",
    "ACP_PUBLIC_BASE_URL",
    "ACP_AGENT_API_KEY",
    "ACP_ADMIN_TOKEN",
    "ACP_SECRETS_KEYS",
    "ACP_ORDER_PAGE_KEY",
    "ACP_ANALYTICS_SALT",
    "ACP_STRIPE_SECRET_KEY",
];

/// `KEY=value` lines of a dotenv file (comments and blank lines skipped).
fn dotenv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Compose's interpolation of `${VAR}`, `${VAR:-default}` and `${VAR:?message}` (an unset or empty VAR with `:?`
/// is an error carrying the message, as `docker compose` reports it).
fn interpolate(value: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {value}"))?
            + start;
        let expr = &rest[start + 2..end];
        let set = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        let replaced = if let Some((name, message)) = expr.split_once(":?") {
            set(name).ok_or_else(|| format!("{name}: {message}"))?
        } else if let Some((name, default)) = expr.split_once(":-") {
            set(name).unwrap_or_else(|| default.to_owned())
        } else {
            vars.get(expr).cloned().unwrap_or_default()
        };
        out.push_str(&replaced);
        rest = &rest[end + 1..];
    }
    assert!(!rest.contains('$'), "unsupported interpolation in {value}");
    out.push_str(rest);
    Ok(out)
}

/// The compose file with its `<<` merge keys applied (compose applies them too).
fn compose() -> Value {
    let mut doc: Value = serde_yaml_ng::from_str(COMPOSE).expect("compose.yaml is YAML");
    doc.apply_merge().expect("merge keys apply");
    doc
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["services"][name]
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("environment values are scalars, not {other:?}"),
    }
}

/// A service's `environment`, interpolated with `vars`.
fn environment(doc: &Value, name: &str, vars: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    let map = service(doc, name)["environment"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{name}: environment is a mapping"));
    map.iter()
        .map(|(k, v)| Ok((scalar(k), interpolate(&scalar(v), vars)?)))
        .collect()
}

fn command(doc: &Value, name: &str) -> Vec<String> {
    service(doc, name)["command"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{name}: command is a list"))
        .iter()
        .map(scalar)
        .collect()
}

/// The service's environment from `.env.example`, pointed at the test database and a free port.
fn runnable_environment(doc: &Value, name: &str, database_url: &str) -> Vec<(String, String)> {
    let mut env = environment(doc, name, &dotenv(ENV_EXAMPLE)).expect(".env.example sets every required variable");
    let compose_db = env.get("DATABASE_URL").cloned().unwrap_or_default();
    assert!(
        compose_db.starts_with("postgres://acp:") && compose_db.contains("@postgres:5432/acp"),
        "{name}: the database is the postgres service: {compose_db}"
    );
    env.insert("DATABASE_URL".into(), database_url.to_owned());
    let listen = env.get("ACP_LISTEN_ADDR").cloned().unwrap_or_default();
    assert_eq!(
        listen, "0.0.0.0:8080",
        "{name}: listens on all interfaces inside its container"
    );
    env.insert("ACP_LISTEN_ADDR".into(), "0.0.0.0:0".into());
    env.into_iter().collect()
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn compose_refuses_to_start_without_any_required_secret() {
    let doc = compose();
    let full = dotenv(ENV_EXAMPLE);
    for service_name in ["server", "worker"] {
        assert!(environment(&doc, service_name, &full).is_ok());
        for name in REQUIRED {
            let mut vars = full.clone();
            vars.remove(*name);
            let err = environment(&doc, service_name, &vars).expect_err(name);
            assert!(err.starts_with(&format!("{name}: set {name}")), "{service_name}: {err}");
        }
    }
    let postgres = &service(&doc, "postgres");
    assert!(postgres["image"].as_str().unwrap().starts_with("postgres:"));
    assert!(postgres["healthcheck"]["test"].is_sequence());
    assert!(postgres["volumes"][0].as_str().unwrap().starts_with("pgdata:"));
    assert_eq!(service(&doc, "server")["build"].as_str(), Some("."));
}

#[tokio::test]
async fn the_server_starts_in_production_with_the_compose_environment() {
    let db = TestDb::empty().await;
    let doc = compose();
    assert_eq!(command(&doc, "server"), ["serve"]);
    let env = runnable_environment(&doc, "server", &db.url);
    let map: BTreeMap<_, _> = env.iter().cloned().collect();
    assert_eq!(map["ACP_ENV"], "production");
    assert_eq!(map["ACP_PSP"], "stripe");
    assert_eq!(
        map["ACP_WEBHOOK_WORKER_ENABLED"], "false",
        "the worker service delivers webhooks"
    );

    let server = ChildServer::start(&["serve"], &pairs(&env)).await;
    let client = http_client();
    let ready = eventually(Duration::from_secs(20), || {
        let url = server.url("/readyz");
        let client = client.clone();
        async move { client.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(ready, "readyz 200; output:\n{}", server.output().join("\n"));
    let output = server.output().join("\n");
    assert!(
        !output.contains("webhook delivery worker started"),
        "no in-process worker: {output}"
    );

    // Production checks are on: the same environment without the proxy setting is refused.
    let mut without_proxy = env.clone();
    without_proxy.retain(|(k, _)| k != "ACP_TLS_TERMINATED_BY_PROXY");
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        binary(&["serve"], &pairs(&without_proxy)).output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(refused.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ACP_TLS_TERMINATED_BY_PROXY"));
}

#[tokio::test]
async fn the_worker_starts_in_production_with_the_compose_environment() {
    let db = TestDb::migrated().await;
    let doc = compose();
    let args = command(&doc, "worker");
    assert_eq!(args, ["worker"]);
    let env = runnable_environment(&doc, "worker", &db.url);
    assert!(env.iter().any(|(k, v)| k == "ACP_ENV" && v == "production"));

    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = binary(&arg_refs, &pairs(&env))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the worker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("webhook delivery worker started") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(started, "the worker logged its start");
    assert!(child.try_wait().unwrap().is_none(), "the worker keeps running");
    child.kill().await.unwrap();
}
