//! Every version over one canonical session: a session lives across versions, webhooks pick their version, and
//! the served set is configurable.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{AGENT_KEY, TestApp, spawn_app, spawn_app_with},
    lifecycle::{TEE, address, count, payment},
    official::{assert_valid, assert_valid_session},
};

async fn call(app: &TestApp, method: Method, path: &str, version: &str, body: Option<&Value>) -> (StatusCode, Value) {
    let mut request = app.acp_as(method, path, AGENT_KEY, version);
    if let Some(body) = body {
        request = request.json(body);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A session as `version` sees it, checked against that version's official schema.
async fn session_in(app: &TestApp, method: Method, path: &str, version: &str, body: Option<&Value>) -> Value {
    let (status, v) = call(app, method, path, version, body).await;
    assert!(status.is_success(), "{version} {path}: {status} {v:#}");
    assert_valid_session(version, &v);
    v
}

async fn order_event_payload(app: &TestApp) -> Value {
    sqlx::query_scalar("select payload from webhook_event where event_type = 'order_create'")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_session_created_in_2025_09_29_is_updated_in_2026_01_30_and_completed_in_2026_04_17() {
    let app = spawn_app().await;
    let created = session_in(
        &app,
        Method::POST,
        "/checkout_sessions",
        "2025-09-29",
        Some(&json!({"items": [{"id": TEE, "quantity": 2}], "fulfillment_address": address("US")})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["line_items"][0]["item"]["quantity"], 2);

    // Every version reads it, each in its own shape.
    for version in acp_merchant::protocol::SUPPORTED_VERSIONS {
        session_in(&app, Method::GET, &format!("/checkout_sessions/{id}"), version, None).await;
    }

    let as_2026_01_30 = session_in(
        &app,
        Method::GET,
        &format!("/checkout_sessions/{id}"),
        "2026-01-30",
        None,
    )
    .await;
    let express = as_2026_01_30["fulfillment_options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] != as_2026_01_30["selected_fulfillment_options"][0]["option_id"])
        .expect("a second shipping option")["id"]
        .clone();
    let updated = session_in(
        &app,
        Method::POST,
        &format!("/checkout_sessions/{id}"),
        "2026-01-30",
        Some(&json!({"selected_fulfillment_options": [{"type": "shipping", "option_id": express, "item_ids": [TEE]}]})),
    )
    .await;
    assert_eq!(updated["selected_fulfillment_options"][0]["option_id"], express);
    assert_eq!(
        updated["line_items"][0]["quantity"], 2,
        "the quantity set in 2025-09-29 holds"
    );

    let completed = session_in(
        &app,
        Method::POST,
        &format!("/checkout_sessions/{id}/complete"),
        "2026-04-17",
        Some(&payment("spt_sim_ok")),
    )
    .await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(count(&app, "simulator_charge").await, 1);

    // The oldest version sees the order too, in its shape.
    let old = session_in(
        &app,
        Method::GET,
        &format!("/checkout_sessions/{id}"),
        "2025-09-29",
        None,
    )
    .await;
    assert_eq!(old["status"], "completed");
    assert_eq!(old["order"]["id"], completed["order"]["id"]);
    assert_eq!(old["fulfillment_option_id"], express);

    // The order webhook uses the version of the complete call: the full 2026-04-17 Order.
    let event = order_event_payload(&app).await;
    assert_eq!(event["data"]["id"], completed["order"]["id"]);
    assert!(event["data"]["line_items"].is_array());
}

#[tokio::test]
async fn webhooks_use_the_complete_calls_version_unless_the_agent_chose_one() {
    let app = spawn_app().await;
    let create = json!({"items": [{"id": TEE, "quantity": 1}], "fulfillment_details": {"address": address("US")}});
    let legacy_payment = json!({"payment_data": {"token": "spt_sim_ok", "provider": "stripe"}});
    let complete_in = |version: &'static str| {
        let app = &app;
        let create = create.clone();
        let legacy_payment = legacy_payment.clone();
        async move {
            let s = session_in(app, Method::POST, "/checkout_sessions", version, Some(&create)).await;
            let id = s["id"].as_str().unwrap().to_owned();
            session_in(
                app,
                Method::POST,
                &format!("/checkout_sessions/{id}/complete"),
                version,
                Some(&legacy_payment),
            )
            .await;
            id
        }
    };
    let first = complete_in("2025-12-12").await;
    let payload: Value = sqlx::query_scalar(
        "select e.payload from webhook_event e join merchant_order o using (order_id) where o.checkout_session_id = $1",
    )
    .bind(&first)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(payload["data"]["checkout_session_id"], first.as_str());
    assert!(
        payload["data"].get("id").is_none(),
        "the legacy body has no order id: {payload}"
    );
    assert_eq!(payload["data"]["refunds"], json!([]));

    // The merchant sets this agent's webhooks to 2026-04-17: the next order's body is the full Order.
    let r = app
        .admin(Method::PUT, "/admin/agents/agent_default/webhook-version")
        .json(&json!({"api_version": "2026-04-17"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let second = complete_in("2025-12-12").await;
    let payload: Value = sqlx::query_scalar(
        "select e.payload from webhook_event e join merchant_order o using (order_id) where o.checkout_session_id = $1",
    )
    .bind(&second)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        payload["data"]["id"].is_string() && payload["data"]["line_items"].is_array(),
        "{payload}"
    );

    let r = app
        .admin(Method::PUT, "/admin/agents/agent_default/webhook-version")
        .json(&json!({"api_version": "1999-01-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_served_versions_are_a_setting() {
    let app = spawn_app_with(&[("api_versions", "2026-04-17,2025-12-12")]).await;
    let (status, e) = call(&app, Method::GET, "/checkout_sessions/cs_x", "2025-09-29", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], "unsupported_api_version");
    assert_eq!(
        e["supported_versions"],
        json!(["2026-04-17", "2025-12-12"]),
        "newest first"
    );
    let doc = app
        .client
        .get(app.url("/openapi/2025-09-29.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        doc.status(),
        StatusCode::NOT_FOUND,
        "no document for a version not served"
    );
    let doc = app
        .client
        .get(app.url("/openapi/2025-12-12.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status(), StatusCode::OK);
    // Versions this build does not know are refused at start-up.
    let err = acp_merchant::config::Settings::from_pairs(&[
        ("env", "development"),
        ("psp", "simulator"),
        ("api_versions", "2026-04-17,2031-01-01"),
    ])
    .unwrap_err();
    assert_eq!(err.setting, "ACP_API_VERSIONS");
}

#[tokio::test]
async fn the_key_is_required_from_2026_04_17_on_and_optional_before() {
    let app = spawn_app().await;
    let body = json!({"items": [{"id": TEE, "quantity": 1}]});
    for version in ["2025-09-29", "2025-12-12", "2026-01-16"] {
        let post = |v: &str| {
            app.client
                .post(app.url("/checkout_sessions"))
                .bearer_auth(AGENT_KEY)
                .header("API-Version", v)
                .json(&body)
                .send()
        };
        let a: Value = post(version).await.unwrap().json().await.unwrap();
        let b: Value = post(version).await.unwrap().json().await.unwrap();
        assert_ne!(
            a["id"], b["id"],
            "{version}: without a key a repeated create makes a new session"
        );
    }
    let r = app
        .client
        .post(app.url("/checkout_sessions"))
        .bearer_auth(AGENT_KEY)
        .header("API-Version", "2026-04-17")
        .json(&json!({"currency": "usd", "line_items": [{"id": TEE}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "idempotency_key_required");
    assert_valid("2026-04-17", "Error", &e);
}

#[tokio::test]
async fn a_whole_quantity_written_as_a_decimal_is_that_number() {
    let app = spawn_app().await;
    let s = session_in(
        &app,
        Method::POST,
        "/checkout_sessions",
        "2026-04-17",
        Some(&json!({"currency": "usd", "line_items": [{"id": TEE, "quantity": 2.0}]})),
    )
    .await;
    assert_eq!(s["line_items"][0]["quantity"], 2);
    let (status, e) = call(
        &app,
        Method::POST,
        "/checkout_sessions",
        "2026-04-17",
        Some(&json!({"currency": "usd", "line_items": [{"id": TEE, "quantity": 2.5}]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["param"], "$.line_items[0].quantity");
}
