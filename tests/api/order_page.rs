//! The buyer's order page (issue 13): the permalink of a completed session and of its webhook opens it; a wrong,
//! foreign or missing token is the same 404 as an unknown order; every value is HTML-escaped; the merchant's own
//! page can replace it; headless Chromium renders it and keeps a screenshot.

use std::{sync::Arc, time::Duration};

use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use test_support::webhook_receiver::WebhookReceiver;

use crate::{
    browser,
    helpers::{TestApp, spawn_app_with},
    lifecycle::{TEE, create, payment, session},
};

const SECRET: &str = "whsec_order_page_0123456789";
const PUBLIC_BASE: &str = "https://shop.example.com";
const SUPPORT: [(&str, &str); 3] = [
    ("public_base_url", PUBLIC_BASE),
    ("support_email", "help@shop.example.com"),
    ("support_url", "https://shop.example.com/help"),
];

/// Completes a checkout of one tee; returns the completed session.
async fn buy(app: &TestApp) -> Value {
    let s = create(app, json!([{"id": TEE}])).await;
    let path = format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap());
    session(
        app.acp_post(&path, &payment("spt_sim_ok")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await
}

/// The permalink's path and query on the test server (the permalink itself names the public base URL).
fn local(app: &TestApp, permalink: &str) -> String {
    assert!(permalink.starts_with(PUBLIC_BASE), "{permalink}");
    let url = Url::parse(permalink).unwrap();
    app.url(&format!("{}?{}", url.path(), url.query().unwrap_or("")))
}

async fn get(app: &TestApp, url: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = app.client.get(url).send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

fn admin_post(app: &TestApp, path: &str, body: &Value) -> reqwest::RequestBuilder {
    app.admin(reqwest::Method::POST, path)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(body)
}

fn assert_page_headers(headers: &reqwest::header::HeaderMap) {
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
}

#[tokio::test]
async fn the_permalink_of_a_completed_session_and_of_its_webhook_opens_the_order_page() {
    let receiver = WebhookReceiver::start(SECRET, Arc::new(|_: &Value| Ok(()))).await;
    let url = receiver.base_url();
    let mut pairs = SUPPORT.to_vec();
    pairs.extend([
        ("agent_webhook_url", url.as_str()),
        ("agent_webhook_secret", SECRET),
        ("webhook_poll_interval_ms", "25"),
    ]);
    let app = spawn_app_with(&pairs).await;
    let done = buy(&app).await;
    let order_id = done["order"]["id"].as_str().unwrap().to_owned();
    let permalink = done["order"]["permalink_url"].as_str().unwrap().to_owned();
    assert!(
        permalink.starts_with(&format!("{PUBLIC_BASE}/orders/{order_id}?t=")),
        "{permalink}"
    );

    // Ship with tracking and refund part of it: the page shows both.
    let order_path = format!("/admin/orders/{order_id}");
    let ship = json!({"carrier": "Trail Post", "tracking_number": "TP-123456", "tracking_url": "https://track.example/TP-123456"});
    let shipped = admin_post(&app, &format!("{order_path}/ship"), &ship)
        .send()
        .await
        .unwrap();
    assert_eq!(shipped.status(), StatusCode::OK, "{}", shipped.text().await.unwrap());
    let refund = json!({"amount": 250, "reason": "late delivery"});
    let refunded = admin_post(&app, &format!("{order_path}/refund"), &refund)
        .send()
        .await
        .unwrap();
    assert_eq!(refunded.status(), StatusCode::OK, "{}", refunded.text().await.unwrap());

    let (status, headers, page) = get(&app, &local(&app, &permalink)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_page_headers(&headers);
    let total = done["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "total")
        .unwrap()["amount"]
        .as_i64()
        .unwrap();
    let total_text = format!("{}.{:02} USD", total / 100, total % 100);
    for expected in [
        order_id.as_str(),
        done["line_items"][0]["name"].as_str().unwrap(),
        total_text.as_str(),
        "Trail Post",
        "TP-123456",
        "href=\"https://track.example/TP-123456\"",
        "2.50 USD",
        "late delivery",
        "mailto:help@shop.example.com",
        "href=\"https://shop.example.com/help\"",
        "href=\"https://shop.example.com/legal/terms\"",
        "href=\"https://shop.example.com/legal/returns\"",
    ] {
        assert!(page.contains(expected), "the page lacks {expected}: {page}");
    }
    assert!(!page.contains("<script"), "no script on the page");
    assert!(!page.contains("http://") && !page.contains("src="), "no external asset");

    // The webhooks carry the same permalink, and it opens the same page.
    assert!(
        receiver
            .wait_until(Duration::from_secs(5), |d| d
                .iter()
                .any(|d| d.body["type"] == "order_create"))
            .await
    );
    let created = receiver
        .deliveries()
        .into_iter()
        .find(|d| d.body["type"] == "order_create")
        .unwrap();
    let hooked = created.body["data"]["permalink_url"].as_str().unwrap().to_owned();
    assert_eq!(hooked, permalink);
    let (status, _, again) = get(&app, &local(&app, &hooked)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(again.contains(&order_id));
}

#[tokio::test]
async fn a_wrong_foreign_or_missing_token_is_the_same_404_as_an_unknown_order() {
    let app = spawn_app_with(&SUPPORT).await;
    let first = buy(&app).await;
    let second = buy(&app).await;
    let id = first["order"]["id"].as_str().unwrap();
    let other_link = Url::parse(second["order"]["permalink_url"].as_str().unwrap()).unwrap();
    let other_token = other_link.query_pairs().find(|(k, _)| k == "t").unwrap().1.into_owned();
    let own_link = Url::parse(first["order"]["permalink_url"].as_str().unwrap()).unwrap();
    let own_token = own_link.query_pairs().find(|(k, _)| k == "t").unwrap().1.into_owned();

    let (status, unknown_headers, unknown) = get(&app, &app.url(&format!("/orders/ord_unknown?t={own_token}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_page_headers(&unknown_headers);
    let mut wrong = own_token.clone();
    wrong.replace_range(0..1, if own_token.starts_with('A') { "B" } else { "A" });
    for path in [
        format!("/orders/{id}"),
        format!("/orders/{id}?t="),
        format!("/orders/{id}?t={other_token}"),
        format!("/orders/{id}?t={wrong}"),
        format!("/orders/{id}?t={}", &own_token[..own_token.len() - 1]),
        format!("/orders/{id}?token={own_token}"),
    ] {
        let (status, headers, body) = get(&app, &app.url(&path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, unknown, "{path}: same body as an unknown order");
        for name in [
            "content-type",
            "content-security-policy",
            "cache-control",
            "referrer-policy",
        ] {
            assert_eq!(headers[name], unknown_headers[name], "{path}: {name}");
        }
    }
    // The right token still opens it.
    let (status, _, _) = get(&app, &app.url(&format!("/orders/{id}?t={own_token}"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn hostile_text_on_the_page_is_escaped() {
    let app = spawn_app_with(&SUPPORT).await;
    let done = buy(&app).await;
    let id = done["order"]["id"].as_str().unwrap();
    let hostile = "<script>alert('x')</script><img src=x onerror=alert(1)>\"&";
    sqlx::query(
        "update merchant_order set data = jsonb_set(data::jsonb, '{lines,0,title}', to_jsonb($2::text)) where order_id = $1",
    )
    .bind(id)
    .bind(hostile)
    .execute(&app.db)
    .await
    .unwrap();
    let ship = json!({"carrier": "<b>Evil</b> Post", "tracking_number": "\"><script>x()</script>",
                      "tracking_url": "javascript:alert(1)"});
    let shipped = admin_post(&app, &format!("/admin/orders/{id}/ship"), &ship)
        .send()
        .await
        .unwrap();
    assert_eq!(shipped.status(), StatusCode::OK);

    let (status, _, page) = get(&app, &local(&app, done["order"]["permalink_url"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains("<script") && !page.contains("<img") && !page.contains("<b>"),
        "{page}"
    );
    assert!(
        !page.contains("javascript:"),
        "a non-web tracking URL is no link: {page}"
    );
    assert!(
        page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&quot;&amp;"),
        "{page}"
    );
    assert!(page.contains("&lt;b&gt;Evil&lt;/b&gt; Post"));
    assert!(page.contains("&quot;&gt;&lt;script&gt;x()&lt;/script&gt;"));
}

#[tokio::test]
async fn a_url_template_hands_out_the_merchants_own_page() {
    let template = "https://shop.example.com/account/orders/{order_id}?t={token}";
    let app = spawn_app_with(&[("order_page_url_template", template)]).await;
    let done = buy(&app).await;
    let id = done["order"]["id"].as_str().unwrap();
    let permalink = done["order"]["permalink_url"].as_str().unwrap();
    let prefix = format!("https://shop.example.com/account/orders/{id}?t=");
    let token = permalink.strip_prefix(&prefix).unwrap_or_else(|| panic!("{permalink}"));
    assert_eq!(token.len(), 22, "128 bits in base64url");
    // The token is the one this server's page accepts too (same key, same order).
    let (status, _, _) = get(&app, &app.url(&format!("/orders/{id}?t={token}"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn chromium_renders_the_order_page_with_its_numbers() {
    if !browser::available() {
        return;
    }
    let app = spawn_app_with(&SUPPORT).await;
    let done = buy(&app).await;
    let id = done["order"]["id"].as_str().unwrap();
    let url = local(&app, done["order"]["permalink_url"].as_str().unwrap());
    let dom = browser::render_dom(&url, None).await;
    assert!(dom.contains(&format!("<span id=\"order-number\">{id}</span>")), "{dom}");
    for total in done["totals"].as_array().unwrap() {
        let amount = total["amount"].as_i64().unwrap();
        let text = format!("{}.{:02} USD", amount / 100, amount % 100);
        assert!(dom.contains(&text), "{} {text} missing: {dom}", total["type"]);
    }
    assert!(dom.contains("id=\"order-status\">confirmed<"), "{dom}");
    let shot = browser::screenshot(&url, "order-page").await;
    let bytes = std::fs::read(&shot).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
        "a real PNG at {}",
        shot.display()
    );
}
