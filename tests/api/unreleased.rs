//! ACP `unreleased`: off unless configured; when on, complete applies contact details and refuses an address
//! change, and items may carry a suggested price.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{AGENT_KEY, TestApp, spawn_app, spawn_app_with},
    lifecycle::{TEE, address, count, payment},
    official::{assert_valid, assert_valid_session},
};

const VERSION: &str = "unreleased";

async fn post(app: &TestApp, path: &str, body: &Value) -> (StatusCode, Value) {
    let r = app
        .acp_as(Method::POST, path, AGENT_KEY, VERSION)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn ready(app: &TestApp) -> String {
    let body = json!({"currency": "usd",
        "line_items": [{"id": TEE, "suggested_price": {"amount": 1, "observed_at": "2026-12-01T00:00:00Z",
                                                        "source": {"feed_id": "feed_1"}}}],
        "fulfillment_details": {"name": "Jane Buyer", "email": "jane@example.com", "address": address("US")}});
    let (status, s) = post(app, "/checkout_sessions", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{s:#}");
    assert_valid_session(VERSION, &s);
    assert_eq!(s["status"], "ready_for_payment");
    assert_ne!(
        s["line_items"][0]["unit_amount"], 1,
        "a suggested price is not honoured over the catalog"
    );
    s["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn unreleased_is_off_unless_configured() {
    let app = spawn_app().await;
    let r = app
        .acp_as(Method::GET, "/checkout_sessions/cs_x", AGENT_KEY, VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "unsupported_api_version");
    assert!(!e["supported_versions"].as_array().unwrap().contains(&json!(VERSION)));
}

#[tokio::test]
async fn unreleased_complete_applies_contact_details_and_refuses_a_new_address() {
    let app = spawn_app_with(&[("api_versions", "unreleased,2026-04-17")]).await;
    let id = ready(&app).await;
    let mut moved = payment("spt_sim_ok");
    let mut elsewhere = address("US");
    elsewhere["city"] = json!("Shelbyville");
    moved["fulfillment_details"] = json!({"address": elsewhere});
    let (status, e) = post(&app, &format!("/checkout_sessions/{id}/complete"), &moved).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e:#}");
    assert_eq!(e["code"], "conflict");
    assert_eq!(e["param"], "$.fulfillment_details.address");
    assert_valid(VERSION, "Error", &e);
    assert_eq!(count(&app, "payment_attempt").await, 0, "nothing was attempted");

    let mut contact = payment("spt_sim_ok");
    contact["fulfillment_details"] = json!({"email": "jane.new@example.com", "phone_number": "15551234567"});
    let (status, done) = post(&app, &format!("/checkout_sessions/{id}/complete"), &contact).await;
    assert_eq!(status, StatusCode::OK, "{done:#}");
    assert_valid_session(VERSION, &done);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["fulfillment_details"]["email"], "jane.new@example.com");
    assert_eq!(done["fulfillment_details"]["phone_number"], "15551234567");
    assert_eq!(done["fulfillment_details"]["address"]["city"], "Springfield");
}
