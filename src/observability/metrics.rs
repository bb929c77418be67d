//! Prometheus metrics: recorded through the `metrics` facade into one process-wide recorder, rendered as the
//! Prometheus text format by `GET /metrics` (no exporter listener of its own).
//!
//! Label cardinality is bounded by construction: routes are axum route templates (`unmatched` otherwise),
//! methods are the standard ones (`other` otherwise), API versions are the served ones (`none` otherwise), and
//! every outcome is a fixed name.

use std::{sync::OnceLock, time::Duration};

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::http::AppState;

pub const HTTP_REQUESTS: &str = "acp_http_requests_total";
pub const HTTP_DURATION: &str = "acp_http_request_duration_seconds";
pub const PSP_REQUESTS: &str = "acp_psp_requests_total";
pub const PSP_DURATION: &str = "acp_psp_request_duration_seconds";
pub const WEBHOOK_DELIVERIES: &str = "acp_webhook_deliveries_total";
pub const WEBHOOK_DURATION: &str = "acp_webhook_delivery_duration_seconds";
pub const WEBHOOK_QUEUE_DEPTH: &str = "acp_webhook_queue_depth";
pub const WEBHOOK_OLDEST_AGE: &str = "acp_webhook_oldest_pending_age_seconds";
pub const IDEMPOTENCY_REPLAYS: &str = "acp_idempotency_replays_total";
pub const IDEMPOTENCY_CONFLICTS: &str = "acp_idempotency_conflicts_total";
pub const RECONCILER_RESOLUTIONS: &str = "acp_reconciler_resolutions_total";
pub const DB_POOL_CONNECTIONS: &str = "acp_db_pool_connections";
pub const DB_POOL_MAX: &str = "acp_db_pool_max_connections";
/// Requests that waited for a pooled connection past `ACP_DB_ACQUIRE_TIMEOUT_MS` (sqlx does not expose how many
/// tasks are waiting right now; this counts the waits that ended badly).
pub const DB_POOL_ACQUIRE_TIMEOUTS: &str = "acp_db_pool_acquire_timeouts_total";

/// Latency buckets (seconds) shared by every `_duration_seconds` histogram: 5 ms to 30 s, which covers a cache
/// hit as well as a PSP call at its worst.
const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The Prometheus content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls reuse it). `None` when another recorder was installed
/// first, in which case nothing is recorded here.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
                return None;
            }
            describe();
            Some(handle)
        })
        .as_ref()
}

/// Drains recorded histogram samples into their buckets every `every` until `stop` fires. Without it the samples
/// pile up between scrapes (and forever when nothing scrapes `/metrics`): memory grows with every request.
pub async fn upkeep(every: std::time::Duration, stop: tokio_util::sync::CancellationToken) {
    let Some(handle) = HANDLE.get().and_then(Option::as_ref) else {
        return;
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => handle.run_upkeep(),
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method, status, API version"
    );
    metrics::describe_histogram!(HTTP_DURATION, metrics::Unit::Seconds, "HTTP request latency");
    metrics::describe_counter!(PSP_REQUESTS, "Calls to the payment provider, by operation and outcome");
    metrics::describe_histogram!(PSP_DURATION, metrics::Unit::Seconds, "Payment provider call latency");
    metrics::describe_counter!(WEBHOOK_DELIVERIES, "Webhook delivery attempts, by outcome");
    metrics::describe_histogram!(
        WEBHOOK_DURATION,
        metrics::Unit::Seconds,
        "Webhook delivery attempt latency"
    );
    metrics::describe_gauge!(
        WEBHOOK_QUEUE_DEPTH,
        "Webhook events not delivered yet (pending or being delivered)"
    );
    metrics::describe_gauge!(
        WEBHOOK_OLDEST_AGE,
        metrics::Unit::Seconds,
        "Age of the oldest pending webhook event"
    );
    metrics::describe_counter!(IDEMPOTENCY_REPLAYS, "POSTs answered from a stored idempotent response");
    metrics::describe_counter!(IDEMPOTENCY_CONFLICTS, "Idempotency-Key conflicts, by kind");
    metrics::describe_counter!(
        RECONCILER_RESOLUTIONS,
        "Payment attempts settled by the reconciler, by resolution"
    );
    metrics::describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections, by state (in_use, idle)"
    );
    metrics::describe_gauge!(DB_POOL_MAX, "Largest size the database pool may grow to");
    metrics::describe_counter!(
        DB_POOL_ACQUIRE_TIMEOUTS,
        "Requests that gave up waiting for a pooled database connection"
    );
}

/// A bounded method label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts and times every request by route template, method, status and served API version.
pub async fn track_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let version = request
        .headers()
        .get("api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| state.protocol.enabled(v))
        .map_or("none", |adapter| adapter.version());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", response.status().as_u16().to_string()),
        ("api_version", version.to_owned()),
    ];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// One call to the payment provider: `operation` is charge/lookup/capture/cancel/refund, `outcome` one of
/// succeeded/declined/requires_action/ambiguous/error.
pub fn record_psp(psp: &'static str, operation: &'static str, outcome: &'static str, elapsed: Duration) {
    let labels = [("psp", psp), ("operation", operation), ("outcome", outcome)];
    metrics::counter!(PSP_REQUESTS, &labels).increment(1);
    metrics::histogram!(PSP_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// One webhook delivery attempt: `outcome` is delivered, retry (failed, tried again later) or dead (failed for
/// good).
pub fn record_webhook_delivery(outcome: &'static str, elapsed: Duration) {
    metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
    metrics::histogram!(WEBHOOK_DURATION, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// A POST answered from its stored response.
pub fn record_idempotent_replay() {
    metrics::counter!(IDEMPOTENCY_REPLAYS).increment(1);
}

/// `kind`: `body_mismatch` (422, same key with another body) or `in_flight` (409, the same request is running).
pub fn record_idempotency_conflict(kind: &'static str) {
    metrics::counter!(IDEMPOTENCY_CONFLICTS, "kind" => kind).increment(1);
}

/// `resolution`: charged, declined, requires_action, no_charge, unknown.
pub fn record_reconciler_resolution(resolution: &'static str) {
    metrics::counter!(RECONCILER_RESOLUTIONS, "resolution" => resolution).increment(1);
}

/// Refreshes the gauges computed at scrape time (the pool, the webhook queue with one indexed query), then
/// renders everything in the Prometheus text format.
pub async fn render(pool: &PgPool) -> String {
    let Some(handle) = install() else {
        return String::new();
    };
    refresh_pool_gauges(pool);
    if let Err(e) = refresh_webhook_gauges(pool).await {
        // The rest of the scrape is still worth having; the gauges keep their previous values.
        tracing::warn!(error = %e, "could not read the webhook queue for /metrics");
    }
    handle.run_upkeep();
    handle.render()
}

fn refresh_pool_gauges(pool: &PgPool) {
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set(f64::from(size.saturating_sub(idle)));
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(idle));
    metrics::gauge!(DB_POOL_MAX).set(f64::from(pool.options().get_max_connections()));
}

/// Undelivered events (pending, or claimed and being delivered: both are backlog) and the age of the oldest, from
/// the rows of the partial index on undelivered events.
async fn refresh_webhook_gauges(pool: &PgPool) -> Result<(), sqlx::Error> {
    let (depth, oldest): (i64, Option<f64>) = sqlx::query_as(
        "select count(*), extract(epoch from now() - min(created_at))::float8
         from webhook_event where status in ('pending', 'delivering')",
    )
    .fetch_one(pool)
    .await?;
    #[allow(clippy::cast_precision_loss)] // a queue depth is far below 2^52
    metrics::gauge!(WEBHOOK_QUEUE_DEPTH).set(depth as f64);
    metrics::gauge!(WEBHOOK_OLDEST_AGE).set(oldest.unwrap_or(0.0).max(0.0));
    Ok(())
}
