//! The sales policy (issue 15): products, categories and agents the merchant keeps out of agent checkout, and a
//! maximum order total per agent. A refusal is a message on the session, never a dropped item or a charge.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, spawn_app},
    lifecycle::{MAP_PACK, TEE, create, message, payment},
};

/// The test agent (the environment agent of `AGENT_KEY`).
const AGENT: &str = "agent_default";

async fn put_policy(app: &TestApp, policy: Value) -> reqwest::Response {
    let r = app.admin(Method::GET, "/admin/pricing/rules").send().await.unwrap();
    let stored: Value = r.json().await.unwrap();
    let mut rules = stored["rules"].clone();
    assert!(rules.is_object(), "{stored:#}");
    rules["sales_policy"] = policy;
    app.admin(Method::PUT, "/admin/pricing/rules")
        .json(&rules)
        .send()
        .await
        .unwrap()
}

async fn charges(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from simulator_charge")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Completing a session the policy refuses charges nothing and makes no order.
async fn complete_is_refused(app: &TestApp, session: &Value) {
    let path = format!("/checkout_sessions/{}/complete", session["id"].as_str().unwrap());
    let r = app.acp_post(&path, &payment("spt_sim_ok")).send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status != StatusCode::OK || body["status"] != "completed", "{body:#}");
    assert_eq!(charges(app).await, 0);
}

#[tokio::test]
async fn a_product_agents_may_not_buy_is_unsupported_and_stays_in_the_cart() {
    let app = spawn_app().await;
    let r = put_policy(
        &app,
        json!({"products": [{"product_id": "prod_trail_map_pack", "agent_purchasable": false}]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    let s = create(&app, json!([{"id": MAP_PACK}, {"id": TEE}])).await;
    assert_eq!(s["status"], "not_ready_for_payment");
    assert_eq!(
        s["line_items"].as_array().unwrap().len(),
        2,
        "the refused item is not dropped"
    );
    let m = message(&s, "code", "unsupported");
    assert_eq!(m["type"], "error");
    assert_eq!(m["param"], "$.line_items[0].item.id");
    assert!(
        m["content"].as_str().unwrap().contains("Digital Trail Map Pack"),
        "{m:#}"
    );
    complete_is_refused(&app, &s).await;

    // A product allowed for another agent only is refused to this one; allowed for it, it sells.
    put_policy(
        &app,
        json!({"products": [{"product_id": "prod_trail_map_pack", "allowed_agents": ["agent_other"]}]}),
    )
    .await;
    let s = create(&app, json!([{"id": MAP_PACK}])).await;
    assert_eq!(message(&s, "code", "unsupported")["param"], "$.line_items[0].item.id");
    put_policy(
        &app,
        json!({"products": [{"product_id": "prod_trail_map_pack", "allowed_agents": [AGENT]}]}),
    )
    .await;
    let s = create(&app, json!([{"id": MAP_PACK}])).await;
    assert!(
        s["messages"].as_array().unwrap().iter().all(|m| m["type"] != "error"),
        "{s:#}"
    );
}

#[tokio::test]
async fn category_rules_refuse_with_the_reason_the_merchant_chose() {
    let app = spawn_app().await;
    put_policy(&app, json!({
        "categories": [{"category": "Digital Goods", "agent_purchasable": false, "reason": "age_verification_required"}],
        "excluded_categories": ["Apparel > Shirts"],
    }))
    .await;
    let s = create(&app, json!([{"id": MAP_PACK}, {"id": TEE}])).await;
    assert_eq!(s["status"], "not_ready_for_payment");
    assert_eq!(
        message(&s, "code", "age_verification_required")["param"],
        "$.line_items[0].item.id"
    );
    assert_eq!(message(&s, "code", "unsupported")["param"], "$.line_items[1].item.id");

    // A product rule overrides its category's.
    put_policy(
        &app,
        json!({
            "products": [{"product_id": "prod_trail_tee", "agent_purchasable": true}],
            "excluded_categories": ["Apparel"],
        }),
    )
    .await;
    let s = create(&app, json!([{"id": TEE}])).await;
    assert!(
        s["messages"].as_array().unwrap().iter().all(|m| m["type"] != "error"),
        "{s:#}"
    );
}

#[tokio::test]
async fn an_order_over_the_agents_maximum_is_refused_until_it_fits() {
    let app = spawn_app().await;
    // The map pack costs 12.99 USD and ships nothing.
    put_policy(
        &app,
        json!({"agent_limits": [{"agent_id": AGENT, "max_order_amount": 1000}]}),
    )
    .await;
    let s = create(&app, json!([{"id": MAP_PACK}])).await;
    assert_eq!(s["status"], "not_ready_for_payment");
    let m = message(&s, "code", "maximum_exceeded");
    assert_eq!(m["type"], "error");
    assert_eq!(m["param"], "$.totals");
    assert!(m["content"].as_str().unwrap().contains("10.00 USD"), "{m:#}");
    complete_is_refused(&app, &s).await;

    put_policy(
        &app,
        json!({"agent_limits": [{"agent_id": AGENT, "max_order_amount": 5000},
                                              {"agent_id": "agent_other", "max_order_amount": 1}]}),
    )
    .await;
    let s = create(&app, json!([{"id": MAP_PACK}])).await;
    assert_eq!(s["status"], "ready_for_payment", "{s:#}");
}

#[tokio::test]
async fn a_bad_policy_is_refused_with_its_place() {
    let app = spawn_app().await;
    for (policy, param) in [
        (
            json!({"agent_limits": [{"agent_id": AGENT, "max_order_amount": 0}]}),
            "$.sales_policy.agent_limits[0].max_order_amount",
        ),
        (
            json!({"excluded_categories": [" "]}),
            "$.sales_policy.excluded_categories[0]",
        ),
        (
            json!({"products": [{"product_id": "", "agent_purchasable": false}]}),
            "$.sales_policy.products[0].product_id",
        ),
    ] {
        let r = put_policy(&app, policy).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["param"], param, "{body:#}");
    }
    let r = put_policy(&app, json!({"products": [{"product_id": "p", "reason": "because"}]})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "an unknown reason is refused");
}
