//! `POST /stripe/webhooks`: Stripe's own events about our payments (https://docs.stripe.com/webhooks).
//!
//! The signature is checked against every configured endpoint secret (`ACP_STRIPE_WEBHOOK_SECRETS`, several
//! during a rotation) within `ACP_STRIPE_WEBHOOK_TOLERANCE_SECS`; a bad one is 400 and changes nothing. Each event
//! id is acted on once: its effect is applied first (every effect is idempotent by state), then the id is
//! recorded, so a crash in between only means Stripe's retry re-applies a no-op. A failure while applying answers
//! 5xx, so Stripe retries the delivery. With no secret configured the endpoint does not exist (404).

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

use super::AppState;
use crate::{
    error::ApiError,
    psp::{stripe, stripe_signature},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/stripe/webhooks", post(receive))
}

async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let secrets = &state.settings.stripe_webhook_secrets;
    if secrets.is_empty() {
        return Err(ApiError::not_found("No such resource"));
    }
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let tolerance = state.settings.stripe_webhook_tolerance.as_secs() as i64;
    if let Err(e) = stripe_signature::verify(&body, signature, secrets, tolerance, now) {
        tracing::warn!(reason = %e, "refused a Stripe webhook with a bad signature");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_signature",
            e.to_string(),
        ));
    }
    let event: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "The event is not JSON"))?;
    let (Some(event_id), Some(event_type)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "invalid", "The event has no id or type").with_param("$.id"),
        );
    };
    let seen: Option<String> = sqlx::query_scalar("select outcome from stripe_event where event_id = $1")
        .bind(event_id)
        .fetch_optional(&state.db)
        .await?;
    if let Some(outcome) = seen {
        return Ok(received(event_id, &outcome, true));
    }
    let outcome = state.checkout.on_psp_event(&state.db, stripe::event_of(&event)).await?;
    sqlx::query("insert into stripe_event (event_id, event_type, outcome) values ($1, $2, $3) on conflict do nothing")
        .bind(event_id)
        .bind(event_type)
        .bind(outcome)
        .execute(&state.db)
        .await?;
    tracing::info!(stripe_event_id = %event_id, stripe_event_type = %event_type, outcome, "stripe event applied");
    Ok(received(event_id, outcome, false))
}

fn received(event_id: &str, outcome: &str, duplicate: bool) -> Response {
    (
        StatusCode::OK,
        Json(json!({"received": true, "id": event_id, "outcome": outcome, "duplicate": duplicate})),
    )
        .into_response()
}
