//! The merchant's admin API (bearer `ACP_ADMIN_TOKEN`): catalog import/export and merchant-only attributes.

use axum::{
    Json, Router,
    body::{Bytes, to_bytes},
    extract::{FromRequestParts, Request, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;

use super::{AppState, extract::secrets_equal};
use crate::{
    catalog::{self, CatalogError},
    error::ApiError,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/catalog/import", post(import))
        .route("/admin/catalog/attributes", post(attributes))
        .route("/admin/catalog/export", get(export))
}

/// Proof that the caller holds the admin token. With no token configured the admin API is closed.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        match &state.settings.admin_token {
            Some(token) if secrets_equal(presented, token.expose()) => Ok(Admin),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Line { line, param, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("line {line}: {message}")).with_param(param)
            }
            CatalogError::Db(e) => e.into(),
        }
    }
}

async fn body_text(request: Request, limit: usize) -> Result<String, ApiError> {
    let bytes: Bytes = to_bytes(request.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "The import body is too large",
        )
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "The body must be UTF-8 JSON lines"))
}

/// Import files are bigger than agent requests: allow 64× the agent body limit.
fn import_limit(state: &AppState) -> usize {
    state.settings.max_body_bytes.saturating_mul(64)
}

async fn import(State(state): State<AppState>, _: Admin, request: Request) -> Result<Response, ApiError> {
    let text = body_text(request, import_limit(&state)).await?;
    let products = catalog::parse_products(&text)?;
    let count = catalog::upsert_products(&state.db, &products).await?;
    Ok(Json(json!({"imported": count})).into_response())
}

async fn attributes(State(state): State<AppState>, _: Admin, request: Request) -> Result<Response, ApiError> {
    let text = body_text(request, import_limit(&state)).await?;
    let records = catalog::parse_attributes(&text)?;
    let count = catalog::apply_attributes(&state.db, &records).await?;
    Ok(Json(json!({"updated": count})).into_response())
}

async fn export(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let body = catalog::export_jsonl(&state.db).await?;
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], body).into_response())
}
