//! The idempotency layer in front of every checkout POST (see `crate::idempotency` for the rules).
//!
//! Order of checks: auth → API-Version → key presence and shape → body size → claim the key (replay, 409, 422)
//! → handler. Two ways to claim:
//!
//! - **One transaction** (create, update, cancel): the layer opens the request's transaction and claims the key
//!   in its first statement ([`idempotency::claim_in_transaction`]: a transaction-scoped advisory lock on the
//!   key's scope, and the scope's record read under it); the handler runs its business work in that same
//!   transaction ([`RequestTx`]); the layer then inserts the record, finished, with any 2xx/4xx answer and
//!   commits. A 5xx (or a transient 409) rolls everything back: nothing stored, the key free. A concurrent
//!   duplicate finds the lock taken and gets 409 `idempotency_in_flight` at once. No lease, no heartbeat: the lock
//!   lives as long as the transaction.
//! - **Committed claim** (complete, and the admin POSTs): the record is claimed `in_flight` in its own
//!   statements before the handler runs, because a complete's claim must survive its PSP call; the handler
//!   finishes it in its business transaction ([`ClaimHandle::finish`]); any other 2xx/4xx is stored here
//!   afterwards; a 5xx releases the key (or, once a payment was attempted, keeps it and ends its lease). A
//!   heartbeat renews the lease while the request runs.
//!
//! Round trips per request (statements plus BEGIN/COMMIT, on one pooled connection, no ping on acquire):
//! authentication costs 0 for the environment agent and 1 statement (agent and signature policy together) for a
//! stored agent, before any of the below. sqlx adds one more when a connection goes back to its pool (a Sync
//! that checks the connection, not a statement); a GET's read connection is kept without it
//! (`crate::db::kept`).
//!
//! | endpoint | round trips | of which |
//! |---|---|---|
//! | create | 6 (7 with limited promotions) | BEGIN, claim, catalog, redemption counts (only with limited promotions), insert session with its funnel events, record, COMMIT |
//! | update | 7 (8 with limited promotions) | BEGIN, claim, load for update, catalog, redemption counts, save with its funnel events, record, COMMIT |
//! | cancel | 8 | BEGIN, claim, load for update, waiting-payment read, save with its funnel event, merchant subscribers, record, COMMIT |
//! | replay / 409 / 422 | 3 | BEGIN, claim, ROLLBACK |
//! | GET (no key) | 1 | one SELECT, no transaction, on a kept read connection (no release ping) |
//!
//! See `crate::checkout::service` for the same counts from the use cases' side.

use axum::{
    body::{Body, to_bytes},
    extract::{FromRequestParts, Request, State},
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use super::{AppState, extract::AcpCall};
use crate::{
    error::ApiError,
    idempotency::{
        self, Begin, Claim, ClaimHandle, Claimed, IdempotencyError, Policy, RecoveryPoint, Scope, StoredResponse,
    },
};

const MAX_KEY_CHARS: usize = 255;

impl From<IdempotencyError> for ApiError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            // Another attempt owns the request now; this one must not commit, and its caller should retry.
            IdempotencyError::LostLease => in_flight(1),
            IdempotencyError::Db(e) => e.into(),
        }
    }
}

/// 409 `idempotency_in_flight`: the same request (or its payment) is running right now. Never stored as the
/// key's answer.
pub fn in_flight(retry_after_secs: u64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_in_flight",
        "A request with this Idempotency-Key is currently being processed",
    )
    .with_retry_after(retry_after_secs)
    .transient()
}

/// Handlers take `MaybeIdempotency`: present on every POST that carried a key.
pub struct MaybeIdempotency(pub Option<ClaimHandle>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeIdempotency {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<ClaimHandle>().cloned()))
    }
}

impl MaybeIdempotency {
    /// Finishes the claim (if any) with `response` inside `conn`'s transaction.
    pub async fn finish(&self, conn: &mut PgConnection, response: &StoredResponse) -> Result<(), ApiError> {
        match &self.0 {
            Some(i) => i.finish(conn, response).await.map_err(Into::into),
            None => Ok(()),
        }
    }
}

/// A JSON response as it is both sent and stored.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> StoredResponse {
    StoredResponse::json(status.as_u16(), body)
}

pub fn into_response(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (name.parse::<header::HeaderName>(), HeaderValue::from_str(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn key_of(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(raw) = parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable characters"),
        )
        .with_param("$.headers['Idempotency-Key']")
    };
    let key = raw.to_str().map_err(|_| invalid())?;
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_KEY_CHARS {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    match guarded(&state, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn guarded(state: &AppState, request: Request, next: Next) -> Result<Response, Response> {
    let (mut parts, body) = request.into_parts();
    let call = AcpCall::from_request_parts(&mut parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let key = key_of(&parts).map_err(IntoResponse::into_response)?;
    parts.extensions.insert(call.clone());
    let Some(key) = key else {
        // Only versions where the key is optional get here; they run without idempotency.
        return Ok(next.run(Request::from_parts(parts, body)).await);
    };
    if keeps_committed_claim(parts.uri.path()) {
        return claim_and_run(state, parts, body, next, call.agent_id, key).await;
    }
    run_in_one_transaction(state, parts, body, next, call.agent_id, key).await
}

/// Complete keeps its committed claim: it must survive the PSP call (and resume after a crash).
fn keeps_committed_claim(path: &str) -> bool {
    path.strip_prefix("/checkout_sessions/")
        .is_some_and(|rest| rest.ends_with("/complete"))
}

/// The owner of admin keys: one scope for the merchant's operators.
const ADMIN_OWNER: &str = "admin";

/// The same layer for the admin API's POSTs and PATCHes: admin bearer first, and the key is required.
pub async fn admin_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST && request.method() != Method::PATCH {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    if let Err(e) = super::admin::Admin::from_request_parts(&mut parts, &state).await {
        return e.into_response();
    }
    let key = match key_of(&parts) {
        Ok(Some(key)) => key,
        Ok(None) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "Idempotency-Key header is required on admin operations",
            )
            .into_response();
        }
        Err(e) => return e.into_response(),
    };
    match claim_and_run(&state, parts, body, next, ADMIN_OWNER.to_owned(), key).await {
        Ok(response) | Err(response) => response,
    }
}

async fn claim_and_run(
    state: &AppState,
    mut parts: Parts,
    body: Body,
    next: Next,
    owner: String,
    key: String,
) -> Result<Response, Response> {
    let bytes = super::limits::read_body(state, body)
        .await
        .map_err(IntoResponse::into_response)?;
    let scope = scope_of(&parts, owner, key);
    let policy = policy(state);
    let adapter = parts.extensions.get::<AcpCall>().map(|c| c.adapter);
    let version = adapter;
    let begun = idempotency::begin(
        &state.db,
        &scope,
        &idempotency::fingerprint(&bytes),
        policy,
        adapter.map(|a| a.version()),
    )
    .await
    .map_err(|e| ApiError::from(e).into_response())?;
    let claim = match begun {
        Begin::Proceed(claim) => claim,
        Begin::Replay(stored) => return Ok(replayed(stored)),
        Begin::InFlight { retry_after_secs } => return Err(refused_in_flight(retry_after_secs, version)),
        Begin::Conflict => return Err(refused_conflict(version)),
    };
    let heartbeat = keep_alive(state, &claim);
    let guard = ClaimHandle::new(claim);
    parts.extensions.insert(guard.clone());
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    heartbeat.stop().await;
    Ok(settle(state, &guard, response).await)
}

fn scope_of(parts: &Parts, owner: String, key: String) -> Scope {
    Scope {
        agent_id: owner,
        method: "POST".into(),
        path: parts.uri.path().to_owned(),
        key,
    }
}

fn policy(state: &AppState) -> Policy {
    Policy {
        lease: state.settings.idempotency_lease,
        retention: state.settings.idempotency_retention,
    }
}

fn replayed(stored: StoredResponse) -> Response {
    crate::observability::metrics::record_idempotent_replay();
    let mut response = into_response(stored);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn refused_in_flight(retry_after_secs: u64, version: Option<&'static dyn crate::protocol::Adapter>) -> Response {
    crate::observability::metrics::record_idempotency_conflict("in_flight");
    versioned(in_flight(retry_after_secs), version)
}

fn refused_conflict(version: Option<&'static dyn crate::protocol::Adapter>) -> Response {
    crate::observability::metrics::record_idempotency_conflict("body_mismatch");
    let conflict = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_conflict",
        "Idempotency-Key has already been used with a different request body",
    );
    versioned(conflict, version)
}

/// The transaction of a request that claimed its key with [`idempotency::claim_in_transaction`]: the handler runs
/// its business work in it ([`RequestTx::open`]), the layer stores the answer in it and commits.
#[derive(Clone)]
struct SharedTx(std::sync::Arc<Mutex<Option<Transaction<'static, Postgres>>>>);

/// Where a create, update or cancel runs: the layer's transaction when the request carried a key, else one of
/// its own (versions where the key is optional).
pub struct RequestTx(Option<SharedTx>);

impl<S: Send + Sync> FromRequestParts<S> for RequestTx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<SharedTx>().cloned()))
    }
}

/// A transaction a handler works in; [`OpenTx::close`] commits it when it is the handler's own, and leaves it to
/// the layer (which stores the answer in it first) when it is the request's.
pub enum OpenTx {
    Shared(OwnedMutexGuard<Option<Transaction<'static, Postgres>>>),
    Own(Transaction<'static, Postgres>),
}

impl RequestTx {
    pub async fn open(&self, pool: &sqlx::PgPool) -> Result<OpenTx, ApiError> {
        match &self.0 {
            Some(shared) => Ok(OpenTx::Shared(shared.0.clone().lock_owned().await)),
            None => Ok(OpenTx::Own(pool.begin().await?)),
        }
    }
}

impl OpenTx {
    pub fn conn(&mut self) -> Result<&mut PgConnection, ApiError> {
        match self {
            Self::Shared(guard) => match guard.as_mut() {
                Some(tx) => Ok(&mut **tx),
                None => {
                    tracing::error!("the request's transaction was already taken");
                    Err(ApiError::internal())
                }
            },
            Self::Own(tx) => Ok(&mut **tx),
        }
    }

    /// Commits a transaction of the handler's own; the request's is committed by the layer with the answer.
    pub async fn close(self, response: StoredResponse) -> Result<Response, ApiError> {
        if let Self::Own(tx) = self {
            tx.commit().await?;
        }
        Ok(into_response(response))
    }
}

/// Create, update and cancel: claim, business work and the stored answer in one transaction (see the module
/// docs).
async fn run_in_one_transaction(
    state: &AppState,
    mut parts: Parts,
    body: Body,
    next: Next,
    owner: String,
    key: String,
) -> Result<Response, Response> {
    let bytes = super::limits::read_body(state, body)
        .await
        .map_err(IntoResponse::into_response)?;
    let scope = scope_of(&parts, owner, key);
    let fingerprint = idempotency::fingerprint(&bytes);
    let adapter = parts.extensions.get::<AcpCall>().map(|c| c.adapter);
    let db_failure = |e: sqlx::Error| versioned(ApiError::from(e), adapter);
    let mut tx = state.db.begin().await.map_err(db_failure)?;
    let claimed = idempotency::claim_in_transaction(&mut tx, &scope, &fingerprint)
        .await
        .map_err(db_failure)?;
    let refusal = match claimed {
        Claimed::Proceed => None,
        Claimed::Replay(stored) => Some(Ok(replayed(stored))),
        Claimed::InFlight { retry_after_secs } => Some(Err(refused_in_flight(retry_after_secs, adapter))),
        Claimed::Conflict => Some(Err(refused_conflict(adapter))),
    };
    if let Some(answer) = refusal {
        roll_back(tx).await;
        return answer;
    }
    let shared = SharedTx(std::sync::Arc::new(Mutex::new(Some(tx))));
    parts.extensions.insert(shared.clone());
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let tx = shared.0.lock().await.take();
    let Some(tx) = tx else {
        return Ok(response);
    };
    let answer = Answer {
        scope: &scope,
        fingerprint: &fingerprint,
        adapter,
    };
    Ok(seal(state, tx, &answer, response).await)
}

/// What identifies the answer being stored.
struct Answer<'a> {
    scope: &'a Scope,
    fingerprint: &'a [u8],
    adapter: Option<&'static dyn crate::protocol::Adapter>,
}

/// After the handler, in the request's transaction: a 5xx or a transient 409 rolls everything back (the key stays
/// free); any other answer is stored, finished, and committed with the business work.
async fn seal(
    state: &AppState,
    tx: Transaction<'static, Postgres>,
    answer: &Answer<'_>,
    response: Response,
) -> Response {
    let transient = response.extensions().get::<crate::error::Transient>().is_some();
    if response.status().is_server_error() || transient {
        roll_back(tx).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        roll_back(tx).await;
        return Response::from_parts(parts, Body::empty());
    };
    let stored = stored_answer(&parts, &bytes);
    match store_and_commit(state, tx, answer, &stored).await {
        Ok(true) => Response::from_parts(parts, Body::from(bytes)),
        // A duplicate committed between our claim's snapshot and our lock: its answer stands, ours is undone.
        Ok(false) => refused_in_flight(1, answer.adapter),
        Err(e) => {
            tracing::error!(error = %e, "could not commit a request with its idempotent answer; nothing was kept");
            versioned(ApiError::from(e), answer.adapter)
        }
    }
}

fn stored_answer(parts: &axum::http::response::Parts, bytes: &[u8]) -> StoredResponse {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    StoredResponse {
        status: parts.status.as_u16(),
        headers: vec![("content-type".into(), content_type.to_owned())],
        body: bytes.to_vec(),
    }
}

/// Inserts the finished record and commits; false (rolled back) when the key's record appeared meanwhile.
async fn store_and_commit(
    state: &AppState,
    mut tx: Transaction<'static, Postgres>,
    answer: &Answer<'_>,
    stored: &StoredResponse,
) -> Result<bool, sqlx::Error> {
    let version = answer.adapter.map(|a| a.version());
    let policy = policy(state);
    if !idempotency::record_finished(&mut tx, answer.scope, answer.fingerprint, policy, version, stored).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

async fn roll_back(tx: Transaction<'static, Postgres>) {
    if let Err(e) = tx.rollback().await {
        tracing::warn!(error = %e, "could not roll back a request's transaction; the connection is discarded");
    }
}

/// The running lease renewal of one claim.
struct Heartbeat {
    stop: tokio_util::sync::DropGuard,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Stops renewing and waits for a renewal in progress: one landing after `settle` ended the lease would
    /// extend it again, and the agent's immediate retry would meet a 409 "in flight" for a whole lease.
    async fn stop(self) {
        drop(self.stop);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the idempotency heartbeat ended abnormally");
        }
    }
}

/// Renews the claim's lease while the request runs, until [`Heartbeat::stop`] or until it drops (the client went
/// away and the request future was dropped: the lease then ends within one lease).
fn keep_alive(state: &AppState, claim: &Claim) -> Heartbeat {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let claim = claim.clone();
    let pool = state.db.clone();
    let (lease, every) = (state.settings.idempotency_lease, state.settings.idempotency_heartbeat);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stopped.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match claim.renew(&pool, lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "could not renew an idempotency lease"),
            }
        }
    });
    Heartbeat {
        stop: stop.drop_guard(),
        task,
    }
}

/// After the handler: keep what it stored; store a 2xx/4xx it did not; after a 5xx or a transient 409, forget
/// the key (nothing happened) or, once a payment was attempted, keep it and end its lease so a retry resumes.
async fn settle(state: &AppState, guard: &ClaimHandle, response: Response) -> Response {
    if guard.is_finished() {
        return response;
    }
    let claim = guard.claim().await;
    let transient = response.extensions().get::<crate::error::Transient>().is_some();
    if response.status().is_server_error() || transient {
        let kept = if claim.recovery_point == RecoveryPoint::PaymentAttempted {
            claim.yield_lease(&state.db).await
        } else {
            claim.release(&state.db).await
        };
        if let Err(e) = kept {
            tracing::warn!(error = %e, "could not release an idempotency key after a 5xx; it frees at lease end");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers: vec![("content-type".into(), content_type.to_owned())],
        body: bytes.to_vec(),
    };
    let saved = async {
        let mut tx = state.db.begin().await?;
        claim.finish(&mut tx, &stored).await?;
        tx.commit().await?;
        Ok::<_, IdempotencyError>(())
    }
    .await;
    if let Err(e) = saved {
        tracing::warn!(error = %e, "could not store an idempotent response; the key frees at lease end");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// An idempotency refusal in the `Error.type` of the caller's ACP version (admin calls have none).
fn versioned(error: ApiError, adapter: Option<&'static dyn crate::protocol::Adapter>) -> Response {
    match adapter {
        Some(adapter) => error.for_version(adapter).into_response(),
        None => error.into_response(),
    }
}
