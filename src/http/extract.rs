//! Extractors for the ACP endpoints, applied in the order DIGEST §2.3 suggests: auth → API-Version →
//! Idempotency-Key presence → content type → body size → JSON syntax → typed parse.

use axum::{
    body::{Body, to_bytes},
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, Method, StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::{
    error::ApiError,
    jsonpath,
    protocol::{Adapter, Operation},
};

/// The id of the agent configured through the environment.
pub const ENV_AGENT_ID: &str = "agent_default";

/// An authenticated ACP request: who is calling, in which version.
#[derive(Clone)]
pub struct AcpCall {
    pub agent_id: String,
    pub version: &'static str,
    pub adapter: &'static dyn Adapter,
}

impl std::fmt::Debug for AcpCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpCall")
            .field("agent_id", &self.agent_id)
            .field("version", &self.version)
            .finish()
    }
}

/// The token of an `Authorization: Bearer …` header (the scheme is case-insensitive, RFC 9110 §11.1).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Constant-time equality: the comparison time does not depend on where the strings differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

pub(crate) async fn agent_for(state: &AppState, key: &str) -> Result<Option<String>, ApiError> {
    if is_environment_key(state, key) {
        return Ok(Some(ENV_AGENT_ID.to_owned()));
    }
    let id = sqlx::query_scalar("select agent_id from agent where api_key_sha256 = $1 and disabled_at is null")
        .bind(key_digest(key))
        .fetch_optional(&state.db)
        .await?;
    Ok(id)
}

/// Whether `key` is the environment agent's (`ACP_AGENT_API_KEY`), compared in constant time.
pub(crate) fn is_environment_key(state: &AppState, key: &str) -> bool {
    secrets_equal(key, state.settings.agent_api_key.expose())
}

/// Stored agents are looked up by the SHA-256 of their key: the key itself is never stored.
pub(crate) fn key_digest(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

fn version_error(state: &AppState, code: &'static str, message: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::BAD_REQUEST, code, message);
    e.supported_versions = Some(state.protocol.versions());
    e
}

impl FromRequestParts<AppState> for AcpCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // The idempotency layer authenticates POSTs first (it needs the agent for the key's scope).
        if let Some(call) = parts.extensions.get::<AcpCall>() {
            return Ok(call.clone());
        }
        // The signature layer authenticated the agent already (checkout routes); elsewhere, do it here.
        let agent_id = match parts.extensions.get::<super::signed::AuthenticatedAgent>() {
            Some(agent) => agent.0.clone(),
            None => {
                let key = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
                agent_for(state, key).await?.ok_or_else(ApiError::unauthorized)?
            }
        };
        // Once per request: the idempotency layer's extraction is reused above, so this bucket is taken once.
        state.rate_limits.check_agent(&agent_id)?;
        let version = match parts.headers.get("api-version").map(|v| v.to_str()) {
            None => {
                return Err(version_error(
                    state,
                    "missing_api_version",
                    "The API-Version header is required".into(),
                ));
            }
            Some(Ok(v)) => state.protocol.enabled(v.trim()).ok_or_else(|| {
                version_error(
                    state,
                    "unsupported_api_version",
                    format!("API version '{}' is not supported", v.trim()),
                )
            })?,
            Some(Err(_)) => {
                return Err(version_error(
                    state,
                    "unsupported_api_version",
                    "API-Version is not readable text".into(),
                ));
            }
        };
        let adapter = version;
        let version = adapter.version();
        if parts.method == Method::POST
            && adapter.idempotency_key_required()
            && !parts.headers.contains_key("idempotency-key")
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "Idempotency-Key header is required on all POST requests",
            ));
        }
        Ok(Self {
            agent_id,
            version,
            adapter,
        })
    }
}

/// A JSON request body parsed into `T`, with ACP errors for every way it can be wrong. `T` is parsed from an
/// already-valid JSON value so that syntax errors (`invalid_json`) and schema errors (`missing` / `invalid`
/// with a JSONPath `param`) stay distinct.
pub struct AcpJson<T>(pub T);

/// [`read_json`] for routes whose body is required: an empty body is a 400 `missing` at `$`.
pub async fn read_required_json(request: Request, limit: usize) -> Result<serde_json::Value, ApiError> {
    read_json(request, limit)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "missing", "A JSON body is required").with_param("$"))
}

/// Reads the body as JSON: `Ok(None)` for an empty body.
pub async fn read_json(request: Request, limit: usize) -> Result<Option<serde_json::Value>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("Request bodies are limited to {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    let body: Body = request.into_body();
    let bytes = to_bytes(body, limit).await.map_err(|_| too_large())?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if is_json != Some(true) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Request bodies must be sent as Content-Type: application/json",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("The request body is not valid JSON: {e}"),
        )
    })?;
    crate::input_limits::check_json(&value).map_err(refused)?;
    Ok(Some(value))
}

/// A hostile-input refusal as the 400 it is.
pub fn refused(refusal: crate::input_limits::Refusal) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", refusal.message).with_param(refusal.param)
}

/// Parses a JSON value into `T`, mapping serde's complaint to `missing` / `invalid` with a JSONPath.
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "The request body must be a JSON object",
        )
        .with_param("$"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let base = jsonpath::from_serde_path(e.path());
        let message = e.inner().to_string();
        match missing_field(&message) {
            Some(field) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing",
                format!("Missing required field '{field}'"),
            )
            .with_param(jsonpath::member(&base, field)),
            None => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("Invalid value: {message}")).with_param(base)
            }
        }
    })
}

/// serde reports a missing field as "missing field `name`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

impl<T: DeserializeOwned> FromRequest<AppState> for AcpJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let value = read_json(request, state.settings.max_body_bytes)
            .await?
            .ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "missing", "A JSON request body is required").with_param("$")
            })?;
        parse_value(value).map(AcpJson)
    }
}

/// Like [`AcpJson`] for operations whose body is optional: an empty body yields `T::default()`.
pub struct AcpJsonOrDefault<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for AcpJsonOrDefault<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match read_json(request, state.settings.max_body_bytes).await? {
            Some(value) => parse_value(value).map(AcpJsonOrDefault),
            None => Ok(AcpJsonOrDefault(T::default())),
        }
    }
}

/// A checkout request body, read as JSON (absent for an empty body). Validated against the version's schema by
/// [`checked`] before any typed parsing.
pub struct AcpBody(pub Option<serde_json::Value>);

impl FromRequest<AppState> for AcpBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_json(request, state.settings.max_body_bytes).await.map(AcpBody)
    }
}

/// The body of `operation`, checked against the request schema of the call's version. Cancel's body is optional
/// (an absent one is `{}`); every other operation needs one.
pub fn checked(
    state: &AppState,
    call: &AcpCall,
    operation: Operation,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, ApiError> {
    let body = match (body, operation) {
        (Some(body), _) => body,
        (None, Operation::Cancel) => serde_json::json!({}),
        (None, _) => {
            return Err(
                ApiError::new(StatusCode::BAD_REQUEST, "missing", "A JSON request body is required").with_param("$"),
            );
        }
    };
    state.protocol.schemas.check(call.version, operation, &body)?;
    Ok(body)
}
