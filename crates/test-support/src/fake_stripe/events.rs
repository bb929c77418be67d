//! Events (<https://docs.stripe.com/api/events/object>, retrieved by `GET /v1/events/{id}`:
//! <https://docs.stripe.com/api/events/retrieve>) and their delivery to a webhook endpoint, signed the way Stripe
//! signs them (<https://docs.stripe.com/webhooks>, signature verification section).
//!
//! The work of a request (or of a test helper) queues `(type, object)` pairs in `Ledger::emitted`; [`record`]
//! turns them into stored events once the work is done, and [`dispatch`] delivers those due at once.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{FakeStripe, Inner, Intent, Ledger, new_id, now};

/// The API version events are rendered with: the fake account's, which is what the merchant pins
/// (`config/default.toml`). Stripe renders events with the account's (or the endpoint's) version, not the version
/// of the request that caused them.
const ACCOUNT_API_VERSION: &str = "2026-04-22.preview";
/// What Stripe's webhook requests say they are.
const USER_AGENT: &str = "Stripe/1.0 (+https://stripe.com/docs/webhooks)";
/// A delivery that takes longer than this failed (status 0).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// https://docs.stripe.com/api/disputes/object (`reason`).
const DISPUTE_REASONS: &[&str] = &[
    "bank_cannot_process",
    "check_returned",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "noncompliant",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
];

type HmacSha256 = Hmac<Sha256>;

/// When events reach the webhook endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookMode {
    /// Each event is POSTed by its own task as soon as it is created (so possibly before the response of the
    /// request that caused it), and retried a few times on failure. The default.
    #[default]
    Auto,
    /// Events wait in a queue until [`FakeStripe::deliver`] or [`FakeStripe::deliver_all`].
    Manual,
}

/// The webhook endpoint and its delivery record.
pub(super) struct Webhooks {
    endpoint: Option<Endpoint>,
    mode: WebhookMode,
    retries: u32,
    pause: Duration,
    /// Events not yet acknowledged with a 2xx (Manual mode, or Auto after its retries ran out), in order.
    queue: Vec<String>,
    /// (event id, status answered; 0 when no answer came) of every POST made.
    deliveries: Vec<(String, u16)>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            endpoint: None,
            mode: WebhookMode::Auto,
            retries: DEFAULT_RETRIES,
            pause: DEFAULT_RETRY_PAUSE,
            queue: Vec::new(),
            deliveries: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct Endpoint {
    url: String,
    secrets: Vec<String>,
}

/// The API request behind an event (`request` in the event); both `None` for the test helpers' changes.
#[derive(Default)]
pub(super) struct RequestInfo {
    pub(super) id: Option<String>,
    pub(super) idempotency_key: Option<String>,
}

impl FakeStripe {
    /// Delivers events to `url` from now on, signed with each of `secrets` (one `v1=` each, as Stripe does while
    /// a secret is being rolled). Events created before stay undelivered.
    pub fn set_webhook_endpoint(&self, url: &str, secrets: &[&str]) {
        self.inner.ledger().webhooks.endpoint = Some(Endpoint {
            url: url.to_owned(),
            secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
        });
    }

    /// Auto (the default) or Manual delivery; see [`WebhookMode`].
    pub fn set_webhook_mode(&self, mode: WebhookMode) {
        self.inner.ledger().webhooks.mode = mode;
    }

    /// How many times Auto mode retries a failed or non-2xx delivery, and the pause before each retry (default
    /// 3 retries, 50 ms apart). Keep the pause short in tests.
    pub fn set_webhook_retries(&self, retries: u32, pause: Duration) {
        let mut ledger = self.inner.ledger();
        ledger.webhooks.retries = retries;
        ledger.webhooks.pause = pause;
    }

    /// POSTs one event (once, whatever the mode) and returns the status the endpoint answered (0: no answer).
    /// A 2xx takes it off the queue.
    ///
    /// # Panics
    /// Without a webhook endpoint, or for an unknown event: mistakes in the test.
    pub async fn deliver(&self, event_id: &str) -> u16 {
        {
            let ledger = self.inner.ledger();
            assert!(
                ledger.webhooks.endpoint.is_some(),
                "fake Stripe: deliver({event_id}) without a webhook endpoint"
            );
            assert!(
                ledger.event_index.contains_key(event_id),
                "fake Stripe: deliver: no event {event_id}"
            );
        }
        post_event(&self.inner, event_id).await
    }

    /// POSTs every queued event once, in creation order; returns (event id, status). Events answered with a
    /// non-2xx stay queued.
    pub async fn deliver_all(&self) -> Vec<(String, u16)> {
        let queued = self.inner.ledger().webhooks.queue.clone();
        let mut results = Vec::with_capacity(queued.len());
        for id in queued {
            let status = post_event(&self.inner, &id).await;
            results.push((id, status));
        }
        results
    }

    /// Every event created, in creation order (`pending_webhooks` is 0 once the endpoint answered a 2xx).
    pub fn events(&self) -> Vec<Value> {
        self.inner.ledger().events.clone()
    }

    /// (event id, status answered; 0 when no answer came) of every webhook POST made, in order.
    pub fn deliveries(&self) -> Vec<(String, u16)> {
        self.inner.ledger().webhooks.deliveries.clone()
    }

    /// Opens a dispute (`needs_response`) on a succeeded PaymentIntent's charge, as a cardholder would, and emits
    /// `charge.dispute.created`. `amount` defaults to the amount received. Returns the Dispute.
    ///
    /// # Panics
    /// If the PaymentIntent does not exist or has not succeeded, the amount is not between 1 and the amount
    /// received, or `reason` is not one of Stripe's dispute reasons: mistakes in the test.
    pub fn create_dispute(&self, pi_id: &str, amount: Option<i64>, reason: &str) -> Value {
        assert!(
            DISPUTE_REASONS.contains(&reason),
            "fake Stripe: create_dispute: '{reason}' is not a dispute reason (one of {})",
            DISPUTE_REASONS.join(", ")
        );
        let (dispute, fresh) = {
            let mut ledger = self.inner.ledger();
            let intent = match ledger.intent(pi_id) {
                Ok(intent) => intent.clone(),
                Err(_) => panic!("fake Stripe: create_dispute: no PaymentIntent {pi_id}"),
            };
            assert_eq!(
                intent.status, "succeeded",
                "fake Stripe: create_dispute: {pi_id} has no successful charge to dispute"
            );
            let amount = amount.unwrap_or(intent.amount_received);
            assert!(
                (1..=intent.amount_received).contains(&amount),
                "fake Stripe: create_dispute: amount {amount} is not between 1 and {}",
                intent.amount_received
            );
            let dispute = json!({
                "id": new_id("dp"),
                "object": "dispute",
                "amount": amount,
                "balance_transactions": [],
                "charge": intent.latest_charge,
                "created": now(),
                "currency": intent.currency,
                "is_charge_refundable": intent.refunded < intent.amount_received,
                "livemode": false,
                "metadata": {},
                "payment_intent": intent.id,
                "reason": reason,
                "status": "needs_response",
            });
            ledger.disputes.push(dispute.clone());
            ledger.emit("charge.dispute.created", dispute.clone());
            (dispute, record(&mut ledger, RequestInfo::default()))
        };
        dispatch(&self.inner, fresh);
        dispute
    }
}

/// The `Stripe-Signature` header for `payload` sent at `timestamp`: `t=<timestamp>` then one
/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<payload>")>` per secret, in order. The secret is used whole
/// (`whsec_` prefix included) as the HMAC key, as Stripe's libraries do. Public so that tests can craft tampered,
/// stale or wrongly signed deliveries.
pub fn stripe_signature_header(payload: &[u8], secrets: &[&str], timestamp: i64) -> String {
    const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        header.push_str(",v1=");
        for byte in mac.finalize().into_bytes() {
            header.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            header.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
    }
    header
}

/// The Charge behind `intent` as `charge.refunded` shows it (<https://docs.stripe.com/api/charges/object>), with
/// its refunds (newest first) listed.
pub(super) fn charge_json(ledger: &Ledger, intent: &Intent) -> Value {
    let id = intent.latest_charge.clone().unwrap_or_default();
    let refunds: Vec<Value> = ledger
        .refunds
        .iter()
        .rev()
        .filter(|refund| refund["charge"] == id.as_str())
        .cloned()
        .collect();
    let status = match intent.status {
        "processing" => "pending",
        "requires_payment_method" => "failed",
        _ => "succeeded",
    };
    json!({
        "id": id,
        "object": "charge",
        "amount": intent.amount,
        "amount_captured": intent.amount_received,
        "amount_refunded": intent.refunded,
        "captured": intent.amount_received > 0,
        "created": intent.created,
        "currency": intent.currency,
        "disputed": ledger.disputes.iter().any(|dispute| dispute["charge"] == id.as_str()),
        "livemode": false,
        "metadata": intent.metadata,
        "paid": status == "succeeded",
        "payment_intent": intent.id,
        "payment_method": intent.payment_method,
        "refunded": intent.amount_received > 0 && intent.refunded >= intent.amount_received,
        "refunds": {
            "object": "list",
            "data": refunds,
            "has_more": false,
            "total_count": refunds.len(),
            "url": format!("/v1/charges/{id}/refunds"),
        },
        "status": status,
    })
}

/// Stores the events emitted by the work just done; returns those Auto mode delivers at once (Manual mode queues
/// them; without an endpoint nothing is delivered).
pub(super) fn record(ledger: &mut Ledger, request: RequestInfo) -> Vec<String> {
    let emitted = std::mem::take(&mut ledger.emitted);
    let has_endpoint = ledger.webhooks.endpoint.is_some();
    let mut deliver_now = Vec::new();
    for (kind, object) in emitted {
        let id = new_id("evt");
        let event = json!({
            "id": id,
            "object": "event",
            "api_version": ACCOUNT_API_VERSION,
            "created": now(),
            "data": { "object": object },
            "livemode": false,
            "pending_webhooks": u8::from(has_endpoint),
            "request": { "id": request.id, "idempotency_key": request.idempotency_key },
            "type": kind,
        });
        ledger.event_index.insert(id.clone(), ledger.events.len());
        ledger.events.push(event);
        match (has_endpoint, ledger.webhooks.mode) {
            (false, _) => {}
            (true, WebhookMode::Auto) => deliver_now.push(id),
            (true, WebhookMode::Manual) => ledger.webhooks.queue.push(id),
        }
    }
    deliver_now
}

/// Delivers each event in its own task (with retries), so the caller does not wait for the endpoint.
pub(super) fn dispatch(inner: &Arc<Inner>, event_ids: Vec<String>) {
    for id in event_ids {
        let task_inner = inner.clone();
        inner
            .runtime
            .spawn(async move { deliver_with_retries(&task_inner, &id).await });
    }
}

/// The client that POSTs webhooks: no proxy (127.0.0.1 endpoints), no redirects (Stripe treats a 3xx as a failed
/// delivery), a timeout.
pub(super) fn webhook_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DELIVERY_TIMEOUT)
        .build()
        .expect("fake Stripe: cannot build the webhook client")
}

fn delivered(status: u16) -> bool {
    (200..300).contains(&status)
}

async fn deliver_with_retries(inner: &Inner, event_id: &str) {
    let (retries, pause) = {
        let ledger = inner.ledger();
        (ledger.webhooks.retries, ledger.webhooks.pause)
    };
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(pause).await;
        }
        if delivered(post_event(inner, event_id).await) {
            return;
        }
    }
    // Stripe keeps trying for days; here the event waits for `deliver_all`.
    let mut ledger = inner.ledger();
    if !ledger.webhooks.queue.iter().any(|id| id == event_id) {
        ledger.webhooks.queue.push(event_id.to_owned());
    }
}

/// One signed POST of the event as stored now; records it and returns the status (0: no answer).
async fn post_event(inner: &Inner, event_id: &str) -> u16 {
    let prepared = {
        let ledger = inner.ledger();
        let event = ledger.event_index.get(event_id).map(|&i| ledger.events[i].clone());
        ledger.webhooks.endpoint.clone().zip(event)
    };
    let Some((endpoint, event)) = prepared else {
        return 0;
    };
    // Stripe sends pretty-printed JSON; the signature covers exactly these bytes.
    let body = serde_json::to_string_pretty(&event).unwrap_or_else(|_| event.to_string());
    let secrets: Vec<&str> = endpoint.secrets.iter().map(String::as_str).collect();
    let signature = stripe_signature_header(body.as_bytes(), &secrets, now());
    let answer = inner
        .client
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, USER_AGENT)
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await;
    let status = answer.map_or(0, |response| response.status().as_u16());
    let mut ledger = inner.ledger();
    ledger.webhooks.deliveries.push((event_id.to_owned(), status));
    if delivered(status) {
        ledger.webhooks.queue.retain(|id| id != event_id);
        if let Some(&i) = ledger.event_index.get(event_id) {
            ledger.events[i]["pending_webhooks"] = json!(0);
        }
    }
    status
}
