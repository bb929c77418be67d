//! The support view (issue 15): an order shows the session's timeline as the buyer's agent lived it, built on the
//! funnel events, and orders are found by buyer email, order id, PaymentIntent id and date.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, spawn_app},
    lifecycle::{TEE, create, pay_after_a_decline, session},
};

async fn orders(app: &TestApp, query: &str) -> Vec<String> {
    let r = app
        .admin(Method::GET, &format!("/admin/orders?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    let body: Value = r.json().await.unwrap();
    body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_order_shows_what_the_agent_saw_and_every_payment_attempt() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE, "quantity": 99999}])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "not_ready_for_payment", "more than the stock");
    let updated = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"line_items": [{"id": TEE}]}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["status"], "ready_for_payment");
    let done = pay_after_a_decline(&app, &id).await;
    let order_id = done["order"]["id"].as_str().unwrap().to_owned();

    let r = app
        .admin(Method::GET, &format!("/admin/orders/{order_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let order: Value = r.json().await.unwrap();
    let timeline = order["timeline"].as_array().unwrap();
    let events: Vec<&str> = timeline.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "session_created",
            "session_updated",
            "ready_for_payment",
            "payment_attempt",
            "payment_declined",
            "payment_attempt",
            "completed"
        ],
        "{timeline:#?}"
    );
    // What the agent was shown: the stock message at create, none after the update.
    assert_eq!(timeline[0]["status"], "not_ready_for_payment");
    assert_eq!(timeline[0]["messages"][0]["code"], "out_of_stock");
    assert_eq!(timeline[0]["messages"][0]["param"], "$.line_items[0].quantity");
    assert_eq!(timeline[1]["status"], "ready_for_payment");
    assert_eq!(timeline[1]["messages"], json!([]));
    assert_eq!(
        (timeline[3]["attempt"].clone(), timeline[3]["state"].clone()),
        (json!(1), json!("declined"))
    );
    assert_eq!(timeline[4]["reason"], "card_declined");
    assert_eq!(
        (timeline[5]["attempt"].clone(), timeline[5]["state"].clone()),
        (json!(2), json!("succeeded"))
    );
    assert!(timeline[6]["amount"].as_i64().unwrap() > 0);
    let times: Vec<&str> = timeline.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
}

#[tokio::test]
async fn orders_are_found_by_email_order_id_payment_intent_and_date() {
    let app = spawn_app().await;
    let first = crate::webhooks::buy(&app).await;
    let second = crate::webhooks::buy(&app).await;
    let charge: String = sqlx::query_scalar("select psp_charge_id from merchant_order where order_id = $1")
        .bind(&second)
        .fetch_one(&app.db)
        .await
        .unwrap();

    let mut both = orders(&app, "email=Jane@Example.com").await;
    both.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(both, expected, "the email matches whatever its case");
    assert!(orders(&app, "email=someone.else@example.com").await.is_empty());
    assert_eq!(
        orders(&app, &format!("order={first}")).await,
        std::slice::from_ref(&first)
    );
    assert_eq!(
        orders(&app, &format!("payment_intent={charge}")).await,
        std::slice::from_ref(&second)
    );
    let now = chrono::Utc::now();
    let hour = chrono::Duration::hours(1);
    let window = format!(
        "from={}&to={}",
        urlencode(&(now - hour).to_rfc3339()),
        urlencode(&(now + hour).to_rfc3339())
    );
    assert_eq!(orders(&app, &window).await.len(), 2);
    assert!(
        orders(&app, &format!("from={}", urlencode(&(now + hour).to_rfc3339())))
            .await
            .is_empty()
    );

    let r = app
        .admin(Method::GET, "/admin/orders?from=yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["param"], "$.from");
}

fn urlencode(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}
