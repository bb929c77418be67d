//! The outbox seen by delivery workers: every operation is one statement (its own short transaction), so no
//! transaction is ever open while a webhook is in flight.
//!
//! A claim marks events `delivering` with the worker's `holder` id and a lease; an outcome is recorded only while
//! the worker still holds the lease, so a worker that lost its claim (the lease ended and another worker took the
//! event) cannot overwrite the newer state.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// A claimed event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub event_id: Uuid,
    pub sequence: i64,
    pub order_id: String,
    pub agent_id: String,
    /// Set for a merchant endpoint's event; `None`: the agent's.
    pub endpoint_id: Option<String>,
    pub event_type: String,
    pub payload: Value,
    pub attempts: i32,
    pub client_error_attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` due events for `holder` for `lease`, in sequence order. Due: pending and at or past its
/// next attempt, or `delivering` under a lease that has ended (its worker died or stalled). Per-stream ordering
/// (a stream is an order's events for one destination; migration `merchant_webhooks`): an event is eligible only
/// when no earlier event of its stream is undelivered (pending or being delivered), so a batch holds at most the
/// earliest undelivered event of each stream. `SKIP LOCKED` keeps concurrent claims apart.
/// The plain `status in (…)` lets the planner walk the partial index of undelivered events in sequence order.
pub async fn claim(pool: &PgPool, holder: Uuid, limit: u32, lease: Duration) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut claimed: Vec<Claimed> = sqlx::query_as(
        "with due as (
             select e.event_id from webhook_event e
             where e.status in ('pending', 'delivering')
               and ((e.status = 'pending' and e.next_attempt_at <= now())
                    or (e.status = 'delivering' and e.lease_until < now()))
               and not exists (select 1 from webhook_event p
                               where p.stream = e.stream and p.sequence < e.sequence
                                 and p.status in ('pending', 'delivering'))
             order by e.sequence
             limit $1
             for update skip locked)
         update webhook_event e
         set status = 'delivering', holder = $2, lease_until = now() + $3 * interval '1 millisecond'
         from due where e.event_id = due.event_id
         returning e.event_id, e.sequence, e.order_id, e.agent_id, e.endpoint_id, e.event_type, e.payload, e.attempts,
                   e.client_error_attempts, e.created_at",
    )
    .bind(i64::from(limit))
    .bind(holder)
    .bind(millis(lease))
    .fetch_all(pool)
    .await?;
    claimed.sort_by_key(|c| c.sequence);
    Ok(claimed)
}

/// The event's next state after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextState {
    Delivered,
    Retry { after: Duration, client_error: bool },
    Dead,
}

/// What one attempt did, as stored in `webhook_attempt`.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub url: String,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    /// `last_error` of the event (none once delivered).
    pub last_error: Option<String>,
}

/// Records the attempt and the event's next state in one statement, only if `holder` still holds the event.
/// Returns whether it did (false: the lease was lost and another worker owns the event now).
pub async fn record(
    pool: &PgPool,
    event_id: Uuid,
    holder: Uuid,
    next: NextState,
    attempt: &AttemptRecord,
) -> Result<bool, sqlx::Error> {
    let (status, retry_after, client_error) = match next {
        NextState::Delivered => ("delivered", Duration::ZERO, false),
        NextState::Retry { after, client_error } => ("pending", after, client_error),
        NextState::Dead => ("dead", Duration::ZERO, false),
    };
    let done = sqlx::query(
        "with owned as (
             update webhook_event
             set status = $3, attempts = attempts + 1, client_error_attempts = client_error_attempts + $4,
                 next_attempt_at = case when $3 = 'pending' then now() + $5 * interval '1 millisecond'
                                        else next_attempt_at end,
                 delivered_at = case when $3 = 'delivered' then now() else delivered_at end,
                 last_error = $6, holder = null, lease_until = null
             where event_id = $1 and holder = $2 and status = 'delivering'
             returning event_id)
         insert into webhook_attempt (event_id, url, response_status, error, duration_ms)
         select event_id, $7, $8, $9, $10 from owned",
    )
    .bind(event_id)
    .bind(holder)
    .bind(status)
    .bind(i32::from(client_error))
    .bind(millis(retry_after))
    .bind(&attempt.last_error)
    .bind(&attempt.url)
    .bind(attempt.response_status)
    .bind(&attempt.error)
    .bind(attempt.duration_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Extends the leases `holder` still has on `events` to `lease` from now.
pub async fn renew(pool: &PgPool, holder: Uuid, events: &[Uuid], lease: Duration) -> Result<u64, sqlx::Error> {
    let renewed = sqlx::query(
        "update webhook_event set lease_until = now() + $3 * interval '1 millisecond'
         where holder = $1 and status = 'delivering' and event_id = any($2)",
    )
    .bind(holder)
    .bind(events)
    .bind(millis(lease))
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected())
}

/// Hands back the events `holder` still has (`only` these, or all of them when stopping: claimed but not
/// attempted, or cut off): due again now, for any worker, with the same id.
pub async fn release(pool: &PgPool, holder: Uuid, only: Option<&[Uuid]>) -> Result<u64, sqlx::Error> {
    let released = sqlx::query(
        "update webhook_event set status = 'pending', holder = null, lease_until = null
         where holder = $1 and status = 'delivering' and ($2::uuid[] is null or event_id = any($2))",
    )
    .bind(holder)
    .bind(only)
    .execute(pool)
    .await?;
    Ok(released.rows_affected())
}

#[allow(clippy::cast_precision_loss)] // leases and delays are far below 2^52 ms
fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}
