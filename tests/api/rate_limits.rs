//! Rate limits: token buckets per agent (with per-agent overrides) and per source address, 429 `rate_limited`
//! with `Retry-After`, recovery once the bucket refills, and `X-Forwarded-For` believed only from trusted proxies.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{AGENT_KEY, API_VERSION, TestApp, spawn_app_with};

/// A session id that can exist but does not: the call authenticates, then answers 404.
const MISSING: &str = "/checkout_sessions/cs_not_here";

async fn fetch_as(app: &TestApp, key: &str) -> reqwest::Response {
    app.acp_as(Method::GET, MISSING, key, API_VERSION).send().await.unwrap()
}

async fn fetch_from(app: &TestApp, forwarded_for: &str) -> StatusCode {
    app.acp_get(MISSING)
        .header("X-Forwarded-For", forwarded_for)
        .send()
        .await
        .unwrap()
        .status()
}

/// Every 429 carries `Retry-After` in whole seconds (at least 1) and the ACP error object.
async fn assert_rate_limited(response: reqwest::Response, scope: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "service_unavailable", "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert!(body["message"].as_str().unwrap().contains(scope), "{body}");
}

#[tokio::test]
async fn the_agent_limit_trips_with_retry_after_and_recovers() {
    // Burst 2, refilled at 4/s: the third call at once is refused, one 250 ms later is served (slow enough
    // that a busy machine does not refill the bucket between the calls, fast enough to recover well within 2 s).
    let app = spawn_app_with(&[
        ("rate_limit_enabled", "true"),
        ("rate_limit_agent_per_sec", "4"),
        ("rate_limit_agent_burst", "2"),
        ("rate_limit_ip_per_sec", "1000"),
        ("rate_limit_ip_burst", "1000"),
    ])
    .await;
    for _ in 0..2 {
        assert_eq!(fetch_as(&app, AGENT_KEY).await.status(), StatusCode::NOT_FOUND);
    }
    assert_rate_limited(fetch_as(&app, AGENT_KEY).await, "agent").await;
    // A POST is refused the same way, before its idempotency key is claimed.
    let refused = app.acp_post("/checkout_sessions", &json!({})).send().await.unwrap();
    assert_rate_limited(refused, "agent").await;

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fetch_as(&app, AGENT_KEY).await.status(), StatusCode::NOT_FOUND);
    // Health and the documents are never limited.
    for _ in 0..5 {
        assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn a_per_agent_override_raises_the_limit_for_that_agent_only() {
    // Refilled at 1/s: nothing recovers within the test.
    let app = spawn_app_with(&[
        ("rate_limit_enabled", "true"),
        ("rate_limit_agent_per_sec", "1"),
        ("rate_limit_agent_burst", "2"),
        ("rate_limit_ip_per_sec", "1000"),
        ("rate_limit_ip_burst", "1000"),
        ("rate_limit_sweep_interval_ms", "100"),
    ])
    .await;
    let created: Value = app
        .admin(Method::POST, "/admin/agents")
        .json(&json!({"name": "Small agent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other_key = created["api_key"].as_str().expect("new agent key").to_owned();
    let other_id = created["agent_id"].as_str().expect("new agent id").to_owned();

    // The agent key cannot set its own limit.
    let r = app
        .client
        .put(app.url("/admin/agents/agent_default/rate-limit"))
        .bearer_auth(AGENT_KEY)
        .json(&json!({"per_sec": 1, "burst": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .admin(Method::PUT, "/admin/agents/agent_default/rate-limit")
        .json(&json!({"per_sec": 1, "burst": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"agent_id": "agent_default", "rate_limit": {"per_sec": 1, "burst": 10}})
    );
    let stored: (i64, i64) =
        sqlx::query_as("select per_sec, burst from agent_rate_limit where agent_id = 'agent_default'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored, (1, 10));

    for n in 0..8 {
        assert_eq!(
            fetch_as(&app, AGENT_KEY).await.status(),
            StatusCode::NOT_FOUND,
            "call {n}"
        );
    }
    for _ in 0..2 {
        assert_eq!(fetch_as(&app, &other_key).await.status(), StatusCode::NOT_FOUND);
    }
    assert_rate_limited(fetch_as(&app, &other_key).await, "agent").await;

    // An override stored by another process is picked up at the next refresh: five calls in a row pass, which
    // the default bucket (1/s) could not allow.
    sqlx::query("insert into agent_rate_limit (agent_id, per_sec, burst) values ($1, 1, 10)")
        .bind(&other_id)
        .execute(&app.db)
        .await
        .unwrap();
    let raised = crate::helpers::eventually(Duration::from_secs(2), || async {
        for _ in 0..5 {
            if fetch_as(&app, &other_key).await.status() != StatusCode::NOT_FOUND {
                return false;
            }
        }
        true
    })
    .await;
    assert!(raised, "the stored override was not picked up");

    // Half an override is refused with the field at fault.
    let r = app
        .admin(Method::PUT, "/admin/agents/agent_default/rate-limit")
        .json(&json!({"per_sec": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["param"], "$.burst", "{body}");
}

#[tokio::test]
async fn the_address_limit_believes_forwarded_for_only_from_a_trusted_proxy() {
    let limits = [
        ("rate_limit_enabled", "true"),
        ("rate_limit_agent_per_sec", "1000"),
        ("rate_limit_agent_burst", "1000"),
        ("rate_limit_ip_per_sec", "1"),
        ("rate_limit_ip_burst", "2"),
    ];
    // The test client connects from 127.0.0.1: a trusted proxy here.
    let mut trusted = limits.to_vec();
    trusted.push(("trusted_proxies", "127.0.0.1/32, 10.0.0.0/8"));
    let app = spawn_app_with(&trusted).await;
    for _ in 0..2 {
        assert_eq!(fetch_from(&app, "203.0.113.7").await, StatusCode::NOT_FOUND);
    }
    let refused = app
        .acp_get(MISSING)
        .header("X-Forwarded-For", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_rate_limited(refused, "address").await;
    // Another client behind the same proxy has its own bucket; trusted hops on the right are skipped.
    assert_eq!(fetch_from(&app, "203.0.113.8").await, StatusCode::NOT_FOUND);
    assert_eq!(fetch_from(&app, "203.0.113.9, 10.1.2.3").await, StatusCode::NOT_FOUND);
    // A client cannot escape its bucket by prepending addresses: the rightmost untrusted one counts.
    assert_eq!(
        fetch_from(&app, "198.51.100.1, 203.0.113.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Health is not limited.
    for _ in 0..5 {
        assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    }
    drop(app);

    // Without trusted proxies the header is ignored: a fresh spoofed address per call does not help.
    let app = spawn_app_with(&limits).await;
    assert_eq!(fetch_from(&app, "192.0.2.1").await, StatusCode::NOT_FOUND);
    assert_eq!(fetch_from(&app, "192.0.2.2").await, StatusCode::NOT_FOUND);
    assert_eq!(fetch_from(&app, "192.0.2.3").await, StatusCode::TOO_MANY_REQUESTS);
    // The address bucket is taken before authentication: a caller without a key is refused too.
    let r = app.client.get(app.url(MISSING)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn unusable_rate_limit_settings_name_their_variable() {
    for (key, value, variable) in [
        ("rate_limit_agent_per_sec", "0", "ACP_RATE_LIMIT_AGENT_PER_SEC"),
        ("rate_limit_ip_burst", "0", "ACP_RATE_LIMIT_IP_BURST"),
        ("trusted_proxies", "10.0.0.0/8, proxy.internal", "ACP_TRUSTED_PROXIES"),
    ] {
        let err = acp_merchant::config::Settings::from_pairs(&[
            ("env", "development"),
            ("psp", "simulator"),
            ("database_url", "postgres://localhost/unused"),
            (key, value),
        ])
        .expect_err(key);
        assert!(err.to_string().contains(variable), "{err}");
    }
}
