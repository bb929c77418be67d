//! Pricing rules stored through the admin API apply to checkout at once (in every process: the snapshot is
//! version-checked), bad bundles are refused with precise errors, and `rules import` stores a bundle.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_TOKEN, AGENT_KEY, TestApp, TestDb, binary, spawn_app},
    lifecycle::{TEE, error, session},
};

fn san_francisco() -> Value {
    json!({"name": "Jane Buyer", "line_one": "1 Market St", "city": "San Francisco", "state": "CA",
           "country": "US", "postal_code": "94131"})
}

fn bundle() -> Value {
    json!({
        "currency": "usd",
        "taxes": [
            {"name": "California", "country": "US", "region": "CA", "category": "standard", "rate": "0.0725"},
            {"name": "San Francisco", "country": "US", "region": "CA", "postal_prefix": "941", "category": "standard", "rate": "0.01375"}
        ],
        "shipping": [{"id": "ground", "title": "Ground", "carrier": "UPS", "countries": ["US"],
                      "bands": [{"min_subtotal": 0, "amount": 600}], "free_over": 10000,
                      "min_business_days": 3, "max_business_days": 5}],
        "promotions": [{"id": "fall10", "name": "Fall sale", "kind": {"type": "percent", "rate": "0.10"}, "target": {"type": "order"}}]
    })
}

async fn put_rules(app: &TestApp, rules: &Value) -> reqwest::Response {
    app.admin(reqwest::Method::PUT, "/admin/pricing/rules")
        .json(rules)
        .send()
        .await
        .unwrap()
}

fn amount(totals: &Value, kind: &str) -> i64 {
    totals
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == kind)
        .map_or(0, |t| t["amount"].as_i64().unwrap())
}

#[tokio::test]
async fn stored_rules_price_the_checkout_and_changes_apply_on_the_next_request() {
    let app = spawn_app().await;
    let current: Value = app
        .admin(reqwest::Method::GET, "/admin/pricing/rules")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["version"], 0, "configuration defaults until rules are stored");
    assert_eq!(current["rules"]["shipping"][0]["id"], "ship_standard");

    let r = put_rules(&app, &bundle()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json!({"currency": "usd", "line_items": [{"id": TEE, "quantity": 2}],
                      "fulfillment_details": {"address": san_francisco()}});
    let s = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    // 2 × 25.00 = 50.00; 10 % off = 45.00; 8.625 % tax = 3.88125 → 3.88; ground 6.00 (under 100.00).
    let line = &s["line_items"][0]["totals"];
    assert_eq!(
        (
            amount(line, "items_base_amount"),
            amount(line, "discount"),
            amount(line, "subtotal")
        ),
        (5000, 500, 4500)
    );
    assert_eq!((amount(line, "tax"), amount(line, "total")), (388, 4888));
    let totals = &s["totals"];
    assert_eq!(amount(totals, "items_discount"), 500);
    assert_eq!(amount(totals, "fulfillment"), 600);
    assert_eq!(amount(totals, "tax"), 388);
    assert_eq!(amount(totals, "total"), 4500 + 600 + 388);
    assert_eq!(s["fulfillment_options"][0]["id"], "ground");
    assert_eq!(s["status"], "ready_for_payment");

    // New rules: no tax, free shipping from 40.00. The next recompute uses them.
    let mut changed = bundle();
    changed["taxes"] = json!([]);
    changed["shipping"][0]["free_over"] = json!(4000);
    let r: Value = put_rules(&app, &changed).await.json().await.unwrap();
    assert_eq!(r["version"], 2);
    let id = s["id"].as_str().unwrap();
    let again = session(
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
    assert_eq!(amount(&again["totals"], "tax"), 0);
    assert_eq!(amount(&again["totals"], "fulfillment"), 0);
    assert_eq!(amount(&again["totals"], "total"), 4500);
}

#[tokio::test]
async fn bad_rule_bundles_are_refused_with_their_path() {
    let app = spawn_app().await;
    let mut negative = bundle();
    negative["taxes"][0]["rate"] = json!("-0.05");
    error(
        put_rules(&app, &negative).await,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.taxes[0].rate"),
    )
    .await;

    let mut currency = bundle();
    currency["currency"] = json!("xyz");
    error(
        put_rules(&app, &currency).await,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.currency"),
    )
    .await;

    let mut exclusive = bundle();
    exclusive["promotions"] = json!([
        {"id": "a", "name": "A", "kind": {"type": "fixed", "amount": 100}, "target": {"type": "order"}, "stackable": false},
        {"id": "b", "name": "B", "kind": {"type": "fixed", "amount": 200}, "target": {"type": "order"}, "stackable": false}
    ]);
    let e = error(
        put_rules(&app, &exclusive).await,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.promotions[1]"),
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("overlap"));

    let mut typo = bundle();
    typo["shipping"][0]["free_ovr"] = json!(1);
    error(
        put_rules(&app, &typo).await,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.shipping[0].free_ovr"),
    )
    .await;

    let stored: i64 = sqlx::query_scalar("select count(*) from pricing_rules")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing refused was stored");
    let r = app
        .client
        .put(app.url("/admin/pricing/rules"))
        .json(&bundle())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn rules_import_stores_a_toml_bundle() {
    let db = TestDb::migrated().await;
    let dir = std::env::temp_dir().join(format!("acp-rules-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.toml");
    std::fs::write(
        &file,
        r#"
tax_inclusive = true
[[taxes]]
name = "Germany VAT"
country = "DE"
category = "standard"
rate = "0.19"
applies_to_shipping = true
"#,
    )
    .unwrap();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("ACP_AGENT_API_KEY", AGENT_KEY),
        ("ACP_ADMIN_TOKEN", ADMIN_TOKEN),
        ("ACP_PSP", "simulator"),
        ("ACP_ALLOW_SIMULATOR_IN_PRODUCTION", "true"),
        ("ACP_SECRETS_KEYS", crate::helpers::PROD_SECRETS_KEYS),
        ("ACP_ANALYTICS_SALT", crate::helpers::PROD_ANALYTICS_SALT),
        ("ACP_ORDER_PAGE_KEY", crate::helpers::PROD_ORDER_PAGE_KEY),
    ];
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        binary(&["rules", "import", file.to_str().unwrap()], &env).output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pool = db.pool().await;
    let (version, inclusive): (i64, bool) =
        sqlx::query_as("select version, (rules->>'tax_inclusive')::boolean from pricing_rules")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((version, inclusive), (1, true));

    std::fs::write(
        &file,
        "[[taxes]]\nname = \"bad\"\ncountry = \"DE\"\ncategory = \"standard\"\nrate = \"1.5\"\n",
    )
    .unwrap();
    let out = binary(&["rules", "import", file.to_str().unwrap()], &env)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("$.taxes[0].rate"));
    std::fs::remove_dir_all(dir).ok();
}

fn discount_rules() -> Value {
    json!({
        "currency": "usd",
        "shipping": [{"id": "shipping_standard", "title": "Standard Shipping", "countries": ["US"],
                      "bands": [{"min_subtotal": 0, "amount": 499}], "min_business_days": 3, "max_business_days": 5}],
        "promotions": [
            {"id": "coupon_save10", "name": "$10 Off Your Order", "code": "SAVE10",
             "kind": {"type": "fixed", "amount": 1000}, "target": {"type": "order"}},
            {"id": "coupon_expired50", "name": "50% Off", "code": "EXPIRED50",
             "kind": {"type": "percent", "rate": "0.5"}, "target": {"type": "order"},
             "ends_at": "2025-12-01T00:00:00Z"},
            {"id": "auto_mugs", "name": "Mugs 20% off", "kind": {"type": "percent", "rate": "0.2"},
             "target": {"type": "products", "ids": ["prod_camp_mug"]}}
        ]
    })
}

/// The official example's request with our catalog's item.
fn example_request(file: &str) -> Option<(Value, Value)> {
    let example = crate::official::examples("2026-04-17", &format!("discount-extension/{file}"))?;
    let mut request = example["request"].clone();
    request["line_items"][0]["id"] = json!(TEE);
    request["fulfillment_details"] = json!({"address": san_francisco()});
    request["capabilities"] = json!({"extensions": ["discount"]});
    Some((request, example["response"].clone()))
}

#[tokio::test]
async fn the_official_discount_examples_are_reproduced() {
    let app = spawn_app().await;
    assert_eq!(put_rules(&app, &discount_rules()).await.status(), StatusCode::OK);
    for file in ["rejected-discount-code.json", "order-level-discount.json"] {
        let Some((request, documented)) = example_request(file) else {
            return;
        };
        let s = session(
            app.acp_post("/checkout_sessions", &request).send().await.unwrap(),
            StatusCode::CREATED,
        )
        .await;
        let ours = &s["discounts"];
        assert_eq!(ours["codes"], documented["discounts"]["codes"], "{file}");
        let applied: Vec<(&Value, &Value)> = ours["applied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (&a["code"], &a["amount"]))
            .collect();
        let expected: Vec<(&Value, &Value)> = documented["discounts"]["applied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (&a["code"], &a["amount"]))
            .collect();
        assert_eq!(applied, expected, "{file}");
        assert_eq!(ours["applied"][0]["coupon"]["amount_off"], 1000);
        let rejected: Vec<(&Value, &Value)> = ours["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (&r["code"], &r["reason"]))
            .collect();
        let expected_rejected: Vec<(&Value, &Value)> = documented["discounts"]["rejected"]
            .as_array()
            .map(|r| r.iter().map(|r| (&r["code"], &r["reason"])).collect())
            .unwrap_or_default();
        assert_eq!(rejected, expected_rejected, "{file}");
        assert_eq!(s["capabilities"]["extensions"][0]["name"], "discount");
        // Allocations add up to the discount, and the totals reconcile.
        let allocated: i64 = ours["applied"][0]["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["amount"].as_i64().unwrap())
            .sum();
        assert_eq!(allocated, 1000);
        let t = &s["totals"];
        assert_eq!(
            amount(t, "total"),
            amount(t, "items_base_amount") - amount(t, "items_discount") + amount(t, "fulfillment") + amount(t, "tax")
        );
        assert_eq!(amount(t, "fulfillment"), 499);
        if file.starts_with("rejected") {
            let warning = crate::lifecycle::message(&s, "type", "warning");
            assert_eq!(warning["code"], "discount_code_expired");
            assert_eq!(warning["param"], "$.discounts.codes[1]");
            assert_eq!(
                s["status"], "ready_for_payment",
                "a bad code is a message, never an error"
            );
        }
        println!(
            "| discount-extension/{file} (2026-04-17) | 201 | {}, applied {} rejected {} as documented |",
            s["status"].as_str().unwrap_or_default(),
            applied.len(),
            rejected.len()
        );
    }
}

#[tokio::test]
async fn codes_are_replaced_on_update_and_automatic_promotions_allocate_per_item() {
    let app = spawn_app().await;
    put_rules(&app, &discount_rules()).await;
    let body = json!({"currency": "usd", "line_items": [{"id": TEE}, {"id": "var_camp_mug_navy", "quantity": 2}],
                      "fulfillment_details": {"address": san_francisco()}, "discounts": {"codes": ["save10"]},
                      "capabilities": {"extensions": ["discount"]}});
    let s = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let applied = s["discounts"]["applied"].as_array().unwrap();
    assert_eq!(applied.len(), 2, "the automatic mug promotion and SAVE10");
    assert_eq!(applied[0]["automatic"], true);
    assert_eq!(
        applied[0]["allocations"],
        json!([{"path": "$.line_items[1]", "amount": 600}]),
        "20 % of 2 × 14.99, on the mugs only"
    );
    let id = s["id"].as_str().unwrap();
    let cleared = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"discounts": {"codes": []}}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["discounts"]["codes"], json!([]));
    assert_eq!(
        cleared["discounts"]["applied"].as_array().unwrap().len(),
        1,
        "only the automatic one is left"
    );
    let legacy = session(
        app.acp_post(&format!("/checkout_sessions/{id}"), &json!({"coupons": ["SAVE10"]}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        legacy["discounts"]["codes"],
        json!(["SAVE10"]),
        "the deprecated coupons alias still works"
    );
}

#[tokio::test]
async fn the_last_use_of_a_code_goes_to_one_checkout_and_the_other_sees_the_new_price_before_paying() {
    let app = spawn_app().await;
    let mut rules = discount_rules();
    rules["promotions"][0]["max_redemptions"] = json!(1);
    put_rules(&app, &rules).await;
    let body = json!({"currency": "usd", "line_items": [{"id": TEE}], "capabilities": {"extensions": ["discount"]},
                      "buyer": {"email": "a@example.com"},
                      "fulfillment_details": {"address": san_francisco()}, "discounts": {"codes": ["SAVE10"]}});
    let first = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let second = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        amount(&second["totals"], "items_discount"),
        1000,
        "both were quoted the discount"
    );

    let pay = |s: &Value| {
        app.acp_post(
            &format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap()),
            &crate::lifecycle::payment("spt_sim_ok"),
        )
    };
    let done = session(pay(&first).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(done["status"], "completed");

    // The second checkout's discount is gone: it is not charged the new amount unseen.
    let changed = session(pay(&second).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(changed["status"], "ready_for_payment");
    assert!(
        changed["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["code"] == "price_change")
    );
    assert_eq!(
        changed["discounts"]["rejected"][0]["reason"],
        "discount_code_usage_limit_reached"
    );
    let charges: i64 = sqlx::query_scalar("select count(*) from simulator_charge")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(charges, 1, "nothing charged for the changed checkout yet");

    let paid = session(pay(&second).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(paid["status"], "completed", "confirmed at the new total");
    let amounts: Vec<i64> = sqlx::query_scalar("select amount from simulator_charge order by created_at")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(amounts[1] - amounts[0], 1000, "the second paid without the discount");
    let redemptions: i64 = sqlx::query_scalar("select count(*) from promotion_redemption")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(redemptions, 1);
}

#[tokio::test]
async fn a_declined_payment_gives_the_redemption_back() {
    let app = spawn_app().await;
    let mut rules = discount_rules();
    rules["promotions"][0]["max_per_buyer"] = json!(1);
    put_rules(&app, &rules).await;
    let body = json!({"currency": "usd", "line_items": [{"id": TEE}], "buyer": {"email": "b@example.com"},
                      "fulfillment_details": {"address": san_francisco()}, "discounts": {"codes": ["SAVE10"]}});
    let s = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let path = format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap());
    session(
        app.acp_post(&path, &crate::lifecycle::payment("spt_sim_decline"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let redemptions: i64 = sqlx::query_scalar("select count(*) from promotion_redemption")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(redemptions, 0, "a declined payment does not use the code up");
    let paid = session(
        app.acp_post(&path, &crate::lifecycle::payment("spt_sim_ok"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(paid["status"], "completed");
    assert_eq!(amount(&paid["totals"], "items_discount"), 1000);
    // The same buyer cannot use it again.
    let again = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        again["discounts"]["rejected"][0]["reason"],
        "discount_code_usage_limit_reached"
    );
}

/// Imports the example's items with the example's unit prices, so amounts can match exactly.
async fn import_items(app: &TestApp, items: &[(&str, i64)]) {
    let lines: Vec<String> = items
        .iter()
        .map(|(id, price)| {
            json!({"id": format!("prod_{id}"), "variants": [{"id": id, "title": id, "price": {"amount": price, "currency": "USD"}}]})
                .to_string()
        })
        .collect();
    let r = app
        .admin(reqwest::Method::POST, "/admin/catalog/import")
        .body(lines.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

fn rules_with(shipping: i64, promotions: Value) -> Value {
    json!({"currency": "usd", "promotions": promotions,
           "shipping": [{"id": "shipping_standard", "title": "Standard Shipping", "countries": ["US"],
                         "bands": [{"min_subtotal": 0, "amount": shipping}], "min_business_days": 3, "max_business_days": 5}]})
}

#[tokio::test]
async fn the_automatic_percentage_and_stacked_discount_examples_are_reproduced() {
    let cases = [
        (
            "automatic-discount.json",
            vec![("item_123", 1899)],
            rules_with(
                599,
                json!([{"id": "coupon_freeship50", "name": "Free shipping on orders over $50",
                "kind": {"type": "free_shipping"}, "target": {"type": "order"}, "min_subtotal": 5000}]),
            ),
        ),
        (
            "percentage-discount-with-allocations.json",
            vec![("item_shirt", 2500), ("item_pants", 6000)],
            rules_with(
                0,
                json!([{"id": "coupon_summer", "name": "Summer Sale 20% Off", "code": "SUMMER20",
                "kind": {"type": "percent", "rate": "0.20"}, "target": {"type": "order"}}]),
            ),
        ),
        (
            "stacked-discounts.json",
            vec![("item_laptop", 199_900), ("item_mouse", 9900)],
            rules_with(
                1999,
                json!([
                {"id": "coupon_summer20", "name": "Summer Sale 20% Off", "code": "SUMMER20",
                 "kind": {"type": "percent", "rate": "0.20"}, "target": {"type": "order"}},
                {"id": "coupon_loyalty5", "name": "$5 Loyalty Reward", "code": "LOYALTY5",
                 "kind": {"type": "fixed", "amount": 500}, "target": {"type": "order"}}]),
            ),
        ),
    ];
    let mut table = Vec::new();
    for (file, items, rules) in cases {
        let Some(example) = crate::official::examples("2026-04-17", &format!("discount-extension/{file}")) else {
            return;
        };
        let app = spawn_app().await;
        import_items(&app, &items).await;
        assert_eq!(put_rules(&app, &rules).await.status(), StatusCode::OK);
        let mut request = example["request"].clone();
        request["fulfillment_details"] = json!({"address": san_francisco()});
        request["capabilities"] = json!({"extensions": ["discount"]});
        let s = session(
            app.acp_post("/checkout_sessions", &request).send().await.unwrap(),
            StatusCode::CREATED,
        )
        .await;
        let documented = &example["response"];

        let ours = s["discounts"]["applied"].as_array().unwrap();
        let theirs = documented["discounts"]["applied"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{file}");
        for (mine, doc) in ours.iter().zip(theirs) {
            assert_eq!(mine["code"], doc["code"], "{file}");
            assert_eq!(mine["amount"], doc["amount"], "{file}");
            assert_eq!(mine["coupon"]["id"], doc["coupon"]["id"], "{file}");
            if doc.get("automatic").is_some() {
                assert_eq!(mine["automatic"], doc["automatic"], "{file}");
            }
            if doc.get("method").is_some() {
                assert_eq!(mine["method"], doc["method"], "{file}");
            }
            if let Some(allocations) = doc.get("allocations") {
                assert_eq!(&mine["allocations"], allocations, "{file}");
            }
        }
        let doc_totals = &documented["totals"];
        let doc_amount = |kind: &str| -> i64 {
            doc_totals
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["type"] == kind)
                .map(|t| t["amount"].as_i64().unwrap())
                .sum()
        };
        assert_eq!(amount(&s["totals"], "subtotal"), doc_amount("subtotal"), "{file}");
        assert_eq!(amount(&s["totals"], "fulfillment"), doc_amount("fulfillment"), "{file}");
        if doc_totals
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["type"] == "items_discount")
        {
            assert_eq!(
                amount(&s["totals"], "items_discount"),
                doc_amount("items_discount"),
                "{file}"
            );
        }
        if doc_amount("tax") == 0 {
            assert_eq!(amount(&s["totals"], "total"), doc_amount("total"), "{file}");
        }
        table.push(format!(
            "| discount-extension/{file} | 201 | {}, {} discount(s) as documented |",
            s["status"].as_str().unwrap_or_default(),
            ours.len()
        ));
    }
    println!("\n2026-04-17 discount-extension example requests:\n| example | status | outcome |\n|---|---|---|");
    for row in &table {
        println!("{row}");
    }
}

#[tokio::test]
async fn single_rules_are_created_replaced_listed_and_deleted() {
    let app = spawn_app().await;
    let put = |path: String, body: Value| app.admin(reqwest::Method::PUT, &path).json(&body).send();
    let tax = json!({"name": "California", "country": "US", "region": "CA", "category": "standard", "rate": "0.0725"});
    let r = put("/admin/pricing/rules/taxes/California".into(), tax.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut raised = tax.clone();
    raised["rate"] = json!("0.08");
    put("/admin/pricing/rules/taxes/California".into(), raised)
        .await
        .unwrap();
    let list: Value = app
        .admin(reqwest::Method::GET, "/admin/pricing/rules/taxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["taxes"].as_array().unwrap().len(), 1, "replaced, not added");
    assert_eq!(list["taxes"][0]["rate"], "0.08");
    // The configuration's shipping methods were kept when the first rule was stored.
    let shipping: Value = app
        .admin(reqwest::Method::GET, "/admin/pricing/rules/shipping")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shipping["shipping"].as_array().unwrap().len(), 2);

    let r = put(
        "/admin/pricing/rules/settings".into(),
        json!({"currency": "usd", "tax_inclusive": false, "rounding": "half_up", "rounding_level": "order"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let body =
        json!({"currency": "usd", "line_items": [{"id": TEE}], "fulfillment_details": {"address": san_francisco()}});
    let s = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(amount(&s["totals"], "tax"), 200, "8 % of 25.00");

    let mismatch = put("/admin/pricing/rules/taxes/Nevada".into(), tax.clone())
        .await
        .unwrap();
    error(mismatch, StatusCode::BAD_REQUEST, "invalid", Some("$.name")).await;
    let mut negative = tax.clone();
    negative["rate"] = json!("-1");
    let bad = put("/admin/pricing/rules/taxes/California".into(), negative)
        .await
        .unwrap();
    error(bad, StatusCode::BAD_REQUEST, "invalid", Some("$.taxes[0].rate")).await;
    let gone = app
        .admin(reqwest::Method::DELETE, "/admin/pricing/rules/taxes/California")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::OK);
    let missing = app
        .admin(reqwest::Method::DELETE, "/admin/pricing/rules/taxes/California")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let r = app
        .admin(reqwest::Method::GET, "/admin/pricing/rules/coupons")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn category_promotions_and_buyer_tax_exemptions_apply() {
    let app = spawn_app().await;
    let mut rules = bundle();
    rules["promotions"] = json!([{"id": "shirts15", "name": "Shirts 15% off", "kind": {"type": "percent", "rate": "0.15"},
                                  "target": {"type": "categories", "names": ["Apparel > Shirts"]}}]);
    put_rules(&app, &rules).await;
    let body = json!({"currency": "usd", "line_items": [{"id": TEE}, {"id": "var_camp_mug_navy"}],
                      "capabilities": {"extensions": ["discount"]},
                      "fulfillment_details": {"address": san_francisco()}});
    let s = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let applied = &s["discounts"]["applied"][0];
    assert_eq!(
        applied["allocations"],
        json!([{"path": "$.line_items[0]", "amount": 375}]),
        "15 % of the tee only"
    );
    assert!(amount(&s["totals"], "tax") > 0);

    // A resale certificate for California removes the tax; one for Nevada does not.
    let exempt = |regions: Value| {
        json!({"buyer": {"email": "shop@example.com",
                         "tax_exemption": {"certificate_id": "RS-1", "certificate_type": "resale", "exempt_regions": regions}}})
    };
    let id = s["id"].as_str().unwrap();
    let in_ca = session(
        app.acp_post(&format!("/checkout_sessions/{id}"), &exempt(json!(["US-CA"])))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(amount(&in_ca["totals"], "tax"), 0);
    assert_eq!(in_ca["line_items"][0]["tax_exempt"], true);
    let in_nv = session(
        app.acp_post(&format!("/checkout_sessions/{id}"), &exempt(json!(["NV"])))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(amount(&in_nv["totals"], "tax") > 0);
    assert!(in_nv["line_items"][0].get("tax_exempt").is_none());
}

#[tokio::test]
async fn pickup_needs_no_delivery_address() {
    let app = spawn_app().await;
    let mut rules = bundle();
    rules["pickup"] = json!([{"id": "pickup_mission", "name": "Mission Street store",
        "address": {"name": "Trailhead Supply", "line_one": "2000 Mission St", "city": "San Francisco", "state": "CA",
                    "country": "US", "postal_code": "94110"},
        "instructions": "Collect at the front desk."}]);
    put_rules(&app, &rules).await;
    let body = json!({"currency": "usd", "line_items": [{"id": TEE}]});
    let s = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(s["status"], "not_ready_for_payment", "nothing chosen, no address");
    let pickup = s["fulfillment_options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "pickup")
        .unwrap();
    assert_eq!(pickup["location"]["address"]["line_one"], "2000 Mission St");
    let id = s["id"].as_str().unwrap();
    let chosen = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"selected_fulfillment_options": [
            {"type": "pickup", "option_id": "pickup_mission", "item_ids": [TEE]}]}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(chosen["status"], "ready_for_payment");
    assert_eq!(
        chosen["selected_fulfillment_options"].as_array().unwrap().len(),
        1,
        "no shipping added beside pickup"
    );
    assert_eq!(amount(&chosen["totals"], "fulfillment"), 0);
    let done = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}/complete"),
            &crate::lifecycle::payment("spt_sim_ok"),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(done["status"], "completed");
}

#[tokio::test]
async fn an_address_change_drops_a_shipping_method_that_no_longer_applies_with_a_message() {
    let app = spawn_app().await;
    let mut rules = bundle();
    rules["shipping"] = json!([
        {"id": "ground", "title": "Ground", "countries": ["US"], "bands": [{"min_subtotal": 0, "amount": 600}],
         "min_business_days": 3, "max_business_days": 5},
        {"id": "bay_courier", "title": "Bay Area courier", "countries": ["US"], "regions": ["CA"],
         "bands": [{"min_subtotal": 0, "amount": 1200}], "min_business_days": 1, "max_business_days": 1}
    ]);
    put_rules(&app, &rules).await;
    let body =
        json!({"currency": "usd", "line_items": [{"id": TEE}], "fulfillment_details": {"address": san_francisco()}});
    let s = session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let id = s["id"].as_str().unwrap();
    let courier = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"selected_fulfillment_options": [
            {"type": "shipping", "option_id": "bay_courier", "item_ids": [TEE]}]}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(amount(&courier["totals"], "fulfillment"), 1200);

    let mut chicago = san_francisco();
    chicago["city"] = json!("Chicago");
    chicago["state"] = json!("IL");
    chicago["postal_code"] = json!("60601");
    let moved = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"fulfillment_details": {"address": chicago}}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    let message = crate::lifecycle::message(&moved, "param", "$.selected_fulfillment_options[0].option_id");
    assert_eq!(message["code"], "invalid");
    assert!(
        moved["fulfillment_options"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["id"] != "bay_courier")
    );
    assert_eq!(
        amount(&moved["totals"], "fulfillment"),
        600,
        "re-priced with the method that serves Illinois"
    );
    assert_eq!(
        amount(&moved["totals"], "tax"),
        0,
        "Illinois has no rule in this bundle"
    );
}

/// Every number anywhere in `value`.
fn numbers(value: &Value, out: &mut Vec<i64>) {
    match value {
        Value::Number(n) => out.extend(n.as_i64()),
        Value::Array(items) => items.iter().for_each(|v| numbers(v, out)),
        Value::Object(fields) => fields.values().for_each(|v| numbers(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn a_cart_in_another_currency_gets_no_shipping_or_discount_amount_of_the_rules_currency() {
    let app = spawn_app().await;
    // Distinctive USD amounts, so their absence can be checked anywhere in a yen session.
    const SHIPPING_USD: i64 = 777;
    const AUTO_FIXED_USD: i64 = 1234;
    const CODE_FIXED_USD: i64 = 2345;
    const LOCKER_FEE_USD: i64 = 456;
    let rules = json!({
        "currency": "usd",
        "taxes": [{"name": "Japan", "country": "JP", "category": "standard", "rate": "0.10"}],
        "shipping": [{"id": "ground", "title": "Ground", "countries": ["US", "JP"],
                      "bands": [{"min_subtotal": 0, "amount": SHIPPING_USD}], "free_over": 100_000,
                      "min_business_days": 3, "max_business_days": 5}],
        "promotions": [
            {"id": "welcome", "name": "Welcome", "kind": {"type": "fixed", "amount": AUTO_FIXED_USD}, "target": {"type": "order"}},
            {"id": "fall10", "name": "Fall sale", "kind": {"type": "percent", "rate": "0.10"}, "target": {"type": "order"}},
            {"id": "save", "name": "Save", "code": "SAVE", "kind": {"type": "fixed", "amount": CODE_FIXED_USD}, "target": {"type": "order"}}
        ],
        "pickup": [
            {"id": "store", "name": "Shop counter", "address": {"name": "Trailhead Supply", "line_one": "1-1 Marunouchi",
             "city": "Chiyoda", "state": "13", "country": "JP", "postal_code": "100-0005"}},
            {"id": "locker", "name": "Parcel locker", "amount": LOCKER_FEE_USD, "address": {"name": "Locker", "line_one": "2-2 Ginza",
             "city": "Chuo", "state": "13", "country": "JP", "postal_code": "104-0061"}}
        ]
    });
    assert_eq!(put_rules(&app, &rules).await.status(), StatusCode::OK);
    let product = json!({"id": "prod_matcha", "variants": [{"id": "var_matcha_tin", "title": "Matcha tin",
                         "price": {"amount": 3200, "currency": "JPY"}}]});
    let r = app
        .admin(reqwest::Method::POST, "/admin/catalog/import")
        .body(product.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokyo = json!({"name": "Hanako Yamada", "line_one": "1-1 Chiyoda", "city": "Chiyoda", "state": "13",
                       "country": "JP", "postal_code": "100-0001"});

    // The same rules in dollars: shipping and both fixed discounts apply (so their absence below means something).
    let dollars = session(
        app.acp_post(
            "/checkout_sessions",
            &json!({"currency": "usd", "line_items": [{"id": TEE, "quantity": 4}],
                    "fulfillment_details": {"address": tokyo}, "discounts": {"codes": ["SAVE"]},
                    "capabilities": {"extensions": ["discount"]}}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(amount(&dollars["totals"], "fulfillment"), SHIPPING_USD);
    let applied: Vec<&Value> = dollars["discounts"]["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["amount"])
        .collect();
    assert_eq!(applied[0], AUTO_FIXED_USD);
    assert_eq!(applied[2], CODE_FIXED_USD);

    let yen = session(
        app.acp_post(
            "/checkout_sessions",
            &json!({"currency": "jpy", "line_items": [{"id": "var_matcha_tin", "quantity": 2}],
                    "fulfillment_details": {"address": tokyo}, "discounts": {"codes": ["SAVE"]},
                    "capabilities": {"extensions": ["discount"]}}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let mut seen = Vec::new();
    numbers(&yen, &mut seen);
    for usd in [SHIPPING_USD, AUTO_FIXED_USD, CODE_FIXED_USD, LOCKER_FEE_USD] {
        assert!(!seen.contains(&usd), "{usd} (USD) appears in the yen session: {yen:#}");
    }
    let options = yen["fulfillment_options"].as_array().unwrap();
    let offered: Vec<&str> = options.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(offered, ["store"], "no USD shipping method, no paid locker");
    let message = crate::lifecycle::message(&yen, "param", "$.currency");
    assert_eq!(
        (&message["type"], &message["code"]),
        (&json!("error"), &json!("invalid"))
    );
    let content = message["content"].as_str().unwrap();
    assert!(content.contains("USD") && content.contains("JPY"), "{content}");
    assert_eq!(yen["status"], "not_ready_for_payment", "nothing can ship it");
    assert!(
        yen["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["code"] != "region_restricted"),
        "Japan is served; the currency is the problem: {}",
        yen["messages"]
    );
    // Only the percentage applies: 10 % of ¥6400; the fixed code is refused as the discount extension says.
    let applied: Vec<&Value> = yen["discounts"]["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["coupon"]["id"])
        .collect();
    assert_eq!(applied, [&json!("fall10")]);
    assert_eq!(yen["discounts"]["rejected"][0]["code"], "SAVE");
    assert_eq!(yen["discounts"]["rejected"][0]["reason"], "discount_code_invalid");
    let t = &yen["totals"];
    assert_eq!(
        (
            amount(t, "items_base_amount"),
            amount(t, "items_discount"),
            amount(t, "subtotal"),
            amount(t, "fulfillment"),
            amount(t, "tax"),
            amount(t, "total")
        ),
        (6400, 640, 5760, 0, 576, 6336)
    );
    assert_eq!(
        amount(t, "total"),
        amount(t, "items_base_amount") - amount(t, "items_discount") + amount(t, "fulfillment") + amount(t, "tax")
    );
    let line = &yen["line_items"][0]["totals"];
    assert_eq!(
        amount(line, "total"),
        amount(t, "total"),
        "one line carries the whole total"
    );

    let id = yen["id"].as_str().unwrap();
    let path = format!("/checkout_sessions/{id}/complete");
    let refused = app
        .acp_post(&path, &crate::lifecycle::payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    error(refused, StatusCode::BAD_REQUEST, "invalid", Some("$.currency")).await;
    assert_eq!(crate::lifecycle::count(&app, "simulator_charge").await, 0);

    // Collected at the (free) shop counter it can be paid, in yen, at the total shown; the message stays as
    // information.
    let collected = session(
        app.acp_post(
            &format!("/checkout_sessions/{id}"),
            &json!({"selected_fulfillment_options": [
                {"type": "pickup", "option_id": "store", "item_ids": ["var_matcha_tin"]}]}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(collected["status"], "ready_for_payment", "{collected:#}");
    let info = crate::lifecycle::message(&collected, "type", "info");
    assert!(info["content"].as_str().unwrap().contains("JPY"));
    assert_eq!(amount(&collected["totals"], "total"), 6336);
    let paid = session(
        app.acp_post(&path, &crate::lifecycle::payment("spt_sim_ok"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(paid["status"], "completed");
    let charged: (i64, String) = sqlx::query_as("select amount, currency from simulator_charge")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(charged, (6336, "jpy".to_owned()));
}
