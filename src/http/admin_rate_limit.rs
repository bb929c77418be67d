//! `PUT /admin/agents/{id}/rate-limit`: an agent's own token bucket (one agent key may carry a whole platform's
//! buyers). Stored in PostgreSQL; this process applies it at once, others at their next override refresh.

use std::num::NonZeroU32;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::put,
};
use serde_json::json;

use super::{
    AppState,
    admin::Admin,
    extract::{parse_value, read_required_json},
    limits::ResourceId,
};
use crate::{error::ApiError, rate_limit::Rate};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/agents/{id}/rate-limit", put(put_rate_limit))
}

/// Both numbers set the agent's rate; both `null` remove the override (back to the configured default).
#[derive(serde::Deserialize)]
struct RateLimitIn {
    per_sec: Option<u32>,
    burst: Option<u32>,
}

fn requested_rate(body: RateLimitIn) -> Result<Option<Rate>, ApiError> {
    let positive = |value: u32, field: &str| {
        NonZeroU32::new(value).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid", "Must be greater than zero")
                .with_param(format!("$.{field}"))
        })
    };
    match (body.per_sec, body.burst) {
        (None, None) => Ok(None),
        (Some(per_sec), Some(burst)) => Ok(Some(Rate {
            per_sec: positive(per_sec, "per_sec")?,
            burst: positive(burst, "burst")?,
        })),
        (None, Some(_)) => Err(missing("per_sec")),
        (Some(_), None) => Err(missing("burst")),
    }
}

fn missing(field: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "missing",
        format!("Give both per_sec and burst (or both null to remove the override); '{field}' is missing"),
    )
    .with_param(format!("$.{field}"))
}

async fn put_rate_limit(
    State(state): State<AppState>,
    _: Admin,
    ResourceId(id): ResourceId,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_required_json(request, state.settings.max_body_bytes).await?;
    let rate = requested_rate(parse_value(body)?)?;
    crate::rate_limit::store_override(&state.db, &id, rate).await?;
    state.rate_limits.set_override(&id, rate);
    let shown = rate.map(|r| json!({"per_sec": r.per_sec.get(), "burst": r.burst.get()}));
    Ok(Json(json!({"agent_id": id, "rate_limit": shown})).into_response())
}
