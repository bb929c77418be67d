//! The five ACP checkout endpoints. Handlers parse (wire adapter), run the use case in a transaction, render.
//! Create, update and cancel run in the request's transaction when it carried an Idempotency-Key (the layer
//! claimed the key in it and stores the answer in it: see [`idempotent`]); GET is one statement, no transaction.

use axum::{
    Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};

use super::{
    AppState,
    extract::{AcpBody, AcpCall, checked},
    idempotent::{self, MaybeIdempotency, RequestTx, into_response},
    limits::ResourceId,
};
use crate::{
    checkout::{
        complete::CompleteCall,
        model::{MessageKind, Session},
        service::CheckoutError,
    },
    error::ApiError,
    idempotency::StoredResponse,
    protocol::{Operation, WireError},
};

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/checkout_sessions", post(create))
        .route("/checkout_sessions/{id}", get(fetch).post(update))
        .route("/checkout_sessions/{id}/complete", post(complete))
        .route("/checkout_sessions/{id}/cancel", post(cancel))
        .layer(middleware::from_fn_with_state(state.clone(), idempotent::layer))
        .layer(middleware::from_fn_with_state(state.clone(), super::signed::layer))
        .layer(middleware::from_fn(echo_idempotency_key))
        // Outermost: the per-address bucket is taken before authentication (the agent's bucket after it).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::rate_limit::by_address,
        ))
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
            CheckoutError::NotPayable(session) => not_payable(&session),
            CheckoutError::Conflict { param, message } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message).with_param(param)
            }
            CheckoutError::InFlight { retry_after_secs } => idempotent::in_flight(retry_after_secs),
            CheckoutError::PaymentPending => {
                tracing::warn!("payment outcome unknown; the session stays held until it is settled");
                ApiError::unavailable(
                    "The payment provider's answer is not known yet; nothing was released. Retry the same request.",
                )
                .with_retry_after(2)
            }
            CheckoutError::PspNotReached(reason) => {
                tracing::warn!(reason = %reason, "payment provider unreachable; nothing was charged");
                ApiError::unavailable("The payment provider is unavailable; nothing was charged. Retry later.")
                    .with_retry_after(2)
            }
            CheckoutError::PspRejected { code, .. } => {
                tracing::error!(psp_error_code = %code, "payment provider refused our request; nothing was charged");
                ApiError::internal()
            }
            CheckoutError::Idempotency(e) => e.into(),
            CheckoutError::Order(e) => e.into(),
            CheckoutError::Db(e) => e.into(),
        }
    }
}

/// The session as the caller's version shows it.
fn rendered(state: &AppState, call: &AcpCall, status: StatusCode, session: &Session) -> StoredResponse {
    StoredResponse::json_bytes(status.as_u16(), call.adapter.render_bytes(session, &state.wire))
}

async fn create(
    State(state): State<AppState>,
    call: AcpCall,
    work: RequestTx,
    AcpBody(body): AcpBody,
) -> Result<Response, ApiError> {
    let adapter = call.adapter;
    async {
        let input = call.adapter.create(checked(&state, &call, Operation::Create, body)?)?;
        let mut tx = work.open(&state.db).await?;
        let session = state
            .checkout
            .create(tx.conn()?, &call.agent_id, call.version, input)
            .await?;
        tracing::info!(checkout_session_id = %session.id, status = session.status.as_str(), "checkout session created");
        tx.close(rendered(&state, &call, StatusCode::CREATED, &session)).await
    }
    .await
    .map_err(|e| e.for_version(adapter))
}

/// One statement on a pooled connection, outside any transaction.
async fn fetch(State(state): State<AppState>, call: AcpCall, ResourceId(id): ResourceId) -> Result<Response, ApiError> {
    async {
        // Acquiring sends nothing (no ping: `test_before_acquire` is off) and a kept connection goes back without
        // sqlx's ping on release: the read is the only round trip.
        let mut conn = state.kept.acquire().await?;
        let found = state.checkout.get(&mut conn, &call.agent_id, &id).await;
        conn.keep_after(match &found {
            Err(CheckoutError::Db(e)) => Err(e),
            _ => Ok(()),
        });
        let session = found?;
        Ok(into_response(rendered(&state, &call, StatusCode::OK, &session)))
    }
    .await
    .map_err(|e: ApiError| e.for_version(call.adapter))
}

async fn update(
    State(state): State<AppState>,
    call: AcpCall,
    work: RequestTx,
    ResourceId(id): ResourceId,
    AcpBody(body): AcpBody,
) -> Result<Response, ApiError> {
    let adapter = call.adapter;
    async {
        let input = call.adapter.update(checked(&state, &call, Operation::Update, body)?)?;
        let mut tx = work.open(&state.db).await?;
        let session = state.checkout.update(tx.conn()?, &call.agent_id, &id, input).await?;
        tx.close(rendered(&state, &call, StatusCode::OK, &session)).await
    }
    .await
    .map_err(|e| e.for_version(adapter))
}

async fn cancel(
    State(state): State<AppState>,
    call: AcpCall,
    work: RequestTx,
    ResourceId(id): ResourceId,
    AcpBody(body): AcpBody,
) -> Result<Response, ApiError> {
    let adapter = call.adapter;
    async {
        // The body is optional; when present it must match the version's schema.
        let body = checked(&state, &call, Operation::Cancel, body)?;
        let reason = crate::analytics::events::cancel_reason(Some(&body));
        let mut tx = work.open(&state.db).await?;
        let session = state
            .checkout
            .cancel(tx.conn()?, &state.db, &call.agent_id, &id, reason.as_deref())
            .await?;
        tx.close(rendered(&state, &call, StatusCode::OK, &session)).await
    }
    .await
    .map_err(|e| e.for_version(adapter))
}

/// Complete: the saga is [`crate::checkout::complete`]; this handler maps the request in and the answer out. The
/// saga runs in a task of its own, tracked for shutdown: a client that disconnects (axum then drops this handler)
/// does not cut a payment short between the PSP's answer and the order.
async fn complete(
    State(state): State<AppState>,
    call: AcpCall,
    idem: MaybeIdempotency,
    ResourceId(id): ResourceId,
    AcpBody(body): AcpBody,
) -> Result<Response, ApiError> {
    let adapter = call.adapter;
    let input = checked(&state, &call, Operation::Complete, body)
        .and_then(|body| adapter.complete(body).map_err(ApiError::from))
        .map_err(|e| e.for_version(adapter))?;
    let complete_call = CompleteCall {
        agent_id: call.agent_id,
        session_id: id,
        api_version: call.version.to_owned(),
        input,
        claim: idem.0,
    };
    let checkout = state.checkout.clone();
    let pool = state.db.clone();
    let saga = state
        .tasks
        // The saga stays inside the request's span (for logs and traces) though it runs as its own task.
        .spawn(crate::observability::carry_request_id(
            tracing::Instrument::in_current_span(async move { checkout.complete(&pool, &complete_call).await }),
        ));
    match saga.await {
        Ok(answer) => Ok(into_response(
            answer.map_err(|e| ApiError::from(e).for_version(adapter))?,
        )),
        Err(e) => {
            tracing::error!(error = %e, "the complete task failed");
            Err(ApiError::internal())
        }
    }
}

/// Complete on a session that cannot be paid: the blocking message becomes the error; otherwise say what is
/// missing.
fn not_payable(session: &Session) -> ApiError {
    let blocking = session.computed.messages.iter().find(|m| m.kind == MessageKind::Error);
    match blocking {
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
    }
}
