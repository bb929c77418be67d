//! The API layer's error: everything a handler can fail with, rendered as ACP's flat error object
//! `{type, code, message, param?}` with the matching HTTP status. Lower layers have their own error types and
//! are mapped here, at the edge; internal details are logged, never echoed.

use std::borrow::Cow;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// ACP `Error.type` for checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequest,
    /// Idempotency refusals before 2026-04-17 (removed from the enum in 2026-04-17).
    RequestNotIdempotent,
    ProcessingError,
    ServiceUnavailable,
}

/// An ACP error response.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: ErrorType,
    pub code: Cow<'static, str>,
    pub message: String,
    /// RFC 9535 JSONPath of the field at fault.
    pub param: Option<String>,
    pub supported_versions: Option<Vec<&'static str>>,
    pub retry_after_secs: Option<u64>,
    /// A momentary answer (for example 409 while the same request runs) that the key must not keep.
    pub transient: bool,
}

/// Marks a response the idempotency layer must not store as the key's answer.
#[derive(Debug, Clone, Copy)]
pub struct Transient;

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    error_type: ErrorType,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supported_versions: Option<&'a [&'static str]>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        let error_type = match status {
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => ErrorType::ServiceUnavailable,
            s if s.is_server_error() => ErrorType::ProcessingError,
            _ => ErrorType::InvalidRequest,
        };
        Self {
            status,
            error_type,
            code: code.into(),
            message: message.into(),
            param: None,
            supported_versions: None,
            retry_after_secs: None,
            transient: false,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code.into();
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The error as the caller's ACP version spells it: idempotency refusals carry the type the version defines
    /// for them, `param` names the version's request field (or is left out when it has none), and the message
    /// says what the version's agents can do.
    pub fn for_version(mut self, adapter: &dyn crate::protocol::Adapter) -> Self {
        if self.code.starts_with("idempotency_") && adapter.idempotency_error_type() == "request_not_idempotent" {
            self.error_type = ErrorType::RequestNotIdempotent;
        }
        self.param = self.param.and_then(|p| adapter.request_param(&p));
        self.message = adapter.error_message(&self.code, self.message);
        self
    }

    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed for this path",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid bearer token is required",
        )
    }

    /// A failure the client cannot fix; the cause is logged by the caller, never sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "processing_error",
            "The request could not be processed",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error_type: self.error_type,
            code: &self.code,
            message: &self.message,
            param: self.param.as_deref(),
            supported_versions: self.supported_versions.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.transient {
            response.extensions_mut().insert(Transient);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                if matches!(e, sqlx::Error::PoolTimedOut) {
                    metrics::counter!(crate::observability::metrics::DB_POOL_ACQUIRE_TIMEOUTS).increment(1);
                }
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable("The service is temporarily unavailable; retry later").with_retry_after(1)
            }
            // Deadlock victim or serialization failure: nothing was written, and the same request will succeed.
            sqlx::Error::Database(ref db) if matches!(db.code().as_deref(), Some("40P01" | "40001")) => {
                tracing::warn!(error = %e, "transaction aborted by a concurrent one; the client should retry");
                Self::unavailable("The request conflicted with a concurrent one; retry").with_retry_after(1)
            }
            other => {
                tracing::error!(error = %other, "database error");
                Self::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_timeout_is_a_503_and_is_counted() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let status = metrics::with_local_recorder(&recorder, || {
            let _ = ApiError::from(sqlx::Error::Io(std::io::Error::other("reset")));
            ApiError::from(sqlx::Error::PoolTimedOut).into_response().status()
        });
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let text = handle.render();
        assert!(
            text.contains("acp_db_pool_acquire_timeouts_total 1"),
            "only the pool timeout counts: {text}"
        );
    }
}
