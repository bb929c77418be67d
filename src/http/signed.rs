//! The request-signature layer in front of every checkout route: after bearer authentication (the agent must be
//! known to pick its key) and before API-Version and idempotency handling, so a refused signature never claims an
//! idempotency key. The body is buffered once here and handed on as the same bytes.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{AppState, extract};
use crate::{
    error::ApiError,
    signatures::{self, AgentSignature, Mode, SignatureError, SignatureHeaders, Signed, store::StoreError},
};

/// The authenticated agent, left for [`extract::AcpCall`] so the key is looked up once per request.
#[derive(Debug, Clone)]
pub struct AuthenticatedAgent(pub String);

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db(e) => e.into(),
            StoreError::Corrupt(what) => {
                tracing::error!(problem = %what, "unusable stored signature settings");
                ApiError::internal()
            }
        }
    }
}

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match verified(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// The request, passed on unchanged when its signature is acceptable for its agent.
async fn verified(state: &AppState, mut request: Request) -> Result<Request, ApiError> {
    let key = extract::bearer(request.headers()).ok_or_else(ApiError::unauthorized)?;
    let (agent_id, policy) = agent_and_policy(state, key).await?;
    request.extensions_mut().insert(AuthenticatedAgent(agent_id));
    let headers = signature_headers(request.headers());
    let checked = match policy.mode {
        Mode::Off => false,
        Mode::Optional => !headers.absent(),
        Mode::Required => true,
    };
    if !checked {
        return Ok(request);
    }
    let tolerance = state.settings.signature_tolerance.as_secs();
    let signature = signatures::precheck(headers, chrono::Utc::now(), tolerance)?;
    let timestamp = headers.timestamp.unwrap_or_default().to_owned();
    let (parts, body) = request.into_parts();
    let bytes = super::limits::read_body(state, body).await?;
    let canonical = signatures::canonical_body(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("The request body is not valid JSON: {e}"),
        )
    })?;
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let signed = Signed {
        timestamp: &timestamp,
        method: parts.method.as_str(),
        path_and_query,
        canonical_body: &canonical,
    };
    let message = signatures::message(policy.covers, &signed);
    if !policy.key.as_ref().is_some_and(|k| k.verifies(&message, &signature)) {
        return Err(SignatureError::DoesNotVerify.into());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The agent holding `key` and its signature policy: the environment agent's comes from the settings, every other
/// agent's is read with the agent itself, in one statement.
async fn agent_and_policy(state: &AppState, key: &str) -> Result<(String, AgentSignature), ApiError> {
    if extract::is_environment_key(state, key) {
        return Ok((extract::ENV_AGENT_ID.to_owned(), state.settings.agent_signature.clone()));
    }
    signatures::store::authenticate(&state.db, &state.settings, &extract::key_digest(key))
        .await?
        .ok_or_else(ApiError::unauthorized)
}

fn signature_headers(headers: &HeaderMap) -> SignatureHeaders<'_> {
    // A header that is not visible ASCII cannot be a base64url signature or an RFC 3339 time: treat it as
    // present-but-malformed by passing an empty string, which both checks refuse.
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    SignatureHeaders {
        signature: text("signature"),
        timestamp: text("timestamp"),
    }
}
