//! Hostile input: what PostgreSQL cannot store (NUL), absurd sizes and depths, ids that cannot exist, oversized
//! headers and slow requests. Each is a precise 4xx (or 503 for the deadline), never a 500, and writes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_TOKEN, AGENT_KEY, TestApp, spawn_app, spawn_app_with},
    lifecycle::{TEE, count, create_body, payment, session},
};

async fn rows(app: &TestApp) -> (i64, i64, i64, i64) {
    (
        count(app, "checkout_session").await,
        count(app, "payment_attempt").await,
        count(app, "merchant_order").await,
        count(app, "idempotency_record where response_status >= 500").await,
    )
}

/// Sends `body` raw and expects `status` with `code` (and `param` when given); asserts nothing was written.
async fn refused(
    app: &TestApp,
    path: &str,
    body: String,
    status: StatusCode,
    code: &str,
    param: Option<&str>,
) -> Value {
    let before = rows(app).await;
    let r = app
        .acp(Method::POST, path)
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let got = r.status();
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        got,
        status,
        "{path} {}: {e:#}",
        body.chars().take(200).collect::<String>()
    );
    assert_eq!(e["code"], code, "{e:#}");
    if let Some(param) = param {
        assert_eq!(e["param"], param, "{e:#}");
    }
    assert!(
        !e["message"].as_str().unwrap_or_default().contains('\0'),
        "never echoed"
    );
    assert_eq!(rows(app).await, before, "{path}: a refusal wrote rows");
    e
}

async fn ready_session(app: &TestApp) -> String {
    let created = session(
        app.acp_post("/checkout_sessions", &create_body(json!([{"id": TEE}])))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    created["id"].as_str().unwrap().to_owned()
}

fn with(mut body: Value, pointer: &str, value: Value) -> String {
    *body.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer}")) = value;
    body.to_string()
}

#[tokio::test]
async fn a_nul_in_any_string_is_a_400_at_its_place() {
    let app = spawn_app().await;
    let id = ready_session(&app).await;
    let nul = |s: &str| json!(format!("{s}\u{0}x"));
    let create = create_body(json!([{"id": TEE}]));
    let update = json!({"selected_fulfillment_options": [{"type": "shipping", "option_id": "ship_standard",
                                                           "item_ids": [TEE]}]});
    let cancel = json!({"intent_trace": {"reason_code": "other", "trace_summary": "x", "metadata": {"k": "v"}}});
    let mut unknown_key = create.clone();
    unknown_key["x\u{0}"] = json!(1);
    let session_path = format!("/checkout_sessions/{id}");
    let cases: Vec<(String, String, &str)> = vec![
        (
            "/checkout_sessions".into(),
            with(create.clone(), "/line_items/0/id", nul("var")),
            "$.line_items[0].id",
        ),
        (
            "/checkout_sessions".into(),
            with(create.clone(), "/currency", nul("us")),
            "$.currency",
        ),
        (
            "/checkout_sessions".into(),
            with(create.clone(), "/fulfillment_details/address/line_one", nul("1 Main")),
            "$.fulfillment_details.address.line_one",
        ),
        (
            "/checkout_sessions".into(),
            with(create.clone(), "/fulfillment_details/email", nul("jane@")),
            "$.fulfillment_details.email",
        ),
        (
            "/checkout_sessions".into(),
            with(create.clone(), "/capabilities/interventions/supported/0", nul("3ds")),
            "$.capabilities.interventions.supported[0]",
        ),
        ("/checkout_sessions".into(), unknown_key.to_string(), r"$['x\\u0000']"),
        (
            session_path.clone(),
            with(update.clone(), "/selected_fulfillment_options/0/item_ids/0", nul("var")),
            "$.selected_fulfillment_options[0].item_ids[0]",
        ),
        (
            session_path.clone(),
            with(update, "/selected_fulfillment_options/0/option_id", nul("ship")),
            "$.selected_fulfillment_options[0].option_id",
        ),
        (
            format!("{session_path}/complete"),
            with(
                payment("spt_sim_ok"),
                "/payment_data/instrument/credential/token",
                nul("spt"),
            ),
            "$.payment_data.instrument.credential.token",
        ),
        (
            format!("{session_path}/complete"),
            with(payment("spt_sim_ok"), "/payment_data/handler_id", nul("card")),
            "$.payment_data.handler_id",
        ),
        (
            format!("{session_path}/cancel"),
            with(cancel.clone(), "/intent_trace/trace_summary", nul("s")),
            "$.intent_trace.trace_summary",
        ),
        (
            format!("{session_path}/cancel"),
            with(cancel, "/intent_trace/metadata/k", nul("v")),
            "$.intent_trace.metadata.k",
        ),
    ];
    for (path, body, param) in cases {
        let e = refused(&app, &path, body, StatusCode::BAD_REQUEST, "invalid", Some(param)).await;
        assert!(e["message"].as_str().unwrap().contains("NUL"), "{e:#}");
    }
    let still = session(
        app.acp(Method::GET, &session_path).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(still["status"], "ready_for_payment", "nothing touched the session");
}

#[tokio::test]
async fn ids_that_cannot_exist_are_404_on_every_route() {
    let app = spawn_app().await;
    for id in ["%00", "cs_%00", "a%0Ab", "%FF", "has%20space", &"x".repeat(300)] {
        let path = format!("/checkout_sessions/{id}");
        let r = app.acp(Method::GET, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET {path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "not_found");
        for (suffix, body) in [
            ("", json!({})),
            ("/complete", payment("spt_sim_ok")),
            ("/cancel", json!({})),
        ] {
            let r = app.acp_post(&format!("{path}{suffix}"), &body).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "POST {path}{suffix}");
        }
        for admin in [
            format!("/admin/orders/{id}"),
            format!("/admin/webhooks/deliveries/{id}"),
        ] {
            let r = app.admin(Method::GET, &admin).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET {admin}");
        }
    }
    let r = app.admin(Method::GET, "/admin/orders?status=%00").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["param"], "$.query");
    assert_eq!(count(&app, "checkout_session").await, 0);
}

#[tokio::test]
async fn a_catalog_line_with_a_nul_is_refused_at_its_field() {
    let app = spawn_app().await;
    let line = json!({"id": "prod_nul", "title": "Bad\u{0}", "variants": [{"id": "var_nul", "title": "x",
                      "price": {"amount": 100, "currency": "USD"}}]});
    let r = app
        .admin(Method::POST, "/admin/catalog/import")
        .body(line.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["param"], "$.title", "{e:#}");
    assert!(e["message"].as_str().unwrap().contains("NUL"));
}

#[tokio::test]
async fn sizes_depths_and_counts_are_bounded() {
    let app = spawn_app().await;
    // 2 MiB: over the 1 MiB limit.
    let mut big = create_body(json!([{"id": TEE}]));
    big["padding"] = json!("p".repeat(2 * 1024 * 1024));
    refused(
        &app,
        "/checkout_sessions",
        big.to_string(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        None,
    )
    .await;
    // 10 000 levels deep: the parser refuses it without exhausting the stack.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    refused(
        &app,
        "/checkout_sessions",
        deep,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        None,
    )
    .await;
    // 40 levels: valid JSON, deeper than any ACP body.
    let mut nested = json!("leaf");
    for _ in 0..40 {
        nested = json!({"n": nested});
    }
    let mut body = create_body(json!([{"id": TEE}]));
    body["extension_data"] = nested;
    let e = refused(
        &app,
        "/checkout_sessions",
        body.to_string(),
        StatusCode::BAD_REQUEST,
        "invalid",
        None,
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("nested"), "{e:#}");
    // 1 000 line items: at most 100.
    let items: Vec<Value> = (0..1000).map(|_| json!({"id": TEE})).collect();
    let e = refused(
        &app,
        "/checkout_sessions",
        create_body(json!(items)).to_string(),
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.line_items"),
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("100"), "{e:#}");
    // A string far over any field's length, in an unknown field.
    let mut long = create_body(json!([{"id": TEE}]));
    long["note"] = json!("n".repeat(20_000));
    refused(
        &app,
        "/checkout_sessions",
        long.to_string(),
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.note"),
    )
    .await;
    // 100 items is fine.
    let items: Vec<Value> = (0..100).map(|_| json!({"id": TEE})).collect();
    let r = app
        .acp_post("/checkout_sessions", &create_body(json!(items)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let app = spawn_app_with(&[("max_header_bytes", "4096")]).await;
    let r = app
        .acp(Method::GET, "/checkout_sessions/cs_x")
        .header("X-Padding", "p".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "headers_too_large");
    assert_eq!(e["type"], "invalid_request");
}

#[tokio::test]
async fn a_slow_request_is_answered_503_at_the_deadline() {
    let app = spawn_app_with(&[("debug_routes", "true"), ("request_timeout_ms", "200")]).await;
    let started = std::time::Instant::now();
    let r = app.client.get(app.url("/debug/sleep?ms=1500")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("service_unavailable"), Some("request_timeout"))
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1200),
        "answered at the deadline"
    );
}

/// Every admin route, with a method it answers.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("POST", "/admin/catalog/import"),
    ("POST", "/admin/catalog/attributes"),
    ("GET", "/admin/catalog/export"),
    ("POST", "/admin/simulator/release"),
    ("GET", "/admin/agents"),
    ("POST", "/admin/agents"),
    ("DELETE", "/admin/agents/agent_x"),
    ("PUT", "/admin/agents/agent_x/webhook-version"),
    ("GET", "/admin/pricing/rules"),
    ("PUT", "/admin/pricing/rules"),
    ("PUT", "/admin/pricing/rules/settings"),
    ("GET", "/admin/pricing/rules/taxes"),
    ("PUT", "/admin/pricing/rules/taxes/x"),
    ("DELETE", "/admin/pricing/rules/taxes/x"),
    ("GET", "/admin/orders"),
    ("GET", "/admin/orders/ord_x"),
    ("POST", "/admin/orders/ord_x/ship"),
    ("POST", "/admin/orders/ord_x/deliver"),
    ("POST", "/admin/orders/ord_x/refund"),
    ("POST", "/admin/orders/ord_x/cancel"),
    ("GET", "/admin/webhooks/deliveries"),
    ("POST", "/admin/webhooks/deliveries/replay-dead"),
    ("GET", "/admin/webhooks/deliveries/evt_x"),
    ("POST", "/admin/webhooks/deliveries/evt_x/replay"),
    ("POST", "/admin/webhooks/secret"),
];

#[tokio::test]
async fn admin_and_agent_credentials_never_cross() {
    let app = spawn_app().await;
    for (method, path) in ADMIN_ROUTES {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        for key in [Some(AGENT_KEY), None, Some("not-the-token")] {
            let mut request = app
                .client
                .request(method.clone(), app.url(path))
                .header("Idempotency-Key", "k-1")
                .header("Content-Type", "application/json")
                .body("{}");
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path} with {key:?}");
        }
        // The scheme is case-insensitive: a lower-case `bearer` with the admin token gets past authentication.
        let r = app
            .client
            .request(method.clone(), app.url(path))
            .header("Authorization", format!("bearer {ADMIN_TOKEN}"))
            .header("Idempotency-Key", "k-2")
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(!r.status().is_server_error(), "{method} {path}: {}", r.status());
    }
    let r = app
        .acp_as(Method::GET, "/checkout_sessions/cs_x", ADMIN_TOKEN, "2026-04-17")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the admin token is not an agent key"
    );
}
