//! Events, webhook delivery and signatures, and the fixture signed by Stripe's own Python library.

use std::collections::VecDeque;

use axum::http::HeaderMap as AxumHeaders;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::*;

const SECRET: &str = "whsec_test_0123456789abcdef";
const OLD_SECRET: &str = "whsec_test_old_fedcba9876543210";

/// One webhook POST as the test endpoint got it.
#[derive(Clone)]
struct Received {
    headers: AxumHeaders,
    body: Bytes,
}

impl Received {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().unwrap()
    }
}

/// A webhook endpoint that records every POST and answers the programmed statuses, then 200.
#[derive(Clone, Default)]
struct Endpoint {
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Endpoint {
    async fn start(answers: &[u16]) -> (Endpoint, String) {
        let endpoint = Endpoint {
            received: Arc::default(),
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/stripe/webhooks", listener.local_addr().unwrap());
        let app = Router::new().fallback(receive).with_state(endpoint.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (endpoint, url)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn types(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.event()["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn receive(State(endpoint): State<Endpoint>, headers: AxumHeaders, body: Bytes) -> StatusCode {
    endpoint.received.lock().unwrap().push(Received { headers, body });
    let status = endpoint.answers.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Recomputes `v1` independently of the fake's signer.
fn hmac_hex(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The header's `t` and its `v1` signatures, in order.
fn parse_signature(header: &str) -> (String, Vec<String>) {
    let mut timestamp = String::new();
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.split_once('=').unwrap() {
            ("t", t) => timestamp = t.to_owned(),
            ("v1", v1) => signatures.push(v1.to_owned()),
            (other, _) => panic!("unexpected scheme {other} in {header}"),
        }
    }
    (timestamp, signatures)
}

fn assert_signed(received: &Received, secrets: &[&str]) {
    let (timestamp, signatures) = parse_signature(received.header("stripe-signature"));
    let expected: Vec<String> = secrets
        .iter()
        .map(|secret| hmac_hex(secret, &timestamp, &received.body))
        .collect();
    assert_eq!(signatures, expected);
    let age = now() - timestamp.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "a fresh timestamp: {timestamp}");
}

fn types(stripe: &FakeStripe) -> Vec<String> {
    stripe
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

fn last_event(stripe: &FakeStripe) -> Value {
    stripe.events().last().unwrap().clone()
}

#[tokio::test]
async fn state_changes_create_events_that_name_their_request() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let paid = pay(&stripe, &k, &attempt("2500", &token("spt_ok"), "pa_events")).await;
    let event = last_event(&stripe);
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "payment_intent.succeeded");
    assert_eq!(event["api_version"], "2026-04-22.preview");
    assert_eq!(event["livemode"], false);
    assert_eq!(event["pending_webhooks"], 0, "no endpoint");
    assert!(event["created"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(event["data"]["object"], paid.body);
    assert_eq!(event["data"]["object"]["metadata"]["acp_attempt_id"], "pa_events");
    assert_eq!(
        event["request"],
        json!({"id": paid.headers["request-id"].to_str().unwrap(), "idempotency_key": k})
    );

    // Retrievable by id; a replay creates no new event.
    let id = event["id"].as_str().unwrap();
    let fetched = get(&stripe, &format!("/v1/events/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, event);
    let missing = get(&stripe, "/v1/events/evt_missing").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["code"], "resource_missing");
    pay(&stripe, &k, &attempt("2500", &token("spt_ok"), "pa_events")).await;
    assert_eq!(stripe.events().len(), 1);

    let declined = pay(&stripe, &key(), &charge("100", &token("spt_insufficient"))).await;
    let failed = last_event(&stripe);
    assert_eq!(failed["type"], "payment_intent.payment_failed");
    assert_eq!(failed["data"]["object"], declined.body["error"]["payment_intent"]);
    assert_eq!(
        failed["data"]["object"]["last_payment_error"]["decline_code"],
        "insufficient_funds"
    );

    let challenged = pay(&stripe, &key(), &charge("100", &token("spt_3ds"))).await;
    assert_eq!(last_event(&stripe)["type"], "payment_intent.requires_action");
    assert_eq!(last_event(&stripe)["data"]["object"], challenged.body);

    let mut manual = charge("700", &token("spt_ok"));
    manual.push(("capture_method", "manual".into()));
    let authorized = pay(&stripe, &key(), &manual).await;
    assert_eq!(last_event(&stripe)["type"], "payment_intent.amount_capturable_updated");
    let id = authorized.body["id"].as_str().unwrap();
    let canceled = post(
        &stripe,
        &format!("/v1/payment_intents/{id}/cancel"),
        Some(&key()),
        &[("cancellation_reason", "abandoned")],
    )
    .await;
    assert_eq!(last_event(&stripe)["type"], "payment_intent.canceled");
    assert_eq!(last_event(&stripe)["data"]["object"], canceled.body);

    let authorized = pay(&stripe, &key(), &manual_charge("900")).await;
    let id = authorized.body["id"].as_str().unwrap();
    let captured = post(&stripe, &format!("/v1/payment_intents/{id}/capture"), Some(&key()), &[]).await;
    assert_eq!(last_event(&stripe)["type"], "payment_intent.succeeded");
    assert_eq!(last_event(&stripe)["data"]["object"], captured.body);

    // Refused requests change nothing and create no event.
    let before = stripe.events().len();
    post(&stripe, &format!("/v1/payment_intents/{id}/cancel"), Some(&key()), &[]).await;
    pay(&stripe, &key(), &charge("100", &token("spt_expired"))).await;
    assert_eq!(stripe.events().len(), before);
    assert_eq!(
        types(&stripe),
        [
            "payment_intent.succeeded",
            "payment_intent.payment_failed",
            "payment_intent.requires_action",
            "payment_intent.amount_capturable_updated",
            "payment_intent.canceled",
            "payment_intent.amount_capturable_updated",
            "payment_intent.succeeded",
        ]
    );
}

fn manual_charge(amount: &str) -> Vec<(&'static str, String)> {
    let mut pairs = charge(amount, &token("spt_ok"));
    pairs.push(("capture_method", "manual".into()));
    pairs
}

#[tokio::test]
async fn refunds_emit_charge_refunded_with_the_refunds_and_their_metadata() {
    let stripe = FakeStripe::start(KEY).await;
    let paid = pay(&stripe, &key(), &attempt("1000", &token("spt_ok"), "pa_refund")).await;
    let id = paid.body["id"].as_str().unwrap();
    let k = key();
    let partial = post(
        &stripe,
        "/v1/refunds",
        Some(&k),
        &[
            ("payment_intent", id),
            ("amount", "300"),
            ("metadata[acp_refund_id]", "rf_1"),
        ],
    )
    .await;
    let event = last_event(&stripe);
    assert_eq!(event["type"], "charge.refunded");
    assert_eq!(event["request"]["idempotency_key"], k.as_str());
    let charge = &event["data"]["object"];
    assert_eq!(charge["object"], "charge");
    assert_eq!(charge["id"], paid.body["latest_charge"]);
    assert_eq!(charge["payment_intent"], id);
    assert_eq!(charge["amount"], 1000);
    assert_eq!(charge["amount_captured"], 1000);
    assert_eq!(charge["amount_refunded"], 300);
    assert_eq!(charge["currency"], "usd");
    assert_eq!(charge["refunded"], false);
    assert_eq!(charge["status"], "succeeded");
    assert_eq!(charge["refunds"]["object"], "list");
    assert_eq!(charge["refunds"]["data"], json!([partial.body]));
    assert_eq!(
        charge["refunds"]["data"][0]["metadata"],
        json!({"acp_refund_id": "rf_1"})
    );

    let rest = post(&stripe, "/v1/refunds", Some(&key()), &[("payment_intent", id)]).await;
    let charge = last_event(&stripe)["data"]["object"].clone();
    assert_eq!(charge["amount_refunded"], 1000);
    assert_eq!(charge["refunded"], true);
    assert_eq!(
        charge["refunds"]["data"],
        json!([rest.body, partial.body]),
        "newest first"
    );
}

#[tokio::test]
async fn disputes_emit_charge_dispute_created() {
    let stripe = FakeStripe::start(KEY).await;
    let paid = pay(&stripe, &key(), &charge("4200", &token("spt_ok"))).await;
    let id = paid.body["id"].as_str().unwrap();
    let dispute = stripe.create_dispute(id, None, "fraudulent");
    assert!(dispute["id"].as_str().unwrap().starts_with("dp_"));
    assert_eq!(dispute["object"], "dispute");
    assert_eq!(dispute["amount"], 4200);
    assert_eq!(dispute["charge"], paid.body["latest_charge"]);
    assert_eq!(dispute["payment_intent"], id);
    assert_eq!(dispute["currency"], "usd");
    assert_eq!(dispute["reason"], "fraudulent");
    assert_eq!(dispute["status"], "needs_response");
    assert!(dispute["created"].as_i64().unwrap() > 1_600_000_000);
    let event = last_event(&stripe);
    assert_eq!(event["type"], "charge.dispute.created");
    assert_eq!(event["data"]["object"], dispute);
    assert_eq!(event["request"], json!({"id": null, "idempotency_key": null}));

    let partial = stripe.create_dispute(id, Some(1000), "product_not_received");
    assert_eq!(partial["amount"], 1000);
}

#[tokio::test]
#[should_panic(expected = "not a dispute reason")]
async fn disputes_need_one_of_stripes_reasons() {
    let stripe = FakeStripe::start(KEY).await;
    let paid = pay(&stripe, &key(), &charge("100", &token("spt_ok"))).await;
    stripe.create_dispute(paid.body["id"].as_str().unwrap(), None, "unhappy");
}

#[tokio::test]
async fn auto_delivery_posts_signed_events_and_retries_failures() {
    let stripe = FakeStripe::start(KEY).await;
    let (endpoint, url) = Endpoint::start(&[500, 503]).await;
    stripe.set_webhook_endpoint(&url, &[SECRET]);
    stripe.set_webhook_retries(3, Duration::from_millis(20));
    pay(&stripe, &key(), &attempt("1200", &token("spt_ok"), "pa_hook")).await;

    wait_until("delivered", || stripe.events()[0]["pending_webhooks"] == 0).await;
    let event_id = stripe.events()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        stripe.deliveries(),
        vec![
            (event_id.clone(), 500),
            (event_id.clone(), 503),
            (event_id.clone(), 200)
        ]
    );
    let received = endpoint.received();
    assert_eq!(received.len(), 3);
    for delivery in &received {
        assert_eq!(delivery.header("content-type"), "application/json");
        assert_eq!(
            delivery.header("user-agent"),
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
        );
        assert_signed(delivery, &[SECRET]);
        let event = delivery.event();
        assert_eq!(event["id"], event_id.as_str());
        assert_eq!(event["type"], "payment_intent.succeeded");
        assert_eq!(event["pending_webhooks"], 1, "as it was when sent");
        assert_eq!(event["data"]["object"]["metadata"]["acp_attempt_id"], "pa_hook");
    }
    // A tampered body no longer matches the signature.
    let mut tampered = received[2].clone();
    tampered.body = Bytes::from(String::from_utf8(tampered.body.to_vec()).unwrap().replace("1200", "1"));
    let (timestamp, signatures) = parse_signature(tampered.header("stripe-signature"));
    assert_ne!(signatures[0], hmac_hex(SECRET, &timestamp, &tampered.body));
}

#[tokio::test]
async fn auto_delivery_gives_up_after_its_retries_and_leaves_the_event_queued() {
    let stripe = FakeStripe::start(KEY).await;
    let (endpoint, url) = Endpoint::start(&[500, 500, 500]).await;
    stripe.set_webhook_endpoint(&url, &[SECRET]);
    stripe.set_webhook_retries(2, Duration::from_millis(10));
    pay(&stripe, &key(), &charge("100", &token("spt_ok"))).await;
    wait_until("three attempts", || stripe.deliveries().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stripe.deliveries().len(), 3, "no fourth attempt");
    assert_eq!(stripe.events()[0]["pending_webhooks"], 1);

    let results = stripe.deliver_all().await;
    assert_eq!(
        results,
        vec![(stripe.events()[0]["id"].as_str().unwrap().to_owned(), 200)]
    );
    assert_eq!(stripe.events()[0]["pending_webhooks"], 0);
    assert_eq!(endpoint.received().len(), 4);
    assert!(stripe.deliver_all().await.is_empty());
}

#[tokio::test]
async fn an_event_can_arrive_before_the_response_that_caused_it() {
    let stripe = FakeStripe::start(KEY).await;
    let (endpoint, url) = Endpoint::start(&[]).await;
    stripe.set_webhook_endpoint(&url, &[SECRET]);
    let held = tokio::spawn({
        let stripe = stripe.clone();
        async move { pay(&stripe, &key(), &charge("1500", &token("spt_hold"))).await }
    });
    wait_until("the webhook arrived", || !endpoint.received().is_empty()).await;
    assert_eq!(endpoint.types(), ["payment_intent.succeeded"]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!held.is_finished(), "the response is still held");
    stripe.release_held();
    let answer = held.await.unwrap();
    assert_eq!(answer.body, endpoint.received()[0].event()["data"]["object"]);
}

#[tokio::test]
async fn manual_delivery_waits_for_deliver_and_deliver_all() {
    let stripe = FakeStripe::start(KEY).await;
    let (endpoint, url) = Endpoint::start(&[]).await;
    stripe.set_webhook_endpoint(&url, &[SECRET]);
    stripe.set_webhook_mode(WebhookMode::Manual);
    let paid = pay(&stripe, &key(), &charge("1000", &token("spt_ok"))).await;
    let id = paid.body["id"].as_str().unwrap();
    post(&stripe, "/v1/refunds", Some(&key()), &[("payment_intent", id)]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(endpoint.received().is_empty(), "nothing is sent before deliver");
    let events = stripe.events();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["pending_webhooks"] == 1));

    // Deliver the refund first: out of order, as Stripe may.
    let refund_event = events[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(stripe.deliver(&refund_event).await, 200);
    assert_eq!(endpoint.types(), ["charge.refunded"]);
    assert_signed(&endpoint.received()[0], &[SECRET]);

    *endpoint.answers.lock().unwrap() = VecDeque::from([400]);
    let first = stripe.deliver_all().await;
    let success_event = events[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(first, vec![(success_event.clone(), 400)]);
    assert_eq!(
        stripe.events()[0]["pending_webhooks"],
        1,
        "a 4xx is not an acknowledgement"
    );
    let second = stripe.deliver_all().await;
    assert_eq!(second, vec![(success_event.clone(), 200)]);
    assert_eq!(stripe.events()[0]["pending_webhooks"], 0);
    assert!(stripe.deliver_all().await.is_empty());
    // Redelivery of an acknowledged event is still possible, as with Stripe's "resend".
    assert_eq!(stripe.deliver(&success_event).await, 200);
    assert_eq!(
        stripe.deliveries(),
        vec![
            (refund_event, 200),
            (success_event.clone(), 400),
            (success_event.clone(), 200),
            (success_event, 200)
        ]
    );
}

#[tokio::test]
async fn rolled_secrets_each_sign_the_delivery() {
    let stripe = FakeStripe::start(KEY).await;
    let (endpoint, url) = Endpoint::start(&[]).await;
    stripe.set_webhook_endpoint(&url, &[OLD_SECRET, SECRET]);
    pay(&stripe, &key(), &charge("100", &token("spt_ok"))).await;
    wait_until("delivered", || !endpoint.received().is_empty()).await;
    let delivery = &endpoint.received()[0];
    assert_signed(delivery, &[OLD_SECRET, SECRET]);
    let (timestamp, _) = parse_signature(delivery.header("stripe-signature"));
    assert_eq!(
        delivery.header("stripe-signature"),
        stripe_signature_header(&delivery.body, &[OLD_SECRET, SECRET], timestamp.parse().unwrap())
    );
}

#[tokio::test]
async fn events_without_an_endpoint_are_not_delivered() {
    let stripe = FakeStripe::start(KEY).await;
    pay(&stripe, &key(), &charge("100", &token("spt_ok"))).await;
    let (endpoint, url) = Endpoint::start(&[]).await;
    stripe.set_webhook_endpoint(&url, &[SECRET]);
    assert!(stripe.deliver_all().await.is_empty());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(endpoint.received().is_empty());
    assert!(stripe.deliveries().is_empty());
}

#[test]
fn signs_like_the_reference_vector() {
    // A stale timestamp and two secrets: the header is just t and one v1 per secret, in order.
    let header = stripe_signature_header(b"{}", &["whsec_a", "whsec_b"], 1);
    let (t, v1) = parse_signature(&header);
    assert_eq!(t, "1");
    assert_eq!(
        v1,
        vec![hmac_hex("whsec_a", "1", b"{}"), hmac_hex("whsec_b", "1", b"{}")]
    );
    assert_eq!(stripe_signature_header(b"{}", &[], 7), "t=7");
}

/// `scripts/stripe-signature-fixture.py` signed this with Stripe's Python library and verified it with
/// `stripe.Webhook.construct_event`.
#[test]
fn signs_exactly_as_stripes_own_library() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/stripe/webhook_signed_by_stripe_python.json"
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let payload = fixture["payload"].as_str().unwrap();
    let secret = fixture["secret"].as_str().unwrap();
    let timestamp = fixture["timestamp"].as_i64().unwrap();
    assert!(fixture["stripe_python_version"].as_str().is_some());
    let event: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(event["data"]["object"]["metadata"]["acp_attempt_id"], "pa_fixture");

    assert_eq!(
        stripe_signature_header(payload.as_bytes(), &[secret], timestamp),
        fixture["header"].as_str().unwrap()
    );
    let rotation = &fixture["rotation"];
    let secrets: Vec<&str> = rotation["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        stripe_signature_header(payload.as_bytes(), &secrets, timestamp),
        rotation["header"].as_str().unwrap()
    );
}
