//! `Request-Id`: taken from the request when it is a sane token, generated otherwise, echoed on every response
//! and attached to the request's log span.

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// The request id of the current request, for handlers that need it (error bodies, webhooks).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An incoming id is reused only if it is short printable ASCII, so a client cannot inject log lines or bloat
/// them.
fn acceptable(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| s.to_owned())
}

/// Middleware: one span per request carrying `request_id`, `method` and `route`, and one completion event with
/// `status` and `latency_ms`.
pub async fn trace_requests(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(acceptable)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::now_v7().simple()));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    request.extensions_mut().insert(RequestId(request_id.clone()));

    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let started = std::time::Instant::now();
    let mut response =
        crate::observability::with_request_id(request_id.clone(), next.run(request).instrument(span.clone())).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        // The ids are repeated on the event itself so each request's line is self-contained for log search.
        tracing::info!(
            request_id = %request_id,
            method = %method,
            route = %route,
            status = response.status().as_u16(),
            latency_ms,
            "request completed"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}
