//! Liveness and readiness probes, unauthenticated by design (orchestrators call them).

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::AppState;
use crate::db;

/// The process is up and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers and the schema is current; 503 otherwise, so load balancers hold traffic back.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match db::check_ready(&state.db, state.settings.db_acquire_timeout).await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason.to_string()})),
        ),
    }
}
