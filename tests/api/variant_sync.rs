//! Catalog and stock sync from the merchant's store (issue 15): `PATCH /admin/variants/{id}` and
//! `POST /admin/variants/bulk` change price, availability and on-hand stock; open sessions see the change on their
//! next update or complete; the inventory ledger keeps adding up.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, eventually, spawn_app},
    lifecycle::{MAP_PACK, TEE, count, create, error, message, payment, session},
    shared::total,
    stock::stock_row,
};

async fn change(app: &TestApp, variant: &str, key: &str, body: Value) -> reqwest::Response {
    app.admin(Method::PATCH, &format!("/admin/variants/{variant}"))
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body:#}");
    body
}

/// The ledger's balance for `variant` equals its stock.
async fn assert_ledger_adds_up(app: &TestApp, variant: &str) {
    let r = app
        .admin(Method::GET, &format!("/admin/inventory/ledger?variant_id={variant}"))
        .send()
        .await
        .unwrap();
    let ledger: Value = r.json().await.unwrap();
    let b = &ledger["balance"];
    assert_eq!(b["on_hand"], b["stock_quantity"], "{b}");
    assert_eq!(b["reserved"], b["stock_reserved"], "{b}");
}

#[tokio::test]
async fn a_count_taken_before_a_sale_keeps_that_sale() {
    let app = spawn_app().await;
    assert_eq!(stock_row(&app, TEE).await, (Some(60), 0));
    let counted_at = chrono::Utc::now();
    // A sale of 2 after the store counted its shelf.
    crate::webhooks::buy(&app).await;
    assert_eq!(stock_row(&app, TEE).await, (Some(59), 0));

    let body = ok(change(
        &app,
        TEE,
        "count-40",
        json!({"stock": {"on_hand": 40, "as_of": counted_at}}),
    )
    .await)
    .await;
    assert_eq!(
        body["stock_quantity"], 39,
        "the count of 40, less the sale made after it"
    );
    // A count taken now replaces the number as it is.
    let body = ok(change(&app, TEE, "count-25", json!({"stock": {"on_hand": 25}})).await).await;
    assert_eq!(body["stock_quantity"], 25);
    // A delta adds to it; a return says why.
    let body = ok(change(
        &app,
        TEE,
        "returned-1",
        json!({"stock": {"delta": 1, "reason": "return"}}),
    )
    .await)
    .await;
    assert_eq!(body["stock_quantity"], 26);
    assert_ledger_adds_up(&app, TEE).await;
    let reasons: Vec<String> = sqlx::query_scalar(
        "select reason from inventory_movement where variant_id = $1 order by movement_id desc limit 3",
    )
    .bind(TEE)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(reasons, ["return", "sync", "sync"]);
}

#[tokio::test]
async fn a_sync_while_a_session_is_being_paid_leaves_the_reservation_and_the_final_count_exact() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE, "quantity": 2}])).await;
    let path = format!("/checkout_sessions/{}/complete", created["id"].as_str().unwrap());
    let paying = tokio::spawn(app.acp_post(&path, &payment("spt_sim_hold")).send());
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(&app, "simulator_charge").await == 1
        })
        .await
    );
    assert_eq!(stock_row(&app, TEE).await, (Some(60), 2));

    ok(change(&app, TEE, "sync-10", json!({"stock": {"on_hand": 10}})).await).await;
    assert_eq!(stock_row(&app, TEE).await, (Some(10), 2), "the reservation is intact");
    let r = app
        .admin(Method::POST, "/admin/simulator/release")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let done = session(paying.await.unwrap().unwrap(), StatusCode::OK).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(stock_row(&app, TEE).await, (Some(8), 0), "10 synced, 2 sold");
    assert_ledger_adds_up(&app, TEE).await;
}

#[tokio::test]
async fn a_price_change_and_a_stock_out_between_create_and_complete_reach_the_agent() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": MAP_PACK}])).await;
    assert_eq!(created["status"], "ready_for_payment");
    let path = format!("/checkout_sessions/{}/complete", created["id"].as_str().unwrap());

    ok(change(
        &app,
        MAP_PACK,
        "reprice",
        json!({"price": {"amount": 1599, "currency": "USD"}}),
    )
    .await)
    .await;
    let answer = session(
        app.acp_post(&path, &payment("spt_sim_ok")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["status"], "ready_for_payment", "not charged");
    assert_eq!(message(&answer, "code", "price_change")["type"], "warning");
    assert_eq!(
        total(&answer, "total") - total(&created, "total"),
        300,
        "the new total is shown"
    );
    assert_eq!(count(&app, "simulator_charge").await, 0);
    // The export follows: the feed Product carries the new price.
    let export = app
        .admin(Method::GET, "/admin/catalog/export")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export.contains(r#""amount":1599"#), "{export}");

    ok(change(&app, MAP_PACK, "sold-out", json!({"available": false})).await).await;
    let refused = app.acp_post(&path, &payment("spt_sim_ok")).send().await.unwrap();
    error(
        refused,
        StatusCode::BAD_REQUEST,
        "out_of_stock",
        Some("$.line_items[0].item.id"),
    )
    .await;
    assert_eq!(count(&app, "simulator_charge").await, 0, "nothing charged");
}

#[tokio::test]
async fn changes_are_validated_idempotent_and_a_bulk_applies_all_or_nothing() {
    let app = spawn_app().await;
    // The same key twice: one change.
    for _ in 0..2 {
        ok(change(&app, TEE, "minus-one", json!({"stock": {"delta": -1}})).await).await;
    }
    assert_eq!(stock_row(&app, TEE).await, (Some(59), 0));
    let r = app
        .admin(Method::PATCH, &format!("/admin/variants/{TEE}"))
        .json(&json!({"available": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "an Idempotency-Key is required");

    for (body, param) in [
        (json!({"stock": {"on_hand": 5, "delta": 1}}), "$.stock"),
        (
            json!({"stock": {"delta": 1, "as_of": chrono::Utc::now()}}),
            "$.stock.as_of",
        ),
        (json!({"price": {"amount": 100, "currency": "usd"}}), "$.price.currency"),
        (json!({"colour": "red"}), "$.colour"),
    ] {
        let r = change(&app, TEE, &uuid::Uuid::new_v4().to_string(), body.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["param"], param, "{answer}");
    }
    let r = change(&app, "var_nope", "missing", json!({"available": false})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let bulk = |body: Value, key: &'static str| {
        app.admin(Method::POST, "/admin/variants/bulk")
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let r = bulk(
        json!({"changes": [{"variant_id": TEE, "stock": {"on_hand": 5}}, {"variant_id": "var_nope", "available": true}]}),
        "bulk-bad",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["param"], "$.changes[1].variant_id");
    assert_eq!(
        stock_row(&app, TEE).await,
        (Some(59), 0),
        "nothing of a refused bulk is kept"
    );

    let body = ok(bulk(
        json!({"changes": [{"variant_id": TEE, "stock": {"on_hand": 5}},
                           {"variant_id": MAP_PACK, "price": {"amount": 999, "currency": "USD"}}]}),
        "bulk-ok",
    )
    .await
    .unwrap())
    .await;
    assert_eq!(body["variants"][0]["stock_quantity"], 5);
    assert_eq!(body["variants"][1]["price_amount"], 999);
    assert_ledger_adds_up(&app, TEE).await;
}
