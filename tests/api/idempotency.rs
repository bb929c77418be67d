//! Idempotency (ACP §6) on real PostgreSQL and real HTTP, including several processes and a crash mid-payment.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{
        AGENT_KEY, API_VERSION, ChildServer, TestApp, TestDb, agent_post, eventually, spawn_app, spawn_app_with,
    },
    lifecycle::{TEE, count, create, create_body, error, payment, session},
};

const MAP_PACK_JSON_ORDER_A: &str = r#"{"currency":"usd","line_items":[{"id":"var_trail_tee_m_blue","quantity":1}],
  "fulfillment_details":{"address":{"name":"Jane Buyer","line_one":"1 Main St","city":"Springfield","state":"IL",
  "country":"US","postal_code":"62701"}}}"#;
/// The same body: other key order, whitespace, and `1.0` for `1`.
const MAP_PACK_JSON_ORDER_B: &str = r#"{ "fulfillment_details" : {"address":{"postal_code":"62701","country":"US",
  "state":"IL","city":"Springfield","line_one":"1 Main St","name":"Jane Buyer"}},
  "line_items": [ {"quantity": 1.0, "id": "var_trail_tee_m_blue"} ], "currency": "usd" }"#;

async fn post_raw(app: &TestApp, path: &str, key: &str, body: &str) -> Response {
    app.client
        .post(app.url(path))
        .bearer_auth(AGENT_KEY)
        .header("API-Version", API_VERSION)
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replay_returns_the_original_status_and_body_without_side_effects() {
    let app = spawn_app().await;
    let first = post_raw(&app, "/checkout_sessions", "k-replay", MAP_PACK_JSON_ORDER_A).await;
    assert_eq!(first.status(), StatusCode::CREATED, "{:?}", first.text().await);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.bytes().await.unwrap();

    let again = post_raw(&app, "/checkout_sessions", "k-replay", MAP_PACK_JSON_ORDER_B).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["idempotency-key"], "k-replay");
    assert_eq!(again.bytes().await.unwrap(), first_body, "byte-identical body");
    assert_eq!(count(&app, "checkout_session").await, 1, "no new session");

    // Complete: the replay neither charges nor orders again.
    let id: Value = serde_json::from_slice(&first_body).unwrap();
    let path = format!("/checkout_sessions/{}/complete", id["id"].as_str().unwrap());
    let paid = app
        .acp_post_keyed(&path, "k-pay", &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    let paid_body = session(paid, StatusCode::OK).await;
    let replayed = app
        .acp_post_keyed(&path, "k-pay", &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(session(replayed, StatusCode::OK).await, paid_body);
    assert_eq!(count(&app, "simulator_charge").await, 1);
    assert_eq!(count(&app, "merchant_order").await, 1);
    crate::helpers::assert_logs_hold_no_tokens();
}

#[tokio::test]
async fn four_hundreds_are_stored_and_replayed_too() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": "no_such_item"}]));
    let first = app
        .acp_post_keyed("/checkout_sessions", "k-4xx", &body)
        .send()
        .await
        .unwrap();
    error(first, StatusCode::BAD_REQUEST, "invalid_item_id", None).await;
    let again = app
        .acp_post_keyed("/checkout_sessions", "k-4xx", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    error(again, StatusCode::BAD_REQUEST, "invalid_item_id", None).await;
}

#[tokio::test]
async fn a_different_body_under_the_same_key_is_a_conflict() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}, {"id": "var_camp_mug_navy"}])).await;
    let path = format!("/checkout_sessions/{}", created["id"].as_str().unwrap());

    let first = app
        .acp_post_keyed(&path, "k-null", &json!({"order_notes": null}))
        .send()
        .await
        .unwrap();
    session(first, StatusCode::OK).await;
    let absent = app.acp_post_keyed(&path, "k-null", &json!({})).send().await.unwrap();
    error(absent, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_conflict", None).await;

    let ordered = json!({"line_items": [{"id": TEE}, {"id": "var_camp_mug_navy"}]});
    let reordered = json!({"line_items": [{"id": "var_camp_mug_navy"}, {"id": TEE}]});
    session(
        app.acp_post_keyed(&path, "k-array", &ordered).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let r = app.acp_post_keyed(&path, "k-array", &reordered).send().await.unwrap();
    error(r, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_conflict", None).await;

    let r = app
        .acp_post_keyed("/checkout_sessions", "k-array", &create_body(json!([{"id": TEE}])))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::CREATED).await;
}

#[tokio::test]
async fn keys_are_scoped_to_endpoint_and_session() {
    let app = spawn_app().await;
    let a = session(
        app.acp_post_keyed("/checkout_sessions", "shared", &create_body(json!([{"id": TEE}])))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let b = create(&app, json!([{"id": TEE}])).await;
    let body = json!({"line_items": [{"id": TEE, "quantity": 2}]});
    for s in [&a, &b] {
        let path = format!("/checkout_sessions/{}", s["id"].as_str().unwrap());
        let r = app.acp_post_keyed(&path, "shared", &body).send().await.unwrap();
        assert!(
            r.headers().get("idempotent-replayed").is_none(),
            "independent per session"
        );
        assert_eq!(session(r, StatusCode::OK).await["line_items"][0]["quantity"], 2);
    }
    let cancel = format!("/checkout_sessions/{}/cancel", a["id"].as_str().unwrap());
    let r = app.acp_post_keyed(&cancel, "shared", &json!({})).send().await.unwrap();
    assert_eq!(session(r, StatusCode::OK).await["status"], "canceled");
}

#[tokio::test]
async fn key_length_is_checked() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}]));
    let long = "k".repeat(256);
    let r = app
        .acp_post_keyed("/checkout_sessions", &long, &body)
        .send()
        .await
        .unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.headers['Idempotency-Key']"),
    )
    .await;
    let ok = "k".repeat(255);
    session(
        app.acp_post_keyed("/checkout_sessions", &ok, &body)
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn fifty_concurrent_creates_with_one_key_make_one_session() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}]));
    let requests = (0..50).map(|_| app.acp_post_keyed("/checkout_sessions", "k-50", &body).send());
    let responses = futures_join_all(requests).await;
    let mut created = 0;
    for r in responses {
        let r = r.unwrap();
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                assert!(r.headers().get("retry-after").is_some());
                error(r, StatusCode::CONFLICT, "idempotency_in_flight", None).await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(created >= 1);
    assert_eq!(count(&app, "checkout_session").await, 1);
}

#[tokio::test]
async fn fifty_concurrent_completes_with_one_key_charge_once() {
    let app = spawn_app().await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let path = format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap());
    let body = payment("spt_sim_ok");
    let responses = futures_join_all((0..50).map(|_| app.acp_post_keyed(&path, "k-pay-50", &body).send())).await;
    for r in responses {
        let status = r.unwrap().status();
        assert!(status == StatusCode::OK || status == StatusCode::CONFLICT, "{status}");
    }
    assert_eq!(count(&app, "simulator_charge").await, 1);
    assert_eq!(count(&app, "merchant_order").await, 1);
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_5xx_is_not_stored_and_the_retry_runs_fresh() {
    let app = spawn_app().await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let path = format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap());
    let body = payment("spt_sim_unavailable_once");
    let failed = app.acp_post_keyed(&path, "k-5xx", &body).send().await.unwrap();
    assert!(failed.headers().get("retry-after").is_some());
    error(failed, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", None).await;
    let got = session(
        app.acp_get(&format!("/checkout_sessions/{}", s["id"].as_str().unwrap()))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        got["status"], "ready_for_payment",
        "the session is intact after the PSP failure"
    );

    let retried = app.acp_post_keyed(&path, "k-5xx", &body).send().await.unwrap();
    assert!(
        retried.headers().get("idempotent-replayed").is_none(),
        "processed fresh, not replayed"
    );
    assert_eq!(session(retried, StatusCode::OK).await["status"], "completed");
    assert_eq!(count(&app, "simulator_charge").await, 1);
}

#[tokio::test]
async fn expired_keys_are_swept_and_then_new() {
    let app = spawn_app_with(&[
        ("idempotency_retention_secs", "1"),
        ("idempotency_sweep_interval_ms", "200"),
    ])
    .await;
    let r = app
        .acp_post_keyed("/checkout_sessions", "k-old", &create_body(json!([{"id": TEE}])))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::CREATED).await;
    let swept = eventually(Duration::from_secs(2), || async {
        count(&app, "idempotency_record").await == 0
    })
    .await;
    assert!(swept, "the sweeper removed the expired key");
    // A different body under the old key is a new request now, not a conflict.
    let r = app
        .acp_post_keyed(
            "/checkout_sessions",
            "k-old",
            &create_body(json!([{"id": "var_camp_mug_navy"}])),
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("idempotent-replayed").is_none());
    session(r, StatusCode::CREATED).await;
    assert_eq!(count(&app, "checkout_session").await, 2);
}

fn child_env(db: &TestDb, extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("ACP_ENV", "development".to_owned()),
        ("ACP_PSP", "simulator".to_owned()),
        ("DATABASE_URL", db.url.clone()),
        ("ACP_AGENT_API_KEY", AGENT_KEY.to_owned()),
        ("ACP_MIGRATE_ON_START", "false".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

async fn start_child(env: &[(&'static str, String)]) -> ChildServer {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ChildServer::start(&["serve"], &pairs).await
}

fn child_post(server: &ChildServer, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
    agent_post(&server.url(""), path, key, body)
}

async fn rows(db: &TestDb, table: &str) -> i64 {
    let pool = db.pool().await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_processes_on_one_database_charge_once() {
    let db = TestDb::migrated().await;
    let env = child_env(&db, &[]);
    let (mut one, mut two) = (start_child(&env).await, start_child(&env).await);
    let created = child_post(
        &one,
        "/checkout_sessions",
        "k-create",
        &create_body(json!([{"id": TEE}])),
    )
    .send()
    .await
    .unwrap();
    let created = session(created, StatusCode::CREATED).await;
    let path = format!("/checkout_sessions/{}/complete", created["id"].as_str().unwrap());
    let body = payment("spt_sim_ok");
    let sends: Vec<_> = (0..20)
        .map(|i| child_post(if i % 2 == 0 { &one } else { &two }, &path, "k-dup", &body).send())
        .collect();
    for r in futures_join_all(sends.into_iter()).await {
        let status = r.unwrap().status();
        assert!(status == StatusCode::OK || status == StatusCode::CONFLICT, "{status}");
    }
    assert_eq!(rows(&db, "simulator_charge").await, 1);
    assert_eq!(rows(&db, "merchant_order").await, 1);
    for server in [&mut one, &mut two] {
        server.signal("TERM");
        server.wait(Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn a_crash_after_the_charge_resumes_without_charging_again() {
    let db = TestDb::migrated().await;
    // A short lease so the restarted server may take the crashed request over quickly.
    let env = child_env(
        &db,
        &[
            ("ACP_IDEMPOTENCY_LEASE_MS", "300"),
            ("ACP_IDEMPOTENCY_HEARTBEAT_MS", "100"),
        ],
    );
    let mut server = start_child(&env).await;
    let created = child_post(&server, "/checkout_sessions", "k-c", &create_body(json!([{"id": TEE}])))
        .send()
        .await
        .unwrap();
    let created = session(created, StatusCode::CREATED).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/checkout_sessions/{id}/complete");
    let body = payment("spt_sim_hold");

    // The charge commits at the simulator, which then holds its answer: the server waits mid-payment.
    let in_flight = tokio::spawn(child_post(&server, &path, "k-crash", &body).send());
    assert!(
        eventually(Duration::from_secs(5), || async {
            rows(&db, "simulator_charge").await == 1
        })
        .await
    );
    server.signal("KILL");
    assert_eq!(server.wait(Duration::from_secs(5)).await, None, "killed by the signal");
    assert!(in_flight.await.unwrap().is_err(), "the client lost its connection");
    assert_eq!(
        rows(&db, "merchant_order").await,
        0,
        "the crash happened before the order"
    );

    let mut restarted = start_child(&env).await;
    // Retry until the dead holder's lease has run out (409 until then), as an agent would.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let r = child_post(&restarted, &path, "k-crash", &body).send().await.unwrap();
        if r.status() != StatusCode::CONFLICT {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry was never allowed to resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let completed = session(answer, StatusCode::OK).await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(rows(&db, "simulator_charge").await, 1, "exactly one charge");
    assert_eq!(rows(&db, "merchant_order").await, 1, "exactly one order");
    let output = restarted.output().join("\n");
    assert!(output.contains("resuming a request"), "{output}");
    restarted.signal("TERM");
    restarted.wait(Duration::from_secs(10)).await;
}
