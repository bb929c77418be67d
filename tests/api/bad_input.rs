//! The bad-input matrix: every malformed request is refused with the code from the README's error table and a
//! JSONPath `param`, never a 5xx, and writes no business row.

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{TestApp, spawn_app},
    lifecycle::{JACKET_OUT_OF_STOCK, TEE, count, create_body, error, session},
};

async fn business_rows(app: &TestApp) -> (i64, i64, i64) {
    (
        count(app, "checkout_session").await,
        count(app, "merchant_order").await,
        count(app, "simulator_charge").await,
    )
}

async fn refused(app: &TestApp, body: reqwest::Body, status: StatusCode, code: &str, param: Option<&str>) {
    let before = business_rows(app).await;
    let response = app
        .acp(reqwest::Method::POST, "/checkout_sessions")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    error(response, status, code, param).await;
    assert_eq!(
        business_rows(app).await,
        before,
        "a refused request wrote business rows"
    );
}

fn json_body(value: serde_json::Value) -> reqwest::Body {
    value.to_string().into()
}

#[tokio::test]
async fn malformed_json_is_invalid_json() {
    let app = spawn_app().await;
    refused(
        &app,
        "{\"currency\": \"usd\", ".into(),
        StatusCode::BAD_REQUEST,
        "invalid_json",
        None,
    )
    .await;
    refused(&app, "[1, 2]".into(), StatusCode::BAD_REQUEST, "invalid", Some("$")).await;
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let app = spawn_app().await;
    let mut body = create_body(json!([{"id": TEE}]));
    body["currency"] = json!(5);
    refused(
        &app,
        json_body(body),
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.currency"),
    )
    .await;
    let mut body = create_body(json!([{"id": TEE}]));
    body["line_items"] = json!({"id": TEE});
    refused(
        &app,
        json_body(body),
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.line_items"),
    )
    .await;
    let mut body = create_body(json!([{"id": TEE}]));
    body["fulfillment_details"]["address"]["postal_code"] = json!(62701);
    refused(
        &app,
        json_body(body),
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.fulfillment_details.address.postal_code"),
    )
    .await;
    let body = create_body(json!([{"id": TEE, "quantity": 1.5}]));
    refused(
        &app,
        json_body(body),
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.line_items[0].quantity"),
    )
    .await;
}

#[tokio::test]
async fn missing_required_fields_are_missing() {
    let app = spawn_app().await;
    refused(
        &app,
        json_body(json!({"currency": "usd"})),
        StatusCode::BAD_REQUEST,
        "missing",
        Some("$.line_items"),
    )
    .await;
    refused(
        &app,
        json_body(json!({"line_items": [{"id": TEE}]})),
        StatusCode::BAD_REQUEST,
        "missing",
        Some("$.currency"),
    )
    .await;
    refused(
        &app,
        json_body(json!({"currency": "usd", "line_items": [{}]})),
        StatusCode::BAD_REQUEST,
        "missing",
        Some("$.line_items[0].id"),
    )
    .await;
    let mut body = create_body(json!([{"id": TEE}]));
    body["fulfillment_details"]["address"]
        .as_object_mut()
        .unwrap()
        .remove("city");
    refused(
        &app,
        json_body(body),
        StatusCode::BAD_REQUEST,
        "missing",
        Some("$.fulfillment_details.address.city"),
    )
    .await;
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_never_echoed() {
    let app = spawn_app().await;
    let mut body = create_body(json!([{"id": TEE, "colour_hint": "teal"}]));
    body["surprise"] = json!({"nested": true});
    body["fulfillment_details"]["address"]["planet"] = json!("Earth");
    let created = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let text = created.to_string();
    for unknown in ["surprise", "colour_hint", "planet", "Earth", "teal"] {
        assert!(!text.contains(unknown), "{unknown} was echoed: {text}");
    }
}

#[tokio::test]
async fn empty_line_items_and_bad_quantities_are_invalid() {
    let app = spawn_app().await;
    refused(
        &app,
        json_body(create_body(json!([]))),
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.line_items"),
    )
    .await;
    for quantity in [json!(0), json!(-1), json!(1_000_000_000)] {
        let body = create_body(json!([{"id": TEE}, {"id": TEE, "quantity": quantity}]));
        refused(
            &app,
            json_body(body),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("$.line_items[1].quantity"),
        )
        .await;
    }
}

#[tokio::test]
async fn unknown_items_are_invalid_item_id() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}, {"id": "no_such_variant"}]));
    let e = {
        let before = business_rows(&app).await;
        let r = app.acp_post("/checkout_sessions", &body).send().await.unwrap();
        let e = error(
            r,
            StatusCode::BAD_REQUEST,
            "invalid_item_id",
            Some("$.line_items[1].id"),
        )
        .await;
        assert_eq!(business_rows(&app).await, before);
        e
    };
    assert!(e["message"].as_str().unwrap().contains("no_such_variant"));
}

#[tokio::test]
async fn out_of_stock_items_make_a_session_with_a_message() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": JACKET_OUT_OF_STOCK}]));
    let created = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["status"], "not_ready_for_payment");
    assert_eq!(created["messages"][0]["code"], "out_of_stock");
    assert_eq!(created["messages"][0]["resolution"], "requires_buyer_input");
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = spawn_app().await;
    let padding = "x".repeat(2 * 1024 * 1024);
    let mut body = create_body(json!([{"id": TEE}]));
    body["order_notes"] = json!(padding);
    refused(
        &app,
        json_body(body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        None,
    )
    .await;
}

#[tokio::test]
async fn non_json_content_types_are_415() {
    let app = spawn_app().await;
    let before = business_rows(&app).await;
    let r = app
        .acp(reqwest::Method::POST, "/checkout_sessions")
        .header("Content-Type", "text/plain")
        .body(create_body(json!([{"id": TEE}])).to_string())
        .send()
        .await
        .unwrap();
    error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None).await;
    assert_eq!(business_rows(&app).await, before);
}

#[tokio::test]
async fn update_and_complete_bodies_are_checked_too() {
    let app = spawn_app().await;
    let created = crate::lifecycle::create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap();
    let r = app
        .acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"line_items": [{"id": TEE, "quantity": 0}]}),
        )
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid", Some("$.line_items[0].quantity")).await;
    let r = app
        .acp_post(&format!("/checkout_sessions/{id}/complete"), &json!({}))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "missing", Some("$.payment_data")).await;
    let r = app
        .acp_post(&format!("/checkout_sessions/{id}/complete"), &json!({"payment_data": {"handler_id": "card_tokenized", "instrument": {"type": "card", "credential": {"type": "spt"}}}}))
        .send()
        .await
        .unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "missing",
        Some("$.payment_data.instrument.credential.token"),
    )
    .await;
    assert_eq!(count(&app, "simulator_charge").await, 0);
}

#[tokio::test]
async fn the_last_unit_is_sold_once_when_two_sessions_complete_together() {
    let app = spawn_app().await;
    sqlx::query("update variant set stock_quantity = 1 where variant_id = $1")
        .bind(TEE)
        .execute(&app.db)
        .await
        .unwrap();
    let a = crate::lifecycle::create(&app, json!([{"id": TEE}])).await;
    let b = crate::lifecycle::create(&app, json!([{"id": TEE}])).await;
    let complete = |id: String| {
        let request = app.acp_post(
            &format!("/checkout_sessions/{id}/complete"),
            &crate::lifecycle::payment("spt_sim_ok"),
        );
        async move { request.send().await.unwrap() }
    };
    let (ra, rb) = tokio::join!(
        complete(a["id"].as_str().unwrap().to_owned()),
        complete(b["id"].as_str().unwrap().to_owned())
    );
    let statuses = [ra.status(), rb.status()];
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    let (winner, loser) = if ra.status() == StatusCode::OK {
        (ra, rb)
    } else {
        (rb, ra)
    };
    let won = session(winner, StatusCode::OK).await;
    assert_eq!(won["status"], "completed");
    error(loser, StatusCode::BAD_REQUEST, "out_of_stock", None).await;

    assert_eq!(count(&app, "merchant_order").await, 1);
    let charges: Vec<(String, String)> = sqlx::query_as("select checkout_session_id, status from simulator_charge")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        charges,
        vec![(won["id"].as_str().unwrap().to_owned(), "succeeded".to_owned())],
        "the loser is never charged"
    );
    assert_eq!(crate::lifecycle::stock(&app, TEE).await, Some(0));
}
