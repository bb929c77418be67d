//! What operators watch: Prometheus metrics ([`metrics`]) and OpenTelemetry traces ([`traces`]).
//!
//! Both are shaped so that no label or span field can carry a secret, a token, an email or a phone number:
//! labels are route templates, methods, status codes, API versions and fixed outcome names; span fields are
//! identifiers only.

pub mod metrics;
pub mod traces;

use std::future::Future;

tokio::task_local! {
    /// The request id of the request a task works for, so spans opened deep inside it (database, PSP) can carry
    /// it as their own field.
    static REQUEST_ID: String;
}

/// The request id of the current task, when it serves a request (background workers have none).
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `work` as part of the request `request_id`.
pub async fn with_request_id<F: Future>(request_id: String, work: F) -> F::Output {
    REQUEST_ID.scope(request_id, work).await
}

/// Carries the current request id (if any) into `work`, for work spawned as its own task.
pub fn carry_request_id<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let request_id = current_request_id();
    async move {
        match request_id {
            Some(id) => REQUEST_ID.scope(id, work).await,
            None => work.await,
        }
    }
}
