//! `GET /metrics` (issue 13): after a checkout flow the Prometheus text holds the request, PSP, idempotency,
//! webhook and pool metrics with bounded labels (route templates, never raw paths).
//!
//! The recorder is process-wide and other tests of this binary run at the same time, so every assertion compares
//! a scrape taken before the flow with one taken after: a counter must have grown by at least what this test did.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use test_support::webhook_receiver::WebhookReceiver;

use crate::{
    helpers::{AGENT_KEY, TestApp, spawn_app_with},
    lifecycle::{TEE, address, create_body, payment, session},
    shared::receiver_validator,
};

const SECRET: &str = "whsec_metrics_secret_0123456789";

/// The value of the sample `name` whose labels include every pair of `labels` (summed over the others), 0 when
/// there is none.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let label_text = rest.strip_suffix('}')?;
            (metric == name && labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Whether a series `name` with these labels exists at all.
fn has_series(text: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    text.lines().any(|line| {
        line.starts_with(&format!("{name}{{")) && labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
    })
}

async fn scrape(app: &TestApp) -> String {
    let response = app.admin(reqwest::Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.unwrap()
}

async fn app_with_receiver(receiver: &WebhookReceiver) -> TestApp {
    let url = receiver.base_url();
    spawn_app_with(&[
        ("agent_webhook_url", url.as_str()),
        ("agent_webhook_secret", SECRET),
        ("webhook_poll_interval_ms", "25"),
        ("webhook_timeout_ms", "2000"),
        ("metrics_addr", "127.0.0.1:0"),
    ])
    .await
}

/// Asserts `after - before >= at_least` for one series.
fn grew(before: &str, after: &str, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let (b, a) = (sample(before, name, labels), sample(after, name, labels));
    assert!(
        a - b >= at_least,
        "{name}{labels:?} grew from {b} to {a}, expected at least +{at_least}\n{after}"
    );
}

#[tokio::test]
async fn a_checkout_flow_shows_in_the_metrics_with_route_templates() {
    let receiver = WebhookReceiver::start(SECRET, receiver_validator(None)).await;
    let app = app_with_receiver(&receiver).await;
    let before = scrape(&app).await;

    // Create (then replay it with the same key, then reuse the key with another body), update, complete.
    let body = create_body(json!([{"id": TEE}]));
    let created = app
        .acp_post_keyed("/checkout_sessions", "metrics-create", &body)
        .send()
        .await
        .unwrap();
    let created = session(created, StatusCode::CREATED).await;
    let replayed = app
        .acp_post_keyed("/checkout_sessions", "metrics-create", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let other_body = create_body(json!([{"id": TEE, "quantity": 2}]));
    let conflict = app
        .acp_post_keyed("/checkout_sessions", "metrics-create", &other_body)
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let id = created["id"].as_str().unwrap().to_owned();
    let update = json!({"fulfillment_details": {"address": address("US")}});
    let updated = app
        .acp_post(&format!("/checkout_sessions/{id}"), &update)
        .send()
        .await
        .unwrap();
    session(updated, StatusCode::OK).await;
    let completed = app
        .acp_post(&format!("/checkout_sessions/{id}/complete"), &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    session(completed, StatusCode::OK).await;
    assert!(
        receiver.wait_until(Duration::from_secs(5), |d| !d.is_empty()).await,
        "the order webhook was delivered"
    );
    // An unknown path and a request without API-Version.
    let missing = app.client.get(app.url("/no/such/thing")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    app.client.get(app.url("/healthz")).send().await.unwrap();
    // The delivery's counter is written right after the receiver answered: give it a moment.
    let mut after = scrape(&app).await;
    for _ in 0..40 {
        if sample(&after, "acp_webhook_deliveries_total", &[("outcome", "delivered")])
            > sample(&before, "acp_webhook_deliveries_total", &[("outcome", "delivered")])
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = scrape(&app).await;
    }

    let v = ("api_version", "2026-04-17");
    let requests = "acp_http_requests_total";
    let created_labels = [
        ("route", "/checkout_sessions"),
        ("method", "POST"),
        ("status", "201"),
        v,
    ];
    grew(&before, &after, requests, &created_labels, 2.0);
    let conflict_labels = [
        ("route", "/checkout_sessions"),
        ("method", "POST"),
        ("status", "422"),
        v,
    ];
    grew(&before, &after, requests, &conflict_labels, 1.0);
    let session_route = ("route", "/checkout_sessions/{id}");
    grew(
        &before,
        &after,
        requests,
        &[session_route, ("method", "POST"), ("status", "200"), v],
        1.0,
    );
    let complete_route = ("route", "/checkout_sessions/{id}/complete");
    let complete_labels = [complete_route, ("method", "POST"), ("status", "200"), v];
    grew(&before, &after, requests, &complete_labels, 1.0);
    let unmatched = [
        ("route", "unmatched"),
        ("method", "GET"),
        ("status", "404"),
        ("api_version", "none"),
    ];
    grew(&before, &after, requests, &unmatched, 1.0);
    grew(
        &before,
        &after,
        requests,
        &[("route", "/healthz"), ("api_version", "none")],
        1.0,
    );

    // The latency histogram: every bucket, +Inf included, with the same labels.
    let buckets = "acp_http_request_duration_seconds_bucket";
    let inf = [complete_route, ("method", "POST"), ("status", "200"), v, ("le", "+Inf")];
    grew(&before, &after, buckets, &inf, 1.0);
    assert!(has_series(&after, buckets, &[complete_route, ("le", "0.005")]));
    assert!(has_series(&after, buckets, &[complete_route, ("le", "30")]));
    grew(
        &before,
        &after,
        "acp_http_request_duration_seconds_count",
        &complete_labels,
        1.0,
    );
    assert!(!after.contains(&id), "a raw path (with the session id) reached a label");

    // The PSP, idempotency and webhook metrics.
    let charge = [("psp", "simulator"), ("operation", "charge"), ("outcome", "succeeded")];
    grew(&before, &after, "acp_psp_requests_total", &charge, 1.0);
    let charge_inf = [("psp", "simulator"), ("operation", "charge"), ("le", "+Inf")];
    grew(
        &before,
        &after,
        "acp_psp_request_duration_seconds_bucket",
        &charge_inf,
        1.0,
    );
    grew(&before, &after, "acp_idempotency_replays_total", &[], 1.0);
    grew(
        &before,
        &after,
        "acp_idempotency_conflicts_total",
        &[("kind", "body_mismatch")],
        1.0,
    );
    grew(
        &before,
        &after,
        "acp_webhook_deliveries_total",
        &[("outcome", "delivered")],
        1.0,
    );
    let delivered_inf = [("outcome", "delivered"), ("le", "+Inf")];
    grew(
        &before,
        &after,
        "acp_webhook_delivery_duration_seconds_bucket",
        &delivered_inf,
        1.0,
    );

    // Gauges computed at scrape time.
    for gauge in [
        "acp_webhook_queue_depth",
        "acp_webhook_oldest_pending_age_seconds",
        "acp_db_pool_max_connections",
    ] {
        assert!(
            after.lines().any(|l| l.starts_with(&format!("{gauge} "))),
            "{gauge} missing\n{after}"
        );
    }
    assert!(has_series(&after, "acp_db_pool_connections", &[("state", "in_use")]));
    assert!(has_series(&after, "acp_db_pool_connections", &[("state", "idle")]));
    assert!(sample(&after, "acp_db_pool_max_connections", &[]) >= 1.0);
    assert!(after.contains("# TYPE acp_http_request_duration_seconds histogram"));
}

#[tokio::test]
async fn metrics_on_the_main_listener_need_the_admin_token() {
    let app = spawn_app_with(&[]).await;
    let as_agent = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(AGENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(as_agent.status(), StatusCode::UNAUTHORIZED);
    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized", "an ACP error object: {body}");
    assert!(scrape(&app).await.contains("acp_http_requests_total"));
    assert!(app.metrics_addr.is_none(), "no separate listener unless configured");
}

#[tokio::test]
async fn the_separate_listener_serves_metrics_without_authentication() {
    let app = spawn_app_with(&[("metrics_addr", "127.0.0.1:0")]).await;
    let addr = app.metrics_addr.expect("the metrics listener is bound");
    assert_ne!(addr, app.addr);
    // Something to count first, on the main listener.
    app.client.get(app.url("/healthz")).send().await.unwrap();
    let response = app.client.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        sample(&text, "acp_http_requests_total", &[("route", "/healthz")]) >= 1.0,
        "{text}"
    );
    // Only /metrics lives there: the API does not.
    let api = app
        .client
        .get(format!("http://{addr}/checkout_sessions/cs_x"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_ambiguous_charge_and_its_reconciliation_are_counted() {
    let fake = test_support::fake_stripe::FakeStripe::start(crate::stripe::SECRET).await;
    let app = crate::stripe::stripe_app(
        &fake,
        &[
            ("stripe_max_retries", "0"),
            ("reconcile_interval_ms", "100"),
            ("reconcile_after_ms", "100"),
            // Absence in Stripe's search proves no charge at once here (production waits minutes).
            ("psp_lookup_grace_secs", "0"),
        ],
    )
    .await;
    let before = scrape(&app).await;
    let created = app
        .acp_post("/checkout_sessions", &create_body(json!([{"id": TEE}])))
        .send()
        .await
        .unwrap();
    let id = session(created, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A 500 that Stripe never executed: ambiguous for us, so held until the reconciler asks.
    let flaky = crate::stripe::token("flaky");
    let held = app
        .acp_post(&format!("/checkout_sessions/{id}/complete"), &payment(&flaky))
        .send()
        .await
        .unwrap();
    assert!(!held.status().is_success(), "{}", held.status());
    let no_charge = [("resolution", "no_charge")];
    let resolutions = "acp_reconciler_resolutions_total";
    let mut after = scrape(&app).await;
    for _ in 0..50 {
        if sample(&after, resolutions, &no_charge) > sample(&before, resolutions, &no_charge) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(&app).await;
    }
    grew(&before, &after, resolutions, &no_charge, 1.0);
    let ambiguous = [("psp", "stripe"), ("operation", "charge"), ("outcome", "ambiguous")];
    grew(&before, &after, "acp_psp_requests_total", &ambiguous, 1.0);
    let lookup = [("psp", "stripe"), ("operation", "lookup"), ("outcome", "succeeded")];
    grew(&before, &after, "acp_psp_requests_total", &lookup, 1.0);
}
