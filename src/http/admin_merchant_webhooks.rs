//! Merchant webhook endpoints (issue 15): the merchant's own systems registered to receive `order.created`,
//! `order.updated`, `order.refunded` and `checkout.abandoned`, signed the Standard Webhooks way. POSTs go through
//! the admin idempotency layer (an `Idempotency-Key` is required), so a retried registration makes one endpoint.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    AppState,
    admin::{Admin, bad},
    extract::AcpJson,
    idempotent,
    limits::ResourceId,
};
use crate::{
    error::ApiError,
    webhooks::{
        merchant::{self, EVENT_TYPES},
        standard,
    },
};

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/merchant-webhooks", get(list).post(create))
        .route("/admin/merchant-webhooks/{id}", patch(update))
        .route("/admin/merchant-webhooks/{id}/rotate-secret", post(rotate))
        .layer(middleware::from_fn_with_state(state.clone(), idempotent::admin_layer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointIn {
    url: String,
    /// Absent: every event type.
    #[serde(default)]
    event_types: Option<Vec<String>>,
    /// Absent: a new random secret.
    #[serde(default)]
    secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointPatch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateIn {
    #[serde(default)]
    secret: Option<String>,
}

/// Merchant endpoints may sit in `ACP_MERCHANT_WEBHOOK_ALLOWED_CIDRS`, which agents' URLs never may.
fn check_url(state: &AppState, raw: &str) -> Result<(), ApiError> {
    super::admin::check_webhook_url(state, raw, "$.url", &state.settings.merchant_webhook_allowed_cidrs)
}

fn check_event_types(types: &[String]) -> Result<(), ApiError> {
    if types.is_empty() {
        return Err(bad("$.event_types", "subscribe to at least one event type"));
    }
    match types.iter().position(|t| !EVENT_TYPES.contains(&t.as_str())) {
        Some(i) => Err(bad(
            &format!("$.event_types[{i}]"),
            format!("unknown event type; one of {}", EVENT_TYPES.join(", ")),
        )),
        None => Ok(()),
    }
}

/// A given secret must be a `whsec_` secret; none means a new random one.
fn secret_or_new(given: Option<String>) -> Result<String, ApiError> {
    match given {
        Some(secret) => {
            standard::key(&secret).map_err(|e| bad("$.secret", e.to_string()))?;
            Ok(secret)
        }
        None => Ok(standard::generate_secret()),
    }
}

/// Registers an endpoint; the answer carries its secret, the only time it is shown.
async fn create(
    State(state): State<AppState>,
    _: Admin,
    AcpJson(input): AcpJson<EndpointIn>,
) -> Result<Response, ApiError> {
    check_url(&state, &input.url)?;
    let event_types = input
        .event_types
        .unwrap_or_else(|| EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect());
    check_event_types(&event_types)?;
    let secret = secret_or_new(input.secret)?;
    let endpoint = merchant::create(&state.db, &state.keyring, &input.url, &event_types, &secret).await?;
    let mut body = json!(endpoint);
    body["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    Ok(Json(json!({"endpoints": merchant::list(&state.db).await?})).into_response())
}

async fn update(
    State(state): State<AppState>,
    _: Admin,
    ResourceId(id): ResourceId,
    AcpJson(input): AcpJson<EndpointPatch>,
) -> Result<Response, ApiError> {
    if let Some(url) = &input.url {
        check_url(&state, url)?;
    }
    if let Some(types) = &input.event_types {
        check_event_types(types)?;
    }
    let endpoint = merchant::update(
        &state.db,
        &id,
        input.url.as_deref(),
        input.event_types.as_deref(),
        input.enabled,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("Merchant webhook endpoint not found"))?;
    Ok(Json(endpoint).into_response())
}

/// Replaces the secret: deliveries from then on are signed with the new one.
async fn rotate(
    State(state): State<AppState>,
    _: Admin,
    ResourceId(id): ResourceId,
    AcpJson(input): AcpJson<RotateIn>,
) -> Result<Response, ApiError> {
    let secret = secret_or_new(input.secret)?;
    if !merchant::rotate(&state.db, &state.keyring, &id, &secret).await? {
        return Err(ApiError::not_found("Merchant webhook endpoint not found"));
    }
    Ok(Json(json!({"id": id, "secret": secret})).into_response())
}
