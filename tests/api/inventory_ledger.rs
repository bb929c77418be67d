//! The inventory ledger (issue 15): every stock change of a variant with its reason, adding up to its stock.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, spawn_app},
    lifecycle::{TEE, create, pay_after_a_decline},
};

async fn ledger(app: &TestApp, variant: &str) -> Value {
    let r = app
        .admin(
            Method::GET,
            &format!("/admin/inventory/ledger?variant_id={variant}&limit=1000"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn reasons(ledger: &Value) -> Vec<(String, i64, i64)> {
    ledger["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["reason"].as_str().unwrap().to_owned(),
                m["on_hand_delta"].as_i64().unwrap(),
                m["reserved_delta"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn assert_balanced(ledger: &Value) {
    let b = &ledger["balance"];
    assert_eq!(
        b["on_hand"], b["stock_quantity"],
        "on-hand deltas add up to the stock: {b}"
    );
    assert_eq!(
        b["reserved"], b["stock_reserved"],
        "reserved deltas add up to the reservations: {b}"
    );
}

#[tokio::test]
async fn every_stock_change_is_in_the_ledger_with_its_reason_and_the_ledger_adds_up() {
    let app = spawn_app().await;
    let start = ledger(&app, TEE).await;
    assert_balanced(&start);
    let before = reasons(&start).len();

    // A declined payment reserves and releases; a paid one reserves and sells.
    let s = create(&app, json!([{"id": TEE, "quantity": 2}])).await;
    let done = pay_after_a_decline(&app, s["id"].as_str().unwrap()).await;
    let order = done["order"]["id"].as_str().unwrap();
    // Canceling the order before it ships puts the units back.
    let r = app
        .admin(Method::POST, &format!("/admin/orders/{order}/cancel"))
        .header("Idempotency-Key", "ledger-cancel")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    // The merchant's sync sets the on-hand count.
    let r = app
        .admin(Method::POST, "/admin/catalog/attributes")
        .body(json!({"variant_id": TEE, "stock_quantity": 50}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let after = ledger(&app, TEE).await;
    let moved = &reasons(&after)[before..];
    let on_hand_before = start["balance"]["stock_quantity"].as_i64().unwrap();
    assert_eq!(
        moved,
        [
            ("reserve".to_owned(), 0, 2),
            ("release".to_owned(), 0, -2),
            ("reserve".to_owned(), 0, 2),
            ("sale".to_owned(), -2, -2),
            ("cancel".to_owned(), 2, 0),
            ("sync".to_owned(), 50 - on_hand_before, 0),
        ]
    );
    assert_balanced(&after);
    assert_eq!(after["balance"]["stock_quantity"], 50);

    // Without a variant: every movement, paged by id.
    let r = app
        .admin(Method::GET, "/admin/inventory/ledger?limit=2")
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["movements"].as_array().unwrap().len(), 2);
    assert!(page.get("balance").is_none());
    let last = page["movements"][1]["id"].as_i64().unwrap();
    let r = app
        .admin(Method::GET, &format!("/admin/inventory/ledger?after={last}&limit=1"))
        .send()
        .await
        .unwrap();
    let next: Value = r.json().await.unwrap();
    assert!(next["movements"][0]["id"].as_i64().unwrap() > last);
}
