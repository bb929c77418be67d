//! The admin API: bearer-protected agents and catalog management.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{API_VERSION, spawn_app},
    lifecycle::{TEE, create_body, error, session},
    official::schemas,
};

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/admin/agents"),
        (Method::GET, "/admin/catalog/export"),
        (Method::POST, "/admin/catalog/import"),
    ] {
        let r = app.client.request(method.clone(), app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        // The agent key is not an admin token.
        let r = app
            .client
            .request(method, app.url(path))
            .bearer_auth(crate::helpers::AGENT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn agents_are_registered_used_listed_and_disabled() {
    let app = spawn_app().await;
    let r = app
        .admin(Method::POST, "/admin/agents")
        .json(&json!({"name": "Second agent", "webhook_url": "https://agent.example.com/hooks"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let agent: Value = r.json().await.unwrap();
    let key = agent["api_key"].as_str().unwrap();
    let id = agent["agent_id"].as_str().unwrap();

    let created = app
        .acp_as(Method::POST, "/checkout_sessions", key, API_VERSION)
        .json(&create_body(json!([{"id": TEE}])))
        .send()
        .await
        .unwrap();
    let created = session(created, StatusCode::CREATED).await;
    let owner: String = sqlx::query_scalar("select agent_id from checkout_session where checkout_session_id = $1")
        .bind(created["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(owner, id);

    let list: Value = app
        .admin(Method::GET, "/admin/agents")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["agents"][0]["agent_id"], id);
    assert!(!list.to_string().contains(key), "keys are never listed");
    let stored: Vec<u8> = sqlx::query_scalar("select api_key_sha256 from agent")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32, "only the digest is stored");

    let r = app
        .admin(Method::DELETE, &format!("/admin/agents/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let refused = app
        .acp_as(Method::GET, "/checkout_sessions/x", key, API_VERSION)
        .send()
        .await
        .unwrap();
    error(refused, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
}

#[tokio::test]
async fn agent_registration_is_validated() {
    let app = spawn_app().await;
    let r = app
        .admin(Method::POST, "/admin/agents")
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid", Some("$.name")).await;
    let r = app
        .admin(Method::POST, "/admin/agents")
        .json(&json!({"name": "x", "webhook_url": "ftp://a"}))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid", Some("$.webhook_url")).await;
    let r = app
        .admin(Method::POST, "/admin/agents")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "missing", Some("$.name")).await;
}

#[tokio::test]
async fn catalog_import_export_round_trips_valid_feed_products() {
    let app = spawn_app().await;
    let line = json!({"id": "prod_new", "title": "New thing", "variants": [
        {"id": "var_new", "title": "New thing", "price": {"amount": 1234, "currency": "USD"},
         "availability": {"available": true, "status": "in_stock"}}]});
    let r = app
        .admin(Method::POST, "/admin/catalog/import")
        .body(format!("{line}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let attrs = json!({"variant_id": "var_new", "stock_quantity": 3, "max_quantity_per_order": 1,
                       "disclosures": [{"content_type": "markdown", "content": "Handle **with care**."}]});
    let r = app
        .admin(Method::POST, "/admin/catalog/attributes")
        .body(attrs.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let created = session(
        app.acp_post("/checkout_sessions", &create_body(json!([{"id": "var_new"}])))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["line_items"][0]["unit_amount"], 1234);
    assert_eq!(
        created["line_items"][0]["disclosures"][0]["content"],
        "Handle **with care**."
    );
    assert_eq!(created["currency"], "usd");

    let r = app.admin(Method::GET, "/admin/catalog/export").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let products: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(products.len(), 13, "the demo catalog's 12 plus the new one");
    assert!(products.contains(&line), "the imported product comes back unchanged");
    if let Some(official) = schemas(API_VERSION) {
        for p in &products {
            official
                .validate_in("schema.feed.json", "Product", p)
                .unwrap_or_else(|e| panic!("{e:?}\n{p:#}"));
        }
    }
}

#[tokio::test]
async fn invalid_catalog_lines_are_refused_with_their_line_and_path() {
    let app = spawn_app().await;
    let good = json!({"id": "p1", "variants": [{"id": "v1", "title": "T"}]}).to_string();
    let extra = json!({"id": "p2", "variants": [{"id": "v2", "title": "T", "stock": 5}]}).to_string();
    let r = app
        .admin(Method::POST, "/admin/catalog/import")
        .body(format!("{good}\n{extra}\n"))
        .send()
        .await
        .unwrap();
    let e = error(r, StatusCode::BAD_REQUEST, "invalid", Some("$.variants[0].stock")).await;
    assert!(e["message"].as_str().unwrap().starts_with("line 2:"), "{e}");
    let lower =
        json!({"id": "p3", "variants": [{"id": "v3", "title": "T", "price": {"amount": 1, "currency": "usd"}}]});
    let r = app
        .admin(Method::POST, "/admin/catalog/import")
        .body(lower.to_string())
        .send()
        .await
        .unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("$.variants[0].price.currency"),
    )
    .await;
    let count: i64 = sqlx::query_scalar("select count(*) from product where product_id in ('p1', 'p2', 'p3')")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "an import with a bad line writes nothing");

    let html =
        json!({"variant_id": TEE, "disclosures": [{"content_type": "markdown", "content": "<script>x</script>"}]});
    let r = app
        .admin(Method::POST, "/admin/catalog/attributes")
        .body(html.to_string())
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid", Some("$.disclosures[0].content")).await;
    let unknown = json!({"variant_id": "nope", "stock_quantity": 1});
    let r = app
        .admin(Method::POST, "/admin/catalog/attributes")
        .body(unknown.to_string())
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid", Some("$.variant_id")).await;
}
