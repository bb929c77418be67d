//! `GET /metrics`: the Prometheus scrape. On the main listener it needs the admin bearer token; the optional
//! separate listener (`ACP_METRICS_ADDR`) serves it without authentication and is meant for a private address.

use std::net::SocketAddr;

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{AppState, admin::Admin};
use crate::observability::metrics;

/// The admin-protected scrape on the main listener.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape_as_admin))
}

async fn scrape_as_admin(_: Admin, State(state): State<AppState>) -> Response {
    scrape(State(state)).await
}

async fn scrape(State(state): State<AppState>) -> Response {
    let body = metrics::render(&state.db).await;
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

/// Serves only `GET /metrics`, unauthenticated, on `listener` until `stop` fires.
pub async fn serve_standalone(listener: TcpListener, state: AppState, stop: CancellationToken) {
    let addr = listener.local_addr().ok();
    let app = Router::new().route("/metrics", get(scrape)).with_state(state);
    tracing::info!(addr = ?addr, "metrics listening (no authentication)");
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}
