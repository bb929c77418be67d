//! The binary's command line: configuration errors, production safety, `migrate` and `healthcheck`.

use std::time::Duration;

use crate::helpers::{AGENT_KEY, ChildServer, TestDb, binary, spawn_app};

const PROD_ADMIN_TOKEN: &str = "prod_admin_token_0123456789abcdef";

async fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(Duration::from_secs(30), binary(args, env).output())
        .await
        .expect("command finished")
        .expect("command ran");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn version_and_help_exit_zero() {
    let (code, _) = run(&["--version"], &[]).await;
    assert_eq!(code, Some(0));
    let (code, _) = run(&["--help"], &[]).await;
    assert_eq!(code, Some(0));
    let (code, _) = run(&["no-such-command"], &[]).await;
    assert_eq!(code, Some(2));
}

#[tokio::test]
async fn malformed_listen_addr_stops_serve_with_one_clear_line() {
    let (code, stderr) = run(
        &["serve"],
        &[
            ("ACP_ENV", "development"),
            ("ACP_PSP", "simulator"),
            ("ACP_LISTEN_ADDR", "nowhere:eighty"),
        ],
    )
    .await;
    assert_eq!(code, Some(78));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ACP_LISTEN_ADDR"), "{stderr}");
    assert!(stderr.contains("nowhere:eighty"), "{stderr}");
}

#[tokio::test]
async fn malformed_number_and_enum_settings_are_named() {
    let base = [("ACP_ENV", "development"), ("ACP_PSP", "simulator")];
    for (key, value) in [
        ("ACP_DB_MAX_CONNECTIONS", "many"),
        ("ACP_LOG_FORMAT", "xml"),
        ("ACP_PSP", "paypal"),
    ] {
        let mut env = base.to_vec();
        env.push((key, value));
        let (code, stderr) = run(&["serve"], &env).await;
        assert_eq!(code, Some(78), "{key}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}

fn production_env(database_url: &str) -> Vec<(&str, &str)> {
    vec![
        ("DATABASE_URL", database_url),
        ("ACP_AGENT_API_KEY", AGENT_KEY),
        ("ACP_ADMIN_TOKEN", PROD_ADMIN_TOKEN),
        ("ACP_PSP", "simulator"),
        ("ACP_SECRETS_KEYS", crate::helpers::PROD_SECRETS_KEYS),
        ("ACP_ANALYTICS_SALT", crate::helpers::PROD_ANALYTICS_SALT),
        ("ACP_ORDER_PAGE_KEY", crate::helpers::PROD_ORDER_PAGE_KEY),
    ]
}

#[tokio::test]
async fn production_refuses_the_simulator_unless_explicitly_allowed() {
    let db = TestDb::migrated().await;
    let (code, stderr) = run(&["serve"], &production_env(&db.url)).await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("ACP_PSP"), "{stderr}");
    assert!(stderr.contains("ACP_ALLOW_SIMULATOR_IN_PRODUCTION"), "{stderr}");

    let mut env = production_env(&db.url);
    env.push(("ACP_ALLOW_SIMULATOR_IN_PRODUCTION", "true"));
    let mut server = ChildServer::start(&["serve"], &env).await;
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn production_refuses_plain_http_on_a_public_address() {
    let db = TestDb::migrated().await;
    let mut env = production_env(&db.url);
    env.extend([
        ("ACP_ALLOW_SIMULATOR_IN_PRODUCTION", "true"),
        ("ACP_LISTEN_ADDR", "0.0.0.0:0"),
    ]);
    let (code, stderr) = run(&["serve"], &env).await;
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("ACP_LISTEN_ADDR") && stderr.contains("ACP_TLS_TERMINATED_BY_PROXY"),
        "{stderr}"
    );
}

#[tokio::test]
async fn config_file_layers_between_defaults_and_environment() {
    let dir = std::env::temp_dir().join(format!("acp-cfg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acp.toml");
    std::fs::write(
        &file,
        "env = \"development\"\npsp = \"simulator\"\nlisten_addr = \"bad-from-file\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    // The file's value is used when the environment is silent...
    let (code, stderr) = run(&["serve", "--config", path], &[]).await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("bad-from-file"), "{stderr}");
    // ...and the environment wins over the file.
    let (code, stderr) = run(&["serve"], &[("ACP_CONFIG", path), ("ACP_LISTEN_ADDR", "bad-from-env")]).await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("bad-from-env"), "{stderr}");
    // A missing file is a configuration error, not a silent default.
    let (code, stderr) = run(&["serve", "--config", "/nonexistent/acp.toml"], &[]).await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("ACP_CONFIG"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn migrate_applies_the_schema_to_an_empty_database() {
    let db = TestDb::empty().await;
    // `migrate` runs with production defaults, so it validates the production settings too.
    let mut env = production_env(&db.url);
    env.push(("ACP_ALLOW_SIMULATOR_IN_PRODUCTION", "true"));
    let (code, stderr) = run(&["migrate"], &env).await;
    assert_eq!(code, Some(0), "{stderr}");
    let pool = db.pool().await;
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, acp_merchant::db::MIGRATOR.iter().count());
}

#[tokio::test]
async fn healthcheck_reflects_whether_the_server_answers() {
    let app = spawn_app().await;
    let addr = app.addr.to_string();
    let (code, _) = run(&["healthcheck", "--addr", &addr], &[]).await;
    assert_eq!(code, Some(0));
    let (code, _) = run(&["healthcheck"], &[("ACP_LISTEN_ADDR", &addr)]).await;
    assert_eq!(code, Some(0));

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (code, _) = run(&["healthcheck", "--addr", &closed], &[]).await;
    assert_eq!(code, Some(1));
}

#[tokio::test]
async fn catalog_import_and_export_from_the_command_line() {
    let db = TestDb::empty().await;
    let mut env = production_env(&db.url);
    env.push(("ACP_ALLOW_SIMULATOR_IN_PRODUCTION", "true"));
    let (code, stderr) = run(
        &[
            "catalog",
            "import",
            "config/demo-catalog.jsonl",
            "--attributes",
            "config/demo-catalog.attributes.jsonl",
        ],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("imported 12 products"), "{stderr}");
    let pool = db.pool().await;
    let limit: Option<i32> =
        sqlx::query_scalar("select max_quantity_per_order from variant where variant_id = 'var_headlamp_pro'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(limit, Some(2));

    let output = binary(&["catalog", "export"], &env).output().await.unwrap();
    assert!(output.status.success());
    let exported: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let original: Vec<serde_json::Value> = include_str!("../../config/demo-catalog.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), original.len());
    for product in &original {
        assert!(exported.contains(product), "export lost or changed {}", product["id"]);
    }

    let (code, stderr) = run(&["catalog", "import", "/nonexistent.jsonl"], &env).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot read"), "{stderr}");
}
