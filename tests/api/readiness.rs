//! The server starts while its database is down, reports not-ready, and recovers by itself.

use std::time::Duration;

use acp_merchant::{localdb, startup::Application};
use tokio_util::sync::CancellationToken;

use crate::helpers::{eventually, http_client, test_settings};

/// A cluster of its own, because this test stops and starts it.
const CLUSTER: &str = "test-outage";

#[tokio::test]
async fn readyz_recovers_when_a_stopped_database_starts() {
    let admin = tokio::task::spawn_blocking(|| localdb::cluster_url(CLUSTER))
        .await
        .unwrap()
        .unwrap();
    // A fresh database each run, so recovery also has to apply the migrations.
    let name = format!("outage_{}", uuid::Uuid::new_v4().simple());
    localdb::ensure_database(&admin, &name).await.unwrap();
    let url = localdb::with_database(&admin, &name);
    tokio::task::spawn_blocking(|| localdb::stop_cluster(CLUSTER))
        .await
        .unwrap()
        .unwrap();

    let settings = test_settings(
        &url,
        &[
            ("migrate_on_start", "true"),
            ("db_retry_interval_ms", "100"),
            ("db_acquire_timeout_ms", "500"),
        ],
    );
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, shutdown.clone())
        .await
        .expect("starts without a database");
    let readyz = format!("http://{}/readyz", app.local_addr());
    tokio::spawn(app.run_until_stopped());
    let client = http_client();

    let down = client.get(&readyz).send().await.unwrap();
    assert_eq!(down.status(), 503);
    let body: serde_json::Value = down.json().await.unwrap();
    assert_eq!(body["reason"], "database unreachable");
    let healthz = client.get(readyz.replace("readyz", "healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200, "the process itself is alive");

    tokio::task::spawn_blocking(|| localdb::start_cluster(CLUSTER))
        .await
        .unwrap()
        .unwrap();
    let recovered = eventually(Duration::from_secs(15), || async {
        client
            .get(&readyz)
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    assert!(recovered, "readyz did not recover after the database started");
    shutdown.cancel();

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .execute(&mut conn)
    .await
    .ok();
}
