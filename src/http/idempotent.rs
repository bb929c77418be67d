//! The idempotency layer in front of every checkout POST (see `crate::idempotency` for the rules).
//!
//! Order of checks: auth → API-Version → key presence and shape → body size → claim the key (replay, 409, 422)
//! → handler. A handler that writes business rows finishes the claim inside its own transaction
//! ([`ClaimHandle::finish`]); any other 2xx/4xx is stored here afterwards; a 5xx releases the key (or, once a
//! payment was attempted, keeps it and ends its lease). The claim's lease is renewed by a heartbeat while the
//! request runs.

use axum::{
    body::{Body, to_bytes},
    extract::{FromRequestParts, Request, State},
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use super::{AppState, extract::AcpCall};
use crate::{
    error::ApiError,
    idempotency::{self, Begin, Claim, ClaimHandle, IdempotencyError, Policy, RecoveryPoint, Scope, StoredResponse},
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
    claim_and_run(state, parts, body, next, call.agent_id, key).await
}

/// The owner of admin keys: one scope for the merchant's operators.
const ADMIN_OWNER: &str = "admin";

/// The same layer for the admin API's POSTs: admin bearer first, and the key is required.
pub async fn admin_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
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
    let limit = state.settings.max_body_bytes;
    let bytes = to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("Request bodies are limited to {limit} bytes"),
        )
        .into_response()
    })?;
    let scope = Scope {
        agent_id: owner,
        method: "POST".into(),
        path: parts.uri.path().to_owned(),
        key,
    };
    let policy = Policy {
        lease: state.settings.idempotency_lease,
        retention: state.settings.idempotency_retention,
    };
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
        Begin::Replay(stored) => {
            crate::observability::metrics::record_idempotent_replay();
            let mut response = into_response(stored);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
        Begin::InFlight { retry_after_secs } => {
            crate::observability::metrics::record_idempotency_conflict("in_flight");
            return Err(versioned(in_flight(retry_after_secs), version));
        }
        Begin::Conflict => {
            crate::observability::metrics::record_idempotency_conflict("body_mismatch");
            let conflict = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_conflict",
                "Idempotency-Key has already been used with a different request body",
            );
            return Err(versioned(conflict, version));
        }
    };
    let heartbeat = keep_alive(state, &claim);
    let guard = ClaimHandle::new(claim);
    parts.extensions.insert(guard.clone());
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    heartbeat.stop().await;
    Ok(settle(state, &guard, response).await)
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
