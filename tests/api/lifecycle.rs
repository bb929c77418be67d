//! Checkout session lifecycle for ACP 2026-04-17 on real PostgreSQL with the payment simulator: the happy path,
//! every cell of the state table, headers, and business messages. Every session and error body received is
//! validated against the official JSON Schema.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{API_VERSION, TestApp, spawn_app, spawn_app_with},
    official::{assert_valid, assert_valid_session},
    shared::total,
};

pub const TEE: &str = "var_trail_tee_m_blue";
pub const MAP_PACK: &str = "var_trail_map_pack";
pub const JACKET_OUT_OF_STOCK: &str = "var_summit_jacket_l";
pub const HEADLAMP_LIMIT_2: &str = "var_headlamp_pro";

pub fn address(country: &str) -> Value {
    json!({"name": "Jane Buyer", "line_one": "1 Main St", "city": "Springfield", "state": "IL",
           "country": country, "postal_code": "62701"})
}

pub fn create_body(items: Value) -> Value {
    json!({
        "currency": "usd",
        "line_items": items,
        "capabilities": {"interventions": {"supported": ["3ds"]}},
        "fulfillment_details": {"name": "Jane Buyer", "email": "jane@example.com", "address": address("US")},
    })
}

pub fn payment(token: &str) -> Value {
    json!({"payment_data": {"handler_id": "card_tokenized",
                            "instrument": {"type": "card", "credential": {"type": "spt", "token": token}}}})
}

/// The body of a session response, checked against the official schema and ours.
pub async fn session(response: Response, expected: StatusCode) -> Value {
    session_in(API_VERSION, response, expected).await
}

/// The body of a session response in `version`, checked against that version's official schema and ours.
pub async fn session_in(version: &str, response: Response, expected: StatusCode) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(status, expected, "unexpected status; body: {body:#}");
    assert_valid_session(version, &body);
    crate::own_openapi::assert_matches_doc(version, "CheckoutSession", &body);
    body
}

/// The body of an error response, checked against the official schema and the expected code and param.
pub async fn error(response: Response, status: StatusCode, code: &str, param: Option<&str>) -> Value {
    let actual = response.status();
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(actual, status, "unexpected status; body: {body:#}");
    assert_valid(API_VERSION, "Error", &body);
    crate::own_openapi::assert_matches_our_doc("Error", &body);
    assert_eq!(body["code"], code, "{body:#}");
    let expected_type = match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => "service_unavailable",
        s if s.is_server_error() => "processing_error",
        _ => "invalid_request",
    };
    assert_eq!(body["type"], expected_type, "{body:#}");
    if let Some(param) = param {
        assert_eq!(body["param"], param, "{body:#}");
    }
    body
}

/// The first message of `session` whose `field` equals `value` (panics, with the messages, when none does).
pub fn message<'a>(session: &'a Value, field: &str, value: &str) -> &'a Value {
    session["messages"]
        .as_array()
        .and_then(|messages| messages.iter().find(|m| m[field] == value))
        .unwrap_or_else(|| panic!("no message with {field} = {value}: {}", session["messages"]))
}

/// Completes session `id` with a declined card first, then a good one; returns the completed session.
pub async fn pay_after_a_decline(app: &TestApp, id: &str) -> Value {
    let complete = format!("/checkout_sessions/{id}/complete");
    let declined = app
        .acp_post(&complete, &payment("spt_sim_decline"))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), StatusCode::OK);
    session(
        app.acp_post(&complete, &payment("spt_sim_ok")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await
}

pub async fn create(app: &TestApp, items: Value) -> Value {
    session(
        app.acp_post("/checkout_sessions", &create_body(items))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await
}

pub async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
        .fetch_one(&app.db)
        .await
        .unwrap()
}

pub async fn stock(app: &TestApp, variant: &str) -> Option<i32> {
    sqlx::query_scalar("select stock_quantity from variant where variant_id = $1")
        .bind(variant)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn create_update_get_complete_on_the_demo_catalog() {
    let app = spawn_app().await;
    let stock_before = stock(&app, TEE).await.unwrap();

    let created = create(&app, json!([{"id": TEE}])).await;
    assert_eq!(created["status"], "ready_for_payment", "{created:#}");
    assert_eq!(created["protocol"]["version"], API_VERSION);
    assert_eq!(created["line_items"][0]["item"]["id"], TEE);
    assert_eq!(created["line_items"][0]["quantity"], 1);
    assert_eq!(total(&created, "items_base_amount"), 2500);
    assert_eq!(
        total(&created, "fulfillment"),
        500,
        "standard shipping is selected by default"
    );
    assert_eq!(total(&created, "total"), 3000);
    let id = created["id"].as_str().unwrap();

    let updated = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
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
    assert_eq!(total(&updated, "subtotal"), 5000);
    assert_eq!(total(&updated, "fulfillment"), 1500);
    assert_eq!(total(&updated, "total"), 6500);
    // Totals reconcile: total = subtotal + fulfillment + tax.
    assert_eq!(
        total(&updated, "total"),
        total(&updated, "subtotal") + total(&updated, "fulfillment") + total(&updated, "tax")
    );

    let fetched = session(
        app.acp_get(&format!("/checkout_sessions/{id}")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(fetched["totals"], updated["totals"]);

    let completed = session(
        app.acp_post(&format!("/checkout_sessions/{id}/complete"), &payment("spt_sim_ok"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(completed["status"], "completed");
    let order = &completed["order"];
    assert_eq!(order["checkout_session_id"], id);
    assert!(
        order["permalink_url"]
            .as_str()
            .unwrap()
            .contains(&format!("/orders/{}?t=", order["id"].as_str().unwrap())),
        "the permalink opens the order page (issue 13)"
    );

    assert_eq!(count(&app, "merchant_order").await, 1);
    let charged: (i64, String) =
        sqlx::query_as("select amount, status from simulator_charge where checkout_session_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(charged, (6500, "succeeded".to_owned()));
    assert_eq!(stock(&app, TEE).await.unwrap(), stock_before - 2);

    let after = session(
        app.acp_get(&format!("/checkout_sessions/{id}")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(after["order"]["id"], order["id"]);
}

#[tokio::test]
async fn headers_are_enforced_with_acp_errors() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}]));
    let no_auth = app
        .client
        .post(app.url("/checkout_sessions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    error(no_auth, StatusCode::UNAUTHORIZED, "unauthorized", None).await;

    let wrong = app
        .acp_as(Method::POST, "/checkout_sessions", "not-the-key", API_VERSION)
        .json(&body)
        .send()
        .await
        .unwrap();
    error(wrong, StatusCode::UNAUTHORIZED, "unauthorized", None).await;

    let no_version = app
        .client
        .post(app.url("/checkout_sessions"))
        .bearer_auth(crate::helpers::AGENT_KEY)
        .header("Idempotency-Key", "k1")
        .json(&body)
        .send()
        .await
        .unwrap();
    let e = error(no_version, StatusCode::BAD_REQUEST, "missing_api_version", None).await;
    assert_eq!(
        e["supported_versions"],
        json!(acp_merchant::protocol::SUPPORTED_VERSIONS),
        "newest first"
    );

    let old = app
        .acp_as(
            Method::POST,
            "/checkout_sessions",
            crate::helpers::AGENT_KEY,
            "2025-01-01",
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let e = error(old, StatusCode::BAD_REQUEST, "unsupported_api_version", None).await;
    assert_eq!(
        e["supported_versions"],
        json!(acp_merchant::protocol::SUPPORTED_VERSIONS),
        "newest first"
    );

    let no_key = app
        .client
        .post(app.url("/checkout_sessions"))
        .bearer_auth(crate::helpers::AGENT_KEY)
        .header("API-Version", API_VERSION)
        .json(&body)
        .send()
        .await
        .unwrap();
    error(no_key, StatusCode::BAD_REQUEST, "idempotency_key_required", None).await;
    assert_eq!(count(&app, "checkout_session").await, 0);

    let echoed = app
        .client
        .post(app.url("/checkout_sessions"))
        .bearer_auth(crate::helpers::AGENT_KEY)
        .header("API-Version", API_VERSION)
        .header("Idempotency-Key", "echo-me")
        .header("Request-Id", "rid-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["idempotency-key"], "echo-me");
    assert_eq!(echoed.headers()["request-id"], "rid-1");
}

#[tokio::test]
async fn another_agents_session_is_not_found() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    let other_key = "second_agent_key_abcdefghijklmnop";
    sqlx::query("insert into agent (agent_id, name, api_key_sha256) values ('agent_two', 'Two', sha256($1::bytea))")
        .bind(other_key.as_bytes())
        .execute(&app.db)
        .await
        .unwrap();
    let path = format!("/checkout_sessions/{id}");
    for (method, p) in [
        (Method::GET, path.clone()),
        (Method::POST, path.clone()),
        (Method::POST, format!("{path}/cancel")),
    ] {
        let r = app
            .acp_as(method, &p, other_key, API_VERSION)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        error(r, StatusCode::NOT_FOUND, "not_found", None).await;
    }
    // The second agent is a real agent: it can create its own sessions.
    let own = app
        .acp_as(Method::POST, "/checkout_sessions", other_key, API_VERSION)
        .json(&create_body(json!([{"id": TEE}])))
        .send()
        .await
        .unwrap();
    session(own, StatusCode::CREATED).await;
}

#[tokio::test]
async fn unknown_sessions_are_404_for_every_endpoint() {
    let app = spawn_app().await;
    let r = app.acp_get("/checkout_sessions/cs_missing").send().await.unwrap();
    error(r, StatusCode::NOT_FOUND, "not_found", None).await;
    let r = app
        .acp_post("/checkout_sessions/cs_missing", &json!({}))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::NOT_FOUND, "not_found", None).await;
    let r = app
        .acp_post("/checkout_sessions/cs_missing/complete", &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::NOT_FOUND, "not_found", None).await;
    let r = app
        .acp_post("/checkout_sessions/cs_missing/cancel", &json!({}))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::NOT_FOUND, "not_found", None).await;
}

#[tokio::test]
async fn not_ready_session_updates_to_ready_and_refuses_complete_until_then() {
    let app = spawn_app().await;
    let body = json!({"currency": "usd", "line_items": [{"id": TEE}]});
    let created = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["status"], "not_ready_for_payment");
    let id = created["id"].as_str().unwrap();

    let r = app
        .acp_post(&format!("/checkout_sessions/{id}/complete"), &payment("spt_sim_ok"))
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
    assert_eq!(count(&app, "simulator_charge").await, 0);

    let ready = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"fulfillment_details": {"address": address("US")}}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(ready["status"], "ready_for_payment");

    // Clearing the address (explicit null) falls back to not ready.
    let back = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"fulfillment_details": null}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(back["status"], "not_ready_for_payment");
    assert!(back.get("fulfillment_details").is_none());

    let canceled = session(
        app.acp_post(&format!("/checkout_sessions/{id}/cancel"), &json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(canceled["status"], "canceled");
}

#[tokio::test]
async fn ready_session_cancels() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    // Cancel takes no body at all, too.
    let r = app
        .acp(Method::POST, &format!("/checkout_sessions/{id}/cancel"))
        .send()
        .await
        .unwrap();
    let canceled = session(r, StatusCode::OK).await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["messages"][0]["type"], "info");
}

/// Terminal states: update and complete are 400 `invalid_state`, cancel is 405, GET is 200.
async fn assert_terminal(app: &TestApp, id: &str, status: &str) {
    assert_changes_refused(app, id, status, StatusCode::BAD_REQUEST).await;
}

/// GET shows `status`; update and complete answer `refused` with `invalid_state`; cancel is 405.
async fn assert_changes_refused(app: &TestApp, id: &str, status: &str, refused: StatusCode) {
    let got = session(
        app.acp_get(&format!("/checkout_sessions/{id}")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["status"], status);
    let r = app
        .acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"line_items": [{"id": TEE}]}),
        )
        .send()
        .await
        .unwrap();
    error(r, refused, "invalid_state", None).await;
    let r = app
        .acp_post(&format!("/checkout_sessions/{id}/complete"), &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    if status == "complete_in_progress" {
        // The payment attempt is running: come back later (and nothing is stored for this key).
        assert!(r.headers().get("retry-after").is_some());
        error(r, StatusCode::CONFLICT, "idempotency_in_flight", None).await;
    } else {
        error(r, refused, "invalid_state", None).await;
    }
    let r = app
        .acp_post(&format!("/checkout_sessions/{id}/cancel"), &json!({}))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::METHOD_NOT_ALLOWED, "invalid_state", None).await;
}

#[tokio::test]
async fn completed_sessions_refuse_changes() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    let r = app
        .acp_post(&format!("/checkout_sessions/{id}/complete"), &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::OK).await;
    assert_terminal(&app, id, "completed").await;
    assert_eq!(count(&app, "simulator_charge").await, 1, "no second charge");
}

#[tokio::test]
async fn canceled_sessions_refuse_changes() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    session(
        app.acp_post(&format!("/checkout_sessions/{id}/cancel"), &json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_terminal(&app, id, "canceled").await;
}

#[tokio::test]
async fn sessions_expire_after_their_ttl() {
    let app = spawn_app_with(&[("session_ttl_secs", "1"), ("expiry_sweep_interval_ms", "200")]).await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let swept = crate::helpers::eventually(std::time::Duration::from_secs(2), || async {
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
async fn declined_payment_keeps_the_session_payable_and_a_new_token_succeeds() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    let declined = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}/complete"),
            &payment("spt_sim_decline"),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(declined["status"], "ready_for_payment");
    let message = message(&declined, "code", "payment_declined");
    assert_eq!(message["type"], "error");
    assert_eq!(message["resolution"], "recoverable");
    assert_eq!(count(&app, "merchant_order").await, 0);

    let completed = session(
        app.acp_post(&format!("/checkout_sessions/{id}/complete"), &payment("spt_sim_ok"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(count(&app, "merchant_order").await, 1);
}

#[tokio::test]
async fn three_ds_is_required_then_completes_with_an_authentication_result() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/checkout_sessions/{id}/complete");
    let pending = session(
        app.acp_post(&path, &payment("spt_sim_3ds")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(pending["status"], "authentication_required");
    assert!(pending["authentication_metadata"]["acquirer_details"].is_object());

    let r = app.acp_post(&path, &payment("spt_sim_3ds")).send().await.unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "requires_3ds",
        Some("$.authentication_result"),
    )
    .await;

    let mut body = payment("spt_sim_3ds");
    body["authentication_result"] = json!({"outcome": "authenticated", "outcome_details": {
        "three_ds_cryptogram": "AAIBBYNoEwAAACcKhAJkdQAAAAA=", "electronic_commerce_indicator": "05",
        "transaction_id": "f38e6948-5388-41a6-bca4-b49723c19437", "version": "2.2.0"}});
    let completed = session(app.acp_post(&path, &body).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(count(&app, "merchant_order").await, 1);
}

#[tokio::test]
async fn business_problems_become_messages_not_errors() {
    let app = spawn_app().await;
    let oos = create(&app, json!([{"id": JACKET_OUT_OF_STOCK}])).await;
    assert_eq!(oos["status"], "not_ready_for_payment");
    assert_eq!(oos["messages"][0]["code"], "out_of_stock");
    assert_eq!(oos["messages"][0]["param"], "$.line_items[0].item.id");

    let limited = create(&app, json!([{"id": HEADLAMP_LIMIT_2, "quantity": 3}])).await;
    assert_eq!(limited["status"], "not_ready_for_payment");
    let m = message(&limited, "code", "quantity_exceeded");
    assert_eq!(m["param"], "$.line_items[0].quantity");

    let mut abroad = create_body(json!([{"id": TEE}]));
    abroad["fulfillment_details"]["address"] = address("FR");
    let abroad = session(
        app.acp_post("/checkout_sessions", &abroad).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(abroad["status"], "not_ready_for_payment");
    assert_eq!(abroad["messages"][0]["code"], "region_restricted");

    let id = limited["id"].as_str().unwrap();
    let bad_option = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"line_items": [{"id": HEADLAMP_LIMIT_2, "quantity": 2}],
                    "selected_fulfillment_options": [{"type": "shipping", "option_id": "teleport", "item_ids": [HEADLAMP_LIMIT_2]}]}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    let m = message(&bad_option, "code", "invalid");
    assert_eq!(m["param"], "$.selected_fulfillment_options[0].option_id");
}

#[tokio::test]
async fn digital_goods_need_no_address() {
    let app = spawn_app().await;
    let body = json!({"currency": "usd", "line_items": [{"id": MAP_PACK}]});
    let created = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["status"], "ready_for_payment", "{created:#}");
    assert_eq!(created["fulfillment_options"][0]["type"], "digital");
    assert_eq!(total(&created, "fulfillment"), 0);
}

#[tokio::test]
async fn unknown_payment_handler_is_refused_with_its_param() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    let mut body = payment("spt_sim_ok");
    body["payment_data"]["handler_id"] = json!("paypal");
    let r = app
        .acp_post(&format!("/checkout_sessions/{id}/complete"), &body)
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid", Some("$.payment_data.handler_id")).await;
}

#[tokio::test]
async fn a_session_being_paid_refuses_changes_until_the_psp_answers() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let paying = tokio::spawn(
        app.acp_post(&format!("/checkout_sessions/{id}/complete"), &payment("spt_sim_hold"))
            .send(),
    );
    let held = crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
        count(&app, "simulator_charge").await == 1
    })
    .await;
    assert!(held, "the simulator recorded the held charge");

    assert_changes_refused(&app, &id, "complete_in_progress", StatusCode::CONFLICT).await;

    let released = app
        .admin(Method::POST, "/admin/simulator/release")
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), StatusCode::OK);
    let completed = session(paying.await.unwrap().unwrap(), StatusCode::OK).await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(count(&app, "simulator_charge").await, 1);
    assert_eq!(count(&app, "merchant_order").await, 1);
}

#[tokio::test]
async fn authentication_required_sessions_can_be_read_updated_and_canceled() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    let pending = session(
        app.acp_post(&format!("/checkout_sessions/{id}/complete"), &payment("spt_sim_3ds"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(pending["status"], "authentication_required");

    let got = session(
        app.acp_get(&format!("/checkout_sessions/{id}")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["status"], "authentication_required");
    assert!(
        got["authentication_metadata"].is_object(),
        "GET carries authentication_metadata"
    );

    let updated = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"line_items": [{"id": TEE, "quantity": 2}]}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        updated["status"], "authentication_required",
        "3-D Secure is still owed after an update"
    );
    assert_eq!(updated["line_items"][0]["quantity"], 2);

    let canceled = session(
        app.acp_post(&format!("/checkout_sessions/{id}/cancel"), &json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(canceled["status"], "canceled");
    assert!(canceled.get("authentication_metadata").is_none());
    assert_eq!(count(&app, "merchant_order").await, 0);
}

#[tokio::test]
async fn a_failed_authentication_result_declines_without_charging() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/checkout_sessions/{id}/complete");
    session(
        app.acp_post(&path, &payment("spt_sim_3ds")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let mut body = payment("spt_sim_3ds");
    body["authentication_result"] = json!({"outcome": "denied"});
    let denied = session(app.acp_post(&path, &body).send().await.unwrap(), StatusCode::OK).await;
    assert!(
        denied["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["code"] == "payment_declined"),
        "{denied:#}"
    );
    assert_eq!(count(&app, "merchant_order").await, 0);
    let succeeded: i64 = sqlx::query_scalar("select count(*) from simulator_charge where status = 'succeeded'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(succeeded, 0);
}
