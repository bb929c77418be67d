//! A stateful fake of the parts of Stripe's API a merchant uses to charge Shared Payment Tokens (SPTs).
//!
//! [`FakeStripe::start`] serves, on `127.0.0.1:0`:
//!
//! * `POST /v1/payment_intents` (create, optionally `confirm=true`), `GET /v1/payment_intents/{id}`,
//!   `POST /v1/payment_intents/{id}/confirm`, `POST /v1/payment_intents/{id}/capture`,
//!   `POST /v1/payment_intents/{id}/cancel`;
//! * `POST /v1/refunds`, `GET /v1/refunds/{id}`.
//!
//! It keeps PaymentIntents, charges, refunds, idempotency records and token usage in memory and follows Stripe's
//! documented behaviour: bearer auth with one secret key, form bodies with bracket notation, the error envelope
//! and its HTTP statuses, and idempotent requests (replay with `Idempotent-Replayed: true`, `idempotency_error`
//! on changed parameters, 409 `idempotency_key_in_use` while the first request is still executing, nothing saved
//! for 500s, rate limiting or parameter validation failures).
//!
//! What a charge does is decided by the Shared Payment Token's prefix (tried in this order, so
//! `spt_expired_card…` is a card decline and `spt_expired…` an expired token); tests mint unique tokens such as
//! `spt_ok_<uuid>`. The token is read from `payment_method_data[shared_payment_granted_token]` or the older
//! top-level `shared_payment_granted_token`.
//!
//! | token prefix          | behaviour                                                                        |
//! |-----------------------|----------------------------------------------------------------------------------|
//! | not `spt_`            | 400 `resource_missing` (param: the token parameter); no PaymentIntent             |
//! | `spt_expired_card`    | 402 `card_error` `expired_card` (decline_code `expired_card`); failed PI stored   |
//! | `spt_expired`         | 400 `shared_payment_granted_token_expired`; no PaymentIntent                      |
//! | `spt_decline`         | 402 `card_declined` / `generic_decline`; failed PI stored                         |
//! | `spt_insufficient`    | 402 `card_declined` / `insufficient_funds`; failed PI stored                      |
//! | `spt_3ds`             | `requires_action` (`next_action.type = use_stripe_sdk`) unless imported 3DS       |
//! | `spt_slow`            | waits [`FakeStripe::set_slow_delay`] (default 3 s) before executing, then succeeds |
//! | `spt_flaky`           | first attempt per idempotency key: 500 `api_error` (not saved); then succeeds      |
//! | `spt_ratelimited`     | first attempt per idempotency key: 429 + `Retry-After: 0` (not saved); then ok     |
//! | `spt_hold`            | executes and saves, then holds the response until [`FakeStripe::release_held`]    |
//! | `spt_max<N>_…`        | usage limit of N minor units: amount > N → 400 `amount_too_large` (param amount)  |
//! | any other `spt_…`     | succeeds (`requires_capture` with `capture_method=manual`)                         |
//!
//! Every token is single use: once a confirmation with it succeeded (or was authorized), any later request
//! with a different idempotency key gets 400 `shared_payment_granted_token_used`. Declines and `requires_action`
//! do not consume it. Imported 3-D Secure results
//! (`payment_method_options[card][three_d_secure][cryptogram|transaction_id|version|electronic_commerce_indicator]`)
//! authenticate the payment; the cryptogram `DENIED` makes it a 402 `card_declined` / `authentication_required`.
//! With `off_session=true` or `error_on_requires_action=true`, a `spt_3ds` payment without imported results fails
//! with 402 `authentication_required` instead of asking for action.
//!
//! `spt_slow` sleeps *before* executing while holding its idempotency key, so a retry under the same key during
//! the delay gets 409 `idempotency_key_in_use` (as on Stripe), and a retry after it gets the saved response.
//! Requests are executed in their own task: a client that gives up does not stop the work (like Stripe).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

/// Decoded form (or query) parameters, keys exactly as sent.
type Params = BTreeMap<String, String>;

/// A handle on a running fake Stripe. Cheap to clone; all clones see the same state.
#[derive(Clone)]
pub struct FakeStripe {
    inner: Arc<Inner>,
}

/// One request as the fake received it, and what it answered.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    pub authorization_ok: bool,
    /// Decoded form parameters, keys exactly as sent (e.g. "payment_method_data[shared_payment_granted_token]").
    pub params: BTreeMap<String, String>,
    /// 0 (and a null `response`) while the request is still being executed (e.g. `spt_slow`).
    pub status: u16,
    pub response: Value,
}

impl FakeStripe {
    /// Starts the server on 127.0.0.1:0 in the current tokio runtime; `secret_key` is the only accepted API key.
    pub async fn start(secret_key: &str) -> FakeStripe {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake Stripe: cannot bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake Stripe: no local address");
        let (release, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            secret_key: secret_key.to_owned(),
            addr,
            ledger: Mutex::new(Ledger::default()),
            release,
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe { inner }
    }

    /// e.g. "http://127.0.0.1:PORT" (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Every request received, in arrival order (including rejected ones).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.inner.ledger().requests.clone()
    }

    /// PaymentIntents currently stored, in creation order.
    pub fn payment_intents(&self) -> Vec<Value> {
        self.inner.ledger().intents.iter().map(Intent::to_json).collect()
    }

    /// Releases responses held by the `spt_hold` token (those held at the time of the call).
    pub fn release_held(&self) {
        self.inner.release.send_modify(|generation| *generation += 1);
    }

    /// Sets how long the `spt_slow` token delays its response (default 3 s).
    pub fn set_slow_delay(&self, d: Duration) {
        self.inner.ledger().slow_delay = Some(d);
    }
}

const DEFAULT_SLOW_DELAY: Duration = Duration::from_secs(3);

struct Inner {
    secret_key: String,
    addr: SocketAddr,
    ledger: Mutex<Ledger>,
    /// Bumped by `release_held`; held responses wait for the next bump after they were saved.
    release: watch::Sender<u64>,
}

impl Inner {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything the fake remembers.
#[derive(Default)]
struct Ledger {
    requests: Vec<LoggedRequest>,
    intents: Vec<Intent>,
    intent_index: HashMap<String, usize>,
    /// Charge id → PaymentIntent id (failed charges included).
    charges: HashMap<String, String>,
    refunds: Vec<Value>,
    refund_index: HashMap<String, usize>,
    idempotency: HashMap<String, IdempotencyRecord>,
    /// Tokens consumed by a successful (or authorized) confirmation.
    used_tokens: HashSet<String>,
    /// First attempts already failed on purpose (`spt_flaky`, `spt_ratelimited`), per idempotency key or token.
    faults_seen: HashSet<String>,
    slow_delay: Option<Duration>,
}

struct IdempotencyRecord {
    method: String,
    path: String,
    params: Params,
    /// `None` while the first request is still executing.
    saved: Option<SavedResponse>,
}

struct SavedResponse {
    status: u16,
    body: Value,
    request_id: String,
}

/// An HTTP answer: status, JSON body, extra headers.
struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn new(status: u16, body: Value) -> Self {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

/// A Stripe error: the envelope's fields, its HTTP status, and whether an idempotency key saves it.
#[derive(Debug)]
struct Failure {
    status: u16,
    fields: Map<String, Value>,
    /// Stripe saves a result once the endpoint started executing; not for validation failures, 429s or 500s.
    save: bool,
}

impl Failure {
    fn new(status: u16, kind: &str, code: Option<&str>, message: impl Into<String>) -> Self {
        let mut fields = Map::new();
        if let Some(code) = code {
            fields.insert("code".into(), code.into());
            fields.insert(
                "doc_url".into(),
                format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")).into(),
            );
        }
        fields.insert("message".into(), message.into().into());
        fields.insert("type".into(), kind.into());
        Failure {
            status,
            fields,
            save: true,
        }
    }

    /// 400 `invalid_request_error` raised while executing (saved under an idempotency key).
    fn invalid(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", Some(code), message)
    }

    /// 400 `invalid_request_error` from parameter validation (never saved under an idempotency key).
    fn validation(code: Option<&str>, message: impl Into<String>, param: &str) -> Self {
        let mut failure = Self::new(400, "invalid_request_error", code, message).param(param);
        failure.save = false;
        failure
    }

    fn missing(param: &str) -> Self {
        Self::validation(
            Some("parameter_missing"),
            format!("Missing required param: {param}."),
            param,
        )
    }

    /// 404 `resource_missing` for an object named in the URL or a parameter.
    fn no_such(object: &str, id: &str, param: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            format!("No such {object}: '{id}'"),
        )
        .param(param)
    }

    fn param(self, param: &str) -> Self {
        self.with("param", param)
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    fn reply(self) -> Reply {
        Reply::new(self.status, json!({ "error": Value::Object(self.fields) }))
    }
}

/// A card decline: `card_error` with its code, decline code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decline {
    code: &'static str,
    decline_code: &'static str,
    message: &'static str,
}

const GENERIC_DECLINE: Decline = Decline {
    code: "card_declined",
    decline_code: "generic_decline",
    message: "Your card was declined.",
};
const INSUFFICIENT_FUNDS: Decline = Decline {
    code: "card_declined",
    decline_code: "insufficient_funds",
    message: "Your card has insufficient funds.",
};
const EXPIRED_CARD: Decline = Decline {
    code: "expired_card",
    decline_code: "expired_card",
    message: "Your card has expired.",
};
const AUTHENTICATION_DECLINED: Decline = Decline {
    code: "card_declined",
    decline_code: "authentication_required",
    message: "Your card was declined. This transaction requires authentication.",
};

/// What a Shared Payment Token does, decided by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// Does not start with `spt_`: no such token.
    Unknown,
    Expired,
    Decline(Decline),
    ThreeDs,
    Slow,
    Flaky,
    RateLimited,
    Hold,
    Max(i64),
    Ok,
}

impl TokenKind {
    /// Longer prefixes first: `spt_expired_card` is a card decline, `spt_expired` an expired token.
    fn parse(token: &str) -> TokenKind {
        let Some(rest) = token.strip_prefix("spt_") else {
            return TokenKind::Unknown;
        };
        if rest.starts_with("expired_card") {
            TokenKind::Decline(EXPIRED_CARD)
        } else if rest.starts_with("expired") {
            TokenKind::Expired
        } else if rest.starts_with("decline") {
            TokenKind::Decline(GENERIC_DECLINE)
        } else if rest.starts_with("insufficient") {
            TokenKind::Decline(INSUFFICIENT_FUNDS)
        } else if rest.starts_with("3ds") {
            TokenKind::ThreeDs
        } else if rest.starts_with("slow") {
            TokenKind::Slow
        } else if rest.starts_with("flaky") {
            TokenKind::Flaky
        } else if rest.starts_with("ratelimited") {
            TokenKind::RateLimited
        } else if rest.starts_with("hold") {
            TokenKind::Hold
        } else if let Some(limit) = rest.strip_prefix("max").and_then(parse_limit) {
            TokenKind::Max(limit)
        } else {
            TokenKind::Ok
        }
    }
}

/// `1000_abc` or `1000` → 1000.
fn parse_limit(s: &str) -> Option<i64> {
    let digits = s.split('_').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A PaymentIntent and the private facts behind it.
#[derive(Debug, Clone)]
struct Intent {
    id: String,
    amount: i64,
    amount_received: i64,
    amount_capturable: i64,
    currency: String,
    status: &'static str,
    capture_method: String,
    confirmation_method: String,
    metadata: BTreeMap<String, String>,
    description: Option<String>,
    latest_charge: Option<String>,
    last_payment_error: Option<Value>,
    next_action: Option<Value>,
    payment_method: Option<String>,
    created: i64,
    canceled_at: Option<i64>,
    cancellation_reason: Option<String>,
    client_secret: String,
    /// The SPT behind `payment_method`.
    token: Option<String>,
    /// Sum of the refunds so far.
    refunded: i64,
}

impl Intent {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": self.amount_capturable,
            "amount_received": self.amount_received,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": self.capture_method,
            "client_secret": self.client_secret,
            "confirmation_method": self.confirmation_method,
            "created": self.created,
            "currency": self.currency,
            "description": self.description,
            "last_payment_error": self.last_payment_error,
            "latest_charge": self.latest_charge,
            "livemode": false,
            "metadata": self.metadata,
            "next_action": self.next_action,
            "payment_method": self.payment_method,
            "payment_method_types": ["card"],
            "status": self.status,
        })
    }
}

/// The endpoints served.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    CreateIntent,
    GetIntent(String),
    ConfirmIntent(String),
    CaptureIntent(String),
    CancelIntent(String),
    CreateRefund,
    GetRefund(String),
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
        let id = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["payment_intents"]) => Some(Route::CreateIntent),
            ("GET", ["payment_intents", pi]) => id(pi).map(Route::GetIntent),
            ("POST", ["payment_intents", pi, "confirm"]) => id(pi).map(Route::ConfirmIntent),
            ("POST", ["payment_intents", pi, "capture"]) => id(pi).map(Route::CaptureIntent),
            ("POST", ["payment_intents", pi, "cancel"]) => id(pi).map(Route::CancelIntent),
            ("POST", ["refunds"]) => Some(Route::CreateRefund),
            ("GET", ["refunds", re]) => id(re).map(Route::GetRefund),
            _ => None,
        }
    }

    /// Routes that charge a token (and so honour the token's slow/flaky/rate-limited/hold behaviours).
    fn charges(&self) -> bool {
        matches!(self, Route::CreateIntent | Route::ConfirmIntent(_))
    }
}

enum Auth {
    Ok,
    Missing,
    Invalid(String),
}

/// A request as received, before anything is executed.
struct Incoming {
    method: Method,
    path: String,
    idempotency_key: Option<String>,
    auth: Auth,
    params: Result<Params, String>,
    request_id: String,
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let idempotency_key = header_str("idempotency-key");
    let stripe_version = header_str("stripe-version");
    let auth = match header_str(header::AUTHORIZATION.as_str()) {
        None => Auth::Missing,
        Some(value) => {
            let presented = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, key)| key.trim());
            match presented {
                Some(key) if key == inner.secret_key => Auth::Ok,
                Some(key) => Auth::Invalid(mask_key(key)),
                None => Auth::Invalid(mask_key(&value)),
            }
        }
    };
    let params = parse_params(uri.query(), &body);
    let incoming = Incoming {
        method: method.clone(),
        path: uri.path().to_owned(),
        idempotency_key: idempotency_key.clone(),
        auth,
        params,
        request_id: new_id("req"),
    };
    let log = {
        let mut ledger = inner.ledger();
        ledger.requests.push(LoggedRequest {
            method: method.to_string(),
            path: incoming.path.clone(),
            idempotency_key: idempotency_key.clone(),
            stripe_version: stripe_version.clone(),
            authorization_ok: matches!(incoming.auth, Auth::Ok),
            params: incoming.params.clone().unwrap_or_default(),
            status: 0,
            response: Value::Null,
        });
        ledger.requests.len() - 1
    };
    let request_id = incoming.request_id.clone();
    // Executed in its own task: like Stripe, the work finishes even if the client goes away.
    let task = tokio::spawn(serve(inner.clone(), incoming, log));
    let mut reply = match task.await {
        Ok(reply) => reply,
        Err(_) => api_error().reply(),
    };
    reply.headers.push(("request-id", request_id));
    if let Some(version) = stripe_version {
        reply.headers.push(("stripe-version", version));
    }
    if let Some(key) = idempotency_key.filter(|_| method == Method::POST) {
        reply.headers.push(("idempotency-key", key));
    }
    reply.into_response()
}

/// Query parameters, then form body parameters (the body wins on a clash).
fn parse_params(query: Option<&str>, body: &[u8]) -> Result<Params, String> {
    let mut params = Params::new();
    for source in [query.unwrap_or("").as_bytes(), body] {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(source).map_err(|e| format!("Invalid request body: {e}"))?;
        params.extend(pairs);
    }
    Ok(params)
}

/// Never echoes a key: keeps Stripe's `sk_test_`-style prefix and at most the last four characters.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let prefix_len = if !["sk_", "rk_", "pk_"].iter().any(|p| key.starts_with(p)) {
        0
    } else if ["test_", "live_"].iter().any(|m| key[3..].starts_with(m)) {
        8
    } else {
        3
    };
    let prefix: String = chars[..prefix_len.min(chars.len())].iter().collect();
    let rest = chars.len().saturating_sub(prefix_len);
    if rest < 12 {
        return format!("{prefix}{}", "*".repeat(rest.max(4)));
    }
    let last4: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}{}{last4}", "*".repeat(rest - 4))
}

fn api_error() -> Failure {
    let mut failure = Failure::new(
        500,
        "api_error",
        None,
        "An unknown error occurred on Stripe's end. Please try again; an idempotent retry is safe.",
    );
    failure.save = false;
    failure
}

/// Runs one request to its reply, updating the request log once the reply is known.
async fn serve(inner: Arc<Inner>, req: Incoming, log: usize) -> Reply {
    let finish = |reply: Reply| {
        let mut ledger = inner.ledger();
        let entry = &mut ledger.requests[log];
        entry.status = reply.status;
        entry.response = reply.body.clone();
        reply
    };

    match &req.auth {
        Auth::Ok => {}
        Auth::Missing => {
            let failure = Failure::new(
                401,
                "invalid_request_error",
                None,
                "You did not provide an API key. You need to provide your API key in the Authorization header, \
                 using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            );
            return finish(failure.reply().header("www-authenticate", "Bearer realm=\"Stripe\""));
        }
        Auth::Invalid(masked) => {
            let failure = Failure::new(
                401,
                "invalid_request_error",
                None,
                format!("Invalid API Key provided: {masked}"),
            );
            return finish(failure.reply().header("www-authenticate", "Bearer realm=\"Stripe\""));
        }
    }
    let params = match &req.params {
        Ok(params) => params,
        Err(message) => {
            return finish(Failure::new(400, "invalid_request_error", None, message.clone()).reply());
        }
    };
    let Some(route) = Route::parse(&req.method, &req.path) else {
        let message = format!(
            "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we can help at \
             https://support.stripe.com/.",
            req.method, req.path
        );
        return finish(Failure::new(404, "invalid_request_error", None, message).reply());
    };

    // Stripe ignores idempotency keys on GET (GETs are idempotent by definition).
    let key = req.idempotency_key.as_deref().filter(|_| req.method == Method::POST);
    if let Some(key) = key {
        if key.chars().count() > 255 {
            let failure = Failure::validation(
                None,
                "Invalid Idempotency-Key: keys can be at most 255 characters long.",
                "Idempotency-Key",
            );
            return finish(failure.reply());
        }
        let gate = {
            let mut ledger = inner.ledger();
            idempotency_gate(&mut ledger, key, req.method.as_str(), &req.path, params)
        };
        if let Some(reply) = gate {
            return finish(reply);
        }
    }

    // The token behind a charge decides its slow/flaky/rate-limited/hold behaviour.
    let token = route
        .charges()
        .then(|| charge_token(&inner.ledger(), &route, params))
        .flatten();
    let kind = token.as_deref().map(TokenKind::parse);
    if kind == Some(TokenKind::Slow) {
        let delay = inner.ledger().slow_delay.unwrap_or(DEFAULT_SLOW_DELAY);
        tokio::time::sleep(delay).await;
    }

    let (reply, held) = {
        let mut ledger = inner.ledger();
        let fault_key = format!("{}|{}", key.unwrap_or(""), token.as_deref().unwrap_or(""));
        let result = match kind {
            Some(TokenKind::Flaky) if ledger.faults_seen.insert(format!("flaky|{fault_key}")) => Err(api_error()),
            Some(TokenKind::RateLimited) if ledger.faults_seen.insert(format!("ratelimited|{fault_key}")) => {
                let mut failure = Failure::new(
                    429,
                    "invalid_request_error",
                    Some("rate_limit"),
                    "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                );
                failure.save = false;
                Err(failure)
            }
            _ => execute(&mut ledger, &route, params),
        };
        let (mut reply, save) = match result {
            Ok(body) => (Reply::new(200, body), true),
            Err(failure) => {
                let save = failure.save;
                (failure.reply(), save)
            }
        };
        if reply.status == 429 {
            reply = reply.header("retry-after", "0").header("stripe-should-retry", "true");
        } else if reply.status >= 500 {
            reply = reply.header("stripe-should-retry", "true");
        }
        if let Some(key) = key {
            if save {
                if let Some(record) = ledger.idempotency.get_mut(key) {
                    record.saved = Some(SavedResponse {
                        status: reply.status,
                        body: reply.body.clone(),
                        request_id: req.request_id.clone(),
                    });
                }
            } else {
                ledger.idempotency.remove(key);
            }
        }
        let entry = &mut ledger.requests[log];
        entry.status = reply.status;
        entry.response = reply.body.clone();
        // Subscribed before the lock is released, so a `release_held` after the PI is visible always counts.
        let held = (kind == Some(TokenKind::Hold) && reply.status == 200).then(|| inner.release.subscribe());
        (reply, held)
    };
    if let Some(mut release) = held {
        let _ = release.changed().await;
    }
    reply
}

/// Replays, refuses or claims an idempotency key; `None` means "go ahead and execute".
fn idempotency_gate(ledger: &mut Ledger, key: &str, method: &str, path: &str, params: &Params) -> Option<Reply> {
    let Some(record) = ledger.idempotency.get(key) else {
        ledger.idempotency.insert(
            key.to_owned(),
            IdempotencyRecord {
                method: method.to_owned(),
                path: path.to_owned(),
                params: params.clone(),
                saved: None,
            },
        );
        return None;
    };
    if record.method != method || record.path != path {
        let message = format!(
            "Keys for idempotent requests can only be used for the same endpoint they were first used for \
             ('{} {}' vs '{method} {path}'). Try using a key other than '{key}' if you meant to execute a \
             different request.",
            record.method, record.path
        );
        return Some(Failure::new(400, "idempotency_error", None, message).reply());
    }
    if record.params != *params {
        let message = format!(
            "Keys for idempotent requests can only be used with the same parameters they were first used with. \
             Try using a key other than '{key}' if you meant to execute a different request."
        );
        return Some(Failure::new(400, "idempotency_error", None, message).reply());
    }
    Some(match &record.saved {
        Some(saved) => Reply::new(saved.status, saved.body.clone())
            .header("idempotent-replayed", "true")
            .header("original-request", saved.request_id.clone()),
        None => Failure::new(
            409,
            "invalid_request_error",
            Some("idempotency_key_in_use"),
            format!(
                "There is currently another in-progress request using this Stripe API key and idempotency key \
                 ('{key}'). Please try again later."
            ),
        )
        .reply()
        .header("stripe-should-retry", "true"),
    })
}

/// The SPT a charge request uses: the one it carries, or (confirm) the one already on the PaymentIntent.
fn charge_token(ledger: &Ledger, route: &Route, params: &Params) -> Option<String> {
    if let Some((token, _)) = token_param(params) {
        return Some(token.to_owned());
    }
    match route {
        Route::ConfirmIntent(id) => ledger
            .intent_index
            .get(id)
            .and_then(|&i| ledger.intents[i].token.clone()),
        _ => None,
    }
}

/// The token and the parameter that carried it (current API first, then the older top-level parameter).
fn token_param(params: &Params) -> Option<(&str, &'static str)> {
    const CURRENT: &str = "payment_method_data[shared_payment_granted_token]";
    const LEGACY: &str = "shared_payment_granted_token";
    params
        .get(CURRENT)
        .map(|t| (t.as_str(), CURRENT))
        .or_else(|| params.get(LEGACY).map(|t| (t.as_str(), LEGACY)))
}

fn execute(ledger: &mut Ledger, route: &Route, params: &Params) -> Result<Value, Failure> {
    match route {
        Route::CreateIntent => create_intent(ledger, params),
        Route::GetIntent(id) => Ok(ledger.intent(id)?.to_json()),
        Route::ConfirmIntent(id) => confirm_intent(ledger, id, params),
        Route::CaptureIntent(id) => capture_intent(ledger, id, params),
        Route::CancelIntent(id) => cancel_intent(ledger, id, params),
        Route::CreateRefund => create_refund(ledger, params),
        Route::GetRefund(id) => ledger
            .refund_index
            .get(id)
            .map(|&i| ledger.refunds[i].clone())
            .ok_or_else(|| Failure::no_such("refund", id, "id")),
    }
}

impl Ledger {
    fn intent(&self, id: &str) -> Result<&Intent, Failure> {
        self.intent_index
            .get(id)
            .map(|&i| &self.intents[i])
            .ok_or_else(|| Failure::no_such("payment_intent", id, "intent"))
    }

    /// Inserts or replaces.
    fn store(&mut self, intent: Intent) {
        match self.intent_index.get(&intent.id) {
            Some(&i) => self.intents[i] = intent,
            None => {
                self.intent_index.insert(intent.id.clone(), self.intents.len());
                self.intents.push(intent);
            }
        }
    }

    /// Whether `token` may pay `amount` now; errors are Stripe's answers (no PaymentIntent is created).
    fn check_token(&self, token: &str, param: &str, amount: i64) -> Result<(), Failure> {
        match TokenKind::parse(token) {
            TokenKind::Unknown => {
                return Err(Failure::invalid(
                    "resource_missing",
                    format!("No such shared_payment_granted_token: '{token}'"),
                )
                .param(param));
            }
            TokenKind::Expired => {
                return Err(Failure::invalid(
                    "shared_payment_granted_token_expired",
                    format!("The SharedPaymentGrantedToken '{token}' has expired and can no longer be used."),
                )
                .param(param));
            }
            _ => {}
        }
        if self.used_tokens.contains(token) {
            return Err(Failure::invalid(
                "shared_payment_granted_token_used",
                format!("The SharedPaymentGrantedToken '{token}' has already been used and cannot be used again."),
            )
            .param(param));
        }
        if let TokenKind::Max(limit) = TokenKind::parse(token)
            && amount > limit
        {
            return Err(Failure::invalid(
                "amount_too_large",
                format!(
                    "The amount ({amount}) exceeds the usage limit of the SharedPaymentGrantedToken \
                     '{token}' (max_amount {limit})."
                ),
            )
            .param("amount"));
        }
        Ok(())
    }

    /// Attempts the payment on `intent` (not yet stored back). A decline leaves the intent failed and is returned.
    fn attempt_payment(&mut self, intent: &mut Intent, options: &ConfirmOptions) -> Result<(), Decline> {
        let token = intent.token.clone().unwrap_or_default();
        let kind = TokenKind::parse(&token);
        let needs_authentication = kind == TokenKind::ThreeDs;
        let verdict = match (kind, &options.three_ds) {
            (TokenKind::Decline(decline), _) => Err(decline),
            (_, Some(three_ds)) if three_ds.cryptogram == "DENIED" => Err(AUTHENTICATION_DECLINED),
            (_, Some(_)) => Ok(true),
            (_, None) if needs_authentication && options.no_action => Err(Decline {
                code: "authentication_required",
                ..AUTHENTICATION_DECLINED
            }),
            (_, None) => Ok(!needs_authentication),
        };
        let payment_method = intent.payment_method.clone().unwrap_or_default();
        intent.next_action = None;
        match verdict {
            Ok(true) => {
                let charge = new_id("ch");
                self.charges.insert(charge.clone(), intent.id.clone());
                self.used_tokens.insert(token);
                intent.latest_charge = Some(charge);
                intent.last_payment_error = None;
                if intent.capture_method == "manual" {
                    intent.status = "requires_capture";
                    intent.amount_capturable = intent.amount;
                } else {
                    intent.status = "succeeded";
                    intent.amount_received = intent.amount;
                }
                Ok(())
            }
            Ok(false) => {
                intent.status = "requires_action";
                intent.next_action = Some(json!({
                    "type": "use_stripe_sdk",
                    "use_stripe_sdk": {
                        "type": "three_d_secure_redirect",
                        "stripe_js": format!("https://hooks.stripe.com/3d_secure_2/hosted?payment_intent={}", intent.id),
                        "source": new_id("payatt"),
                    },
                }));
                Ok(())
            }
            Err(decline) => {
                let charge = new_id("ch");
                self.charges.insert(charge.clone(), intent.id.clone());
                intent.status = "requires_payment_method";
                intent.latest_charge = Some(charge.clone());
                intent.payment_method = None;
                intent.last_payment_error = Some(json!({
                    "type": "card_error",
                    "code": decline.code,
                    "decline_code": decline.decline_code,
                    "doc_url": format!("https://stripe.com/docs/error-codes/{}", decline.code.replace('_', "-")),
                    "message": decline.message,
                    "charge": charge,
                    "payment_method": payment_method_json(&payment_method),
                }));
                Err(decline)
            }
        }
    }
}

fn payment_method_json(id: &str) -> Value {
    json!({ "id": id, "object": "payment_method", "type": "card" })
}

/// The 402 for a declined attempt, carrying the failed PaymentIntent as Stripe does.
fn card_error(decline: Decline, intent: &Intent) -> Failure {
    let error = intent.last_payment_error.clone().unwrap_or(Value::Null);
    let mut failure = Failure::new(402, "card_error", Some(decline.code), decline.message)
        .with("decline_code", decline.decline_code)
        .with("payment_intent", intent.to_json());
    for field in ["charge", "payment_method"] {
        if let Some(value) = error.get(field) {
            failure = failure.with(field, value.clone());
        }
    }
    failure
}

struct ConfirmOptions {
    three_ds: Option<ThreeDs>,
    /// `off_session=true` or `error_on_requires_action=true`: fail instead of asking for authentication.
    no_action: bool,
}

impl ConfirmOptions {
    fn parse(params: &Params) -> Result<Self, Failure> {
        let off_session = optional_bool(params, "off_session")?.unwrap_or(false);
        let error_on_requires_action = optional_bool(params, "error_on_requires_action")?.unwrap_or(false);
        Ok(ConfirmOptions {
            three_ds: ThreeDs::parse(params)?,
            no_action: off_session || error_on_requires_action,
        })
    }
}

/// 3-D Secure results imported from an outside authentication.
struct ThreeDs {
    cryptogram: String,
}

impl ThreeDs {
    const PREFIX: &'static str = "payment_method_options[card][three_d_secure]";

    fn parse(params: &Params) -> Result<Option<ThreeDs>, Failure> {
        if !params.keys().any(|k| k.starts_with(Self::PREFIX)) {
            return Ok(None);
        }
        let name = |field: &str| format!("{}[{field}]", Self::PREFIX);
        let required = |field: &str| {
            let name = name(field);
            params
                .get(&name)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| Failure::missing(&name))
        };
        let cryptogram = required("cryptogram")?;
        required("transaction_id")?;
        let version = required("version")?;
        one_of(
            &name("version"),
            &version,
            &["1.0.2", "2.1.0", "2.2.0", "2.3.0", "2.3.1"],
        )?;
        if let Some(eci) = params.get(&name("electronic_commerce_indicator")) {
            one_of(
                &name("electronic_commerce_indicator"),
                eci,
                &["01", "02", "05", "06", "07"],
            )?;
        }
        Ok(Some(ThreeDs { cryptogram }))
    }
}

const CREATE_INTENT_PARAMS: &[&str] = &[
    "amount",
    "amount_details",
    "application_fee_amount",
    "automatic_payment_methods",
    "capture_method",
    "confirm",
    "confirmation_method",
    "confirmation_token",
    "currency",
    "customer",
    "description",
    "error_on_requires_action",
    "excluded_payment_method_types",
    "expand",
    "hooks",
    "mandate",
    "mandate_data",
    "metadata",
    "off_session",
    "on_behalf_of",
    "payment_details",
    "payment_method",
    "payment_method_configuration",
    "payment_method_data",
    "payment_method_options",
    "payment_method_types",
    "radar_options",
    "receipt_email",
    "return_url",
    "setup_future_usage",
    "shared_payment_granted_token",
    "shipping",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
    "transfer_group",
    "use_stripe_sdk",
];

const CONFIRM_INTENT_PARAMS: &[&str] = &[
    "capture_method",
    "confirmation_token",
    "error_on_requires_action",
    "expand",
    "mandate",
    "mandate_data",
    "off_session",
    "payment_details",
    "payment_method",
    "payment_method_data",
    "payment_method_options",
    "payment_method_types",
    "radar_options",
    "receipt_email",
    "return_url",
    "setup_future_usage",
    "shared_payment_granted_token",
    "shipping",
    "use_stripe_sdk",
];

const CAPTURE_INTENT_PARAMS: &[&str] = &[
    "amount_details",
    "amount_to_capture",
    "application_fee_amount",
    "expand",
    "final_capture",
    "metadata",
    "payment_details",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
];

const CANCEL_INTENT_PARAMS: &[&str] = &["cancellation_reason", "expand"];

const CREATE_REFUND_PARAMS: &[&str] = &[
    "amount",
    "charge",
    "currency",
    "customer",
    "expand",
    "instructions_email",
    "metadata",
    "origin",
    "payment_intent",
    "reason",
    "refund_application_fee",
    "reverse_transfer",
];

fn create_intent(ledger: &mut Ledger, params: &Params) -> Result<Value, Failure> {
    known_params(params, CREATE_INTENT_PARAMS)?;
    let amount = required_amount(params, "amount")?;
    let currency = required_currency(params)?;
    let capture_method = optional_enum(params, "capture_method", &["automatic", "automatic_async", "manual"])?
        .unwrap_or("automatic_async");
    let confirmation_method =
        optional_enum(params, "confirmation_method", &["automatic", "manual"])?.unwrap_or("automatic");
    let confirm = optional_bool(params, "confirm")?.unwrap_or(false);
    let mut metadata = BTreeMap::new();
    apply_metadata(&mut metadata, params)?;
    let options = ConfirmOptions::parse(params)?;
    let token = token_param(params);
    if token.is_none() {
        if let Some(pm) = params.get("payment_method") {
            // Only SPT-backed payment methods exist here.
            return Err(
                Failure::invalid("resource_missing", format!("No such PaymentMethod: '{pm}'")).param("payment_method"),
            );
        }
        if confirm {
            return Err(Failure::validation(
                Some("parameter_missing"),
                "You cannot confirm this PaymentIntent because it's missing a payment method. Provide \
                 payment_method_data[shared_payment_granted_token] (or payment_method).",
                "payment_method_data[shared_payment_granted_token]",
            ));
        }
    }
    if let Some((token, param)) = token {
        ledger.check_token(token, param, amount)?;
    }

    let id = new_id("pi");
    let mut intent = Intent {
        client_secret: format!("{id}_secret_{}", &uuid::Uuid::new_v4().simple().to_string()[..25]),
        id,
        amount,
        amount_received: 0,
        amount_capturable: 0,
        currency,
        status: if token.is_some() {
            "requires_confirmation"
        } else {
            "requires_payment_method"
        },
        capture_method: capture_method.to_owned(),
        confirmation_method: confirmation_method.to_owned(),
        metadata,
        description: params.get("description").cloned(),
        latest_charge: None,
        last_payment_error: None,
        next_action: None,
        payment_method: token.map(|_| new_id("pm")),
        created: now(),
        canceled_at: None,
        cancellation_reason: None,
        token: token.map(|(t, _)| t.to_owned()),
        refunded: 0,
    };
    let attempt = if confirm {
        ledger.attempt_payment(&mut intent, &options)
    } else {
        Ok(())
    };
    let body = intent.to_json();
    let result = attempt.map_err(|decline| card_error(decline, &intent));
    ledger.store(intent);
    result.map(|()| body)
}

fn confirm_intent(ledger: &mut Ledger, id: &str, params: &Params) -> Result<Value, Failure> {
    known_params(params, CONFIRM_INTENT_PARAMS)?;
    let options = ConfirmOptions::parse(params)?;
    let capture_method = optional_enum(params, "capture_method", &["automatic", "automatic_async", "manual"])?;
    let mut intent = ledger.intent(id)?.clone();
    if !matches!(
        intent.status,
        "requires_payment_method" | "requires_confirmation" | "requires_action"
    ) {
        return Err(unexpected_state(
            &intent,
            format!(
                "You cannot confirm this PaymentIntent because it has a status of {}. Only a PaymentIntent with \
                 one of the following statuses may be confirmed: requires_payment_method, requires_confirmation, \
                 requires_action.",
                intent.status
            ),
        ));
    }
    if let Some((token, param)) = token_param(params) {
        ledger.check_token(token, param, intent.amount)?;
        intent.token = Some(token.to_owned());
        intent.payment_method = Some(new_id("pm"));
    } else if let Some(pm) = params.get("payment_method")
        && intent.payment_method.as_deref() != Some(pm)
    {
        return Err(
            Failure::invalid("resource_missing", format!("No such PaymentMethod: '{pm}'")).param("payment_method"),
        );
    }
    let Some(token) = intent.token.clone().filter(|_| intent.payment_method.is_some()) else {
        return Err(unexpected_state(
            &intent,
            "You cannot confirm this PaymentIntent because it's missing a payment method. Provide \
             payment_method_data[shared_payment_granted_token] (or payment_method).",
        ));
    };
    ledger.check_token(&token, "payment_method", intent.amount)?;
    if let Some(capture_method) = capture_method {
        intent.capture_method = capture_method.to_owned();
    }
    let attempt = ledger.attempt_payment(&mut intent, &options);
    let body = intent.to_json();
    let result = attempt.map_err(|decline| card_error(decline, &intent));
    ledger.store(intent);
    result.map(|()| body)
}

fn capture_intent(ledger: &mut Ledger, id: &str, params: &Params) -> Result<Value, Failure> {
    known_params(params, CAPTURE_INTENT_PARAMS)?;
    let amount_to_capture = optional_amount(params, "amount_to_capture")?;
    let mut intent = ledger.intent(id)?.clone();
    apply_metadata(&mut intent.metadata, params)?;
    if intent.status != "requires_capture" {
        return Err(unexpected_state(
            &intent,
            format!(
                "This PaymentIntent could not be captured because it has a status of {}. Only a PaymentIntent \
                 with one of the following statuses may be captured: requires_capture.",
                intent.status
            ),
        ));
    }
    let amount = amount_to_capture.unwrap_or(intent.amount_capturable);
    if amount > intent.amount_capturable {
        return Err(Failure::invalid(
            "amount_too_large",
            format!(
                "The amount to capture ({amount}) must be less than or equal to the amount capturable ({}).",
                intent.amount_capturable
            ),
        )
        .param("amount_to_capture"));
    }
    intent.status = "succeeded";
    intent.amount_received = amount;
    intent.amount_capturable = 0;
    let body = intent.to_json();
    ledger.store(intent);
    Ok(body)
}

fn cancel_intent(ledger: &mut Ledger, id: &str, params: &Params) -> Result<Value, Failure> {
    known_params(params, CANCEL_INTENT_PARAMS)?;
    let reason = optional_enum(
        params,
        "cancellation_reason",
        &["abandoned", "duplicate", "fraudulent", "requested_by_customer"],
    )?;
    let mut intent = ledger.intent(id)?.clone();
    if !matches!(
        intent.status,
        "requires_payment_method" | "requires_capture" | "requires_confirmation" | "requires_action" | "processing"
    ) {
        return Err(unexpected_state(
            &intent,
            format!(
                "You cannot cancel this PaymentIntent because it has a status of {}. Only a PaymentIntent with \
                 one of the following statuses may be canceled: requires_payment_method, requires_capture, \
                 requires_confirmation, requires_action, processing.",
                intent.status
            ),
        ));
    }
    intent.status = "canceled";
    intent.canceled_at = Some(now());
    intent.cancellation_reason = reason.map(str::to_owned);
    intent.amount_capturable = 0;
    intent.next_action = None;
    let body = intent.to_json();
    ledger.store(intent);
    Ok(body)
}

fn create_refund(ledger: &mut Ledger, params: &Params) -> Result<Value, Failure> {
    known_params(params, CREATE_REFUND_PARAMS)?;
    let amount = optional_amount(params, "amount")?;
    let reason = optional_enum(params, "reason", &["duplicate", "fraudulent", "requested_by_customer"])?;
    let mut metadata = BTreeMap::new();
    apply_metadata(&mut metadata, params)?;
    let intent_id = match (params.get("payment_intent"), params.get("charge")) {
        (Some(pi), _) => pi.clone(),
        (None, Some(charge)) => ledger
            .charges
            .get(charge)
            .cloned()
            .ok_or_else(|| Failure::no_such("charge", charge, "charge"))?,
        (None, None) => {
            return Err(Failure::validation(
                Some("parameter_missing"),
                "One of the following params should be provided for this request: payment_intent or charge.",
                "payment_intent",
            ));
        }
    };
    let mut intent = ledger
        .intent(&intent_id)
        .map_err(|_| Failure::no_such("payment_intent", &intent_id, "payment_intent"))?
        .clone();
    let charge = intent.latest_charge.clone().unwrap_or_default();
    if intent.status != "succeeded" {
        return Err(unexpected_state(
            &intent,
            format!(
                "This PaymentIntent ({}) does not have a successful charge to refund (status: {}).",
                intent.id, intent.status
            ),
        ));
    }
    let remaining = intent.amount_received - intent.refunded;
    if remaining <= 0 {
        return Err(Failure::invalid(
            "charge_already_refunded",
            format!("Charge {charge} has already been refunded."),
        )
        .with("charge", charge));
    }
    let amount = amount.unwrap_or(remaining);
    if amount > remaining {
        return Err(Failure::invalid(
            "amount_too_large",
            format!(
                "Refund amount ({amount} {}) is greater than unrefunded amount on charge ({remaining} {}).",
                intent.currency, intent.currency
            ),
        )
        .param("amount"));
    }
    intent.refunded += amount;
    let refund = json!({
        "id": new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "charge": charge,
        "created": now(),
        "currency": intent.currency,
        "metadata": metadata,
        "payment_intent": intent.id,
        "reason": reason,
        "status": "succeeded",
    });
    ledger.store(intent);
    let id = refund["id"].as_str().unwrap_or_default().to_owned();
    ledger.refund_index.insert(id, ledger.refunds.len());
    ledger.refunds.push(refund.clone());
    Ok(refund)
}

fn unexpected_state(intent: &Intent, message: impl Into<String>) -> Failure {
    Failure::invalid("payment_intent_unexpected_state", message).with("payment_intent", intent.to_json())
}

/// `parameter_unknown` for a top-level name (the part before the first `[`) the endpoint does not take.
fn known_params(params: &Params, known: &[&str]) -> Result<(), Failure> {
    for key in params.keys() {
        let top = key.split('[').next().unwrap_or(key);
        if !known.contains(&top) {
            return Err(Failure::validation(
                Some("parameter_unknown"),
                format!("Received unknown parameter: {key}"),
                key,
            ));
        }
    }
    Ok(())
}

/// Stripe's largest amount for most currencies (eight digits).
const MAX_AMOUNT: i64 = 99_999_999;

fn optional_amount(params: &Params, name: &str) -> Result<Option<i64>, Failure> {
    let Some(raw) = params.get(name) else {
        return Ok(None);
    };
    let value: i64 = raw.parse().map_err(|_| {
        Failure::validation(
            Some("parameter_invalid_integer"),
            format!("Invalid integer: {raw}"),
            name,
        )
    })?;
    if value < 1 {
        return Err(Failure::validation(
            Some("parameter_invalid_integer"),
            "This value must be greater than or equal to 1.",
            name,
        ));
    }
    if value > MAX_AMOUNT {
        return Err(Failure::validation(
            Some("amount_too_large"),
            format!("Amount must be no more than {MAX_AMOUNT}."),
            name,
        ));
    }
    Ok(Some(value))
}

fn required_amount(params: &Params, name: &str) -> Result<i64, Failure> {
    optional_amount(params, name)?.ok_or_else(|| Failure::missing(name))
}

fn required_currency(params: &Params) -> Result<String, Failure> {
    let currency = params.get("currency").ok_or_else(|| Failure::missing("currency"))?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(Failure::validation(
            None,
            format!("Invalid currency: {currency}. Stripe currencies are three-letter ISO codes in lowercase."),
            "currency",
        ));
    }
    Ok(currency.clone())
}

fn optional_bool(params: &Params, name: &str) -> Result<Option<bool>, Failure> {
    match params.get(name).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(Failure::validation(None, format!("Invalid boolean: {other}"), name)),
    }
}

fn optional_enum<'a>(params: &Params, name: &str, allowed: &[&'a str]) -> Result<Option<&'a str>, Failure> {
    match params.get(name) {
        None => Ok(None),
        Some(value) => one_of(name, value, allowed).map(Some),
    }
}

fn one_of<'a>(name: &str, value: &str, allowed: &[&'a str]) -> Result<&'a str, Failure> {
    allowed.iter().find(|a| **a == value).copied().ok_or_else(|| {
        Failure::validation(
            None,
            format!("Invalid {name}: must be one of {}", allowed.join(", ")),
            name,
        )
    })
}

/// Applies `metadata[key]=value` (an empty value unsets the key; `metadata=` clears all) with Stripe's limits.
fn apply_metadata(target: &mut BTreeMap<String, String>, params: &Params) -> Result<(), Failure> {
    if params.get("metadata").is_some_and(String::is_empty) {
        target.clear();
    }
    let mut updated = target.clone();
    for (name, value) in params {
        let Some(key) = name.strip_prefix("metadata[").and_then(|k| k.strip_suffix(']')) else {
            continue;
        };
        if key.chars().count() > 40 {
            return Err(Failure::validation(
                None,
                format!(
                    "Metadata keys can have up to 40 characters, but you passed in a key that is {} characters long.",
                    key.chars().count()
                ),
                name,
            ));
        }
        if value.chars().count() > 500 {
            return Err(Failure::validation(
                None,
                format!(
                    "Metadata values can have up to 500 characters, but you passed in a value that is {} characters long.",
                    value.chars().count()
                ),
                name,
            ));
        }
        if value.is_empty() {
            updated.remove(key);
        } else {
            updated.insert(key.to_owned(), value.clone());
        }
    }
    if updated.len() > 50 {
        return Err(Failure::validation(
            None,
            "You can specify up to 50 metadata keys.",
            "metadata",
        ));
    }
    *target = updated;
    Ok(())
}

/// A Stripe-style id: prefix, underscore, 24 characters.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..24])
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk_test_fake_0123456789abcdef";

    struct Answer {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: Value,
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn call(stripe: &FakeStripe, method: Method, path: &str, key: Option<&str>, form: &[(&str, &str)]) -> Answer {
        let url = format!("{}{path}", stripe.base_url());
        let mut request = client()
            .request(method.clone(), url)
            .bearer_auth(KEY)
            .header("Stripe-Version", "2026-04-22.preview");
        if method == Method::POST {
            request = request.form(form);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.json().await.unwrap(),
        }
    }

    async fn post(stripe: &FakeStripe, path: &str, key: Option<&str>, form: &[(&str, &str)]) -> Answer {
        call(stripe, Method::POST, path, key, form).await
    }

    async fn get(stripe: &FakeStripe, path: &str) -> Answer {
        call(stripe, Method::GET, path, None, &[]).await
    }

    fn token(prefix: &str) -> String {
        format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
    }

    fn key() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// Form for a confirmed charge with the current token parameter.
    fn charge(amount: &str, token: &str) -> Vec<(&'static str, String)> {
        vec![
            ("amount", amount.to_owned()),
            ("currency", "usd".to_owned()),
            ("confirm", "true".to_owned()),
            ("payment_method_data[shared_payment_granted_token]", token.to_owned()),
        ]
    }

    fn form<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    async fn pay(stripe: &FakeStripe, key: &str, pairs: &[(&'static str, String)]) -> Answer {
        post(stripe, "/v1/payment_intents", Some(key), &form(pairs)).await
    }

    #[tokio::test]
    async fn refuses_missing_and_wrong_keys_without_echoing_them() {
        let stripe = FakeStripe::start(KEY).await;
        let url = format!("{}/v1/payment_intents", stripe.base_url());

        let missing = client().post(&url).form(&[("amount", "100")]).send().await.unwrap();
        assert_eq!(missing.status().as_u16(), 401);
        let body: Value = missing.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");

        let wrong = "sk_test_this_is_not_the_right_key_9876";
        let refused = client()
            .post(&url)
            .bearer_auth(wrong)
            .form(&[("amount", "100")])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401);
        let body: Value = refused.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("Invalid API Key provided: sk_test_"), "{message}");
        assert!(message.ends_with("9876"), "{message}");
        assert!(!message.contains(wrong), "{message}");
        assert_eq!(body["error"]["type"], "invalid_request_error");

        let log = stripe.requests();
        assert_eq!(log.len(), 2);
        assert!(log.iter().all(|r| !r.authorization_ok && r.status == 401));
        assert!(stripe.payment_intents().is_empty());
    }

    #[tokio::test]
    async fn creates_and_confirms_with_metadata_and_retrieves() {
        let stripe = FakeStripe::start(KEY).await;
        let mut pairs = charge("2500", &token("spt_ok"));
        pairs.push(("metadata[checkout_session_id]", "cs_123".into()));
        pairs.push(("metadata[order_reference]", "ord 7/8".into()));
        let created = pay(&stripe, &key(), &pairs).await;
        assert_eq!(created.status, 200, "{}", created.body);
        let pi = &created.body;
        assert_eq!(pi["object"], "payment_intent");
        assert_eq!(pi["status"], "succeeded");
        assert_eq!(pi["amount"], 2500);
        assert_eq!(pi["amount_received"], 2500);
        assert_eq!(pi["amount_capturable"], 0);
        assert_eq!(pi["currency"], "usd");
        assert_eq!(pi["confirmation_method"], "automatic");
        assert_eq!(pi["livemode"], false);
        assert_eq!(pi["last_payment_error"], Value::Null);
        assert_eq!(pi["next_action"], Value::Null);
        assert_eq!(
            pi["metadata"],
            json!({"checkout_session_id": "cs_123", "order_reference": "ord 7/8"})
        );
        assert!(pi["id"].as_str().unwrap().starts_with("pi_"));
        assert!(pi["latest_charge"].as_str().unwrap().starts_with("ch_"));
        assert!(pi["payment_method"].as_str().unwrap().starts_with("pm_"));
        assert!(pi["created"].as_i64().unwrap() > 1_600_000_000);
        assert!(created.headers.contains_key("request-id"));
        assert!(!created.headers.contains_key("idempotent-replayed"));

        assert_eq!(stripe.payment_intents(), vec![pi.clone()]);
        let fetched = get(&stripe, &format!("/v1/payment_intents/{}", pi["id"].as_str().unwrap())).await;
        assert_eq!(fetched.status, 200);
        assert_eq!(&fetched.body, pi);

        let missing = get(&stripe, "/v1/payment_intents/pi_nope").await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.body["error"]["code"], "resource_missing");

        // The older top-level parameter works too.
        let legacy = post(
            &stripe,
            "/v1/payment_intents",
            Some(&key()),
            &[
                ("amount", "100"),
                ("currency", "eur"),
                ("confirm", "true"),
                ("shared_payment_granted_token", &token("spt_ok")),
            ],
        )
        .await;
        assert_eq!(legacy.body["status"], "succeeded", "{}", legacy.body);
    }

    #[tokio::test]
    async fn validates_amount_and_currency_without_saving_the_failure() {
        let stripe = FakeStripe::start(KEY).await;
        let k = key();
        let spt = token("spt_ok");
        let no_amount = post(&stripe, "/v1/payment_intents", Some(&k), &[("currency", "usd")]).await;
        assert_eq!(no_amount.status, 400);
        assert_eq!(no_amount.body["error"]["code"], "parameter_missing");
        assert_eq!(no_amount.body["error"]["param"], "amount");

        let bad = post(
            &stripe,
            "/v1/payment_intents",
            Some(&k),
            &[("amount", "12.5"), ("currency", "usd")],
        )
        .await;
        assert_eq!(bad.body["error"]["code"], "parameter_invalid_integer");
        assert_eq!(bad.body["error"]["param"], "amount");
        let negative = post(
            &stripe,
            "/v1/payment_intents",
            None,
            &[("amount", "-1"), ("currency", "usd")],
        )
        .await;
        assert_eq!(negative.body["error"]["code"], "parameter_invalid_integer");

        let no_currency = post(&stripe, "/v1/payment_intents", None, &[("amount", "100")]).await;
        assert_eq!(no_currency.body["error"]["code"], "parameter_missing");
        assert_eq!(no_currency.body["error"]["param"], "currency");
        let upper = post(
            &stripe,
            "/v1/payment_intents",
            None,
            &[("amount", "100"), ("currency", "USD")],
        )
        .await;
        assert_eq!(upper.status, 400);
        assert_eq!(upper.body["error"]["param"], "currency");

        let unknown = post(
            &stripe,
            "/v1/payment_intents",
            None,
            &[("amount", "100"), ("currency", "usd"), ("amout", "1")],
        )
        .await;
        assert_eq!(unknown.body["error"]["code"], "parameter_unknown");

        // Validation failures are not saved: the same key works once the parameters are right.
        let ok = pay(&stripe, &k, &charge("100", &spt)).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
    }

    #[tokio::test]
    async fn manual_capture_authorizes_then_captures() {
        let stripe = FakeStripe::start(KEY).await;
        let mut pairs = charge("5000", &token("spt_ok"));
        pairs.push(("capture_method", "manual".into()));
        let authorized = pay(&stripe, &key(), &pairs).await;
        assert_eq!(authorized.body["status"], "requires_capture", "{}", authorized.body);
        assert_eq!(authorized.body["capture_method"], "manual");
        assert_eq!(authorized.body["amount_capturable"], 5000);
        assert_eq!(authorized.body["amount_received"], 0);
        let id = authorized.body["id"].as_str().unwrap();

        let too_much = post(
            &stripe,
            &format!("/v1/payment_intents/{id}/capture"),
            Some(&key()),
            &[("amount_to_capture", "6000")],
        )
        .await;
        assert_eq!(too_much.status, 400);
        assert_eq!(too_much.body["error"]["code"], "amount_too_large");

        let captured = post(
            &stripe,
            &format!("/v1/payment_intents/{id}/capture"),
            Some(&key()),
            &[("amount_to_capture", "4000")],
        )
        .await;
        assert_eq!(captured.status, 200, "{}", captured.body);
        assert_eq!(captured.body["status"], "succeeded");
        assert_eq!(captured.body["amount_received"], 4000);
        assert_eq!(captured.body["amount_capturable"], 0);

        let again = post(&stripe, &format!("/v1/payment_intents/{id}/capture"), Some(&key()), &[]).await;
        assert_eq!(again.status, 400);
        assert_eq!(again.body["error"]["code"], "payment_intent_unexpected_state");
        assert_eq!(again.body["error"]["payment_intent"]["status"], "succeeded");
        assert_eq!(stripe.payment_intents()[0]["status"], "succeeded");

        let unknown = post(&stripe, "/v1/payment_intents/pi_missing/capture", Some(&key()), &[]).await;
        assert_eq!(unknown.status, 404);
    }

    #[tokio::test]
    async fn cancels_uncaptured_but_not_succeeded_intents() {
        let stripe = FakeStripe::start(KEY).await;
        let mut pairs = charge("700", &token("spt_ok"));
        pairs.push(("capture_method", "manual".into()));
        let authorized = pay(&stripe, &key(), &pairs).await;
        let id = authorized.body["id"].as_str().unwrap();
        let canceled = post(
            &stripe,
            &format!("/v1/payment_intents/{id}/cancel"),
            Some(&key()),
            &[("cancellation_reason", "abandoned")],
        )
        .await;
        assert_eq!(canceled.status, 200, "{}", canceled.body);
        assert_eq!(canceled.body["status"], "canceled");
        assert_eq!(canceled.body["cancellation_reason"], "abandoned");
        assert_eq!(canceled.body["amount_capturable"], 0);

        let succeeded = pay(&stripe, &key(), &charge("700", &token("spt_ok"))).await;
        let id = succeeded.body["id"].as_str().unwrap();
        let refused = post(&stripe, &format!("/v1/payment_intents/{id}/cancel"), Some(&key()), &[]).await;
        assert_eq!(refused.status, 400);
        assert_eq!(refused.body["error"]["code"], "payment_intent_unexpected_state");
    }

    #[tokio::test]
    async fn declines_are_402_with_the_failed_intent_stored_and_do_not_consume_the_token() {
        let stripe = FakeStripe::start(KEY).await;
        for (prefix, code, decline_code) in [
            ("spt_decline", "card_declined", "generic_decline"),
            ("spt_insufficient", "card_declined", "insufficient_funds"),
            ("spt_expired_card", "expired_card", "expired_card"),
        ] {
            let spt = token(prefix);
            let declined = pay(&stripe, &key(), &charge("1200", &spt)).await;
            assert_eq!(declined.status, 402, "{}", declined.body);
            let error = &declined.body["error"];
            assert_eq!(error["type"], "card_error");
            assert_eq!(error["code"], code);
            assert_eq!(error["decline_code"], decline_code);
            assert!(error["message"].as_str().unwrap().starts_with("Your card"));
            let pi = &error["payment_intent"];
            assert_eq!(pi["status"], "requires_payment_method");
            assert_eq!(pi["last_payment_error"]["code"], code);
            assert_eq!(pi["last_payment_error"]["decline_code"], decline_code);
            assert_eq!(pi["amount_received"], 0);
            let stored = stripe.payment_intents();
            assert_eq!(stored.last().unwrap(), pi);

            // Declines do not consume the token: another attempt is declined again, not "token used".
            let again = pay(&stripe, &key(), &charge("1200", &spt)).await;
            assert_eq!(again.status, 402);
            assert_eq!(again.body["error"]["code"], code);
        }
        assert_eq!(stripe.payment_intents().len(), 6);
    }

    #[tokio::test]
    async fn idempotent_replay_and_idempotency_error() {
        let stripe = FakeStripe::start(KEY).await;
        let k = key();
        let pairs = charge("999", &token("spt_ok"));
        let first = pay(&stripe, &k, &pairs).await;
        assert_eq!(first.status, 200);
        let replay = pay(&stripe, &k, &pairs).await;
        assert_eq!(replay.status, 200);
        assert_eq!(replay.body, first.body);
        assert_eq!(replay.headers["idempotent-replayed"], "true");
        assert_eq!(replay.headers["original-request"], first.headers["request-id"]);
        assert_eq!(stripe.payment_intents().len(), 1);

        let mut changed = pairs.clone();
        changed[0].1 = "1000".into();
        let conflict = pay(&stripe, &k, &changed).await;
        assert_eq!(conflict.status, 400);
        assert_eq!(conflict.body["error"]["type"], "idempotency_error");
        assert!(
            conflict.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Keys for idempotent requests can only be used with the same parameters")
        );
        let other_endpoint = post(&stripe, "/v1/refunds", Some(&k), &form(&pairs)).await;
        assert_eq!(other_endpoint.body["error"]["type"], "idempotency_error");
        assert_eq!(stripe.payment_intents().len(), 1);

        // 402s are saved and replayed too.
        let k2 = key();
        let decline_pairs = charge("999", &token("spt_decline"));
        let declined = pay(&stripe, &k2, &decline_pairs).await;
        let replayed = pay(&stripe, &k2, &decline_pairs).await;
        assert_eq!(replayed.status, 402);
        assert_eq!(replayed.body, declined.body);
        assert_eq!(replayed.headers["idempotent-replayed"], "true");
        assert_eq!(stripe.payment_intents().len(), 2);
    }

    #[tokio::test]
    async fn flaky_fails_first_with_500_then_succeeds_once_under_the_same_key() {
        let stripe = FakeStripe::start(KEY).await;
        let k = key();
        let pairs = charge("300", &token("spt_flaky"));
        let first = pay(&stripe, &k, &pairs).await;
        assert_eq!(first.status, 500);
        assert_eq!(first.body["error"]["type"], "api_error");
        assert!(stripe.payment_intents().is_empty());
        let retry = pay(&stripe, &k, &pairs).await;
        assert_eq!(retry.status, 200, "{}", retry.body);
        assert!(!retry.headers.contains_key("idempotent-replayed"));
        let replay = pay(&stripe, &k, &pairs).await;
        assert_eq!(replay.body, retry.body);
        assert_eq!(replay.headers["idempotent-replayed"], "true");
        assert_eq!(stripe.payment_intents().len(), 1);
    }

    #[tokio::test]
    async fn rate_limited_answers_429_first_then_succeeds() {
        let stripe = FakeStripe::start(KEY).await;
        let k = key();
        let pairs = charge("300", &token("spt_ratelimited"));
        let first = pay(&stripe, &k, &pairs).await;
        assert_eq!(first.status, 429);
        assert_eq!(first.headers["retry-after"], "0");
        assert_eq!(first.body["error"]["code"], "rate_limit");
        assert!(stripe.payment_intents().is_empty());
        let retry = pay(&stripe, &k, &pairs).await;
        assert_eq!(retry.status, 200, "{}", retry.body);
        assert_eq!(stripe.payment_intents().len(), 1);
    }

    #[tokio::test]
    async fn tokens_are_single_use() {
        let stripe = FakeStripe::start(KEY).await;
        let spt = token("spt_ok");
        let first = pay(&stripe, &key(), &charge("100", &spt)).await;
        assert_eq!(first.status, 200);
        let reused = pay(&stripe, &key(), &charge("100", &spt)).await;
        assert_eq!(reused.status, 400);
        assert_eq!(reused.body["error"]["type"], "invalid_request_error");
        assert_eq!(reused.body["error"]["code"], "shared_payment_granted_token_used");
        assert!(
            reused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already been used")
        );
        assert_eq!(stripe.payment_intents().len(), 1);
    }

    #[tokio::test]
    async fn token_limits_expiry_and_unknown_tokens() {
        let stripe = FakeStripe::start(KEY).await;
        let limited = token("spt_max1000");
        let over = pay(&stripe, &key(), &charge("1001", &limited)).await;
        assert_eq!(over.status, 400);
        assert_eq!(over.body["error"]["code"], "amount_too_large");
        assert_eq!(over.body["error"]["param"], "amount");
        assert!(over.body["error"]["message"].as_str().unwrap().contains("1000"));
        let within = pay(&stripe, &key(), &charge("1000", &limited)).await;
        assert_eq!(within.status, 200, "{}", within.body);

        let expired = pay(&stripe, &key(), &charge("100", &token("spt_expired"))).await;
        assert_eq!(expired.status, 400);
        assert_eq!(expired.body["error"]["code"], "shared_payment_granted_token_expired");

        let unknown = pay(&stripe, &key(), &charge("100", "tok_visa")).await;
        assert_eq!(unknown.status, 400);
        assert_eq!(unknown.body["error"]["code"], "resource_missing");
        assert_eq!(
            unknown.body["error"]["param"],
            "payment_method_data[shared_payment_granted_token]"
        );
        assert_eq!(stripe.payment_intents().len(), 1);
    }

    #[tokio::test]
    async fn three_d_secure_requires_action_unless_results_are_imported() {
        let stripe = FakeStripe::start(KEY).await;
        let spt = token("spt_3ds");
        let challenged = pay(&stripe, &key(), &charge("4200", &spt)).await;
        assert_eq!(challenged.status, 200);
        assert_eq!(challenged.body["status"], "requires_action");
        assert_eq!(challenged.body["next_action"]["type"], "use_stripe_sdk");

        let with_3ds = |cryptogram: &str| {
            let mut pairs = charge("4200", &spt);
            pairs.push((
                "payment_method_options[card][three_d_secure][cryptogram]",
                cryptogram.to_owned(),
            ));
            pairs.push((
                "payment_method_options[card][three_d_secure][electronic_commerce_indicator]",
                "05".into(),
            ));
            pairs.push((
                "payment_method_options[card][three_d_secure][transaction_id]",
                "f2a3b4c5-0000-4000-8000-000000000001".into(),
            ));
            pairs.push(("payment_method_options[card][three_d_secure][version]", "2.2.0".into()));
            pairs
        };
        let denied = pay(&stripe, &key(), &with_3ds("DENIED")).await;
        assert_eq!(denied.status, 402);
        assert_eq!(denied.body["error"]["code"], "card_declined");
        assert_eq!(denied.body["error"]["decline_code"], "authentication_required");

        let authenticated = pay(&stripe, &key(), &with_3ds("AAABBEg0VhI0VniQEjRWAAAAAAA=")).await;
        assert_eq!(authenticated.status, 200, "{}", authenticated.body);
        assert_eq!(authenticated.body["status"], "succeeded");
        assert_eq!(authenticated.body["next_action"], Value::Null);

        // Incomplete imported results are a parameter error.
        let mut partial = charge("4200", &token("spt_3ds"));
        partial.push((
            "payment_method_options[card][three_d_secure][cryptogram]",
            "AAAB".into(),
        ));
        let incomplete = pay(&stripe, &key(), &partial).await;
        assert_eq!(incomplete.body["error"]["code"], "parameter_missing");

        // The requires_action intent can also be confirmed again with the imported results.
        let spt2 = token("spt_3ds");
        let pending = pay(&stripe, &key(), &charge("800", &spt2)).await;
        let id = pending.body["id"].as_str().unwrap();
        let confirmed = post(
            &stripe,
            &format!("/v1/payment_intents/{id}/confirm"),
            Some(&key()),
            &[
                (
                    "payment_method_options[card][three_d_secure][cryptogram]",
                    "AAABBEg0VhI0VniQEjRWAAAAAAA=",
                ),
                ("payment_method_options[card][three_d_secure][transaction_id]", "tx-1"),
                ("payment_method_options[card][three_d_secure][version]", "2.2.0"),
            ],
        )
        .await;
        assert_eq!(confirmed.status, 200, "{}", confirmed.body);
        assert_eq!(confirmed.body["status"], "succeeded");
    }

    #[tokio::test]
    async fn hold_saves_first_then_waits_for_release() {
        let stripe = FakeStripe::start(KEY).await;
        let k = key();
        let pairs = charge("1500", &token("spt_hold"));
        let held = tokio::spawn({
            let stripe = stripe.clone();
            let k = k.clone();
            let pairs = pairs.clone();
            async move { pay(&stripe, &k, &pairs).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while stripe.payment_intents().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the held request never created its PaymentIntent"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!held.is_finished(), "the response must be held until release_held()");

        // A retry under the same key replays at once, while the original is still held.
        let replay = tokio::time::timeout(Duration::from_secs(2), pay(&stripe, &k, &pairs))
            .await
            .expect("the replay must not be held");
        assert_eq!(replay.status, 200);
        assert_eq!(replay.headers["idempotent-replayed"], "true");

        stripe.release_held();
        let original = tokio::time::timeout(Duration::from_secs(2), held)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(original.status, 200);
        assert_eq!(original.body["status"], "succeeded");
        assert_eq!(original.body, replay.body);
        assert_eq!(stripe.payment_intents().len(), 1);
    }

    #[tokio::test]
    async fn slow_delays_and_reports_a_concurrent_retry_as_in_progress() {
        let stripe = FakeStripe::start(KEY).await;
        stripe.set_slow_delay(Duration::from_millis(300));
        let k = key();
        let pairs = charge("100", &token("spt_slow"));
        let started = tokio::time::Instant::now();
        let slow = tokio::spawn({
            let stripe = stripe.clone();
            let (k, pairs) = (k.clone(), pairs.clone());
            async move { pay(&stripe, &k, &pairs).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let concurrent = pay(&stripe, &k, &pairs).await;
        assert_eq!(concurrent.status, 409);
        assert_eq!(concurrent.body["error"]["code"], "idempotency_key_in_use");
        let answer = slow.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(answer.status, 200);
        let replay = pay(&stripe, &k, &pairs).await;
        assert_eq!(replay.headers["idempotent-replayed"], "true");
        assert_eq!(stripe.payment_intents().len(), 1);
    }

    #[tokio::test]
    async fn refunds_partial_full_and_over_refund() {
        let stripe = FakeStripe::start(KEY).await;
        let paid = pay(&stripe, &key(), &charge("1000", &token("spt_ok"))).await;
        let id = paid.body["id"].as_str().unwrap();

        let partial = post(
            &stripe,
            "/v1/refunds",
            Some(&key()),
            &[("payment_intent", id), ("amount", "300")],
        )
        .await;
        assert_eq!(partial.status, 200, "{}", partial.body);
        assert_eq!(partial.body["object"], "refund");
        assert_eq!(partial.body["amount"], 300);
        assert_eq!(partial.body["currency"], "usd");
        assert_eq!(partial.body["payment_intent"], id);
        assert_eq!(partial.body["status"], "succeeded");
        assert_eq!(partial.body["metadata"], json!({}));
        assert!(partial.body["id"].as_str().unwrap().starts_with("re_"));

        let too_much = post(
            &stripe,
            "/v1/refunds",
            Some(&key()),
            &[("payment_intent", id), ("amount", "701")],
        )
        .await;
        assert_eq!(too_much.status, 400);
        assert_eq!(too_much.body["error"]["code"], "amount_too_large");

        let rest = post(&stripe, "/v1/refunds", Some(&key()), &[("payment_intent", id)]).await;
        assert_eq!(rest.status, 200);
        assert_eq!(rest.body["amount"], 700);
        let fetched = get(&stripe, &format!("/v1/refunds/{}", rest.body["id"].as_str().unwrap())).await;
        assert_eq!(fetched.body, rest.body);

        let done = post(
            &stripe,
            "/v1/refunds",
            Some(&key()),
            &[("payment_intent", id), ("amount", "1")],
        )
        .await;
        assert_eq!(done.status, 400);
        assert_eq!(done.body["error"]["code"], "charge_already_refunded");

        let unknown = post(
            &stripe,
            "/v1/refunds",
            Some(&key()),
            &[("payment_intent", "pi_missing")],
        )
        .await;
        assert_eq!(unknown.status, 404);
        assert_eq!(unknown.body["error"]["code"], "resource_missing");

        // Idempotent like the rest.
        let k = key();
        let paid = pay(&stripe, &key(), &charge("500", &token("spt_ok"))).await;
        let id = paid.body["id"].as_str().unwrap();
        let once = post(
            &stripe,
            "/v1/refunds",
            Some(&k),
            &[("payment_intent", id), ("amount", "200")],
        )
        .await;
        let twice = post(
            &stripe,
            "/v1/refunds",
            Some(&k),
            &[("payment_intent", id), ("amount", "200")],
        )
        .await;
        assert_eq!(once.body, twice.body);
        assert_eq!(twice.headers["idempotent-replayed"], "true");
        let rest = post(&stripe, "/v1/refunds", Some(&key()), &[("payment_intent", id)]).await;
        assert_eq!(rest.body["amount"], 300);
    }

    #[tokio::test]
    async fn unknown_routes_are_404_envelopes() {
        let stripe = FakeStripe::start(KEY).await;
        let answer = get(&stripe, "/v1/customers").await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.body["error"]["type"], "invalid_request_error");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Unrecognized request URL")
        );
    }

    #[tokio::test]
    async fn logs_params_keys_versions_and_outcomes() {
        let stripe = FakeStripe::start(KEY).await;
        let k = key();
        let spt = token("spt_ok");
        let mut pairs = charge("100", &spt);
        pairs.push(("metadata[checkout_session_id]", "cs 1&2=3".into()));
        pairs.push((
            "payment_method_options[card][three_d_secure][cryptogram]",
            "AB+/=".into(),
        ));
        pairs.push((
            "payment_method_options[card][three_d_secure][transaction_id]",
            "t".into(),
        ));
        pairs.push(("payment_method_options[card][three_d_secure][version]", "2.1.0".into()));
        let answer = pay(&stripe, &k, &pairs).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let _ = get(&stripe, "/v1/payment_intents/pi_unknown").await;

        let log = stripe.requests();
        assert_eq!(log.len(), 2);
        let first = &log[0];
        assert_eq!(first.method, "POST");
        assert_eq!(first.path, "/v1/payment_intents");
        assert_eq!(first.idempotency_key.as_deref(), Some(k.as_str()));
        assert_eq!(first.stripe_version.as_deref(), Some("2026-04-22.preview"));
        assert!(first.authorization_ok);
        assert_eq!(first.params["payment_method_data[shared_payment_granted_token]"], spt);
        assert_eq!(first.params["metadata[checkout_session_id]"], "cs 1&2=3");
        assert_eq!(
            first.params["payment_method_options[card][three_d_secure][cryptogram]"],
            "AB+/="
        );
        assert_eq!(first.params["confirm"], "true");
        assert_eq!(first.status, 200);
        assert_eq!(first.response, answer.body);
        assert_eq!(log[1].method, "GET");
        assert_eq!(log[1].status, 404);
        assert_eq!(log[1].idempotency_key, None);
    }
}
