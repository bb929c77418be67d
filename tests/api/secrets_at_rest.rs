//! Secrets at rest: webhook signing secrets are stored sealed (never in clear), open only with the configured key
//! and in their own place, clear rows left by an older version are sealed at start-up, and `secrets rotate`
//! re-seals under a new key without breaking deliveries.

use std::{sync::Arc, time::Duration};

use acp_merchant::{
    secrets::{
        Keyring, SecretsError,
        store::{AGENT_WEBHOOK_SECRET, REQUEST_SIGNATURE_HMAC_SECRET, ROTATED_WEBHOOK_SECRET},
    },
    startup::Application,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::webhook_receiver::WebhookReceiver;
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::{API_VERSION, TestApp, TestDb, binary, eventually, spawn_app_with, test_settings},
    lifecycle::{TEE, create_body, payment, session},
};

const KEY_A: &str = "ka:a2V5LWEtMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODk=";
const KEY_B: &str = "kb:a2V5LWItMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODk=";
/// Same id as KEY_A, other key material.
const KEY_A_IMPOSTOR: &str = "ka:aW1wb3N0b3ItMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY=";
const AGENT_SECRET: &str = "whsec_agent_row_secret_0123456789";
const ROTATED_SECRET: &str = "whsec_rotated_secret_abcdefghij";
const SIGNING_SECRET: &str = "hmac_request_signing_secret_0123456789";

fn keyring(value: &str) -> Keyring {
    Keyring::parse(value).expect("valid test keyring")
}

/// Registers an agent through the admin API; returns (agent_id, api_key).
async fn register_agent(app: &TestApp, webhook_url: &str, secret: &str) -> (String, String) {
    let r = app
        .admin(Method::POST, "/admin/agents")
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"name": "Sealed agent", "webhook_url": webhook_url, "webhook_secret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let agent: Value = r.json().await.unwrap();
    (
        agent["agent_id"].as_str().unwrap().to_owned(),
        agent["api_key"].as_str().unwrap().to_owned(),
    )
}

/// Every row of `table`, as PostgreSQL renders the whole row in text.
async fn raw_rows(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select t::text from \"{table}\" t")))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn stored(pool: &PgPool, sql: &'static str, agent_id: &str) -> String {
    sqlx::query_scalar(sql).bind(agent_id).fetch_one(pool).await.unwrap()
}

async fn agent_secret(pool: &PgPool, agent_id: &str) -> String {
    stored(pool, "select webhook_secret from agent where agent_id = $1", agent_id).await
}

async fn rotated_secret(pool: &PgPool, agent_id: &str) -> String {
    stored(
        pool,
        "select secret from agent_webhook_secret where agent_id = $1",
        agent_id,
    )
    .await
}

#[tokio::test]
async fn no_api_key_or_webhook_secret_is_stored_in_clear_and_only_the_configured_key_opens_them() {
    let app = spawn_app_with(&[("secrets_keys", KEY_A)]).await;
    let (agent_id, api_key) = register_agent(&app, "https://agent.example.com/hooks", AGENT_SECRET).await;
    let r = app
        .admin(Method::POST, "/admin/webhooks/secret")
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"agent_id": agent_id, "secret": ROTATED_SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .admin(Method::PUT, &format!("/admin/agents/{agent_id}/signature"))
        .json(&json!({"mode": "required", "algorithm": "hmac-sha256", "hmac_secret": SIGNING_SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Every row of every table (idempotency records included), with bytea columns in PostgreSQL's hex form.
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables
         where table_schema = 'public' and table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "agent_webhook_secret"), "{tables:?}");
    let mut rows = Vec::new();
    for table in &tables {
        rows.extend(raw_rows(&app.db, table).await);
    }
    assert!(
        rows.iter().any(|row| row.contains(&agent_id)),
        "the agent's rows were read"
    );
    for clear in [api_key.as_str(), AGENT_SECRET, ROTATED_SECRET, SIGNING_SECRET] {
        let hex: String = clear.bytes().map(|b| format!("{b:02x}")).collect();
        let leaks: Vec<&String> = rows
            .iter()
            .filter(|row| row.contains(clear) || row.contains(&hex))
            .collect();
        assert!(leaks.is_empty(), "a secret is stored in clear: {leaks:#?}");
    }

    let in_agent = agent_secret(&app.db, &agent_id).await;
    let in_rotation = rotated_secret(&app.db, &agent_id).await;
    assert!(in_agent.starts_with("v1:ka:") && in_rotation.starts_with("v1:ka:"));
    let in_signing = stored(
        &app.db,
        "select hmac_secret from agent_request_signature where agent_id = $1",
        &agent_id,
    )
    .await;
    assert!(in_signing.starts_with("v1:ka:"), "{in_signing}");
    let configured = keyring(KEY_A);
    assert_eq!(
        configured.open(AGENT_WEBHOOK_SECRET, &in_agent).unwrap().expose(),
        AGENT_SECRET
    );
    assert_eq!(
        configured
            .open(REQUEST_SIGNATURE_HMAC_SECRET, &in_signing)
            .unwrap()
            .expose(),
        SIGNING_SECRET
    );
    assert!(keyring(KEY_B).open(REQUEST_SIGNATURE_HMAC_SECRET, &in_signing).is_err());
    assert_eq!(
        configured.open(ROTATED_WEBHOOK_SECRET, &in_rotation).unwrap().expose(),
        ROTATED_SECRET
    );
    // Another key: not configured, or the same id with other material, or the right key in the wrong place.
    assert_eq!(
        keyring(KEY_B).open(AGENT_WEBHOOK_SECRET, &in_agent),
        Err(SecretsError::UnknownKey("ka".into()))
    );
    assert!(matches!(
        keyring(KEY_A_IMPOSTOR).open(AGENT_WEBHOOK_SECRET, &in_agent),
        Err(SecretsError::Undecryptable { .. })
    ));
    assert!(matches!(
        configured.open(ROTATED_WEBHOOK_SECRET, &in_agent),
        Err(SecretsError::Undecryptable { .. })
    ));
}

#[tokio::test]
async fn clear_secrets_present_before_start_up_are_sealed_by_start_up() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::query(
        "insert into agent (agent_id, name, api_key_sha256, webhook_secret)
         values ('agent_legacy', 'Legacy', sha256('legacy-key'::bytea), $1)",
    )
    .bind(AGENT_SECRET)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("insert into agent_webhook_secret (agent_id, secret) values ('agent_legacy', $1)")
        .bind(ROTATED_SECRET)
        .execute(&pool)
        .await
        .unwrap();

    let settings = test_settings(&db.url, &[("migrate_on_start", "true"), ("secrets_keys", KEY_A)]);
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, shutdown.clone()).await.unwrap();
    let running = tokio::spawn(app.run_until_stopped());
    let sealed = eventually(Duration::from_secs(10), || async {
        Keyring::is_sealed(&agent_secret(&pool, "agent_legacy").await)
            && Keyring::is_sealed(&rotated_secret(&pool, "agent_legacy").await)
    })
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert!(sealed, "start-up sealed the clear rows");

    let configured = keyring(KEY_A);
    let in_agent = agent_secret(&pool, "agent_legacy").await;
    assert_eq!(
        configured.open(AGENT_WEBHOOK_SECRET, &in_agent).unwrap().expose(),
        AGENT_SECRET
    );
    let in_rotation = rotated_secret(&pool, "agent_legacy").await;
    assert_eq!(
        configured.open(ROTATED_WEBHOOK_SECRET, &in_rotation).unwrap().expose(),
        ROTATED_SECRET
    );
    // Idempotent: a second pass leaves sealed rows alone.
    let again = acp_merchant::secrets::store::seal_clear_rows(&pool, &configured)
        .await
        .unwrap();
    assert_eq!(again.sealed_from_clear, 0);
    assert_eq!(agent_secret(&pool, "agent_legacy").await, in_agent);
    pool.close().await;
}

async fn rotate(database_url: &str, keys: &str) -> (Option<i32>, String, String) {
    let env = [
        ("ACP_ENV", "development"),
        ("ACP_PSP", "simulator"),
        ("DATABASE_URL", database_url),
        ("ACP_SECRETS_KEYS", keys),
    ];
    let output = tokio::time::timeout(Duration::from_secs(30), binary(&["secrets", "rotate"], &env).output())
        .await
        .expect("rotate finished")
        .expect("rotate ran");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn secrets_rotate_reseals_under_the_new_key_and_deliveries_still_verify() {
    let receiver = WebhookReceiver::start(AGENT_SECRET, Arc::new(|_: &Value| Ok(()))).await;
    // This app takes the orders; its worker is off so that only the app restarted with the new key delivers.
    let app = spawn_app_with(&[("secrets_keys", KEY_A), ("webhook_worker_enabled", "false")]).await;
    let (agent_id, api_key) = register_agent(&app, &receiver.base_url(), AGENT_SECRET).await;
    let database_url = app.state.settings.database_url.clone().unwrap();

    // Step 1 of a rotation: the new key first, the old one still listed; then `secrets rotate`.
    let rotated_keys = format!("{KEY_B},{KEY_A}");
    let (code, stdout, stderr) = rotate(database_url.expose(), &rotated_keys).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("re-sealed 1 secrets with key `kb`"), "{stdout}");
    let in_agent = agent_secret(&app.db, &agent_id).await;
    assert!(in_agent.starts_with("v1:kb:"), "{in_agent}");
    assert_eq!(
        keyring(KEY_B).open(AGENT_WEBHOOK_SECRET, &in_agent).unwrap().expose(),
        AGENT_SECRET
    );

    // A row sealed with a key no longer configured fails the whole rotation, naming the key; nothing changes.
    let (code, _, stderr) = rotate(database_url.expose(), KEY_A).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("`kb`"), "{stderr}");
    assert_eq!(agent_secret(&app.db, &agent_id).await, in_agent);

    // The service restarted with the new key (old one removed) delivers the agent's order, signed verifiably.
    let settings = test_settings(
        database_url.expose(),
        &[
            ("secrets_keys", KEY_B),
            ("webhook_poll_interval_ms", "25"),
            ("webhook_retry_schedule_ms", "100"),
        ],
    );
    let shutdown = CancellationToken::new();
    let restarted = Application::build(settings, shutdown.clone()).await.unwrap();
    let running = tokio::spawn(restarted.run_until_stopped());
    let s = session(
        app.acp_as(Method::POST, "/checkout_sessions", &api_key, API_VERSION)
            .json(&create_body(json!([{"id": TEE}])))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let path = format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap());
    let r = app
        .acp_as(Method::POST, &path, &api_key, API_VERSION)
        .json(&payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::OK).await;
    let delivered = receiver
        .wait_until(Duration::from_secs(10), |d| d.iter().any(|d| d.answered == 200))
        .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert!(delivered, "deliveries: {:?}", receiver.deliveries().len());
    assert!(receiver.deliveries().iter().all(|d| d.signature_valid));
}
