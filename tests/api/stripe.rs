//! The Stripe adapter against the stateful fake Stripe (test-support): every completed session has exactly one
//! successful PaymentIntent, and every field Stripe receives is checked.

use std::time::Duration;

use acp_merchant::{
    config::Settings,
    psp::{PaymentProvider, stripe::Stripe},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::fake_stripe::FakeStripe;

use crate::{
    helpers::{AGENT_KEY, ChildServer, TestApp, TestDb, agent_post, spawn_app_with, test_settings},
    lifecycle::{TEE, count, create, create_body, error, payment, session},
    shared::intent_posts,
};

pub const SECRET: &str = "sk_test_fake_0123456789";

pub fn token(kind: &str) -> String {
    format!("spt_{kind}_{}", uuid::Uuid::new_v4().simple())
}

pub async fn stripe_app(fake: &FakeStripe, extra: &[(&str, &str)]) -> TestApp {
    let base = fake.base_url();
    let mut pairs = vec![
        ("psp", "stripe"),
        ("stripe_secret_key", SECRET),
        ("stripe_api_base", base.as_str()),
        ("stripe_timeout_ms", "1000"),
        ("stripe_retry_backoff_ms", "20"),
    ];
    pairs.extend_from_slice(extra);
    spawn_app_with(&pairs).await
}

fn succeeded_intents(fake: &FakeStripe) -> Vec<Value> {
    fake.payment_intents()
        .into_iter()
        .filter(|pi| pi["status"] == "succeeded")
        .collect()
}

async fn complete(app: &TestApp, id: &str, token: &str) -> reqwest::Response {
    app.acp_post(&format!("/checkout_sessions/{id}/complete"), &payment(token))
        .send()
        .await
        .unwrap()
}

async fn order_charge(app: &TestApp, session_id: &str) -> Option<String> {
    sqlx::query_scalar("select psp_charge_id from merchant_order where checkout_session_id = $1")
        .bind(session_id)
        .fetch_optional(&app.db)
        .await
        .unwrap()
        .flatten()
}

#[tokio::test]
async fn happy_path_sends_one_complete_payment_intent() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let id = s["id"].as_str().unwrap();
    let spt = token("ok");
    let done = session(complete(&app, id, &spt).await, StatusCode::OK).await;
    assert_eq!(done["status"], "completed");

    let posts = intent_posts(&fake);
    assert_eq!(posts.len(), 1);
    let sent = &posts[0];
    assert!(sent.authorization_ok);
    assert_eq!(sent.stripe_version.as_deref(), Some("2026-04-22.preview"));
    assert!(sent.idempotency_key.as_deref().is_some_and(|k| k.starts_with("acp_")));
    let p = &sent.params;
    assert_eq!(
        p["amount"],
        s["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "total")
            .unwrap()["amount"]
            .to_string()
    );
    assert_eq!(p["currency"], "usd");
    assert_eq!(p["confirm"], "true");
    assert_eq!(p["payment_method_data[shared_payment_granted_token]"], spt);
    assert_eq!(p["metadata[checkout_session_id]"], id);
    assert_eq!(p["metadata[order_reference]"], done["order"]["id"].as_str().unwrap());
    assert_eq!(p["metadata[source]"], "chat_to_checkout");
    assert_eq!(p["metadata[agent_id]"], "agent_default");
    assert!(!p.contains_key("capture_method"));

    let succeeded = succeeded_intents(&fake);
    assert_eq!(succeeded.len(), 1);
    assert_eq!(order_charge(&app, id).await.as_deref(), succeeded[0]["id"].as_str());
    crate::helpers::assert_logs_hold_no_tokens();
}

#[tokio::test]
async fn the_older_top_level_token_parameter_is_selectable() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[("stripe_token_param", "top_level")]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let spt = token("ok");
    session(complete(&app, s["id"].as_str().unwrap(), &spt).await, StatusCode::OK).await;
    let p = &intent_posts(&fake)[0].params;
    assert_eq!(p["shared_payment_granted_token"], spt);
    assert!(!p.contains_key("payment_method_data[shared_payment_granted_token]"));
}

#[tokio::test]
async fn a_decline_keeps_the_session_payable_and_a_new_token_succeeds() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let id = s["id"].as_str().unwrap();
    let declined = session(complete(&app, id, &token("insufficient")).await, StatusCode::OK).await;
    assert_eq!(declined["status"], "ready_for_payment");
    let m = crate::lifecycle::message(&declined, "code", "payment_declined");
    assert_eq!(m["resolution"], "recoverable");
    assert!(m["content"].as_str().unwrap().contains("insufficient funds"));
    assert_eq!(count(&app, "merchant_order").await, 0);

    let done = session(complete(&app, id, &token("ok")).await, StatusCode::OK).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(intent_posts(&fake).len(), 2);
    assert_eq!(succeeded_intents(&fake).len(), 1);
    assert_eq!(count(&app, "merchant_order").await, 1);
}

fn authenticated(spt: &str, cryptogram: &str) -> Value {
    let mut body = payment(spt);
    body["authentication_result"] = json!({"outcome": "authenticated", "outcome_details": {
        "three_ds_cryptogram": cryptogram, "electronic_commerce_indicator": "05",
        "transaction_id": "f38e6948-5388-41a6-bca4-b49723c19437", "version": "2.2.0"}});
    body
}

#[tokio::test]
async fn three_ds_required_then_authenticated_completes() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let id = s["id"].as_str().unwrap();
    let spt = token("3ds");
    let pending = session(complete(&app, id, &spt).await, StatusCode::OK).await;
    assert_eq!(pending["status"], "authentication_required");
    assert_eq!(
        pending["authentication_metadata"]["acquirer_details"]["acquirer_bin"],
        "424242"
    );
    assert_eq!(pending["authentication_metadata"]["directory_server"], "visa");

    let path = format!("/checkout_sessions/{id}/complete");
    let r = app.acp_post(&path, &payment(&spt)).send().await.unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "requires_3ds",
        Some("$.authentication_result"),
    )
    .await;

    let cryptogram = "AAIBBYNoEwAAACcKhAJkdQAAAAA=";
    let done = session(
        app.acp_post(&path, &authenticated(&spt, cryptogram))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(done["status"], "completed");
    let posts = intent_posts(&fake);
    assert_eq!(posts.len(), 2);
    let p = &posts[1].params;
    assert_eq!(
        p["payment_method_options[card][three_d_secure][cryptogram]"],
        cryptogram
    );
    assert_eq!(
        p["payment_method_options[card][three_d_secure][electronic_commerce_indicator]"],
        "05"
    );
    assert_eq!(p["payment_method_options[card][three_d_secure][version]"], "2.2.0");
    assert_ne!(
        posts[0].idempotency_key, posts[1].idempotency_key,
        "the authenticated attempt is a new operation"
    );
    assert_eq!(succeeded_intents(&fake).len(), 1);
}

#[tokio::test]
async fn three_ds_denied_is_a_decline_without_another_charge() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let id = s["id"].as_str().unwrap();
    let spt = token("3ds");
    session(complete(&app, id, &spt).await, StatusCode::OK).await;
    let mut body = payment(&spt);
    body["authentication_result"] = json!({"outcome": "denied"});
    let denied = session(
        app.acp_post(&format!("/checkout_sessions/{id}/complete"), &body)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(
        denied["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["code"] == "payment_declined")
    );
    assert_eq!(
        intent_posts(&fake).len(),
        1,
        "no PaymentIntent after a denied authentication"
    );
    assert_eq!(succeeded_intents(&fake).len(), 0);
    assert_eq!(count(&app, "merchant_order").await, 0);
}

#[tokio::test]
async fn a_flaky_stripe_is_retried_under_the_same_key() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let done = session(
        complete(&app, s["id"].as_str().unwrap(), &token("flaky")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(done["status"], "completed");
    let posts = intent_posts(&fake);
    assert_eq!(posts.iter().map(|r| r.status).collect::<Vec<_>>(), vec![500, 200]);
    assert_eq!(posts[0].idempotency_key, posts[1].idempotency_key);
    assert_eq!(succeeded_intents(&fake).len(), 1);
}

#[tokio::test]
async fn a_stripe_slower_than_the_timeout_leaves_the_session_intact_and_a_retry_charges_once() {
    let fake = FakeStripe::start(SECRET).await;
    fake.set_slow_delay(Duration::from_millis(700));
    let app = stripe_app(&fake, &[("stripe_timeout_ms", "300"), ("stripe_max_retries", "0")]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let id = s["id"].as_str().unwrap();
    let spt = token("slow");
    let body = payment(&spt);
    let path = format!("/checkout_sessions/{id}/complete");
    let key = "k-slow";
    let send = || app.acp_post_keyed(&path, key, &body).send();
    let r = send().await.unwrap();
    assert!(r.headers().get("retry-after").is_some());
    error(r, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", None).await;
    let got = session(
        app.acp_get(&format!("/checkout_sessions/{id}")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    // Not a decline and not a reopen: the outcome is unknown, so the session (and its stock) stays held.
    assert_eq!(got["status"], "complete_in_progress");
    assert_eq!(count(&app, "merchant_order").await, 0);

    // Stripe finished the slow charge after we gave up; the retry reuses the Stripe key and gets that charge.
    let stored =
        crate::helpers::eventually(Duration::from_secs(2), || async { succeeded_intents(&fake).len() == 1 }).await;
    assert!(stored);
    let done = session(send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(done["status"], "completed");
    let posts = intent_posts(&fake);
    assert!(posts.iter().all(|p| p.idempotency_key == posts[0].idempotency_key));
    assert_eq!(succeeded_intents(&fake).len(), 1, "exactly one PaymentIntent");
    crate::helpers::assert_logs_hold_no_tokens();
}

#[tokio::test]
async fn a_used_token_is_refused_with_a_clear_message() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[]).await;
    let spt = token("ok");
    let a = create(&app, json!([{"id": TEE}])).await;
    session(complete(&app, a["id"].as_str().unwrap(), &spt).await, StatusCode::OK).await;
    let b = create(&app, json!([{"id": TEE}])).await;
    let reused = session(complete(&app, b["id"].as_str().unwrap(), &spt).await, StatusCode::OK).await;
    assert_eq!(reused["status"], "ready_for_payment");
    let m = crate::lifecycle::message(&reused, "code", "payment_declined");
    assert!(m["content"].as_str().unwrap().contains("already used"), "{m}");
    assert_eq!(count(&app, "merchant_order").await, 1);
    assert_eq!(succeeded_intents(&fake).len(), 1);
}

#[tokio::test]
async fn an_amount_over_the_tokens_limit_is_refused_with_a_clear_message() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let over = session(
        complete(&app, s["id"].as_str().unwrap(), &token("max1000")).await,
        StatusCode::OK,
    )
    .await;
    let m = crate::lifecycle::message(&over, "code", "payment_declined");
    assert!(m["content"].as_str().unwrap().contains("spending limit"), "{m}");
    assert_eq!(succeeded_intents(&fake).len(), 0);
    let expired = session(
        complete(&app, s["id"].as_str().unwrap(), &token("expired")).await,
        StatusCode::OK,
    )
    .await;
    assert!(expired.to_string().contains("has expired"));
}

#[tokio::test]
async fn manual_capture_completes_on_authorization_and_captures_later() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[("stripe_capture_method", "manual")]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let id = s["id"].as_str().unwrap();
    let done = session(complete(&app, id, &token("ok")).await, StatusCode::OK).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(intent_posts(&fake)[0].params["capture_method"], "manual");
    let pi = order_charge(&app, id).await.unwrap();
    assert_eq!(fake.payment_intents()[0]["status"], "requires_capture");

    let base = fake.base_url();
    let settings = test_settings(
        "postgres://unused@127.0.0.1/none",
        &[
            ("psp", "stripe"),
            ("stripe_secret_key", SECRET),
            ("stripe_api_base", base.as_str()),
        ],
    );
    let stripe = Stripe::new(&settings).unwrap();
    let amount = fake.payment_intents()[0]["amount"].as_i64().unwrap();
    stripe.capture(&pi, amount, "capture-1").await.unwrap();
    assert_eq!(fake.payment_intents()[0]["status"], "succeeded");
}

#[tokio::test]
async fn refunds_are_idempotent_and_bounded() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[]).await;
    let s = create(&app, json!([{"id": TEE}])).await;
    let id = s["id"].as_str().unwrap();
    session(complete(&app, id, &token("ok")).await, StatusCode::OK).await;
    let pi = order_charge(&app, id).await.unwrap();
    let base = fake.base_url();
    let settings: Settings = test_settings(
        "postgres://unused@127.0.0.1/none",
        &[
            ("psp", "stripe"),
            ("stripe_secret_key", SECRET),
            ("stripe_api_base", base.as_str()),
        ],
    );
    let stripe = Stripe::new(&settings).unwrap();
    let first = stripe.refund(&pi, 1000, "refund-1").await.unwrap();
    let again = stripe.refund(&pi, 1000, "refund-1").await.unwrap();
    assert_eq!(first, again, "same key, same refund");
    let refunds = fake.requests().into_iter().filter(|r| r.path == "/v1/refunds").count();
    assert_eq!(refunds, 2);
    assert!(
        stripe.refund(&pi, 1_000_000, "refund-2").await.is_err(),
        "more than was charged is refused"
    );
}

#[tokio::test]
async fn a_crash_between_stripes_success_and_the_commit_charges_once() {
    let fake = FakeStripe::start(SECRET).await;
    let db = TestDb::migrated().await;
    let base = fake.base_url();
    let env = [
        ("ACP_ENV", "development"),
        ("ACP_PSP", "stripe"),
        ("ACP_STRIPE_SECRET_KEY", SECRET),
        ("ACP_STRIPE_API_BASE", base.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("ACP_AGENT_API_KEY", AGENT_KEY),
        ("ACP_IDEMPOTENCY_LEASE_MS", "300"),
        ("ACP_IDEMPOTENCY_HEARTBEAT_MS", "100"),
        ("ACP_STRIPE_TIMEOUT_MS", "20000"),
        ("ACP_STRIPE_MAX_RETRIES", "0"),
    ];
    let mut server = ChildServer::start(&["serve"], &env).await;
    let post =
        |server: &ChildServer, path: &str, key: &str, body: &Value| agent_post(&server.url(""), path, key, body).send();
    let created = session(
        post(&server, "/checkout_sessions", "c1", &create_body(json!([{"id": TEE}])))
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let path = format!("/checkout_sessions/{}/complete", created["id"].as_str().unwrap());
    let spt = token("hold");
    let body = payment(&spt);

    // Stripe creates the PaymentIntent and holds its answer; the server is killed while it waits.
    let waiting = tokio::spawn(post(&server, &path, "k-crash", &body));
    assert!(crate::helpers::eventually(Duration::from_secs(5), || async { fake.payment_intents().len() == 1 }).await);
    server.signal("KILL");
    server.wait(Duration::from_secs(5)).await;
    assert!(waiting.await.unwrap().is_err());

    let mut restarted = ChildServer::start(&["serve"], &env).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let r = post(&restarted, &path, "k-crash", &body).await.unwrap();
        if r.status() != StatusCode::CONFLICT {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let done = session(answer, StatusCode::OK).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(fake.payment_intents().len(), 1, "one PaymentIntent");
    let keys: Vec<_> = intent_posts(&fake).into_iter().map(|r| r.idempotency_key).collect();
    assert!(
        keys.len() >= 2 && keys.iter().all(|k| *k == keys[0]),
        "the retry reused the Stripe key: {keys:?}"
    );
    let pool = db.pool().await;
    let orders: i64 = sqlx::query_scalar("select count(*) from merchant_order")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 1);

    fake.release_held();
    restarted.signal("TERM");
    restarted.wait(Duration::from_secs(10)).await;
    let logs = [server.output(), restarted.output()].concat().join("\n");
    assert!(!logs.contains(&spt), "a payment token reached the logs");
    assert!(logs.contains("stripe call"), "each PSP call is logged");
}
