//! Limits every request meets before routing: header size, hostile paths and queries, and a deadline. Body
//! limits (size, nesting, NUL, string length) are applied where the body is read (`extract::read_json`).

use axum::{
    body::{Body, Bytes, to_bytes},
    extract::{FromRequestParts, Path, Request, State},
    http::{StatusCode, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::AppState;
use crate::{error::ApiError, input_limits};

/// Header size, URI hygiene and the request deadline, in that order.
pub async fn edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(refusal) = check_headers(&request, state.settings.max_header_bytes).and_then(|()| check_uri(&request)) {
        return refusal.into_response();
    }
    let deadline = state.settings.request_timeout;
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            // The handler is dropped here. Work that must not be cut short (a payment under way) runs in tasks of
            // its own, and its idempotency claim answers the retry.
            tracing::warn!(timeout_ms = deadline.as_millis() as u64, "request timed out");
            ApiError::unavailable(format!(
                "The request was not answered within {} ms; retry it (with the same Idempotency-Key for a POST)",
                deadline.as_millis()
            ))
            .with_code("request_timeout")
            .with_retry_after(1)
            .transient()
            .into_response()
        }
    }
}

fn check_headers(request: &Request, limit: usize) -> Result<(), ApiError> {
    let total: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if total > limit {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("Request headers are limited to {limit} bytes in total"),
        ));
    }
    Ok(())
}

/// A path that decodes to control characters names nothing (404); such a query is refused (400).
fn check_uri(request: &Request) -> Result<(), ApiError> {
    if input_limits::uri_component_is_hostile(request.uri().path()) {
        return Err(ApiError::not_found("No such resource"));
    }
    match request.uri().query() {
        Some(query) if input_limits::uri_component_is_hostile(query) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "The query string contains control characters or bytes that are not UTF-8",
        )
        .with_param("$.query")),
        _ => Ok(()),
    }
}

/// The whole body of a request the layers must see before the handler (signature check, idempotency
/// fingerprint), refused with 413 past `ACP_MAX_BODY_BYTES`. Read once: the layers hand the same bytes on.
pub async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.settings.max_body_bytes;
    to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("Request bodies are limited to {limit} bytes"),
        )
    })
}

/// The id in a resource path (`/checkout_sessions/{id}`, `/admin/orders/{id}`, …). An id this server could not
/// have issued is 404 without a database lookup.
pub struct ResourceId(pub String);

impl FromRequestParts<AppState> for ResourceId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("No such resource"))?;
        if !input_limits::plausible_id(&id) {
            return Err(ApiError::not_found("No such resource"));
        }
        Ok(Self(id))
    }
}
