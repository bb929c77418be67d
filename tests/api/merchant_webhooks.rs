//! Merchant webhook endpoints (issue 15): orders, refunds and abandoned checkouts reach the merchant's own
//! systems from the outbox, signed the Standard Webhooks way, at least once and with a stable `webhook-id`, also
//! across a SIGKILL of the server.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_TOKEN, AGENT_KEY, ChildServer, TestApp, TestDb, spawn_app_with},
    lifecycle::{TEE, create},
    webhooks::{buy, child_buy},
};

/// One request the merchant endpoint received.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<Got>>,
    /// Requests still to answer 503.
    failures_left: AtomicUsize,
}

/// The merchant's receiver: records every request and answers 200 (or 503 while failures are left).
struct MerchantEndpoint {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let fail = inbox
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    inbox.got.lock().unwrap().push(Got {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        answered: status.as_u16(),
    });
    status
}

impl MerchantEndpoint {
    async fn start(failures: usize) -> Self {
        let inbox = Arc::new(Inbox::default());
        inbox.failures_left.store(failures, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/orders/hook", post(receive))
            .with_state(inbox.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inbox }
    }

    fn url(&self) -> String {
        format!("http://{}/orders/hook", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.got.lock().unwrap().clone()
    }

    /// The requests whose body is `event_type` about `subject` (an order id, or a session id).
    fn about(&self, event_type: &str, subject: &str) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| {
                let body = g.json();
                body["type"] == event_type
                    && (body["data"]["order"]["id"] == subject || body["data"]["checkout_session"]["id"] == subject)
            })
            .collect()
    }

    async fn wait_for(&self, event_type: &str, subject: &str) -> Vec<Got> {
        for _ in 0..200 {
            let found = self.about(event_type, subject);
            if found.iter().any(|g| g.answered == 200) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "no {event_type} for {subject}; got {:?}",
            self.got().iter().map(Got::json).collect::<Vec<_>>()
        );
    }
}

/// Standard Webhooks verification, written here from the specification rather than taken from the server: the
/// key is the base64 after `whsec_`, the MAC covers `id.timestamp.body`, and any `v1,` signature may match.
fn verifies(secret: &str, got: &Got) -> bool {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", got.id, got.timestamp).as_bytes());
    mac.update(&got.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    got.signature.split(' ').any(|s| s == expected)
}

fn settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("webhook_poll_interval_ms", "25"),
        ("webhook_retry_schedule_ms", "100,150,200"),
        ("webhook_timeout_ms", "2000"),
    ]
}

/// Registers `url` for `event_types` (all when `None`); returns the endpoint's secret.
async fn register(app_url: &str, url: &str, event_types: Option<Value>) -> String {
    let mut body = json!({"url": url});
    if let Some(types) = event_types {
        body["event_types"] = types;
    }
    let r = reqwest::Client::new()
        .post(format!("{app_url}/admin/merchant-webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert!(created["id"].as_str().unwrap().starts_with("mwe_"));
    created["secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_order_and_its_refund_reach_the_merchant_once_each_signed_the_standard_webhooks_way() {
    let endpoint = MerchantEndpoint::start(0).await;
    let app = spawn_app_with(&settings()).await;
    let secret = register(&app.url(""), &endpoint.url(), None).await;
    assert!(secret.starts_with("whsec_"));

    let order_id = buy(&app).await;
    let created = endpoint.wait_for("order.created", &order_id).await;
    let ids: std::collections::BTreeSet<&str> = created.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one order.created event");
    let got = &created[0];
    assert!(verifies(&secret, got), "{got:?}");
    let sent_at: i64 = got.timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    let body = got.json();
    assert_eq!(body["version"], 1);
    let data = &body["data"];
    assert_eq!(data["source"], "chat_to_checkout");
    assert_eq!(data["agent_id"], "agent_default");
    assert_eq!(data["channel_id"], "agent_default");
    let order = &data["order"];
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["lines"][0]["item_id"], TEE);
    assert_eq!(order["buyer"]["email"], "jane@example.com");
    assert_eq!(order["shipping_address"]["country"], "US");
    assert!(order["payment"]["reference"].as_str().is_some_and(|r| !r.is_empty()));
    let total = crate::shared::total(order, "total");

    let r = app
        .admin(Method::POST, &format!("/admin/orders/{order_id}/refund"))
        .header("Idempotency-Key", "merchant-refund")
        .json(&json!({"amount": 500, "reason": "damaged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let refunded = endpoint.wait_for("order.refunded", &order_id).await;
    assert!(verifies(&secret, &refunded[0]));
    let order = &refunded[0].json()["data"]["order"];
    assert_eq!(order["amount_refunded"], 500);
    assert_eq!(order["refunds"][0]["reason"], "damaged");
    assert_eq!(crate::shared::total(order, "total"), total);
    assert_ne!(refunded[0].id, got.id);
    assert_eq!(
        endpoint.about("order.created", &order_id).len(),
        1,
        "no second order.created"
    );
}

#[tokio::test]
async fn canceled_and_expired_sessions_are_reported_abandoned_only_to_subscribers() {
    let endpoint = MerchantEndpoint::start(0).await;
    let orders_only = MerchantEndpoint::start(0).await;
    let mut overrides = settings();
    overrides.extend([("session_ttl_secs", "1"), ("expiry_sweep_interval_ms", "100")]);
    let app = spawn_app_with(&overrides).await;
    let secret = register(&app.url(""), &endpoint.url(), Some(json!(["checkout.abandoned"]))).await;
    register(&app.url(""), &orders_only.url(), Some(json!(["order.created"]))).await;

    let canceled = create(&app, json!([{"id": TEE}])).await;
    let id = canceled["id"].as_str().unwrap();
    let r = app
        .acp_post(
            &format!("/checkout_sessions/{id}/cancel"),
            &json!({"intent_trace": {"reason_code": "shipping_cost"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got = endpoint.wait_for("checkout.abandoned", id).await;
    assert!(verifies(&secret, &got[0]));
    let session = &got[0].json()["data"]["checkout_session"];
    assert_eq!(session["reason"], "canceled");
    assert_eq!(session["cancel_reason"], "shipping_cost");
    assert_eq!(session["lines"][0]["item_id"], TEE);

    // Left alone, a session expires (TTL 1 s, swept every 100 ms).
    let left = create(&app, json!([{"id": TEE}])).await;
    let id = left["id"].as_str().unwrap();
    let got = endpoint.wait_for("checkout.abandoned", id).await;
    assert_eq!(got[0].json()["data"]["checkout_session"]["reason"], "expired");
    assert!(orders_only.got().is_empty(), "not subscribed to checkout.abandoned");
}

#[tokio::test]
async fn an_event_survives_a_sigkill_and_is_redelivered_with_the_same_id() {
    // The endpoint fails twice; the kill lands during the backoff before the third attempt.
    let endpoint = MerchantEndpoint::start(2).await;
    let db = TestDb::migrated().await;
    let env: Vec<(&str, String)> = vec![
        ("ACP_ENV", "development".into()),
        ("ACP_PSP", "simulator".into()),
        ("DATABASE_URL", db.url.clone()),
        ("ACP_AGENT_API_KEY", AGENT_KEY.into()),
        ("ACP_ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ("ACP_MIGRATE_ON_START", "false".into()),
        ("ACP_WEBHOOK_POLL_INTERVAL_MS", "25".into()),
        ("ACP_WEBHOOK_RETRY_SCHEDULE_MS", "100,700".into()),
    ];
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = ChildServer::start(&["serve"], &pairs).await;
    let secret = register(&server.url(""), &endpoint.url(), Some(json!(["order.created"]))).await;
    let order_id = child_buy(&server).await;
    // Killed once both failures are recorded (the event waits for its third attempt), not between an answer and
    // its record (that case waits for the lease to end, which other tests cover).
    let pool = db.pool().await;
    let recorded = crate::helpers::eventually(Duration::from_secs(5), || async {
        let row: Option<(String, i32)> =
            sqlx::query_as("select status, attempts from webhook_event where endpoint_id is not null")
                .fetch_optional(&pool)
                .await
                .unwrap();
        row == Some(("pending".to_owned(), 2))
    })
    .await;
    assert!(recorded, "two failed attempts recorded before the kill");
    assert_eq!(endpoint.about("order.created", &order_id).len(), 2);
    server.signal("KILL");
    server.wait(Duration::from_secs(5)).await;

    let mut restarted = ChildServer::start(&["serve"], &pairs).await;
    let got = endpoint.wait_for("order.created", &order_id).await;
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        1,
        "every attempt, before and after the kill, carries the same webhook-id"
    );
    assert!(got.iter().all(|g| verifies(&secret, g)));
    assert_eq!(got.iter().filter(|g| g.answered == 200).count(), 1);
    let status: String = sqlx::query_scalar("select status from webhook_event where endpoint_id is not null")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "delivered");
    restarted.signal("TERM");
    restarted.wait(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn registration_is_validated_and_secrets_are_never_listed() {
    let app: TestApp = spawn_app_with(&settings()).await;
    for (body, param) in [
        (json!({"url": "not a url"}), "$.url"),
        (json!({"url": "ftp://example.com/x"}), "$.url"),
        (
            json!({"url": "https://example.com/x", "event_types": []}),
            "$.event_types",
        ),
        (
            json!({"url": "https://example.com/x", "event_types": ["order.shipped"]}),
            "$.event_types[0]",
        ),
        (json!({"url": "https://example.com/x", "secret": "plain"}), "$.secret"),
    ] {
        let r = app
            .admin(Method::POST, "/admin/merchant-webhooks")
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["param"], param, "{answer}");
    }
    let secret = register(&app.url(""), "https://orders.example.com/hook", None).await;
    let r = app.admin(Method::GET, "/admin/merchant-webhooks").send().await.unwrap();
    let listed = r.text().await.unwrap();
    assert!(!listed.contains(&secret), "the secret is shown once, at registration");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let id = listed["endpoints"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["endpoints"][0]["event_types"].as_array().unwrap().len(), 4);
    let stored: String = sqlx::query_scalar("select secret from merchant_endpoint")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(!stored.contains(&secret), "stored sealed");

    let r = app
        .admin(Method::PATCH, &format!("/admin/merchant-webhooks/{id}"))
        .header("Idempotency-Key", "patch-endpoint")
        .json(&json!({"enabled": false, "event_types": ["order.refunded"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(
        (patched["enabled"].clone(), patched["event_types"].clone()),
        (json!(false), json!(["order.refunded"]))
    );
    let r = app
        .admin(Method::PATCH, "/admin/merchant-webhooks/mwe_missing")
        .header("Idempotency-Key", "patch-missing")
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
