//! `PUT /admin/agents/{id}/signature`: the merchant sets whether an agent signs its requests, and how.

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
    extract::{ENV_AGENT_ID, parse_value, read_required_json},
    limits::ResourceId,
};
use crate::{
    config::Secret,
    error::ApiError,
    signatures::{
        ALGORITHMS, Algorithm, Covers, Mode, VerifyKey,
        store::{self, NewPolicy},
    },
};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/agents/{id}/signature", put(put_signature))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureIn {
    mode: String,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    covers: Option<String>,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    hmac_secret: Option<Secret>,
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", message).with_param(param)
}

async fn put_signature(
    State(state): State<AppState>,
    _: Admin,
    ResourceId(id): ResourceId,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_required_json(request, state.settings.max_body_bytes).await?;
    let input: SignatureIn = parse_value(body)?;
    if id == ENV_AGENT_ID {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "agent_default is configured through ACP_AGENT_SIGNATURE_MODE, ACP_AGENT_SIGNATURE_ALGORITHM and \
             ACP_AGENT_SIGNATURE_KEY",
        ));
    }
    let policy = validated(&input)?;
    let known: Option<i32> = sqlx::query_scalar("select 1 from agent where agent_id = $1")
        .bind(&id)
        .fetch_optional(&state.db)
        .await?;
    if known.is_none() {
        return Err(ApiError::not_found("No such agent"));
    }
    store::save(&state.db, &state.settings, &id, &policy).await?;
    tracing::info!(agent_id = %id, mode = policy.mode.as_str(), "agent signature settings changed");
    // The HMAC secret is never echoed; public keys are not secret.
    let body = json!({
        "agent_id": id,
        "mode": policy.mode.as_str(),
        "algorithm": policy.algorithm.map(Algorithm::as_str),
        "covers": policy.covers.as_str(),
        "public_key": policy.public_key,
        "hmac_secret_set": policy.hmac_secret.is_some(),
    });
    Ok(Json(body).into_response())
}

/// Every field checked, each refusal naming its `param`: the mode and covers are known words; a mode other than
/// `off` needs an algorithm; the algorithm's key (public key or HMAC secret, not both) parses.
fn validated(input: &SignatureIn) -> Result<NewPolicy<'_>, ApiError> {
    let mode = Mode::parse(&input.mode).ok_or_else(|| bad("$.mode", "mode must be off, optional or required"))?;
    let covers = match input.covers.as_deref() {
        None => Covers::Body,
        Some(text) => Covers::parse(text).ok_or_else(|| bad("$.covers", "covers must be body or method_path_body"))?,
    };
    let algorithm = input
        .algorithm
        .as_deref()
        .map(|text| {
            Algorithm::parse(text).ok_or_else(|| {
                bad(
                    "$.algorithm",
                    format!("algorithm must be one of {}", ALGORITHMS.join(", ")),
                )
            })
        })
        .transpose()?;
    let Some(algorithm) = algorithm else {
        if mode != Mode::Off {
            return Err(bad("$.algorithm", "an algorithm is required unless mode is off"));
        }
        return Ok(NewPolicy {
            mode,
            covers,
            algorithm: None,
            public_key: None,
            hmac_secret: None,
        });
    };
    let (public_key, hmac_secret) = key_material(algorithm, input)?;
    Ok(NewPolicy {
        mode,
        covers,
        algorithm: Some(algorithm),
        public_key,
        hmac_secret,
    })
}

fn key_material(algorithm: Algorithm, input: &SignatureIn) -> Result<(Option<&str>, Option<&Secret>), ApiError> {
    if algorithm == Algorithm::HmacSha256 {
        if input.public_key.is_some() {
            return Err(bad("$.public_key", "hmac-sha256 uses hmac_secret, not public_key"));
        }
        let secret = input
            .hmac_secret
            .as_ref()
            .ok_or_else(|| bad("$.hmac_secret", "hmac-sha256 needs hmac_secret"))?;
        VerifyKey::parse(algorithm, secret.expose()).map_err(|e| bad("$.hmac_secret", e.0))?;
        return Ok((None, Some(secret)));
    }
    if input.hmac_secret.is_some() {
        return Err(bad(
            "$.hmac_secret",
            "ed25519 and es256 use public_key, not hmac_secret",
        ));
    }
    let key = input
        .public_key
        .as_deref()
        .ok_or_else(|| bad("$.public_key", format!("{} needs public_key", algorithm.as_str())))?;
    VerifyKey::parse(algorithm, key).map_err(|e| bad("$.public_key", format!("public_key: {}", e.0)))?;
    Ok((Some(key), None))
}
