//! The agent's webhook receiver, faked: the merchant POSTs signed order events to it
//! (ACP `POST /agentic_checkout/webhooks/order_events`, 2026-04-17).
//!
//! [`WebhookReceiver::start`] serves on `127.0.0.1:0` and accepts POSTs at any path. Every delivery is verified
//! (`Merchant-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>`, 300 s tolerance),
//! its JSON body checked by the test's [`Validator`], and recorded as a [`Delivery`] — whatever the answer.
//!
//! How it answers is programmed with [`Behaviour`]:
//! - `Accept`, `HugeBody` and `Slow` answer 401 `invalid_signature` to a bad signature, and 200 otherwise
//!   (`{"received": true, "request_id": <the Request-Id header, when sent>}`, or the huge body, or after the delay);
//! - `FailTimes`, `Always` and `Redirect` answer as told whatever the signature.
//!
//! Schema errors are recorded (in [`Delivery::schema_error`]), never answered: the tests assert on them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Checks a delivery's JSON body; `Err` carries the reason it is not valid.
pub type Validator = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// The canonical path of the ACP order-events webhook.
const CANONICAL_PATH: &str = "/agentic_checkout/webhooks/order_events";
/// How far a signature's `t` may be from now, either way, in seconds.
const TOLERANCE_SECS: u64 = 300;
/// Bodies larger than this are refused by axum (413) before reaching the receiver.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// `HugeBody` streams its bytes in chunks of this size.
const CHUNK: usize = 64 * 1024;
static X_CHUNK: [u8; CHUNK] = [b'x'; CHUNK];

type HmacSha256 = Hmac<Sha256>;

/// One POST as the receiver got it, and what it answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The request path, e.g. "/agentic_checkout/webhooks/order_events".
    pub path: String,
    pub webhook_id: Option<String>,
    pub request_id: Option<String>,
    pub timestamp_header: Option<String>,
    pub signature_header: Option<String>,
    pub signature_valid: bool,
    /// None when the body validated; the validator's message otherwise.
    pub schema_error: Option<String>,
    /// `Value::Null` when the body is not JSON.
    pub body: Value,
    pub raw_body: Vec<u8>,
    /// The status this receiver answered with. 0 while a `Slow` answer is still pending (and for good if the
    /// sender gave up before it).
    pub answered: u16,
    pub received_at: SystemTime,
}

/// How the receiver answers, changeable while running.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 for valid signatures (401 for invalid ones). The default.
    Accept,
    /// Answer `status` (e.g. 500) to the next `times` deliveries (whatever their signature), then behave as Accept.
    FailTimes { status: u16, times: u32 },
    /// Always answer `status`, optionally with a Retry-After header (seconds).
    Always { status: u16, retry_after: Option<u64> },
    /// Answer 302 with Location pointing at `location`.
    Redirect { location: String },
    /// Answer 200 with a body of `bytes` bytes of 'x' streamed in chunks (tests the sender's response-body cap).
    HugeBody { bytes: usize },
    /// Wait `ms` milliseconds before answering 200 (tests the sender's timeouts).
    Slow { ms: u64 },
}

/// A handle on a running receiver. Cheap to clone; all clones see the same state.
#[derive(Clone)]
pub struct WebhookReceiver {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    validator: Validator,
    state: Mutex<ReceiverState>,
}

struct ReceiverState {
    secret: String,
    behaviour: Behaviour,
    deliveries: Vec<Delivery>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, ReceiverState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl WebhookReceiver {
    /// Starts on 127.0.0.1:0 in the current tokio runtime. `secret` is the shared signing secret; `validator`
    /// checks each JSON body (e.g. against the official ACP webhook schema).
    pub async fn start(secret: &str, validator: Validator) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("webhook receiver: cannot bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("webhook receiver: no local address");
        let inner = Arc::new(Inner {
            addr,
            validator,
            state: Mutex::new(ReceiverState {
                secret: secret.to_owned(),
                behaviour: Behaviour::Accept,
                deliveries: Vec::new(),
            }),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { inner }
    }

    /// Base URL, e.g. "http://127.0.0.1:PORT" (no trailing slash). POSTs are accepted at any path.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The full canonical endpoint URL: base_url + "/agentic_checkout/webhooks/order_events".
    pub fn url(&self) -> String {
        format!("{}{CANONICAL_PATH}", self.base_url())
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.inner.state().behaviour = behaviour;
    }

    /// Replaces the secret used to verify (for rotation tests); the previous one is no longer accepted.
    pub fn set_secret(&self, secret: &str) {
        self.inner.state().secret = secret.to_owned();
    }

    /// Every delivery received, in arrival order (including ones answered with errors or bad signatures).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.state().deliveries.clone()
    }

    /// Deliveries that were accepted (answered 2xx), deduplicated by Webhook-Id (first acceptance wins), in order.
    /// Accepted deliveries without a Webhook-Id are all kept.
    pub fn accepted_unique(&self) -> Vec<Delivery> {
        let mut seen = std::collections::HashSet::new();
        self.deliveries()
            .into_iter()
            .filter(|d| (200..300).contains(&d.answered))
            .filter(|d| d.webhook_id.as_ref().is_none_or(|id| seen.insert(id.clone())))
            .collect()
    }

    /// Waits (polling every 20 ms) until `pred(&deliveries)` holds or `timeout` passes; returns whether it held.
    /// `pred` runs without the receiver's lock held, so it may call the receiver itself.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Delivery]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.deliveries()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `t=<t>,v1=<hex>` for `body` signed with `secret` at unix time `t` — the reference signer, for vector tests.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let mac = mac_for(secret, &t.to_string(), body).finalize().into_bytes();
    let mut hex = String::with_capacity(mac.len() * 2);
    for byte in mac.iter() {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    format!("t={t},v1={hex}")
}

/// Verifies a `Merchant-Signature` header value against `body` at unix time `now` with a 300 s tolerance.
pub fn verify(secret: &str, header: &str, body: &[u8], now: u64) -> Result<(), String> {
    const MALFORMED: &str = "Merchant-Signature must be t=<timestamp>,v1=<64_hex>.";
    // ^t=\d+,v1=[a-fA-F0-9]{64}$
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .ok_or(MALFORMED)?;
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) || v1.len() != 64 {
        return Err(MALFORMED.to_owned());
    }
    let mut tag = [0u8; 32];
    for (i, pair) in v1.as_bytes().chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (hex_value(pair[0]), hex_value(pair[1])) else {
            return Err(MALFORMED.to_owned());
        };
        tag[i] = (hi << 4) | lo;
    }
    let when: u64 = t.parse().map_err(|_| "Timestamp outside allowed window.".to_owned())?;
    if now.abs_diff(when) > TOLERANCE_SECS {
        return Err("Timestamp outside allowed window.".to_owned());
    }
    // The signed message uses `t` exactly as sent. `verify_slice` compares in constant time.
    mac_for(secret, t, body)
        .verify_slice(&tag)
        .map_err(|_| "Webhook signature verification failed.".to_owned())
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// HMAC-SHA256 keyed with the secret's UTF-8 bytes, fed `"<t>." + body`.
fn mac_for(secret: &str, t: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// What to answer, decided (under the lock) once the delivery is verified and validated.
enum Answer {
    Received,
    BadSignature,
    Status { status: u16, retry_after: Option<u64> },
    Redirect { location: String },
    Huge { bytes: usize },
    Slow { ms: u64 },
}

async fn handle(State(inner): State<Arc<Inner>>, method: Method, uri: Uri, headers: HeaderMap, raw: Bytes) -> Response {
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response();
    }
    let received_at = SystemTime::now();
    let signature_header = header_string(&headers, "merchant-signature");
    let request_id = header_string(&headers, "request-id");

    // Verify and validate every delivery, outside the lock (the validator is the test's code).
    let secret = inner.state().secret.clone();
    let signature = match &signature_header {
        None => Err("Missing Merchant-Signature header.".to_owned()),
        Some(h) => verify(&secret, h, &raw, unix_now()),
    };
    let (body, schema_error) = match serde_json::from_slice::<Value>(&raw) {
        Err(e) => (Value::Null, Some(format!("the body is not JSON: {e}"))),
        Ok(body) => {
            let validator = inner.validator.clone();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| validator(&body)))
                .unwrap_or_else(|_| Err("the validator panicked".to_owned()));
            (body, outcome.err())
        }
    };

    let mut delivery = Delivery {
        path: uri.path().to_owned(),
        webhook_id: header_string(&headers, "webhook-id"),
        request_id: request_id.clone(),
        timestamp_header: header_string(&headers, "timestamp"),
        signature_header,
        signature_valid: signature.is_ok(),
        schema_error,
        body,
        raw_body: raw.to_vec(),
        answered: 0,
        received_at,
    };

    let (answer, index) = {
        let mut state = inner.state();
        let answer = match &mut state.behaviour {
            Behaviour::FailTimes { status, times } if *times > 0 => {
                *times -= 1;
                Answer::Status {
                    status: *status,
                    retry_after: None,
                }
            }
            Behaviour::Always { status, retry_after } => Answer::Status {
                status: *status,
                retry_after: *retry_after,
            },
            Behaviour::Redirect { location } => Answer::Redirect {
                location: location.clone(),
            },
            _ if signature.is_err() => Answer::BadSignature,
            Behaviour::HugeBody { bytes } => Answer::Huge { bytes: *bytes },
            Behaviour::Slow { ms } => Answer::Slow { ms: *ms },
            Behaviour::Accept | Behaviour::FailTimes { .. } => Answer::Received,
        };
        if matches!(state.behaviour, Behaviour::FailTimes { times: 0, .. }) {
            state.behaviour = Behaviour::Accept;
        }
        delivery.answered = match &answer {
            Answer::Received | Answer::Huge { .. } => 200,
            Answer::BadSignature => 401,
            Answer::Status { status, .. } => status_code(*status).as_u16(),
            Answer::Redirect { .. } => 302,
            Answer::Slow { .. } => 0,
        };
        state.deliveries.push(delivery);
        (answer, state.deliveries.len() - 1)
    };

    match answer {
        Answer::Received => received(request_id),
        Answer::BadSignature => {
            let message = signature.err().unwrap_or_default();
            error_body(
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "invalid_signature",
                &message,
            )
        }
        Answer::Status { status, retry_after } => {
            let status = status_code(status);
            let mut response = if status.is_success() {
                received(request_id)
            } else {
                let kind = if status.is_server_error() {
                    "processing_error"
                } else {
                    "invalid_request"
                };
                error_body(
                    status,
                    kind,
                    "simulated_failure",
                    &format!("the receiver was told to answer {status}"),
                )
            };
            *response.status_mut() = status;
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Answer::Redirect { location } => match HeaderValue::from_str(&location) {
            Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
            Err(_) => StatusCode::FOUND.into_response(),
        },
        Answer::Huge { bytes } => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(Xs { remaining: bytes }),
        )
            .into_response(),
        Answer::Slow { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let response = match signature {
                Ok(()) => received(request_id),
                Err(message) => error_body(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request",
                    "invalid_signature",
                    &message,
                ),
            };
            if let Some(d) = inner.state().deliveries.get_mut(index) {
                d.answered = response.status().as_u16();
            }
            response
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn received(request_id: Option<String>) -> Response {
    let mut body = json!({"received": true});
    if let Some(id) = request_id {
        body["request_id"] = Value::String(id);
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn error_body(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"type": kind, "code": code, "message": message})),
    )
        .into_response()
}

/// `remaining` bytes of 'x', in chunks of at most [`CHUNK`] bytes.
struct Xs {
    remaining: usize,
}

impl futures_core::Stream for Xs {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Bytes::from_static(&X_CHUNK[..n]))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HMAC-SHA256("whsec_test", "1700000000.{\"a\":1}"), computed independently with Python's hmac module.
    const VECTOR: &str = "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789";
    const SECRET: &str = "whsec_test";

    fn accept_all() -> Validator {
        Arc::new(|_: &Value| Ok(()))
    }

    fn must_have_type() -> Validator {
        Arc::new(|body: &Value| {
            if body["type"].is_string() {
                Ok(())
            } else {
                Err("type is required".to_owned())
            }
        })
    }

    async fn post(url: &str, secret: &str, body: &str, webhook_id: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .header("Merchant-Signature", sign(secret, unix_now(), body.as_bytes()))
            .header("Request-Id", "req_123")
            .header("Timestamp", "2026-04-17T10:00:00Z")
            .body(body.to_owned());
        if let Some(id) = webhook_id {
            request = request.header("Webhook-Id", id);
        }
        request.send().await.unwrap()
    }

    #[test]
    fn webhook_signature_fixed_vector() {
        assert_eq!(
            sign(SECRET, 1_700_000_000, br#"{"a":1}"#),
            format!("t=1700000000,v1={VECTOR}")
        );
        let header = format!("t=1700000000,v1={VECTOR}");
        assert_eq!(verify(SECRET, &header, br#"{"a":1}"#, 1_700_000_000), Ok(()));
        // Upper-case hex is allowed by the header pattern.
        let upper = format!("t=1700000000,v1={}", VECTOR.to_uppercase());
        assert_eq!(verify(SECRET, &upper, br#"{"a":1}"#, 1_700_000_100), Ok(()));
    }

    #[test]
    fn webhook_sign_verify_round_trip_and_rejections() {
        let body = br#"{"type":"order_created","data":{}}"#;
        let now = 1_763_900_000;
        let header = sign("whsec_round", now, body);
        assert_eq!(verify("whsec_round", &header, body, now), Ok(()));
        assert_eq!(verify("whsec_round", &header, body, now + 300), Ok(()));
        assert_eq!(verify("whsec_round", &header, body, now - 300), Ok(()));
        // Tampered body, wrong secret.
        assert!(
            verify(
                "whsec_round",
                &header,
                br#"{"type":"order_created","data":{"x":1}}"#,
                now
            )
            .is_err()
        );
        assert!(verify("whsec_other", &header, body, now).is_err());
        // Stale or future timestamps.
        assert!(
            verify("whsec_round", &header, body, now + 301)
                .unwrap_err()
                .contains("window")
        );
        assert!(
            verify("whsec_round", &header, body, now - 301)
                .unwrap_err()
                .contains("window")
        );
        // Malformed headers.
        let v1 = &header[header.find("v1=").unwrap() + 3..];
        for bad in [
            String::new(),
            format!("v1={v1},t={now}"),
            format!("t=,v1={v1}"),
            format!("t=12a,v1={v1}"),
            format!("t={now},v1={}", &v1[..63]),
            format!("t={now},v1={v1}0"),
            format!("t={now},v1={}g", &v1[..63]),
            format!("t={now}, v1={v1}"),
            format!(" t={now},v1={v1}"),
            format!("t={now},v1={v1}\n"),
            format!("t={now},v0={v1}"),
            format!("t=99999999999999999999999,v1={v1}"),
        ] {
            assert!(verify("whsec_round", &bad, body, now).is_err(), "{bad:?} was accepted");
        }
    }

    #[tokio::test]
    async fn webhook_accept_records_a_valid_delivery() {
        let receiver = WebhookReceiver::start(SECRET, must_have_type()).await;
        assert_eq!(
            receiver.url(),
            format!("{}/agentic_checkout/webhooks/order_events", receiver.base_url())
        );
        let body = r#"{"type":"order_created","data":{"id":"ord_1"}}"#;
        let r = post(&receiver.url(), SECRET, body, Some("evt_1")).await;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"received": true, "request_id": "req_123"})
        );
        let d = &receiver.deliveries()[0];
        assert_eq!(d.path, "/agentic_checkout/webhooks/order_events");
        assert!(d.signature_valid);
        assert_eq!(d.schema_error, None);
        assert_eq!(d.answered, 200);
        assert_eq!(d.webhook_id.as_deref(), Some("evt_1"));
        assert_eq!(d.request_id.as_deref(), Some("req_123"));
        assert_eq!(d.timestamp_header.as_deref(), Some("2026-04-17T10:00:00Z"));
        assert!(d.signature_header.as_deref().unwrap().starts_with("t="));
        assert_eq!(d.body["data"]["id"], "ord_1");
        assert_eq!(d.raw_body, body.as_bytes());

        // Any path is accepted, and recorded.
        let r = post(&format!("{}/hooks", receiver.base_url()), SECRET, body, Some("evt_2")).await;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(receiver.deliveries()[1].path, "/hooks");
    }

    #[tokio::test]
    async fn webhook_bad_signatures_get_401_and_are_recorded() {
        let receiver = WebhookReceiver::start(SECRET, accept_all()).await;
        let r = post(&receiver.url(), "whsec_wrong", r#"{"type":"x"}"#, Some("evt_1")).await;
        assert_eq!(r.status().as_u16(), 401);
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["type"], "invalid_request");
        assert_eq!(error["code"], "invalid_signature");
        assert!(error["message"].is_string());
        // No header at all.
        let r = reqwest::Client::new()
            .post(receiver.url())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let deliveries = receiver.deliveries();
        assert_eq!(deliveries.len(), 2);
        assert!(deliveries.iter().all(|d| !d.signature_valid && d.answered == 401));
        assert!(receiver.accepted_unique().is_empty());

        // After a rotation the new secret verifies and the old one does not.
        receiver.set_secret("whsec_new");
        assert_eq!(
            post(&receiver.url(), "whsec_new", "{}", None).await.status().as_u16(),
            200
        );
        assert_eq!(post(&receiver.url(), SECRET, "{}", None).await.status().as_u16(), 401);
    }

    #[tokio::test]
    async fn webhook_fail_times_then_accepts() {
        let receiver = WebhookReceiver::start(SECRET, must_have_type()).await;
        receiver.set_behaviour(Behaviour::FailTimes { status: 500, times: 2 });
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(
                post(&receiver.url(), SECRET, r#"{"type":"x"}"#, Some("evt_1"))
                    .await
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(statuses, [500, 500, 200]);
        // Failed deliveries are still verified and validated; a bad signature under FailTimes still gets its status.
        receiver.set_behaviour(Behaviour::FailTimes { status: 503, times: 1 });
        assert_eq!(
            post(&receiver.url(), "whsec_wrong", "{}", None).await.status().as_u16(),
            503
        );
        let d = receiver.deliveries();
        assert_eq!(d.iter().map(|d| d.answered).collect::<Vec<_>>(), [500, 500, 200, 503]);
        assert!(d[0].signature_valid && d[0].schema_error.is_none());
        assert!(!d[3].signature_valid && d[3].schema_error.is_some());
        assert_eq!(post(&receiver.url(), SECRET, "{}", None).await.status().as_u16(), 200);
    }

    #[tokio::test]
    async fn webhook_always_redirect_huge_and_slow() {
        let receiver = WebhookReceiver::start(SECRET, accept_all()).await;
        receiver.set_behaviour(Behaviour::Always {
            status: 429,
            retry_after: Some(7),
        });
        let r = post(&receiver.url(), SECRET, "{}", None).await;
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "7");

        receiver.set_behaviour(Behaviour::Redirect {
            location: "http://127.0.0.1:9/elsewhere".to_owned(),
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = client
            .post(receiver.url())
            .header("Merchant-Signature", sign(SECRET, unix_now(), b"{}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 302);
        assert_eq!(r.headers()["location"], "http://127.0.0.1:9/elsewhere");

        let size = 3 * CHUNK + 17;
        receiver.set_behaviour(Behaviour::HugeBody { bytes: size });
        let r = post(&receiver.url(), SECRET, "{}", None).await;
        assert_eq!(r.status().as_u16(), 200);
        let bytes = r.bytes().await.unwrap();
        assert_eq!(bytes.len(), size);
        assert!(bytes.iter().all(|&b| b == b'x'));

        receiver.set_behaviour(Behaviour::Slow { ms: 300 });
        let started = std::time::Instant::now();
        let r = post(&receiver.url(), SECRET, "{}", None).await;
        assert_eq!(r.status().as_u16(), 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        let answered: Vec<u16> = receiver.deliveries().iter().map(|d| d.answered).collect();
        assert_eq!(answered, [429, 302, 200, 200]);

        // A sender that gives up on a slow answer leaves the delivery unanswered (0), hence not accepted.
        receiver.set_behaviour(Behaviour::Slow { ms: 2_000 });
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let sent = impatient
            .post(receiver.url())
            .header("Merchant-Signature", sign(SECRET, unix_now(), b"{}"))
            .header("Webhook-Id", "evt_slow")
            .body("{}")
            .send()
            .await;
        assert!(sent.is_err());
        assert_eq!(receiver.deliveries()[4].answered, 0);
        assert!(
            receiver
                .accepted_unique()
                .iter()
                .all(|d| d.webhook_id.as_deref() != Some("evt_slow"))
        );
    }

    #[tokio::test]
    async fn webhook_schema_errors_are_recorded() {
        let receiver = WebhookReceiver::start(SECRET, must_have_type()).await;
        assert_eq!(
            post(&receiver.url(), SECRET, r#"{"data":{}}"#, None)
                .await
                .status()
                .as_u16(),
            200
        );
        assert_eq!(
            post(&receiver.url(), SECRET, "not json", None).await.status().as_u16(),
            200
        );
        let d = receiver.deliveries();
        assert_eq!(d[0].schema_error.as_deref(), Some("type is required"));
        assert!(d[0].signature_valid);
        assert_eq!(d[1].body, Value::Null);
        assert!(d[1].schema_error.as_deref().unwrap().contains("not JSON"));
        assert_eq!(d[1].raw_body, b"not json");
    }

    #[tokio::test]
    async fn webhook_accepted_unique_dedups_and_wait_until() {
        let receiver = WebhookReceiver::start(SECRET, accept_all()).await;
        receiver.set_behaviour(Behaviour::FailTimes { status: 500, times: 1 });
        let url = receiver.url();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for (id, body) in [
                ("evt_a", r#"{"n":1}"#),
                ("evt_a", r#"{"n":2}"#),
                ("evt_a", r#"{"n":3}"#),
                ("evt_b", "{}"),
            ] {
                post(&url, SECRET, body, Some(id)).await;
            }
        });
        let clone = receiver.clone();
        assert!(
            receiver
                .wait_until(Duration::from_secs(5), |_| clone.accepted_unique().len() == 2)
                .await
        );
        sender.await.unwrap();
        let unique = receiver.accepted_unique();
        assert_eq!(
            unique
                .iter()
                .map(|d| d.webhook_id.as_deref().unwrap())
                .collect::<Vec<_>>(),
            ["evt_a", "evt_b"]
        );
        // The first acceptance wins: the first evt_a was answered 500, the second was the first accepted.
        assert_eq!(unique[0].body, json!({"n": 2}));
        assert_eq!(receiver.deliveries().len(), 4);
        let started = std::time::Instant::now();
        assert!(!receiver.wait_until(Duration::from_millis(100), |d| d.len() > 4).await);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
