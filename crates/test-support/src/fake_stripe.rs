//! A stateful fake of the parts of Stripe's API a merchant uses to charge Shared Payment Tokens (SPTs).
//!
//! [`FakeStripe::start`] serves, on `127.0.0.1:0`, the endpoints below. It keeps PaymentIntents, charges, refunds,
//! disputes, events, idempotency records and token usage in memory and follows Stripe's documented behaviour:
//! bearer auth with one secret key, form bodies with bracket notation, the error envelope and its HTTP statuses
//! (<https://docs.stripe.com/api/errors>), and idempotent requests (<https://docs.stripe.com/api/idempotent_requests>:
//! replay with `Idempotent-Replayed: true`, `idempotency_error` on changed parameters, 409
//! `idempotency_key_in_use` while the first request is still executing, nothing saved for 500s, rate limiting or
//! parameter validation failures). Everything it accepts is something Stripe documents; a documented parameter it
//! does not act on is accepted and ignored (on Stripe it may change the result), and any other is refused with
//! 400 `parameter_unknown`.
//!
//! | endpoint | parameters accepted (acted on; *accepted and ignored*) | Stripe page |
//! |----------|--------------------------------------------------------|-------------|
//! | `POST /v1/payment_intents` | `amount`, `currency`, `confirm`, `capture_method`, `confirmation_method`, `description`, `metadata[…]`, `payment_method`, `payment_method_data[shared_payment_granted_token]`, `shared_payment_granted_token` (top-level name of the SPT preview), `off_session`, `error_on_requires_action`, `payment_method_options[card][three_d_secure][cryptogram\|transaction_id\|version\|electronic_commerce_indicator]`; *`amount_details`, `application_fee_amount`, `automatic_payment_methods`, `confirmation_token`, `customer`, `excluded_payment_method_types`, `expand`, `hooks`, `mandate`, `mandate_data`, `on_behalf_of`, `payment_details`, `payment_method_configuration`, `payment_method_types`, `radar_options`, `receipt_email`, `return_url`, `setup_future_usage`, `shipping`, `statement_descriptor`, `statement_descriptor_suffix`, `transfer_data`, `transfer_group`, `use_stripe_sdk`* | <https://docs.stripe.com/api/payment_intents/create>, SPTs: <https://docs.stripe.com/agentic-commerce/concepts/shared-payment-tokens> |
//! | `GET /v1/payment_intents/{id}` | none (query parameters such as `client_secret`, `expand` are ignored) | <https://docs.stripe.com/api/payment_intents/retrieve> |
//! | `POST /v1/payment_intents/{id}/confirm` | `capture_method`, `payment_method`, `payment_method_data[shared_payment_granted_token]`, `shared_payment_granted_token`, `off_session`, `error_on_requires_action`, `payment_method_options[card][three_d_secure][…]` as above; *`confirmation_token`, `expand`, `mandate`, `mandate_data`, `payment_details`, `payment_method_types`, `radar_options`, `receipt_email`, `return_url`, `setup_future_usage`, `shipping`, `use_stripe_sdk`* | <https://docs.stripe.com/api/payment_intents/confirm> |
//! | `POST /v1/payment_intents/{id}/capture` | `amount_to_capture`, `metadata[…]`; *`amount_details`, `application_fee_amount`, `expand`, `final_capture`, `payment_details`, `statement_descriptor`, `statement_descriptor_suffix`, `transfer_data`* | <https://docs.stripe.com/api/payment_intents/capture> |
//! | `POST /v1/payment_intents/{id}/cancel` | `cancellation_reason`; *`expand`* | <https://docs.stripe.com/api/payment_intents/cancel> |
//! | `GET /v1/payment_intents/search` | `query` (subset below), `limit` (1–100, default 10), `page` (the `next_page` of an earlier answer); *`expand`* | <https://docs.stripe.com/api/payment_intents/search>, <https://docs.stripe.com/search#search-query-language> |
//! | `POST /v1/refunds` | `payment_intent`, `charge`, `amount`, `reason`, `metadata[…]`; *`currency`, `customer`, `expand`, `instructions_email`, `origin`, `refund_application_fee`, `reverse_transfer`* | <https://docs.stripe.com/api/refunds/create> |
//! | `GET /v1/refunds/{id}` | none | <https://docs.stripe.com/api/refunds/retrieve> |
//! | `GET /v1/events/{id}` | none | <https://docs.stripe.com/api/events/retrieve>, object: <https://docs.stripe.com/api/events/object> |
//!
//! Headers: `Authorization: Bearer <secret key>`; `Idempotency-Key` (POST only, at most 255 characters; ignored on
//! GET, as on Stripe); `Stripe-Version` (<https://docs.stripe.com/api/versioning>), which must look like an API
//! version, `YYYY-MM-DD` optionally followed by `.name` (e.g. `2026-04-22.preview`), or the request is refused with
//! 400 `invalid_request_error` `Invalid Stripe API version: <value>` (nothing saved under its idempotency key). An
//! absent header is fine. The fake checks the form only: Stripe also refuses well-formed dates that name no release.
//!
//! # Tokens
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
//! | `spt_timeout`         | executes and saves a success, then delays that first response by the slow delay   |
//! | `spt_lost500`         | executes and saves a success; the first N answers per key are 500 `api_error`     |
//! | `spt_garbled`         | executes and saves a success; the first answer is a 200 whose body is not JSON    |
//! | `spt_processing`      | ends in `processing` (200); [`FakeStripe::settle_processing`] settles it later     |
//! | `spt_max<N>_…`        | usage limit of N minor units: amount > N → 400 `amount_too_large` (param amount)  |
//! | any other `spt_…`     | succeeds (`requires_capture` with `capture_method=manual`)                         |
//!
//! Every token is single use: once a confirmation with it succeeded (or was authorized, or went to `processing`),
//! any later request with a different idempotency key gets 400 `shared_payment_granted_token_used`. Declines and
//! `requires_action` do not consume it. Imported 3-D Secure results
//! (`payment_method_options[card][three_d_secure][cryptogram|transaction_id|version|electronic_commerce_indicator]`)
//! authenticate the payment; the cryptogram `DENIED` makes it a 402 `card_declined` / `authentication_required`.
//! With `off_session=true` or `error_on_requires_action=true`, a `spt_3ds` payment without imported results fails
//! with 402 `authentication_required` instead of asking for action.
//!
//! `spt_slow` sleeps *before* executing while holding its idempotency key, so a retry under the same key during
//! the delay gets 409 `idempotency_key_in_use` (as on Stripe), and a retry after it gets the saved response.
//! Requests are executed in their own task: a client that gives up does not stop the work (like Stripe).
//!
//! The ambiguity tokens make the charge happen and lose or spoil only its *answer*, the way a network or a gateway
//! can; the PaymentIntent exists (and succeeded) from the first request on, and a retry under the same
//! idempotency key is how a client recovers:
//! * `spt_timeout` sleeps [`FakeStripe::set_slow_delay`] *after* saving, so a client with a shorter timeout gives up
//!   after the charge was made; a retry under the same key replays the saved response at once.
//! * `spt_lost500` answers 500 `api_error` (with `Stripe-Should-Retry: true`) to its first N requests under its
//!   idempotency key (N = [`FakeStripe::set_lost_500_count`], default 3; the executing request is the first), then
//!   replays the saved success.
//! * `spt_garbled` answers its first request 200 with the saved JSON cut in half; replays answer the valid JSON.
//! * `spt_processing` leaves the PaymentIntent `processing` (answering 200); [`FakeStripe::settle_processing`] moves
//!   it on to `succeeded` (`requires_capture` under manual capture) or to `requires_payment_method` with a
//!   `last_payment_error` (a `generic_decline`, which frees the token like any decline).
//!
//! These faults apply only when the execution itself succeeded (200), and, like `spt_flaky`, are recorded per
//! idempotency key in the ledger. [`FakeStripe::requests`] logs what the client was actually answered (the 500,
//! or the garbled body as a JSON string).
//!
//! # Search
//!
//! `GET /v1/payment_intents/search` understands a subset of the search query language: clauses
//! `metadata['key']:'value'`, `metadata["key"]:"value"` and `status:'succeeded'` (values quoted with `'` or `"`,
//! `\` escaping the quote), separated by whitespace or `AND` (case-insensitive); matching is exact and
//! case-insensitive, as Stripe documents for these fields. `OR`, negation (`-`), other fields and other operators
//! are refused with 400 `invalid_request_error`, `param: "query"` and a message naming the problem (Stripe accepts
//! them; this fake does not implement them). Results are newest first, in Stripe's `search_result` list
//! (`{object, data, has_more, next_page, url}`). Search is eventually consistent on Stripe ("searchable in under 1
//! minute"): [`FakeStripe::set_search_delay`] (default zero) makes a PaymentIntent visible to search only that long
//! after its creation, while `GET /v1/payment_intents/{id}` sees it at once. Results show the current state.
//!
//! # Events and webhooks
//!
//! Every state change creates an Event (<https://docs.stripe.com/api/events/object>): `{id: "evt_…", object:
//! "event", api_version, created, data: {object}, livemode: false, pending_webhooks, request: {id,
//! idempotency_key}, type}` — `request` names the API request that caused it (both `null` for changes made by
//! the test helpers, like Stripe's automatic events). Types and `data.object`:
//!
//! | type | when | `data.object` |
//! |------|------|---------------|
//! | `payment_intent.succeeded` | a payment succeeds (automatic capture, capture, or a settled `processing`) | PaymentIntent |
//! | `payment_intent.amount_capturable_updated` | a manual-capture payment is authorized (`requires_capture`) | PaymentIntent |
//! | `payment_intent.payment_failed` | a decline (`last_payment_error` set) | PaymentIntent |
//! | `payment_intent.processing` | the payment is `processing` (`spt_processing`) | PaymentIntent |
//! | `payment_intent.requires_action` | 3-D Secure is needed (`spt_3ds`) | PaymentIntent |
//! | `payment_intent.canceled` | cancel | PaymentIntent |
//! | `charge.refunded` | a refund | Charge, with `refunds: {object: "list", data: [Refund…]}` |
//! | `charge.dispute.created` | [`FakeStripe::create_dispute`] | Dispute (`dp_…`, `status: needs_response`) |
//!
//! Stripe emits more (e.g. `payment_intent.created`, `charge.succeeded`); the fake emits only these. Note: since API
//! version 2022-11-15 Stripe no longer includes a Charge's `refunds` list unless it is expanded; the fake includes it
//! in `charge.refunded` so tests can see the refund (and its metadata) that caused the event.
//!
//! Once [`FakeStripe::set_webhook_endpoint`] names a URL, events are POSTed to it as Stripe delivers them
//! (<https://docs.stripe.com/webhooks>): the event as a (pretty-printed) JSON body, `Content-Type:
//! application/json`, `User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)` and `Stripe-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` with one `v1=` per configured secret (Stripe
//! signs with every active secret while one is being rolled); see [`stripe_signature_header`]. In
//! [`WebhookMode::Auto`] (the default) each event is delivered by its own task as soon as it is created — so it
//! can arrive before the HTTP response of the request that caused it, e.g. while `spt_hold` holds that response,
//! and events can arrive out of order, as on Stripe — and a failed or non-2xx delivery is retried
//! ([`FakeStripe::set_webhook_retries`], default 3 retries 50 ms apart). In [`WebhookMode::Manual`] events wait
//! until [`FakeStripe::deliver`] or [`FakeStripe::deliver_all`]. An event never acknowledged with a 2xx keeps
//! `pending_webhooks: 1` and stays queued for `deliver_all`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

mod events;
mod search;

pub use events::{WebhookMode, stripe_signature_header};

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
    /// Decoded form parameters, keys exactly as sent (e.g. `payment_method_data[shared_payment_granted_token]`).
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
            runtime: tokio::runtime::Handle::current(),
            client: events::webhook_client(),
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

    /// Sets how long the `spt_slow` token delays its execution and `spt_timeout` its first response (default 3 s).
    pub fn set_slow_delay(&self, d: Duration) {
        self.inner.ledger().slow_delay = Some(d);
    }

    /// Sets how long after its creation a PaymentIntent becomes visible to search (default zero). Stripe's search
    /// is eventually consistent: "under normal operating conditions, data is searchable in under 1 minute".
    pub fn set_search_delay(&self, d: Duration) {
        self.inner.ledger().search_delay = d;
    }

    /// Sets how many answers `spt_lost500` loses per idempotency key (default 3), counting the executing request.
    pub fn set_lost_500_count(&self, n: u32) {
        self.inner.ledger().lost_500_count = n;
    }

    /// Settles a `processing` PaymentIntent (`spt_processing`): `succeed` moves it to `succeeded` (or
    /// `requires_capture` under manual capture), otherwise to `requires_payment_method` with a `generic_decline`
    /// `last_payment_error`. Emits the matching event (with no request, like Stripe's asynchronous updates) and
    /// returns the PaymentIntent.
    ///
    /// # Panics
    /// If there is no such PaymentIntent or it is not `processing`: that is a mistake in the test.
    pub fn settle_processing(&self, pi_id: &str, succeed: bool) -> Value {
        let (body, fresh) = {
            let mut ledger = self.inner.ledger();
            let mut intent = match ledger.intent(pi_id) {
                Ok(intent) => intent.clone(),
                Err(_) => panic!("fake Stripe: settle_processing: no PaymentIntent {pi_id}"),
            };
            assert_eq!(
                intent.status, "processing",
                "fake Stripe: settle_processing: {pi_id} is not processing"
            );
            if succeed {
                complete_payment(&mut intent);
            } else {
                let charge = intent.latest_charge.clone().unwrap_or_else(|| new_id("ch"));
                if let Some(token) = &intent.token {
                    ledger.used_tokens.remove(token);
                }
                decline_payment(&mut intent, GENERIC_DECLINE, charge);
            }
            ledger.emit_status(&intent);
            let body = intent.to_json();
            ledger.store(intent);
            (body, events::record(&mut ledger, events::RequestInfo::default()))
        };
        events::dispatch(&self.inner, fresh);
        body
    }
}

const DEFAULT_SLOW_DELAY: Duration = Duration::from_secs(3);
const DEFAULT_LOST_500_COUNT: u32 = 3;

struct Inner {
    secret_key: String,
    addr: SocketAddr,
    ledger: Mutex<Ledger>,
    /// Bumped by `release_held`; held responses wait for the next bump after they were saved.
    release: watch::Sender<u64>,
    /// The runtime the fake was started in: webhook deliveries are spawned there, even from the sync helpers.
    runtime: tokio::runtime::Handle,
    /// Delivers webhooks (plain http to the test's endpoint).
    client: reqwest::Client,
}

impl Inner {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything the fake remembers.
struct Ledger {
    requests: Vec<LoggedRequest>,
    intents: Vec<Intent>,
    intent_index: HashMap<String, usize>,
    /// Charge id → PaymentIntent id (failed charges included).
    charges: HashMap<String, String>,
    refunds: Vec<Value>,
    refund_index: HashMap<String, usize>,
    disputes: Vec<Value>,
    idempotency: HashMap<String, IdempotencyRecord>,
    /// Tokens consumed by a successful (or authorized, or processing) confirmation.
    used_tokens: HashSet<String>,
    /// Answers already spoiled on purpose (`spt_flaky`, `spt_ratelimited`, `spt_timeout`, `spt_lost500`,
    /// `spt_garbled`), per idempotency key and token.
    faults_seen: HashSet<String>,
    /// `spt_lost500`: idempotency key → answers lost so far and how many to lose.
    lost_answers: HashMap<String, LostAnswers>,
    lost_500_count: u32,
    slow_delay: Option<Duration>,
    search_delay: Duration,
    /// Events created, in order, and where each is.
    events: Vec<Value>,
    event_index: HashMap<String, usize>,
    /// (type, object) emitted by the work in progress; turned into events by `events::record`.
    emitted: Vec<(&'static str, Value)>,
    webhooks: events::Webhooks,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            requests: Vec::new(),
            intents: Vec::new(),
            intent_index: HashMap::new(),
            charges: HashMap::new(),
            refunds: Vec::new(),
            refund_index: HashMap::new(),
            disputes: Vec::new(),
            idempotency: HashMap::new(),
            used_tokens: HashSet::new(),
            faults_seen: HashSet::new(),
            lost_answers: HashMap::new(),
            lost_500_count: DEFAULT_LOST_500_COUNT,
            slow_delay: None,
            search_delay: Duration::ZERO,
            events: Vec::new(),
            event_index: HashMap::new(),
            emitted: Vec::new(),
            webhooks: events::Webhooks::default(),
        }
    }
}

/// How many answers `spt_lost500` has lost under one idempotency key, and how many it loses.
struct LostAnswers {
    lost: u32,
    limit: u32,
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
    /// Sent instead of `body` when set: `spt_garbled`'s answer that is not JSON.
    raw: Option<String>,
}

impl Reply {
    fn new(status: u16, body: Value) -> Self {
        Reply {
            status,
            body,
            headers: Vec::new(),
            raw: None,
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
        let mut response = match self.raw {
            Some(raw) => (status, [(header::CONTENT_TYPE, "application/json")], raw).into_response(),
            None => (status, axum::Json(self.body)).into_response(),
        };
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
    /// Succeeds; the first answer comes only after the slow delay.
    Timeout,
    /// Succeeds; the first N answers under its idempotency key are 500s.
    Lost500,
    /// Succeeds; the first answer is not JSON.
    Garbled,
    /// Ends in `processing`, settled later by `FakeStripe::settle_processing`.
    Processing,
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
        } else if rest.starts_with("timeout") {
            TokenKind::Timeout
        } else if rest.starts_with("lost500") {
            TokenKind::Lost500
        } else if rest.starts_with("garbled") {
            TokenKind::Garbled
        } else if rest.starts_with("processing") {
            TokenKind::Processing
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
    /// When it was created, for search's eventual consistency.
    created_at: Instant,
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
    SearchIntents,
    CreateRefund,
    GetRefund(String),
    GetEvent(String),
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
        let id = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["payment_intents"]) => Some(Route::CreateIntent),
            // Before the id pattern: `search` is not a PaymentIntent id.
            ("GET", ["payment_intents", "search"]) => Some(Route::SearchIntents),
            ("GET", ["payment_intents", pi]) => id(pi).map(Route::GetIntent),
            ("POST", ["payment_intents", pi, "confirm"]) => id(pi).map(Route::ConfirmIntent),
            ("POST", ["payment_intents", pi, "capture"]) => id(pi).map(Route::CaptureIntent),
            ("POST", ["payment_intents", pi, "cancel"]) => id(pi).map(Route::CancelIntent),
            ("POST", ["refunds"]) => Some(Route::CreateRefund),
            ("GET", ["refunds", re]) => id(re).map(Route::GetRefund),
            ("GET", ["events", evt]) => id(evt).map(Route::GetEvent),
            _ => None,
        }
    }

    /// Routes that charge a token (and so honour the token's slow/flaky/rate-limited/hold/ambiguity behaviours).
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
    stripe_version: Option<String>,
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
        stripe_version: stripe_version.clone(),
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
    if let Some(version) = stripe_version.filter(|v| is_api_version(v)) {
        reply.headers.push(("stripe-version", version));
    }
    if let Some(key) = idempotency_key.filter(|_| method == Method::POST) {
        reply.headers.push(("idempotency-key", key));
    }
    reply.into_response()
}

/// `YYYY-MM-DD`, optionally followed by `.name` (lowercase letters, digits, `_`), e.g. `2026-04-22.preview`.
fn is_api_version(version: &str) -> bool {
    let (date, name) = match version.split_once('.') {
        Some((date, name)) => (date, Some(name)),
        None => (version, None),
    };
    let name_ok = name.is_none_or(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    });
    let parts: Vec<&str> = date.split('-').collect();
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let date_ok = match parts.as_slice() {
        [y, m, d] => {
            number(y, 4).is_some()
                && number(m, 2).is_some_and(|m| (1..=12).contains(&m))
                && number(d, 2).is_some_and(|d| (1..=31).contains(&d))
        }
        _ => false,
    };
    name_ok && date_ok
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
    // Checked before the idempotency key is claimed: a refused version saves nothing.
    if let Some(version) = req.stripe_version.as_deref().filter(|v| !is_api_version(v)) {
        let message = format!("Invalid Stripe API version: {version}");
        return finish(Failure::new(400, "invalid_request_error", None, message).reply());
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

    // The token behind a charge decides its slow/flaky/rate-limited/hold/ambiguity behaviour.
    let token = route
        .charges()
        .then(|| charge_token(&inner.ledger(), &route, params))
        .flatten();
    let kind = token.as_deref().map(TokenKind::parse);
    if kind == Some(TokenKind::Slow) {
        let delay = inner.ledger().slow_delay.unwrap_or(DEFAULT_SLOW_DELAY);
        tokio::time::sleep(delay).await;
    }

    let (reply, held, fresh, delay) = {
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
        let request = events::RequestInfo {
            id: Some(req.request_id.clone()),
            idempotency_key: key.map(str::to_owned),
        };
        let fresh = events::record(&mut ledger, request);
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
        // The work is done and saved: an ambiguity token spoils only this first answer.
        let (reply, delay) = match kind {
            Some(kind) if reply.status == 200 => spoil_answer(&mut ledger, kind, key, &fault_key, reply),
            _ => (reply, None),
        };
        let entry = &mut ledger.requests[log];
        entry.status = reply.status;
        entry.response = reply.raw.clone().map_or_else(|| reply.body.clone(), Value::String);
        // Subscribed before the lock is released, so a `release_held` after the PI is visible always counts.
        let held = (kind == Some(TokenKind::Hold) && reply.status == 200).then(|| inner.release.subscribe());
        (reply, held, fresh, delay)
    };
    // Delivered before the answer goes out: a webhook can beat the response that caused it.
    events::dispatch(&inner, fresh);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(mut release) = held {
        let _ = release.changed().await;
    }
    reply
}

/// What an ambiguity token does to the first answer of a charge that succeeded: the reply to send instead, and how
/// long to wait before sending it. Each fault is recorded per idempotency key and token.
fn spoil_answer(
    ledger: &mut Ledger,
    kind: TokenKind,
    key: Option<&str>,
    fault_key: &str,
    reply: Reply,
) -> (Reply, Option<Duration>) {
    match kind {
        TokenKind::Timeout => {
            ledger.faults_seen.insert(format!("timeout|{fault_key}"));
            (reply, Some(ledger.slow_delay.unwrap_or(DEFAULT_SLOW_DELAY)))
        }
        TokenKind::Lost500 if ledger.lost_500_count > 0 => {
            ledger.faults_seen.insert(format!("lost500|{fault_key}"));
            if let Some(key) = key {
                let limit = ledger.lost_500_count;
                ledger
                    .lost_answers
                    .insert(key.to_owned(), LostAnswers { lost: 1, limit });
            }
            (lost_answer(), None)
        }
        TokenKind::Garbled => {
            ledger.faults_seen.insert(format!("garbled|{fault_key}"));
            let text = reply.body.to_string();
            let mut half = text.len() / 2;
            while !text.is_char_boundary(half) {
                half -= 1;
            }
            let garbled = Reply {
                raw: Some(text[..half].to_owned()),
                ..reply
            };
            (garbled, None)
        }
        _ => (reply, None),
    }
}

/// The 500 a gateway answers when it lost Stripe's response.
fn lost_answer() -> Reply {
    api_error().reply().header("stripe-should-retry", "true")
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
    if record.saved.is_some()
        && let Some(lost) = ledger.lost_answers.get_mut(key)
        && lost.lost < lost.limit
    {
        // `spt_lost500`: the charge is saved, but this answer is lost too.
        lost.lost += 1;
        return Some(lost_answer());
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
        Route::SearchIntents => search::search_intents(ledger, params),
        Route::CreateRefund => create_refund(ledger, params),
        Route::GetRefund(id) => ledger
            .refund_index
            .get(id)
            .map(|&i| ledger.refunds[i].clone())
            .ok_or_else(|| Failure::no_such("refund", id, "id")),
        Route::GetEvent(id) => ledger
            .event_index
            .get(id)
            .map(|&i| ledger.events[i].clone())
            .ok_or_else(|| Failure::no_such("event", id, "id")),
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
        intent.next_action = None;
        let charge = new_id("ch");
        let outcome = match verdict {
            Ok(true) => {
                self.charges.insert(charge.clone(), intent.id.clone());
                self.used_tokens.insert(token);
                intent.latest_charge = Some(charge);
                intent.last_payment_error = None;
                if kind == TokenKind::Processing {
                    intent.status = "processing";
                } else {
                    complete_payment(intent);
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
                self.charges.insert(charge.clone(), intent.id.clone());
                decline_payment(intent, decline, charge);
                Err(decline)
            }
        };
        self.emit_status(intent);
        outcome
    }

    /// Queues the event Stripe sends when a PaymentIntent reaches `intent`'s status, if there is one.
    fn emit_status(&mut self, intent: &Intent) {
        let kind = match intent.status {
            "succeeded" => "payment_intent.succeeded",
            "requires_capture" => "payment_intent.amount_capturable_updated",
            "processing" => "payment_intent.processing",
            "requires_action" => "payment_intent.requires_action",
            "canceled" => "payment_intent.canceled",
            "requires_payment_method" if intent.last_payment_error.is_some() => "payment_intent.payment_failed",
            _ => return,
        };
        self.emit(kind, intent.to_json());
    }

    /// Queues an event of type `kind` about `object`; `events::record` stores (and delivers) it.
    fn emit(&mut self, kind: &'static str, object: Value) {
        self.emitted.push((kind, object));
    }
}

/// The payment went through: authorized (`requires_capture`) under manual capture, `succeeded` otherwise.
fn complete_payment(intent: &mut Intent) {
    if intent.capture_method == "manual" {
        intent.status = "requires_capture";
        intent.amount_capturable = intent.amount;
    } else {
        intent.status = "succeeded";
        intent.amount_received = intent.amount;
    }
}

/// The payment was declined on `charge`: back to `requires_payment_method`, with the decline as the last error.
fn decline_payment(intent: &mut Intent, decline: Decline, charge: String) {
    let payment_method = intent.payment_method.take().unwrap_or_default();
    intent.status = "requires_payment_method";
    intent.next_action = None;
    intent.latest_charge = Some(charge.clone());
    intent.last_payment_error = Some(json!({
        "type": "card_error",
        "code": decline.code,
        "decline_code": decline.decline_code,
        "doc_url": format!("https://stripe.com/docs/error-codes/{}", decline.code.replace('_', "-")),
        "message": decline.message,
        "charge": charge,
        "payment_method": payment_method_json(&payment_method),
    }));
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

/// https://docs.stripe.com/api/payment_intents/create (plus the SPT preview's top-level `shared_payment_granted_token`).
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

/// https://docs.stripe.com/api/payment_intents/confirm (plus the SPT preview's top-level `shared_payment_granted_token`).
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

/// https://docs.stripe.com/api/payment_intents/capture
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

/// https://docs.stripe.com/api/payment_intents/cancel
const CANCEL_INTENT_PARAMS: &[&str] = &["cancellation_reason", "expand"];

/// https://docs.stripe.com/api/refunds/create
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
        created_at: Instant::now(),
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
    ledger.emit_status(&intent);
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
    ledger.emit_status(&intent);
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
    let id = refund["id"].as_str().unwrap_or_default().to_owned();
    ledger.refund_index.insert(id, ledger.refunds.len());
    ledger.refunds.push(refund.clone());
    let charge = events::charge_json(ledger, &intent);
    ledger.emit("charge.refunded", charge);
    ledger.store(intent);
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
mod tests;
