//! The five ACP checkout endpoints. Handlers parse (wire adapter), run the use case in a transaction, render.

use axum::{
    Router,
    extract::{Path, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};

use super::{
    AppState,
    extract::{AcpCall, AcpJson, read_json},
    idempotent::{self, MaybeIdempotency, into_response, json_response},
};
use crate::{
    checkout::{
        model::{MessageKind, Session, Status},
        service::CheckoutError,
    },
    error::ApiError,
    idempotency::{RecoveryPoint, StoredResponse},
    protocol::v2026_04_17::{self as wire, CompleteRequest, CreateRequest, UpdateRequest, WireError},
    psp::PaymentProvider,
};

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/checkout_sessions", post(create))
        .route("/checkout_sessions/{id}", get(fetch).post(update))
        .route("/checkout_sessions/{id}/complete", post(complete))
        .route("/checkout_sessions/{id}/cancel", post(cancel))
        .layer(middleware::from_fn_with_state(state.clone(), idempotent::layer))
        .layer(middleware::from_fn(echo_idempotency_key))
}

/// ACP echoes the request's `Idempotency-Key` on responses to POSTs.
async fn echo_idempotency_key(request: Request, next: Next) -> Response {
    let key = request.headers().get("idempotency-key").cloned();
    let mut response = next.run(request).await;
    if let Some(key) = key {
        response.headers_mut().insert("idempotency-key", key);
    }
    response
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message).with_param(e.param)
    }
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::NotFound => ApiError::not_found("Checkout session not found"),
            CheckoutError::UnknownItem { index, id } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_item_id",
                format!("The item ID '{id}' does not exist."),
            )
            .with_param(format!("$.line_items[{index}].id")),
            CheckoutError::InvalidState {
                cancel,
                in_progress,
                message,
            } => {
                let status = match (cancel, in_progress) {
                    (true, _) => StatusCode::METHOD_NOT_ALLOWED,
                    (false, true) => StatusCode::CONFLICT,
                    (false, false) => StatusCode::BAD_REQUEST,
                };
                ApiError::new(status, "invalid_state", message)
            }
            CheckoutError::Invalid { code, param, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message).with_param(param)
            }
            CheckoutError::Psp(e @ crate::psp::PspError::Refused(_)) => {
                tracing::error!(error = %e, "payment provider refused the operation");
                ApiError::internal()
            }
            CheckoutError::Psp(e) => {
                tracing::warn!(error = %e, "payment provider did not answer");
                ApiError::unavailable("The payment provider is unavailable; retry later").with_retry_after(2)
            }
            CheckoutError::Db(e) => e.into(),
        }
    }
}

fn rendered(state: &AppState, status: StatusCode, session: &Session) -> StoredResponse {
    json_response(status, &wire::render(session, &state.wire))
}

/// Sends `response` after storing it as the idempotent answer in the same transaction as the business write.
async fn commit_with(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    idem: &MaybeIdempotency,
    response: StoredResponse,
) -> Result<Response, ApiError> {
    idem.finish(&mut tx, &response).await?;
    tx.commit().await?;
    Ok(into_response(response))
}

async fn create(
    State(state): State<AppState>,
    call: AcpCall,
    idem: MaybeIdempotency,
    AcpJson(body): AcpJson<CreateRequest>,
) -> Result<Response, ApiError> {
    let input = body.into_input()?;
    let mut tx = state.db.begin().await?;
    let session = state
        .checkout
        .create(&mut tx, &call.agent_id, call.version, input)
        .await?;
    tracing::info!(checkout_session_id = %session.id, status = session.status.as_str(), "checkout session created");
    commit_with(tx, &idem, rendered(&state, StatusCode::CREATED, &session)).await
}

async fn fetch(State(state): State<AppState>, call: AcpCall, Path(id): Path<String>) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    let session = state.checkout.get(&mut tx, &call.agent_id, &id).await?;
    tx.commit().await?;
    Ok(into_response(rendered(&state, StatusCode::OK, &session)))
}

async fn update(
    State(state): State<AppState>,
    call: AcpCall,
    idem: MaybeIdempotency,
    Path(id): Path<String>,
    AcpJson(body): AcpJson<UpdateRequest>,
) -> Result<Response, ApiError> {
    let input = body.into_input()?;
    let mut tx = state.db.begin().await?;
    let session = state.checkout.update(&mut tx, &call.agent_id, &id, input).await?;
    commit_with(tx, &idem, rendered(&state, StatusCode::OK, &session)).await
}

async fn cancel(
    State(state): State<AppState>,
    call: AcpCall,
    idem: MaybeIdempotency,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // The body is optional ({intent_trace}); when present it must still be JSON.
    let _ = read_json(request, state.settings.max_body_bytes).await?;
    let mut tx = state.db.begin().await?;
    let session = state.checkout.cancel(&mut tx, &call.agent_id, &id).await?;
    commit_with(tx, &idem, rendered(&state, StatusCode::OK, &session)).await
}

/// Complete, bracketed by recovery points: (1) validate, reserve stock, mark the session in progress and record
/// "payment attempted" with the PSP key, in one transaction; (2) charge the PSP, outside any transaction;
/// (3) record the outcome and the idempotent response in one transaction. A retry that finds (1) committed but
/// not (3) resumes at (2) with the same PSP key, so the PSP answers with the charge it already made.
async fn complete(
    State(state): State<AppState>,
    call: AcpCall,
    idem: MaybeIdempotency,
    Path(id): Path<String>,
    AcpJson(body): AcpJson<CompleteRequest>,
) -> Result<Response, ApiError> {
    let input = body.into_input()?;
    let resuming = match &idem.0 {
        Some(i) => i.recovery_point().await == RecoveryPoint::PaymentAttempted,
        None => false,
    };
    let mut tx = state.db.begin().await?;
    let (session, charge) = if resuming {
        state
            .checkout
            .resume_complete(&mut tx, &call.agent_id, &id, &input)
            .await?
    } else {
        state
            .checkout
            .begin_complete(&mut tx, &call.agent_id, &id, &input)
            .await?
    };
    if let (Some(charge), Some(i)) = (&charge, &idem.0) {
        i.payment_attempted(&mut tx, &charge.idempotency_key).await?;
    }
    tx.commit().await?;
    let Some(charge) = charge else {
        return not_payable(&state, &idem, &session).await;
    };
    let started = std::time::Instant::now();
    let outcome = state.checkout.psp.confirm(&charge).await;
    tracing::info!(
        checkout_session_id = %session.id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        ok = outcome.is_ok(),
        "psp charge answered"
    );
    let mut tx = state.db.begin().await?;
    match state.checkout.finish_complete(&mut tx, &session.id, outcome).await {
        Ok(session) => commit_with(tx, &idem, rendered(&state, StatusCode::OK, &session)).await,
        Err(e) => {
            // The session was put back to payable (stock returned); the error is a 5xx the key does not keep.
            tx.commit().await?;
            Err(e.into())
        }
    }
}

/// Complete on a session that cannot be paid: a blocking message becomes the error; otherwise say what is
/// missing. A declined 3-D Secure attempt, or a completed session found on resume, is a 200 session.
async fn not_payable(state: &AppState, idem: &MaybeIdempotency, session: &Session) -> Result<Response, ApiError> {
    if session.status != Status::NotReadyForPayment {
        let tx = state.db.begin().await?;
        return commit_with(tx, idem, rendered(state, StatusCode::OK, session)).await;
    }
    let blocking = session.computed.messages.iter().find(|m| m.kind == MessageKind::Error);
    let error = match blocking {
        Some(m) => ApiError::new(
            StatusCode::BAD_REQUEST,
            m.code.clone().unwrap_or_else(|| "invalid".into()),
            m.content.clone(),
        )
        .with_param(m.param.clone().unwrap_or_else(|| "$".into())),
        None => {
            let has_address = session
                .fulfillment_details
                .as_ref()
                .is_some_and(|d| d.address.is_some());
            let param = if has_address {
                "$.selected_fulfillment_options"
            } else {
                "$.fulfillment_details.address"
            };
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing",
                "The checkout session is not ready for payment",
            )
            .with_param(param)
        }
    };
    Err(error)
}
