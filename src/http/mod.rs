//! HTTP surface: routes, shared state and the layers every request passes through.

pub mod admin;
// Funnel analytics and CPA (issue 13).
pub mod admin_analytics;
pub mod admin_merchant_webhooks;
pub mod admin_orders;
pub mod admin_rate_limit;
pub mod admin_variants;
pub mod checkout;
// The merchant dashboard and its login (issue 13).
pub mod dashboard;
pub mod discovery;
pub mod extract;
pub mod health;
pub mod idempotent;
pub mod limits;
pub mod metrics;
pub mod order_page;
pub mod request_id;
pub mod signed;
pub mod signing_admin;
pub mod stripe_webhooks;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Query},
    middleware,
    routing::get,
};
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    checkout::service::Checkout,
    config::Settings,
    error::ApiError,
    protocol::{Protocol, WireContext},
    psp::simulator::Simulator,
};

/// What every handler can reach: one shared allocation, so the clone every layer and extractor makes per request is
/// one reference count (the issue-14 profile showed cloning and dropping the fields one by one).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct SharedState {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    /// Connections single-statement reads keep between requests, so they skip sqlx's ping on release.
    pub kept: crate::db::kept::KeptConnections,
    /// Fires when the process begins shutting down; long-running handlers and workers watch it.
    pub shutdown: CancellationToken,
    pub checkout: Arc<Checkout>,
    pub wire: Arc<WireContext>,
    /// The payment simulator, when it is the configured PSP (for its admin release switch).
    pub simulator: Option<Simulator>,
    /// Work that must finish even if its client goes away (complete sagas); shutdown waits for it.
    pub tasks: TaskTracker,
    /// The ACP versions served, with their compiled request schemas.
    pub protocol: Arc<Protocol>,
    /// Seals secrets before they are stored and opens them when read (`ACP_SECRETS_KEYS`).
    pub keyring: crate::secrets::Keyring,
    /// Token buckets per agent and per address (issue 12).
    pub rate_limits: Arc<crate::rate_limit::RateLimits>,
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi/{document}", get(openapi_document))
        .merge(checkout::router(&state))
        .merge(admin::router())
        .merge(admin_orders::router(&state))
        .merge(admin_merchant_webhooks::router(&state))
        .merge(admin_variants::router(&state))
        .merge(signing_admin::router())
        .merge(stripe_webhooks::router())
        .merge(admin_rate_limit::router())
        .merge(admin_analytics::router(&state))
        .merge(discovery::router(&state))
        // Issue 13: the buyer's order page.
        .merge(order_page::router())
        .merge(metrics::router())
        // Issue 13: the merchant dashboard.
        .merge(dashboard::router());
    if state.settings.debug_routes {
        router = router.route("/debug/sleep", get(debug_sleep));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), limits::edge))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::observability::metrics::track_requests,
        ))
        .layer(middleware::from_fn(request_id::trace_requests))
        .with_state(state)
}

/// The project's own description of what it serves for one ACP version, `GET /openapi/<version>.json` (no auth:
/// it is documentation). Only served versions have one.
async fn openapi_document(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(document): axum::extract::Path<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let adapter = document
        .strip_suffix(".json")
        .and_then(|version| state.protocol.enabled(version))
        .ok_or_else(|| ApiError::not_found("No such resource"))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        adapter.openapi(),
    ))
}

async fn not_found() -> ApiError {
    ApiError::not_found("No such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

#[derive(Deserialize)]
struct SleepQuery {
    ms: u64,
}

/// Development-only: a deliberately slow request, so shutdown draining can be observed.
async fn debug_sleep(Query(q): Query<SleepQuery>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.ms.min(10_000))).await;
    "slept"
}
