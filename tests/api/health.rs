use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_answers_200_without_auth() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_answers_200_when_the_database_is_migrated() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn readyz_answers_503_while_migrations_are_pending() {
    let db = crate::helpers::TestDb::empty().await;
    let settings = crate::helpers::test_settings(&db.url, &[]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = acp_merchant::startup::Application::build(settings, shutdown.clone())
        .await
        .unwrap();
    let url = format!("http://{}/readyz", app.local_addr());
    tokio::spawn(app.run_until_stopped());
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "database migrations pending");
    shutdown.cancel();
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("Request-Id", "req-test-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["request-id"], "req-test-42");

    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["request-id"].to_str().unwrap();
    assert!(id.starts_with("req_") && id.len() > 10, "{id}");

    // An id that could forge log lines is replaced, not echoed.
    let hostile = app
        .client
        .get(app.url("/healthz"))
        .header("Request-Id", "a b")
        .send()
        .await
        .unwrap();
    assert_ne!(hostile.headers()["request-id"], "a b");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_acp_errors() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "invalid_request");
    assert_eq!(body["code"], "not_found");

    let response = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "invalid_request");
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn acp_request_helper_sends_every_agent_header() {
    let app = spawn_app().await;
    let request = app
        .acp_post("/checkout_sessions", &serde_json::json!({}))
        .build()
        .unwrap();
    let headers = request.headers();
    assert_eq!(
        headers["authorization"],
        format!("Bearer {}", crate::helpers::AGENT_KEY)
    );
    assert_eq!(headers["api-version"], crate::helpers::API_VERSION);
    assert_eq!(headers["content-type"], "application/json");
    assert!(!headers["idempotency-key"].is_empty());
    assert!(!headers["request-id"].is_empty());
    let get = app.acp_get("/checkout_sessions/x").build().unwrap();
    assert!(get.headers().get("idempotency-key").is_none());
}
