//! ACP 2026-01-30 end to end: the lifecycle in this version's shapes (simulator and fake Stripe, 3-D Secure),
//! every illegal transition, the error table with its optional `Idempotency-Key`, the legacy order webhooks, the
//! official example requests, the bad-input matrix and the open enums. Every session and error body received is
//! validated against the official 2026-01-30 JSON Schema bundle and against our own `openapi/2026-01-30.json`;
//! every webhook body against the official 2026-01-30 webhook OpenAPI.

use std::{sync::OnceLock, time::Duration};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use test_support::{
    fake_stripe::FakeStripe,
    webhook_receiver::{Delivery, WebhookReceiver},
};

use crate::{
    helpers::{AGENT_KEY, TestApp, eventually, spawn_app, spawn_app_with},
    lifecycle::{JACKET_OUT_OF_STOCK, MAP_PACK, TEE, address, count, create_body, payment},
    official::{assert_valid, assert_valid_session, examples, schemas, spec_dir},
    shared::{official_webhook_schema, receiver_validator, total},
};

const V: &str = "2026-01-30";
const DOC: &str = include_str!("../../openapi/2026-01-30.json");

// ---------------------------------------------------------------------------------------------------------------
// Helpers: requests in this version, bodies checked against both schemas.

/// A POST in this version without an `Idempotency-Key` (optional here).
fn post(app: &TestApp, path: &str, body: &Value) -> RequestBuilder {
    app.client
        .post(app.url(path))
        .bearer_auth(AGENT_KEY)
        .header("API-Version", V)
        .json(body)
}

/// A POST in this version with the given `Idempotency-Key`.
fn post_keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> RequestBuilder {
    post(app, path, body).header("Idempotency-Key", key)
}

fn get(app: &TestApp, path: &str) -> RequestBuilder {
    app.acp_as(Method::GET, path, AGENT_KEY, V)
}

fn doc() -> &'static Value {
    static DOC_VALUE: OnceLock<Value> = OnceLock::new();
    DOC_VALUE.get_or_init(|| serde_json::from_str(DOC).expect("openapi/2026-01-30.json is JSON"))
}

fn our_validator(def: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{def}"),
        "components": doc()["components"],
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .unwrap_or_else(|e| panic!("our schema {def} does not compile: {e}"))
}

/// Panics unless `value` matches `def` (`CheckoutSession` or `Error`) of our 2026-01-30 document.
fn assert_matches_our_doc(def: &str, value: &Value) {
    static SESSION: OnceLock<jsonschema::Validator> = OnceLock::new();
    static ERROR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let v = match def {
        "CheckoutSession" => SESSION.get_or_init(|| our_validator("CheckoutSession")),
        "Error" => ERROR.get_or_init(|| our_validator("Error")),
        other => panic!("no cached validator for {other}"),
    };
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "body does not match our 2026-01-30 openapi {def}: {errors:?}\n{value:#}"
    );
}

/// A session body: expected status, valid in the official 2026-01-30 bundle and in our document.
async fn session(response: Response, expected: StatusCode) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(status, expected, "unexpected status; body: {body:#}");
    check_session(&body);
    body
}

fn check_session(body: &Value) {
    assert_valid_session(V, body);
    assert_matches_our_doc("CheckoutSession", body);
    assert_eq!(body["protocol"]["version"], V);
}

/// The `Error.type` this version gives a refusal.
fn expected_type(status: StatusCode, code: &str) -> &'static str {
    match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => "service_unavailable",
        s if s.is_server_error() => "processing_error",
        _ if code.starts_with("idempotency_") => "request_not_idempotent",
        _ => "invalid_request",
    }
}

fn check_error(status: StatusCode, body: &Value) {
    let code = body["code"].as_str().unwrap_or_default();
    if body.get("supported_versions").is_some() {
        // Version errors come before any version is known: the field is 2026-04-17's; without it the body is a
        // valid 2026-01-30 Error.
        assert_valid("2026-04-17", "Error", body);
        let mut bare = body.clone();
        bare.as_object_mut().unwrap().remove("supported_versions");
        assert_valid(V, "Error", &bare);
    } else {
        assert_valid(V, "Error", body);
    }
    assert_matches_our_doc("Error", body);
    assert_eq!(body["type"], expected_type(status, code), "{body:#}");
}

/// An error body: expected status, code and (when given) param, valid in both schemas.
async fn error(response: Response, status: StatusCode, code: &str, param: Option<&str>) -> Value {
    let actual = response.status();
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(actual, status, "unexpected status; body: {body:#}");
    check_error(status, &body);
    assert_eq!(body["code"], code, "{body:#}");
    if let Some(param) = param {
        assert_eq!(body["param"], param, "{body:#}");
    }
    body
}

async fn create(app: &TestApp, body: &Value) -> Value {
    session(
        post(app, "/checkout_sessions", body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await
}

async fn ready(app: &TestApp) -> String {
    let s = create(app, &create_body(json!([{"id": TEE}]))).await;
    assert_eq!(s["status"], "ready_for_payment", "{s:#}");
    s["id"].as_str().unwrap().to_owned()
}

fn authenticated(token: &str) -> Value {
    let mut body = payment(token);
    body["authentication_result"] = json!({"outcome": "authenticated", "outcome_details": {
        "three_ds_cryptogram": "AAIBBYNoEwAAACcKhAJkdQAAAAA=", "electronic_commerce_indicator": "05",
        "transaction_id": "f38e6948-5388-41a6-bca4-b49723c19437", "version": "2.2.0"}});
    body
}

/// The `channel` this version requires in `authentication_metadata`.
fn assert_channel(pending: &Value) {
    let metadata = &pending["authentication_metadata"];
    assert_eq!(metadata["channel"]["type"], "browser", "{pending:#}");
    assert_eq!(metadata["channel"]["browser"]["javascript_enabled"], false);
    assert!(metadata["acquirer_details"]["acquirer_bin"].is_string());
}

// ---------------------------------------------------------------------------------------------------------------
// Lifecycle.

#[tokio::test]
async fn v2026_01_30_create_update_get_complete_on_the_simulator() {
    let app = spawn_app().await;
    let created = create(
        &app,
        &json!({"currency": "usd", "line_items": [{"id": TEE}], "buyer": {"email": "jane@example.com"},
                "capabilities": {"interventions": {"supported": ["3ds"]}}}),
    )
    .await;
    assert_eq!(created["status"], "not_ready_for_payment");
    let handler = &created["capabilities"]["payment"]["handlers"][0];
    assert_eq!(handler["id"], "card_tokenized");
    assert!(handler.get("display_name").is_none() && handler.get("display_order").is_none());
    assert_eq!(created["capabilities"]["interventions"]["supported"], json!(["3ds"]));
    assert!(
        created["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["title"].is_string())
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/checkout_sessions/{id}");

    let addressed = session(
        post(
            &app,
            &path,
            &json!({"fulfillment_details": {"name": "Jane Buyer", "address": address("US")}}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(addressed["status"], "ready_for_payment");
    assert_eq!(addressed["fulfillment_details"]["address"]["city"], "Springfield");
    assert_eq!(
        addressed["selected_fulfillment_options"][0]["option_id"],
        "ship_standard"
    );

    let updated = session(
        post(
            &app,
            &path,
            &json!({"line_items": [{"id": TEE, "quantity": 2}],
            "selected_fulfillment_options": [{"type": "shipping", "option_id": "ship_express", "item_ids": [TEE]}]}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["line_items"][0]["quantity"], 2);
    assert_eq!(updated["selected_fulfillment_options"][0]["option_id"], "ship_express");
    assert_eq!(
        (total(&updated, "subtotal"), total(&updated, "fulfillment")),
        (5000, 1500)
    );
    assert_eq!(total(&updated, "total"), 6500);

    let fetched = session(get(&app, &path).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(fetched["totals"], updated["totals"]);

    let completed = session(
        post(&app, &format!("{path}/complete"), &payment("spt_sim_ok"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(completed["status"], "completed");
    let order = &completed["order"];
    assert_eq!(order["checkout_session_id"], id.as_str());
    assert_eq!(order["order_number"], order["id"]);
    assert!(order.get("status").is_none(), "no frozen status (see the adapter docs)");
    let window = &order["estimated_delivery"];
    assert!(window["earliest"].as_str().unwrap() <= window["latest"].as_str().unwrap());
    let charged: i64 = sqlx::query_scalar("select amount from simulator_charge where checkout_session_id = $1")
        .bind(&id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(charged, 6500);
    let after = session(get(&app, &path).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(after["order"], completed["order"]);
}

#[tokio::test]
async fn v2026_01_30_three_ds_on_the_simulator_then_an_authentication_result() {
    let app = spawn_app().await;
    let id = ready(&app).await;
    let path = format!("/checkout_sessions/{id}/complete");
    let pending = session(
        post(&app, &path, &payment("spt_sim_3ds")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(pending["status"], "authentication_required");
    assert_channel(&pending);
    let got = session(
        get(&app, &format!("/checkout_sessions/{id}")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_channel(&got);
    let r = post(&app, &path, &payment("spt_sim_3ds")).send().await.unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "requires_3ds",
        Some("$.authentication_result"),
    )
    .await;
    let done = session(
        post(&app, &path, &authenticated("spt_sim_3ds")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(done["status"], "completed");
    assert!(done.get("authentication_metadata").is_none());

    // A denied authentication is a decline, in this version's message shape.
    let other = ready(&app).await;
    let path = format!("/checkout_sessions/{other}/complete");
    session(
        post(&app, &path, &payment("spt_sim_3ds")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let mut body = payment("spt_sim_3ds");
    body["authentication_result"] = json!({"outcome": "denied"});
    let denied = session(post(&app, &path, &body).send().await.unwrap(), StatusCode::OK).await;
    let declined = denied["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["code"] == "payment_declined")
        .expect("a payment_declined message");
    assert_eq!(
        (&declined["type"], &declined["severity"]),
        (&json!("error"), &json!("high"))
    );
    assert!(declined.get("resolution").is_none());
    assert_eq!(count(&app, "merchant_order").await, 1);
}

#[tokio::test]
async fn v2026_01_30_completes_on_the_fake_stripe_with_and_without_three_ds() {
    let fake = FakeStripe::start(crate::stripe::SECRET).await;
    let app = crate::stripe::stripe_app(&fake, &[]).await;
    let plain = ready(&app).await;
    let done = session(
        post(
            &app,
            &format!("/checkout_sessions/{plain}/complete"),
            &payment(&crate::stripe::token("ok")),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(done["status"], "completed");

    let secure = ready(&app).await;
    let path = format!("/checkout_sessions/{secure}/complete");
    let spt = crate::stripe::token("3ds");
    let pending = session(post(&app, &path, &payment(&spt)).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(pending["status"], "authentication_required");
    assert_channel(&pending);
    let done = session(
        post(&app, &path, &authenticated(&spt)).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(done["status"], "completed");
    let succeeded = fake
        .payment_intents()
        .into_iter()
        .filter(|pi| pi["status"] == "succeeded")
        .count();
    assert_eq!(succeeded, 2, "one PaymentIntent per completed session");
    assert_eq!(count(&app, "merchant_order").await, 2);
}

#[tokio::test]
async fn v2026_01_30_cancel_with_and_without_a_body() {
    let app = spawn_app().await;
    let with_body = ready(&app).await;
    let canceled = session(
        post(
            &app,
            &format!("/checkout_sessions/{with_body}/cancel"),
            &json!({"intent_trace": {"reason_code": "shipping_cost", "trace_summary": "Too dear",
                                     "metadata": {"target_shipping_cost": 0}}}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["messages"][0]["severity"], "info");

    let bare = ready(&app).await;
    let r = app
        .client
        .post(app.url(&format!("/checkout_sessions/{bare}/cancel")))
        .bearer_auth(AGENT_KEY)
        .header("API-Version", V)
        .send()
        .await
        .unwrap();
    assert_eq!(session(r, StatusCode::OK).await["status"], "canceled");
}

// ---------------------------------------------------------------------------------------------------------------
// Illegal transitions.

/// GET shows `status`; update and complete are 400 `invalid_state`; cancel is 405.
async fn assert_terminal(app: &TestApp, id: &str, status: &str) {
    let path = format!("/checkout_sessions/{id}");
    let got = session(get(app, &path).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(got["status"], status);
    let r = post(app, &path, &json!({"line_items": [{"id": TEE}]}))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid_state", None).await;
    let r = post(app, &format!("{path}/complete"), &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid_state", None).await;
    let r = post(app, &format!("{path}/cancel"), &json!({})).send().await.unwrap();
    error(r, StatusCode::METHOD_NOT_ALLOWED, "invalid_state", None).await;
}

#[tokio::test]
async fn v2026_01_30_completed_and_canceled_sessions_refuse_changes() {
    let app = spawn_app().await;
    let done = ready(&app).await;
    session(
        post(
            &app,
            &format!("/checkout_sessions/{done}/complete"),
            &payment("spt_sim_ok"),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_terminal(&app, &done, "completed").await;
    let gone = ready(&app).await;
    session(
        post(&app, &format!("/checkout_sessions/{gone}/cancel"), &json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_terminal(&app, &gone, "canceled").await;
    assert_eq!(count(&app, "simulator_charge").await, 1, "no second charge");
}

#[tokio::test]
async fn v2026_01_30_expired_sessions_refuse_changes() {
    let app = spawn_app_with(&[("session_ttl_secs", "1"), ("expiry_sweep_interval_ms", "200")]).await;
    let id = ready(&app).await;
    let swept = eventually(Duration::from_secs(2), || async {
        let status: String = sqlx::query_scalar("select status from checkout_session where checkout_session_id = $1")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
        status == "expired"
    })
    .await;
    assert!(swept, "the sweeper marks the session expired");
    assert_terminal(&app, &id, "expired").await;
}

#[tokio::test]
async fn v2026_01_30_a_not_ready_session_cannot_complete_and_unknown_sessions_are_404() {
    let app = spawn_app().await;
    let s = create(
        &app,
        &json!({"currency": "usd", "line_items": [{"id": TEE}], "capabilities": {}}),
    )
    .await;
    assert_eq!(s["status"], "not_ready_for_payment");
    let r = post(
        &app,
        &format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap()),
        &payment("spt_sim_ok"),
    )
    .send()
    .await
    .unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "missing",
        Some("$.fulfillment_details.address"),
    )
    .await;
    assert_eq!(count(&app, "payment_attempt").await, 0);

    let r = get(&app, "/checkout_sessions/cs_missing").send().await.unwrap();
    error(r, StatusCode::NOT_FOUND, "not_found", None).await;
    for (path, body) in [
        ("/checkout_sessions/cs_missing", json!({})),
        ("/checkout_sessions/cs_missing/complete", payment("spt_sim_ok")),
        ("/checkout_sessions/cs_missing/cancel", json!({})),
    ] {
        let r = post(&app, path, &body).send().await.unwrap();
        error(r, StatusCode::NOT_FOUND, "not_found", None).await;
    }
}

#[tokio::test]
async fn v2026_01_30_a_session_being_paid_shows_complete_in_progress_and_refuses_changes() {
    let app = spawn_app().await;
    let id = ready(&app).await;
    let path = format!("/checkout_sessions/{id}");
    let paying = tokio::spawn(post_keyed(&app, &format!("{path}/complete"), "hold-1", &payment("spt_sim_hold")).send());
    let held = eventually(Duration::from_secs(5), || async {
        count(&app, "simulator_charge").await == 1
    })
    .await;
    assert!(held, "the simulator holds the charge");
    let got = session(get(&app, &path).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(got["status"], "complete_in_progress", "native in this version");
    let r = post(&app, &path, &json!({"line_items": [{"id": TEE}]}))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::CONFLICT, "invalid_state", None).await;
    // The same key while the first call runs, and a keyless complete, are both "in flight".
    for key in [Some("hold-1"), None] {
        let request = match key {
            Some(key) => post_keyed(&app, &format!("{path}/complete"), key, &payment("spt_sim_hold")),
            None => post(&app, &format!("{path}/complete"), &payment("spt_sim_ok")),
        };
        let r = request.send().await.unwrap();
        assert!(r.headers().get("retry-after").is_some());
        let e = error(r, StatusCode::CONFLICT, "idempotency_in_flight", None).await;
        assert_eq!(e["type"], "request_not_idempotent");
    }
    let r = post(&app, &format!("{path}/cancel"), &json!({})).send().await.unwrap();
    error(r, StatusCode::METHOD_NOT_ALLOWED, "invalid_state", None).await;
    let released = app
        .admin(Method::POST, "/admin/simulator/release")
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), StatusCode::OK);
    let done = session(paying.await.unwrap().unwrap(), StatusCode::OK).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(count(&app, "merchant_order").await, 1);
}

// ---------------------------------------------------------------------------------------------------------------
// The error table.

#[tokio::test]
async fn v2026_01_30_headers_and_transport_errors() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}]));
    let r = app
        .client
        .post(app.url("/checkout_sessions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    error(r, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    let r = app
        .acp_as(Method::POST, "/checkout_sessions", "not-the-key", V)
        .json(&body)
        .send()
        .await
        .unwrap();
    error(r, StatusCode::UNAUTHORIZED, "unauthorized", None).await;

    let r = app
        .client
        .post(app.url("/checkout_sessions"))
        .bearer_auth(AGENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let e = error(r, StatusCode::BAD_REQUEST, "missing_api_version", None).await;
    assert_eq!(
        e["supported_versions"],
        json!(acp_merchant::protocol::SUPPORTED_VERSIONS)
    );
    assert!(e["supported_versions"].as_array().unwrap().contains(&json!(V)));
    let r = app
        .acp_as(Method::GET, "/checkout_sessions/cs_1", AGENT_KEY, "2026-01-29")
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "unsupported_api_version", None).await;

    let raw = |content_type: &'static str, text: &'static str| {
        app.client
            .post(app.url("/checkout_sessions"))
            .bearer_auth(AGENT_KEY)
            .header("API-Version", V)
            .header("Content-Type", content_type)
            .body(text)
    };
    let r = raw("application/json", "{\"currency\": ").send().await.unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid_json", None).await;
    let r = raw("text/plain", "{}").send().await.unwrap();
    error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None).await;
    let mut huge = body.clone();
    huge["padding"] = json!("x".repeat(2 * 1024 * 1024));
    let r = post(&app, "/checkout_sessions", &huge).send().await.unwrap();
    error(r, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", None).await;
    let r = post_keyed(&app, "/checkout_sessions", "", &body).send().await.unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.headers['Idempotency-Key']"),
    )
    .await;
    assert_eq!(count(&app, "checkout_session").await, 0);
}

#[tokio::test]
async fn v2026_01_30_idempotency_key_is_optional_and_its_refusals_are_request_not_idempotent() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}]));
    let first = create(&app, &body).await;
    let second = create(&app, &body).await;
    assert_ne!(
        first["id"], second["id"],
        "without a key, a repeated create is a new session"
    );
    assert_eq!(count(&app, "checkout_session").await, 2);

    let r = post_keyed(&app, "/checkout_sessions", "create-1", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["idempotency-key"], "create-1");
    let original = session(r, StatusCode::CREATED).await;
    let r = post_keyed(&app, "/checkout_sessions", "create-1", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let replayed = session(r, StatusCode::CREATED).await;
    assert_eq!(replayed, original);
    assert_eq!(count(&app, "checkout_session").await, 3);

    let other = create_body(json!([{"id": TEE, "quantity": 2}]));
    let r = post_keyed(&app, "/checkout_sessions", "create-1", &other)
        .send()
        .await
        .unwrap();
    error(r, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_conflict", None).await;
    assert_eq!(count(&app, "checkout_session").await, 3);
}

// ---------------------------------------------------------------------------------------------------------------
// Order webhooks: the legacy body, validated against the official 2026-01-30 webhook OpenAPI.

const WEBHOOK_SECRET: &str = "whsec_test_secret_0123456789";

#[test]
fn v2026_01_30_the_official_webhook_schema_is_really_enforced() {
    let Some(schema) = official_webhook_schema(V) else {
        return;
    };
    let data = json!({"type": "order", "checkout_session_id": "cs_1", "permalink_url": "https://shop.example.com/o/1",
                      "status": "confirmed", "refunds": []});
    assert!(schema.is_valid(&json!({"type": "order_create", "data": data})));
    let mut with_id = data.clone();
    with_id["id"] = json!("ord_1");
    assert!(
        !schema.is_valid(&json!({"type": "order_create", "data": with_id})),
        "no order id then"
    );
    let mut completed = data.clone();
    completed["status"] = json!("completed");
    assert!(!schema.is_valid(&json!({"type": "order_update", "data": completed})));
}

fn for_session(receiver: &WebhookReceiver, session_id: &str) -> Vec<Delivery> {
    receiver
        .accepted_unique()
        .into_iter()
        .filter(|d| d.body["data"]["checkout_session_id"] == session_id)
        .collect()
}

#[tokio::test]
async fn v2026_01_30_order_webhooks_use_the_legacy_body_after_complete_ship_and_refund() {
    let receiver = WebhookReceiver::start(WEBHOOK_SECRET, receiver_validator(official_webhook_schema(V))).await;
    let url = receiver.base_url();
    let app = spawn_app_with(&[
        ("agent_webhook_url", url.as_str()),
        ("agent_webhook_secret", WEBHOOK_SECRET),
        ("webhook_poll_interval_ms", "25"),
        ("webhook_retry_schedule_ms", "100,150,200"),
    ])
    .await;
    let id = ready(&app).await;
    let done = session(
        post(
            &app,
            &format!("/checkout_sessions/{id}/complete"),
            &payment("spt_sim_ok"),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    let order_id = done["order"]["id"].as_str().unwrap();
    assert!(
        receiver
            .wait_until(Duration::from_secs(5), |_| for_session(&receiver, &id).len() == 1)
            .await
    );
    let admin = |action: &str, key: &str, body: Value| {
        app.admin(Method::POST, &format!("/admin/orders/{order_id}/{action}"))
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let shipped = admin(
        "ship",
        "ship-1",
        json!({"carrier": "USPS", "tracking_number": "9400100000000000000000"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(shipped.status(), StatusCode::OK);
    let refunded = admin("refund", "refund-1", json!({"amount": 700, "reason": "damaged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refunded.status(), StatusCode::OK);
    assert!(
        receiver
            .wait_until(Duration::from_secs(5), |_| for_session(&receiver, &id).len() == 3)
            .await
    );
    let all = for_session(&receiver, &id);
    for d in &all {
        assert!(d.signature_valid, "bad signature");
        assert_eq!(d.schema_error, None, "{}", d.body);
        assert!(d.body["data"].get("id").is_none());
    }
    let seen: Vec<(&Value, &Value, &Value)> = all
        .iter()
        .map(|d| (&d.body["type"], &d.body["data"]["status"], &d.body["data"]["refunds"]))
        .collect();
    assert_eq!(
        seen,
        [
            (&json!("order_create"), &json!("confirmed"), &json!([])),
            (&json!("order_update"), &json!("shipped"), &json!([])),
            (
                &json!("order_update"),
                &json!("shipped"),
                &json!([{"type": "original_payment", "amount": 700}])
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The official example requests.

/// The examples' placeholder ids replaced by the demo catalog's.
fn substitute(value: &Value) -> Value {
    let text = value
        .to_string()
        .replace("\"item_123\"", &format!("\"{TEE}\""))
        .replace("fulfillment_option_456", "ship_express")
        .replace("fulfillment_option_123", "ship_standard")
        .replace("\"spt_123\"", "\"spt_sim_ok\"")
        .replace("\"spt_3ds_token_001\"", "\"spt_sim_3ds\"");
    serde_json::from_str(&text).unwrap()
}

/// One row of the outcome table: what was sent, what came back (session status or error code, with its param).
struct Row {
    example: String,
    status: u16,
    outcome: String,
}

/// Sends `body`, validates whatever comes back, and records the row.
async fn run(rows: &mut Vec<Row>, example: &str, request: RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.expect("JSON body");
    let outcome = if status.is_success() {
        check_session(&body);
        body["status"].as_str().unwrap_or_default().to_owned()
    } else {
        check_error(status, &body);
        match body["param"].as_str() {
            Some(param) => format!("{} {param}", body["code"].as_str().unwrap_or_default()),
            None => body["code"].as_str().unwrap_or_default().to_owned(),
        }
    };
    rows.push(Row {
        example: example.to_owned(),
        status: status.as_u16(),
        outcome,
    });
    body
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("a session id").to_owned()
}

/// The requests of `examples.agentic_checkout.json`, in a lifecycle order.
async fn checkout_examples(app: &TestApp, file: &Value, rows: &mut Vec<Row>) {
    let ex = |name: &str| substitute(&file[name]);
    let s1 = run(
        rows,
        "create_checkout_session_request",
        post(app, "/checkout_sessions", &ex("create_checkout_session_request")),
    )
    .await;
    let s2 = run(
        rows,
        "create_checkout_session_request_with_first_touch_attribution",
        post(
            app,
            "/checkout_sessions",
            &ex("create_checkout_session_request_with_first_touch_attribution"),
        ),
    )
    .await;
    let p1 = format!("/checkout_sessions/{}", id_of(&s1));
    let updated = run(
        rows,
        "update_checkout_session_request",
        post(app, &p1, &ex("update_checkout_session_request")),
    )
    .await;
    assert_eq!(updated["selected_fulfillment_options"][0]["option_id"], "ship_express");
    run(
        rows,
        "complete_checkout_session_request",
        post(app, &format!("{p1}/complete"), &ex("complete_checkout_session_request")),
    )
    .await;
    let s3 = run(
        rows,
        "(create for the next two)",
        post(app, "/checkout_sessions", &ex("create_checkout_session_request")),
    )
    .await;
    let p3 = format!("/checkout_sessions/{}", id_of(&s3));
    run(
        rows,
        "complete_checkout_session_request_seller_backed",
        post(
            app,
            &format!("{p3}/complete"),
            &ex("complete_checkout_session_request_seller_backed"),
        ),
    )
    .await;
    run(
        rows,
        "complete_checkout_session_request_with_last_touch_attribution",
        post(
            app,
            &format!("{p3}/complete"),
            &ex("complete_checkout_session_request_with_last_touch_attribution"),
        ),
    )
    .await;
    run(
        rows,
        "cancel_checkout_session_request",
        post(
            app,
            &format!("/checkout_sessions/{}/cancel", id_of(&s2)),
            &ex("cancel_checkout_session_request"),
        ),
    )
    .await;
    let s4 = run(
        rows,
        "(create for the next one)",
        post(app, "/checkout_sessions", &ex("create_checkout_session_request")),
    )
    .await;
    run(
        rows,
        "cancel_checkout_session_request_timing_deferred",
        post(
            app,
            &format!("/checkout_sessions/{}/cancel", id_of(&s4)),
            &ex("cancel_checkout_session_request_timing_deferred"),
        ),
    )
    .await;
    for (name, body) in [
        (
            "complete_session_with_authentication_result_request",
            ex("complete_session_with_authentication_result_request"),
        ),
        ("authentication_result_example (in a complete)", {
            let mut b = payment("spt_sim_3ds");
            b["authentication_result"] = ex("authentication_result_example");
            b
        }),
    ] {
        let s = run(
            rows,
            "(create, complete with spt_sim_3ds)",
            post(app, "/checkout_sessions", &ex("create_checkout_session_request")),
        )
        .await;
        let path = format!("/checkout_sessions/{}/complete", id_of(&s));
        let pending = run(rows, "(3-D Secure asked)", post(app, &path, &payment("spt_sim_3ds"))).await;
        assert_eq!(pending["status"], "authentication_required");
        run(rows, name, post(app, &path, &body)).await;
    }
}

/// The request examples written inline in the official OpenAPI (they predate this version's schema).
async fn openapi_examples(app: &TestApp, rows: &mut Vec<Row>) {
    let Some(dir) = spec_dir() else { return };
    let text = std::fs::read_to_string(dir.join("spec/2026-01-30/openapi/openapi.agentic_checkout.yaml")).unwrap();
    let official: Value = serde_yaml_ng::from_str(&text).unwrap();
    let examples_of = |path: &str| -> Vec<(String, Value)> {
        official["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, e)| (name.clone(), substitute(&e["value"])))
            .collect()
    };
    for (name, body) in examples_of("/checkout_sessions") {
        run(
            rows,
            &format!("openapi create {name}"),
            post(app, "/checkout_sessions", &body),
        )
        .await;
    }
    let s = create(app, &substitute(&create_body(json!([{"id": "item_123"}])))).await;
    let path = format!("/checkout_sessions/{}", id_of(&s));
    for (name, body) in examples_of("/checkout_sessions/{checkout_session_id}") {
        run(rows, &format!("openapi update {name}"), post(app, &path, &body)).await;
    }
    for (name, body) in examples_of("/checkout_sessions/{checkout_session_id}/complete") {
        run(
            rows,
            &format!("openapi complete {name}"),
            post(app, &format!("{path}/complete"), &body),
        )
        .await;
    }
}

fn san_francisco() -> Value {
    json!({"name": "Jane Buyer", "line_one": "1 Market St", "city": "San Francisco", "state": "CA",
           "country": "US", "postal_code": "94131"})
}

fn shipping_rules(amount: i64, promotions: Value) -> Value {
    json!({"currency": "usd", "promotions": promotions,
           "shipping": [{"id": "shipping_standard", "title": "Standard Shipping", "countries": ["US"],
                         "bands": [{"min_subtotal": 0, "amount": amount}], "min_business_days": 3, "max_business_days": 5}]})
}

/// One discount example: its file, the items to import with their example prices, the rules, and whether
/// `item_123` stands for the demo tee.
type DiscountCase = (&'static str, Vec<(&'static str, i64)>, Value, bool);

/// Rules and catalog items matching each discount example (as `pricing.rs` reproduces the 2026-04-17 ones).
fn discount_cases() -> Vec<DiscountCase> {
    let save10 = json!([
        {"id": "coupon_save10", "name": "$10 Off Your Order", "code": "SAVE10",
         "kind": {"type": "fixed", "amount": 1000}, "target": {"type": "order"}},
        {"id": "coupon_expired50", "name": "50% Off", "code": "EXPIRED50",
         "kind": {"type": "percent", "rate": "0.5"}, "target": {"type": "order"}, "ends_at": "2025-12-01T00:00:00Z"}]);
    vec![
        (
            "rejected-discount-code.json",
            vec![],
            shipping_rules(499, save10.clone()),
            true,
        ),
        ("order-level-discount.json", vec![], shipping_rules(599, save10), true),
        (
            "automatic-discount.json",
            vec![("item_123", 1899)],
            shipping_rules(
                599,
                json!([
            {"id": "coupon_freeship50", "name": "Free shipping on orders over $50",
             "kind": {"type": "free_shipping"}, "target": {"type": "order"}, "min_subtotal": 5000}]),
            ),
            false,
        ),
        (
            "percentage-discount-with-allocations.json",
            vec![("item_shirt", 2500), ("item_pants", 6000)],
            shipping_rules(
                0,
                json!([{"id": "coupon_summer", "name": "Summer Sale 20% Off", "code": "SUMMER20",
            "kind": {"type": "percent", "rate": "0.20"}, "target": {"type": "order"}}]),
            ),
            false,
        ),
        (
            "stacked-discounts.json",
            vec![("item_laptop", 199_900), ("item_mouse", 9900)],
            shipping_rules(
                1999,
                json!([
            {"id": "coupon_summer20", "name": "Summer Sale 20% Off", "code": "SUMMER20",
             "kind": {"type": "percent", "rate": "0.20"}, "target": {"type": "order"}},
            {"id": "coupon_loyalty5", "name": "$5 Loyalty Reward", "code": "LOYALTY5",
             "kind": {"type": "fixed", "amount": 500}, "target": {"type": "order"}}]),
            ),
            false,
        ),
    ]
}

async fn import_items(app: &TestApp, items: &[(&str, i64)]) {
    if items.is_empty() {
        return;
    }
    let lines: Vec<String> = items
        .iter()
        .map(|(id, price)| {
            json!({"id": format!("prod_{id}"), "variants": [{"id": id, "title": id, "price": {"amount": price, "currency": "USD"}}]})
                .to_string()
        })
        .collect();
    let r = app
        .admin(Method::POST, "/admin/catalog/import")
        .body(lines.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Our applied discounts as the example shows them: code, amount, coupon id, and allocations where it has them.
fn assert_discounts_reproduced(file: &str, ours: &Value, documented: &Value) {
    assert_eq!(ours["discounts"]["codes"], documented["discounts"]["codes"], "{file}");
    let mine = ours["discounts"]["applied"].as_array().unwrap();
    let theirs = documented["discounts"]["applied"].as_array().unwrap();
    assert_eq!(mine.len(), theirs.len(), "{file}");
    for (m, d) in mine.iter().zip(theirs) {
        assert_eq!((&m["code"], &m["amount"]), (&d["code"], &d["amount"]), "{file}");
        if let Some(allocations) = d.get("allocations") {
            assert_eq!(&m["allocations"], allocations, "{file}");
        }
    }
    let rejected: Vec<(&Value, &Value)> = ours["discounts"]["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (&r["code"], &r["reason"]))
        .collect();
    let expected: Vec<(&Value, &Value)> = documented["discounts"]["rejected"]
        .as_array()
        .map(|r| r.iter().map(|r| (&r["code"], &r["reason"])).collect())
        .unwrap_or_default();
    assert_eq!(rejected, expected, "{file}");
    assert_eq!(total(ours, "fulfillment"), total(documented, "fulfillment"), "{file}");
}

async fn discount_examples(app: &TestApp, rows: &mut Vec<Row>) {
    for (file, items, rules, tee) in discount_cases() {
        let Some(example) = examples(V, &format!("discount-extension/{file}")) else {
            return;
        };
        import_items(app, &items).await;
        let put = app
            .admin(Method::PUT, "/admin/pricing/rules")
            .json(&rules)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::OK);
        // Sent as written (items with `quantity`, no `capabilities`: both tolerated), with a delivery address.
        let mut request = if tee {
            substitute(&example["request"])
        } else {
            example["request"].clone()
        };
        request["fulfillment_details"] = json!({"address": san_francisco()});
        let s = run(
            rows,
            &format!("discount-extension/{file}"),
            post(app, "/checkout_sessions", &request),
        )
        .await;
        if file == "automatic-discount.json" {
            // No code and no declared extension: the promotion applies, the extension stays silent.
            assert!(s.get("discounts").is_none());
            assert_eq!(total(&s, "total"), total(&example["response"], "total"));
            request["capabilities"] = json!({"extensions": ["discount"]});
            let declared = run(
                rows,
                &format!("discount-extension/{file} + extensions [discount]"),
                post(app, "/checkout_sessions", &request),
            )
            .await;
            assert_discounts_reproduced(file, &declared, &example["response"]);
        } else {
            assert_discounts_reproduced(file, &s, &example["response"]);
        }
    }
}

#[tokio::test]
async fn v2026_01_30_every_official_example_request_is_answered_as_documented() {
    let Some(file) = examples(V, "examples.agentic_checkout.json") else {
        return; // spec unavailable; official.rs said so loudly
    };
    let app = spawn_app().await;
    let mut rows = Vec::new();
    checkout_examples(&app, &file, &mut rows).await;
    openapi_examples(&app, &mut rows).await;
    discount_examples(&app, &mut rows).await;

    println!("\n{:<78} {:>6}  outcome", "example (2026-01-30)", "status");
    for row in &rows {
        println!("{:<78} {:>6}  {}", row.example, row.status, row.outcome);
    }
    let expected: &[(&str, u16, &str)] = &[
        ("create_checkout_session_request", 201, "ready_for_payment"),
        (
            "create_checkout_session_request_with_first_touch_attribution",
            201,
            "not_ready_for_payment",
        ),
        ("update_checkout_session_request", 200, "ready_for_payment"),
        ("complete_checkout_session_request", 200, "completed"),
        ("(create for the next two)", 201, "ready_for_payment"),
        (
            "complete_checkout_session_request_seller_backed",
            400,
            "invalid $.payment_data.handler_id",
        ),
        (
            "complete_checkout_session_request_with_last_touch_attribution",
            200,
            "completed",
        ),
        ("cancel_checkout_session_request", 200, "canceled"),
        ("(create for the next one)", 201, "ready_for_payment"),
        ("cancel_checkout_session_request_timing_deferred", 200, "canceled"),
        ("(create, complete with spt_sim_3ds)", 201, "ready_for_payment"),
        ("(3-D Secure asked)", 200, "authentication_required"),
        ("complete_session_with_authentication_result_request", 200, "completed"),
        ("(create, complete with spt_sim_3ds)", 201, "ready_for_payment"),
        ("(3-D Secure asked)", 200, "authentication_required"),
        ("authentication_result_example (in a complete)", 200, "completed"),
        ("openapi create minimal", 400, "missing $.currency"),
        ("openapi create with_address", 400, "missing $.currency"),
        ("openapi create with_first_touch_attribution", 400, "missing $.currency"),
        ("openapi update set_fulfillment_option", 200, "ready_for_payment"),
        ("openapi complete basic", 400, "missing $.payment_data.handler_id"),
        (
            "openapi complete with_affiliate_attribution",
            400,
            "missing $.payment_data.handler_id",
        ),
        (
            "discount-extension/rejected-discount-code.json",
            201,
            "ready_for_payment",
        ),
        ("discount-extension/order-level-discount.json", 201, "ready_for_payment"),
        ("discount-extension/automatic-discount.json", 201, "ready_for_payment"),
        (
            "discount-extension/automatic-discount.json + extensions [discount]",
            201,
            "ready_for_payment",
        ),
        (
            "discount-extension/percentage-discount-with-allocations.json",
            201,
            "ready_for_payment",
        ),
        ("discount-extension/stacked-discounts.json", 201, "ready_for_payment"),
    ];
    let got: Vec<(&str, u16, &str)> = rows
        .iter()
        .map(|r| (r.example.as_str(), r.status, r.outcome.as_str()))
        .collect();
    assert_eq!(got, expected);
}

// ---------------------------------------------------------------------------------------------------------------
// Bad input, tolerances and open enums.

async fn rows_written(app: &TestApp) -> (i64, i64) {
    (
        count(app, "checkout_session").await,
        count(app, "payment_attempt").await,
    )
}

/// POSTs `body` (raw JSON text) to `path` and expects a 400 with `code` and `param`, and nothing written.
async fn refused(app: &TestApp, path: &str, body: &str, code: &str, param: &str) {
    let before = rows_written(app).await;
    let snapshot = match path.split('/').nth(2) {
        Some(id) => Some(
            get(app, &format!("/checkout_sessions/{id}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        ),
        None => None,
    };
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(AGENT_KEY)
        .header("API-Version", V)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_server_error(), "{path} {body}: {}", r.status());
    let e = error(r, StatusCode::BAD_REQUEST, code, Some(param)).await;
    assert!(e["message"].is_string());
    assert_eq!(rows_written(app).await, before, "{path} {body} wrote rows");
    if let Some(snapshot) = snapshot {
        let id = path.split('/').nth(2).unwrap();
        let now = get(app, &format!("/checkout_sessions/{id}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(now, snapshot, "{path} {body} changed the session");
    }
}

/// `base` with the member at `pointer` set to `value` (added when absent), as JSON text.
fn with(mut base: Value, pointer: &str, value: Value) -> String {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match base.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}")) {
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        Value::Object(members) => {
            members.insert(key.to_owned(), value);
        }
        other => panic!("{parent} is {other}"),
    }
    base.to_string()
}

fn without(mut base: Value, pointer: &str) -> String {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    base.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
    base.to_string()
}

#[tokio::test]
async fn v2026_01_30_create_bad_input_matrix() {
    let app = spawn_app().await;
    let base = create_body(json!([{"id": TEE}]));
    let long = "x".repeat(300);
    let cases: Vec<(String, &str, &str)> = vec![
        ("null".into(), "invalid", "$"),
        ("[]".into(), "invalid", "$"),
        ("42".into(), "invalid", "$"),
        (with(base.clone(), "/currency", json!(5)), "invalid", "$.currency"),
        (
            with(base.clone(), "/currency", json!("dollars")),
            "invalid",
            "$.currency",
        ),
        (without(base.clone(), "/currency"), "missing", "$.currency"),
        (without(base.clone(), "/line_items"), "missing", "$.line_items"),
        (
            with(base.clone(), "/line_items", json!({"id": TEE})),
            "invalid",
            "$.line_items",
        ),
        (with(base.clone(), "/line_items", json!([])), "invalid", "$.line_items"),
        (
            with(base.clone(), "/line_items", json!([{}])),
            "missing",
            "$.line_items[0].id",
        ),
        (
            with(base.clone(), "/line_items", json!([7])),
            "invalid",
            "$.line_items[0]",
        ),
        (
            with(base.clone(), "/line_items/0/id", json!(7)),
            "invalid",
            "$.line_items[0].id",
        ),
        (
            with(base.clone(), "/line_items/0/id", json!(long)),
            "invalid",
            "$.line_items[0].id",
        ),
        (
            with(base.clone(), "/line_items/0", json!({"id": TEE, "quantity": 0})),
            "invalid",
            "$.line_items[0].quantity",
        ),
        (
            with(base.clone(), "/line_items/0", json!({"id": TEE, "quantity": 1.5})),
            "invalid",
            "$.line_items[0].quantity",
        ),
        (
            with(base.clone(), "/line_items/0", json!({"id": TEE, "quantity": 100_000})),
            "invalid",
            "$.line_items[0].quantity",
        ),
        (
            with(base.clone(), "/line_items/0", json!({"id": TEE, "quantity": "2"})),
            "invalid",
            "$.line_items[0].quantity",
        ),
        (
            with(base.clone(), "/line_items/0", json!({"id": TEE, "unit_amount": -1})),
            "invalid",
            "$.line_items[0].unit_amount",
        ),
        (with(base.clone(), "/buyer", json!([])), "invalid", "$.buyer"),
        (
            with(base.clone(), "/buyer", json!({"first_name": "Jane"})),
            "missing",
            "$.buyer.email",
        ),
        (
            with(
                base.clone(),
                "/buyer",
                json!({"email": "j@example.com", "account_type": "vip"}),
            ),
            "invalid",
            "$.buyer.account_type",
        ),
        (
            with(base.clone(), "/buyer", json!({"email": "j@example.com", "company": {}})),
            "missing",
            "$.buyer.company.name",
        ),
        (
            with(
                base.clone(),
                "/buyer",
                json!({"email": "j@example.com", "tax_exemption": {"certificate_id": "c", "certificate_type": "friend"}}),
            ),
            "invalid",
            "$.buyer.tax_exemption.certificate_type",
        ),
        (
            with(base.clone(), "/fulfillment_details", json!([])),
            "invalid",
            "$.fulfillment_details",
        ),
        (
            with(base.clone(), "/fulfillment_details/address/country", json!("usa")),
            "invalid",
            "$.fulfillment_details.address.country",
        ),
        (
            with(base.clone(), "/fulfillment_details/address/postal_code", json!(62701)),
            "invalid",
            "$.fulfillment_details.address.postal_code",
        ),
        (
            with(base.clone(), "/fulfillment_details/address/line_one", json!(long)),
            "invalid",
            "$.fulfillment_details.address.line_one",
        ),
        (
            without(base.clone(), "/fulfillment_details/address/city"),
            "missing",
            "$.fulfillment_details.address.city",
        ),
        (
            with(base.clone(), "/capabilities", json!([])),
            "invalid",
            "$.capabilities",
        ),
        (
            with(base.clone(), "/capabilities/interventions/supported", json!("3ds")),
            "invalid",
            "$.capabilities.interventions.supported",
        ),
        (
            with(base.clone(), "/capabilities/interventions", json!({"supported": [3]})),
            "invalid",
            "$.capabilities.interventions.supported[0]",
        ),
        (
            with(base.clone(), "/discounts", json!({"codes": "SAVE"})),
            "invalid",
            "$.discounts.codes",
        ),
        (
            with(base.clone(), "/discounts", json!({"codes": [""]})),
            "invalid",
            "$.discounts.codes[0]",
        ),
        (with(base.clone(), "/coupons", json!({})), "invalid", "$.coupons"),
        (
            with(base.clone(), "/affiliate_attribution", json!("x")),
            "invalid",
            "$.affiliate_attribution",
        ),
    ];
    for (body, code, param) in cases {
        refused(&app, "/checkout_sessions", &body, code, param).await;
    }
    assert_eq!(count(&app, "checkout_session").await, 0);
}

#[tokio::test]
async fn v2026_01_30_update_complete_and_cancel_bad_input_matrix() {
    let app = spawn_app().await;
    let id = ready(&app).await;
    let update = format!("/checkout_sessions/{id}");
    let option =
        json!({"selected_fulfillment_options": [{"type": "shipping", "option_id": "ship_express", "item_ids": [TEE]}]});
    let update_cases: Vec<(String, &str, &str)> = vec![
        ("null".into(), "invalid", "$"),
        ("[]".into(), "invalid", "$"),
        ("42".into(), "invalid", "$"),
        (
            json!({"selected_fulfillment_options": {}}).to_string(),
            "invalid",
            "$.selected_fulfillment_options",
        ),
        (
            with(option.clone(), "/selected_fulfillment_options/0/type", json!("drone")),
            "invalid",
            "$.selected_fulfillment_options[0].type",
        ),
        (
            without(option.clone(), "/selected_fulfillment_options/0/type"),
            "missing",
            "$.selected_fulfillment_options[0].type",
        ),
        (
            with(option.clone(), "/selected_fulfillment_options/0/item_ids", json!("TEE")),
            "invalid",
            "$.selected_fulfillment_options[0].item_ids",
        ),
        (
            json!({"line_items": [{"id": TEE, "quantity": -1}]}).to_string(),
            "invalid",
            "$.line_items[0].quantity",
        ),
        (json!({"buyer": 42}).to_string(), "invalid", "$.buyer"),
        (
            json!({"fulfillment_details": {"address": []}}).to_string(),
            "invalid",
            "$.fulfillment_details.address",
        ),
    ];
    for (body, code, param) in update_cases {
        refused(&app, &update, &body, code, param).await;
    }

    let complete = format!("{update}/complete");
    let pay = payment("spt_sim_ok");
    let complete_cases: Vec<(String, &str, &str)> = vec![
        ("null".into(), "invalid", "$"),
        ("[]".into(), "invalid", "$"),
        ("42".into(), "invalid", "$"),
        ("{}".into(), "missing", "$.payment_data"),
        (json!({"payment_data": []}).to_string(), "invalid", "$.payment_data"),
        (
            json!({"payment_data": {"purchase_order_number": "PO-1"}}).to_string(),
            "missing",
            "$.payment_data.handler_id",
        ),
        (
            json!({"payment_data": {"token": "spt_sim_ok", "provider": "stripe"}}).to_string(),
            "missing",
            "$.payment_data.handler_id",
        ),
        (
            with(
                pay.clone(),
                "/payment_data/instrument/credential/type",
                json!("wallet_token"),
            ),
            "invalid",
            "$.payment_data.instrument.credential.type",
        ),
        (
            without(pay.clone(), "/payment_data/instrument/credential/token"),
            "missing",
            "$.payment_data.instrument.credential.token",
        ),
        (
            with(
                pay.clone(),
                "/payment_data/instrument/credential/token",
                json!("t".repeat(600)),
            ),
            "invalid",
            "$.payment_data.instrument.credential.token",
        ),
        (
            with(pay.clone(), "/payment_data/instrument", json!("card")),
            "invalid",
            "$.payment_data.instrument",
        ),
        (
            with(pay.clone(), "/payment_data/handler_id", json!(["card_tokenized"])),
            "invalid",
            "$.payment_data.handler_id",
        ),
        (
            with(pay.clone(), "/payment_data/payment_terms", json!("net_30")),
            "invalid",
            "$.payment_data.payment_terms",
        ),
        (
            with(pay.clone(), "/payment_data/payment_terms", json!("weekly")),
            "invalid",
            "$.payment_data.payment_terms",
        ),
        (
            with(pay.clone(), "/payment_data/approval_required", json!(true)),
            "invalid",
            "$.payment_data.approval_required",
        ),
        (
            with(pay.clone(), "/payment_data/billing_address", json!({"name": "J"})),
            "missing",
            "$.payment_data.billing_address.line_one",
        ),
        (
            with(
                authenticated("spt_sim_ok"),
                "/authentication_result/outcome",
                json!("maybe"),
            ),
            "invalid",
            "$.authentication_result.outcome",
        ),
        (
            without(authenticated("spt_sim_ok"), "/authentication_result/outcome_details"),
            "missing",
            "$.authentication_result.outcome_details",
        ),
        (
            with(
                authenticated("spt_sim_ok"),
                "/authentication_result/outcome_details/electronic_commerce_indicator",
                json!("09"),
            ),
            "invalid",
            "$.authentication_result.outcome_details.electronic_commerce_indicator",
        ),
        (with(pay.clone(), "/buyer", json!({})), "missing", "$.buyer.email"),
    ];
    for (body, code, param) in complete_cases {
        refused(&app, &complete, &body, code, param).await;
    }
    assert_eq!(count(&app, "simulator_charge").await, 0);

    let cancel = format!("{update}/cancel");
    let cancel_cases: Vec<(String, &str, &str)> = vec![
        ("null".into(), "invalid", "$"),
        ("[]".into(), "invalid", "$"),
        ("42".into(), "invalid", "$"),
        (json!({"intent_trace": []}).to_string(), "invalid", "$.intent_trace"),
        (
            json!({"intent_trace": {}}).to_string(),
            "missing",
            "$.intent_trace.reason_code",
        ),
        (
            json!({"intent_trace": {"reason_code": 3}}).to_string(),
            "invalid",
            "$.intent_trace.reason_code",
        ),
        (
            json!({"intent_trace": {"reason_code": "other", "trace_summary": "s".repeat(501)}}).to_string(),
            "invalid",
            "$.intent_trace.trace_summary",
        ),
        (
            json!({"intent_trace": {"reason_code": "other", "metadata": {"k": {"nested": 1}}}}).to_string(),
            "invalid",
            "$.intent_trace.metadata.k",
        ),
    ];
    for (body, code, param) in cancel_cases {
        refused(&app, &cancel, &body, code, param).await;
    }
    let still = session(get(&app, &update).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(still["status"], "ready_for_payment");
}

#[tokio::test]
async fn v2026_01_30_open_enums_accept_unknown_values() {
    let app = spawn_app().await;
    let mut body = create_body(json!([{"id": TEE}]));
    body["capabilities"] = json!({"interventions": {"supported": ["3ds", "telepathy"], "display_context": "webview"},
                                  "extensions": ["discount", "loyalty_points"], "payment": {"methods": ["card"]}});
    body["affiliate_attribution"] = json!({"provider": "unknown-network.example", "publisher_id": "pub_1"});
    let s = create(&app, &body).await;
    assert_eq!(s["capabilities"]["interventions"]["supported"], json!(["3ds"]));
    assert!(!s.to_string().contains("telepathy") && !s.to_string().contains("loyalty_points"));
    let id = id_of(&s);
    let mut pay = payment("spt_sim_ok");
    pay["affiliate_attribution"] =
        json!({"provider": "another-network.example", "token": "atp_1", "touchpoint": "last"});
    let done = session(
        post(&app, &format!("/checkout_sessions/{id}/complete"), &pay)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(done["status"], "completed");
    let other = ready(&app).await;
    let canceled = session(
        post(
            &app,
            &format!("/checkout_sessions/{other}/cancel"),
            &json!({"intent_trace": {"reason_code": "cosmic_rays", "trace_summary": "An unknown reason reads as other"}}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(canceled["status"], "canceled");
}

#[tokio::test]
async fn v2026_01_30_documented_tolerances() {
    let app = spawn_app().await;
    // `items` with `quantity`, no `capabilities`, later fields and unknown fields ignored and never echoed.
    let mut body = json!({"currency": "USD", "items": [{"id": TEE, "quantity": 2, "name": "ignored", "colour": "teal"}],
                          "order_notes": 42, "surprise": {"nested": true},
                          "fulfillment_details": {"phone": "15551234567", "address": address("US")}});
    body["fulfillment_details"]["address"]["company"] = json!(7);
    let s = create(&app, &body).await;
    assert_eq!(
        (&s["status"], &s["line_items"][0]["quantity"]),
        (&json!("ready_for_payment"), &json!(2))
    );
    assert_eq!(s["fulfillment_details"]["phone_number"], "15551234567");
    let text = s.to_string();
    for unknown in ["order_notes", "surprise", "colour", "teal", "company", "ignored"] {
        assert!(!text.contains(unknown), "{unknown} was echoed: {text}");
    }
    let path = format!("/checkout_sessions/{}", id_of(&s));
    let nested = session(
        post(&app, &path, &json!({"buyer": {"email": "j@example.com"},
            "selected_fulfillment_options": [{"type": "shipping", "shipping": {"option_id": "ship_express", "item_ids": [TEE]}}]}))
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        nested["selected_fulfillment_options"],
        json!([{"type": "shipping", "option_id": "ship_express", "item_ids": [TEE]}]),
        "nested in, flat out"
    );
    let cleared = session(
        post(&app, &path, &json!({"buyer": null, "fulfillment_details": null}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(cleared.get("buyer").is_none() && cleared.get("fulfillment_details").is_none());
    assert_eq!(cleared["status"], "not_ready_for_payment");

    // Digital goods need no address; business problems stay messages in this version's shape.
    let digital = create(
        &app,
        &json!({"currency": "usd", "line_items": [{"id": MAP_PACK}], "capabilities": {}}),
    )
    .await;
    assert_eq!(digital["status"], "ready_for_payment");
    let oos = create(&app, &create_body(json!([{"id": JACKET_OUT_OF_STOCK}]))).await;
    assert_eq!(oos["messages"][0]["code"], "out_of_stock");
    assert_eq!(oos["messages"][0]["severity"], "high");
}

#[tokio::test]
async fn v2026_01_30_sessions_of_one_version_read_well_in_the_other() {
    let app = spawn_app().await;
    // Created by a 2026-04-17 agent with the fields 2026-01-30 lacks, read in 2026-01-30.
    let mut newer = create_body(json!([{"id": TEE}]));
    newer["order_notes"] = json!("Leave at the door");
    newer["fulfillment_details"]["address"]["company"] = json!("Acme");
    let r = app.acp_post("/checkout_sessions", &newer).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = id_of(&r.json::<Value>().await.unwrap());
    let read = session(
        get(&app, &format!("/checkout_sessions/{id}")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(!read.to_string().contains("Acme") && !read.to_string().contains("Leave at the door"));
    // And the other way round.
    let older = ready(&app).await;
    let r = app
        .acp_get(&format!("/checkout_sessions/{older}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_valid_session("2026-04-17", &body);
    assert_eq!(body["protocol"]["version"], "2026-04-17");
}

// ---------------------------------------------------------------------------------------------------------------
// Our own document.

#[tokio::test]
async fn v2026_01_30_the_document_is_served_as_written() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/openapi/2026-01-30.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), DOC);
}

#[test]
fn v2026_01_30_every_schema_in_the_document_compiles() {
    for name in doc()["components"]["schemas"].as_object().unwrap().keys() {
        our_validator(name);
    }
}

/// Our operations against the official 2026-01-30 OpenAPI: same operation ids, its success and documented error
/// statuses, `API-Version` required and `Idempotency-Key` optional on every POST.
#[test]
fn v2026_01_30_operations_match_the_official_openapi() {
    let Some(dir) = spec_dir() else { return };
    let text = std::fs::read_to_string(dir.join("spec/2026-01-30/openapi/openapi.agentic_checkout.yaml")).unwrap();
    let official: Value = serde_yaml_ng::from_str(&text).expect("official OpenAPI parses");
    let ours = doc();
    let mut checked = 0;
    for (path, item) in official["paths"].as_object().unwrap() {
        for method in ["get", "post"] {
            let Some(op) = item.get(method) else { continue };
            let mine = &ours["paths"][path][method];
            assert!(mine.is_object(), "we do not describe {method} {path}");
            assert_eq!(mine["operationId"], op["operationId"], "{method} {path}");
            for status in op["responses"].as_object().unwrap().keys() {
                let documented = match status.as_str() {
                    "4XX" => ["400", "401"].iter().all(|s| mine["responses"][*s].is_object()),
                    other => mine["responses"][other].is_object(),
                };
                assert!(documented, "{method} {path} lacks the official {status}");
            }
            if method == "post" {
                for status in ["400", "401", "409", "413", "415", "422", "5XX"] {
                    assert!(mine["responses"][status].is_object(), "{method} {path} lacks {status}");
                }
                let params: Vec<&str> = mine["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|p| p["$ref"].as_str())
                    .collect();
                for required in ["APIVersion", "IdempotencyKey"] {
                    assert!(
                        params.iter().any(|p| p.ends_with(required)),
                        "{method} {path} lacks {required}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "the five checkout operations");
    let official_key = &official["components"]["parameters"]["IdempotencyKey"];
    let our_key = &ours["components"]["parameters"]["IdempotencyKey"];
    assert_eq!(
        (&official_key["required"], &our_key["required"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(
        ours["components"]["parameters"]["APIVersion"]["schema"]["enum"],
        json!([V])
    );
    assert_eq!(
        ours["components"]["schemas"]["Error"]["properties"]["type"]["enum"],
        official["components"]["schemas"]["Error"]["properties"]["type"]["enum"]
    );
}

/// Every enum value our response schemas allow is one the official 2026-01-30 bundle allows.
#[test]
fn v2026_01_30_our_response_enums_are_within_the_official_ones() {
    let Some(official) = schemas(V) else { return };
    let ours = &doc()["components"]["schemas"];
    let probes: &[(&str, &str, &str, Value)] = &[
        (
            "Total",
            "/properties/type/enum",
            "Total",
            json!({"display_text": "t", "amount": 1}),
        ),
        (
            "Link",
            "/properties/type/enum",
            "Link",
            json!({"url": "https://x.example", "title": "t"}),
        ),
        (
            "MessageError",
            "/properties/code/enum",
            "MessageError",
            json!({"type": "error", "content_type": "plain", "content": "c"}),
        ),
        (
            "MessageWarning",
            "/properties/code/enum",
            "MessageWarning",
            json!({"type": "warning", "content_type": "plain", "content": "c"}),
        ),
    ];
    for (ours_def, pointer, def, base) in probes {
        let key = if pointer.contains("/code/") { "code" } else { "type" };
        for value in ours[*ours_def].pointer(pointer).unwrap().as_array().unwrap() {
            let mut instance = base.clone();
            instance[key] = value.clone();
            assert_eq!(official.validate(def, &instance), Ok(()), "{ours_def} {value}");
        }
    }
    for status in ours["CheckoutSession"]["properties"]["status"]["enum"]
        .as_array()
        .unwrap()
    {
        let official_statuses = [
            "incomplete",
            "not_ready_for_payment",
            "requires_escalation",
            "authentication_required",
            "ready_for_payment",
            "pending_approval",
            "complete_in_progress",
            "completed",
            "canceled",
            "in_progress",
            "expired",
        ];
        assert!(official_statuses.contains(&status.as_str().unwrap()), "{status}");
    }
}
