//! Payment attempts: the durable record of every complete attempt (table `payment_attempt`).
//!
//! An attempt is written in the transaction that reserves stock and moves the session to
//! `complete_in_progress`, before the PSP is called, with the PSP key every request for it will carry. From then
//! on the attempt, not the HTTP request, owns the payment:
//!
//! | state | meaning | session |
//! |---|---|---|
//! | `started` | the PSP is being (or was about to be) called | `complete_in_progress` |
//! | `indeterminate` | the PSP's answer did not prove the outcome | `complete_in_progress`, stock and redemptions kept |
//! | `succeeded` | charged (or authorized): the order exists | `completed` |
//! | `declined` | the PSP refused the payment: nothing charged | payable again, `payment_declined` message |
//! | `requires_action` | the payment waits for 3-D Secure: it is live at the PSP | `authentication_required` |
//! | `failed` | proven not charged otherwise (never sent, refused as a merchant fault, canceled, absent) | payable again |
//! | `canceled` | a `requires_action` payment canceled at the PSP (before a successor, or when the session ended) | — |
//!
//! Only `started` and `indeterminate` are *open*. Exactly one worker may act on an open attempt at a time: the
//! runner, holding a short lease renewed by a heartbeat while the PSP call runs. A runner that dies loses the
//! lease within seconds; a retry, another request or the reconciler then takes the attempt over and settles it
//! by asking the PSP. Every write that settles an attempt checks, under the row lock, that the attempt is still
//! open and still run by the writer (fencing), so a stale runner commits nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, types::Json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    Started,
    Indeterminate,
    Succeeded,
    Declined,
    RequiresAction,
    Failed,
    Canceled,
}

impl AttemptState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Indeterminate => "indeterminate",
            Self::Succeeded => "succeeded",
            Self::Declined => "declined",
            Self::RequiresAction => "requires_action",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "started" => Self::Started,
            "indeterminate" => Self::Indeterminate,
            "succeeded" => Self::Succeeded,
            "declined" => Self::Declined,
            "requires_action" => Self::RequiresAction,
            "canceled" => Self::Canceled,
            _ => Self::Failed,
        }
    }

    pub fn is_open(self) -> bool {
        matches!(self, Self::Started | Self::Indeterminate)
    }
}

/// One variant's reserved units.
pub type Reservation = Vec<(String, u32)>;

#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub checkout_session_id: String,
    pub number: i32,
    pub psp_idempotency_key: String,
    pub request_fingerprint: Vec<u8>,
    pub amount: i64,
    pub currency: String,
    pub api_version: String,
    pub order_reference: String,
    pub reservation: Reservation,
    pub psp_payment_id: Option<String>,
    pub state: AttemptState,
    pub outcome_detail: Option<String>,
    pub runner: Option<Uuid>,
    /// Whether the runner's lease is still running (computed by the database clock).
    pub lease_live: bool,
    pub lease_left_ms: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    payment_attempt_id: String,
    checkout_session_id: String,
    attempt_number: i32,
    psp_idempotency_key: String,
    request_fingerprint: Vec<u8>,
    amount: i64,
    currency: String,
    api_version: String,
    order_reference: String,
    reservation: Json<Reservation>,
    psp_payment_id: Option<String>,
    state: String,
    outcome_detail: Option<String>,
    runner: Option<Uuid>,
    lease_live: bool,
    lease_left_ms: i64,
    created_at: DateTime<Utc>,
}

impl From<Row> for Attempt {
    fn from(r: Row) -> Self {
        Self {
            id: r.payment_attempt_id,
            checkout_session_id: r.checkout_session_id,
            number: r.attempt_number,
            psp_idempotency_key: r.psp_idempotency_key,
            request_fingerprint: r.request_fingerprint,
            amount: r.amount,
            currency: r.currency,
            api_version: r.api_version,
            order_reference: r.order_reference,
            reservation: r.reservation.0,
            psp_payment_id: r.psp_payment_id,
            state: AttemptState::parse(&r.state),
            outcome_detail: r.outcome_detail,
            runner: r.runner,
            lease_live: r.lease_live,
            lease_left_ms: r.lease_left_ms,
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str = "payment_attempt_id, checkout_session_id, attempt_number, psp_idempotency_key,
    request_fingerprint, amount, currency, api_version, order_reference, reservation, psp_payment_id, state,
    outcome_detail, runner, coalesce(lease_until > now(), false) as lease_live,
    greatest(coalesce((extract(epoch from lease_until - now()) * 1000)::bigint, 0), 0) as lease_left_ms, created_at";

/// What a new attempt starts with.
pub struct NewAttempt<'a> {
    pub id: &'a str,
    pub checkout_session_id: &'a str,
    pub number: i32,
    pub psp_idempotency_key: &'a str,
    pub request_fingerprint: &'a [u8],
    pub amount: i64,
    pub currency: &'a str,
    pub api_version: &'a str,
    pub order_reference: &'a str,
    pub reservation: &'a Reservation,
    pub runner: Uuid,
    pub lease: Duration,
}

pub fn new_id() -> String {
    format!("pa_{}", Uuid::now_v7().simple())
}

fn lease_ms(lease: Duration) -> f64 {
    lease.as_millis() as f64
}

/// Inserts a `started` attempt run by `runner`, in the transaction that reserves the stock.
#[tracing::instrument(name = "db.payment_attempt.insert", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
pub async fn insert(conn: &mut PgConnection, a: &NewAttempt<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into payment_attempt (payment_attempt_id, checkout_session_id, attempt_number, psp_idempotency_key,
             request_fingerprint, amount, currency, api_version, order_reference, reservation, state, runner,
             lease_until)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'started', $11, now() + $12 * interval '1 millisecond')",
    )
    .bind(a.id)
    .bind(a.checkout_session_id)
    .bind(a.number)
    .bind(a.psp_idempotency_key)
    .bind(a.request_fingerprint)
    .bind(a.amount)
    .bind(a.currency)
    .bind(a.api_version)
    .bind(a.order_reference)
    .bind(Json(a.reservation))
    .bind(a.runner)
    .bind(lease_ms(a.lease))
    .execute(conn)
    .await?;
    Ok(())
}

/// Loads an attempt, locking its row until the transaction ends.
pub async fn load_for_update(conn: &mut PgConnection, id: &str) -> Result<Option<Attempt>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from payment_attempt where payment_attempt_id = $1 for update"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Attempt::from))
}

pub async fn load(conn: &mut PgConnection, id: &str) -> Result<Option<Attempt>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from payment_attempt where payment_attempt_id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Attempt::from))
}

/// The attempt a PSP payment belongs to: by its recorded payment id, or by the attempt id the PSP echoes back.
pub async fn find(
    conn: &mut PgConnection,
    attempt_id: Option<&str>,
    psp_payment_id: Option<&str>,
) -> Result<Option<Attempt>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from payment_attempt where payment_attempt_id = $1 or psp_payment_id = $2 limit 1"
    )))
    .bind(attempt_id)
    .bind(psp_payment_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Attempt::from))
}

/// Makes `runner` the attempt's runner if the attempt is open and nobody's lease is running. In the caller's
/// transaction, after [`load_for_update`].
pub async fn take_over(conn: &mut PgConnection, id: &str, runner: Uuid, lease: Duration) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "update payment_attempt set runner = $2, lease_until = now() + $3 * interval '1 millisecond',
                                    updated_at = now()
         where payment_attempt_id = $1 and state in ('started', 'indeterminate')
           and (lease_until is null or lease_until <= now())",
    )
    .bind(id)
    .bind(runner)
    .bind(lease_ms(lease))
    .execute(conn)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// Extends the runner's lease; false when the attempt is no longer run by `runner` (or no longer open).
pub async fn renew(pool: &PgPool, id: &str, runner: Uuid, lease: Duration) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query(
        "update payment_attempt set lease_until = now() + $3 * interval '1 millisecond'
         where payment_attempt_id = $1 and runner = $2 and state in ('started', 'indeterminate')",
    )
    .bind(id)
    .bind(runner)
    .bind(lease_ms(lease))
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Records a new state (and what is known with it), ending any lease: in the settling transaction.
pub async fn set_state(
    conn: &mut PgConnection,
    id: &str,
    state: AttemptState,
    psp_payment_id: Option<&str>,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update payment_attempt
         set state = $2, psp_payment_id = coalesce($3, psp_payment_id), outcome_detail = coalesce($4, outcome_detail),
             runner = null, lease_until = null, updated_at = now(),
             resolved_at = case when $2 in ('started', 'indeterminate') then null else now() end
         where payment_attempt_id = $1",
    )
    .bind(id)
    .bind(state.as_str())
    .bind(psp_payment_id)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// Open attempts nobody runs that a reconciler should settle: `indeterminate` ones at once, `started` ones once
/// untouched for `started_after` (their runner died between the commit and the PSP's answer).
pub async fn due_for_reconciliation(
    pool: &PgPool,
    started_after: Duration,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select payment_attempt_id from payment_attempt
         where state in ('started', 'indeterminate') and (lease_until is null or lease_until <= now())
           and (state = 'indeterminate' or updated_at <= now() - $1 * interval '1 millisecond')
         order by updated_at limit $2",
    )
    .bind(lease_ms(started_after))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// `requires_action` attempts of sessions that ended (canceled, expired, completed by another attempt): their
/// live PaymentIntent must be canceled.
pub async fn live_on_ended_sessions(pool: &PgPool, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select a.payment_attempt_id from payment_attempt a
         join checkout_session s on s.checkout_session_id = a.checkout_session_id
         where a.state = 'requires_action' and s.status in ('canceled', 'expired', 'completed')
         order by a.updated_at limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The session's attempt that holds a live payment waiting for 3-D Secure, if any.
pub async fn live_for_session(conn: &mut PgConnection, session_id: &str) -> Result<Option<Attempt>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from payment_attempt
         where checkout_session_id = $1 and state = 'requires_action' and psp_payment_id is not null
         order by attempt_number desc limit 1"
    )))
    .bind(session_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Attempt::from))
}

/// Renews the runner's lease every `every` until `stop` fires (or the lease is lost). The lease outlives a
/// slow PSP call this way, and ends within one lease of the process dying.
pub fn keep_alive(pool: PgPool, id: String, runner: Uuid, lease: Duration, every: Duration) -> CancellationToken {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stopped.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match renew(&pool, &id, runner, lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(payment_attempt_id = %id, "payment attempt lease lost to another worker");
                    return;
                }
                Err(e) => {
                    tracing::warn!(payment_attempt_id = %id, error = %e, "could not renew a payment attempt lease")
                }
            }
        }
    });
    stop
}
