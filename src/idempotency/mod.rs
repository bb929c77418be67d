//! Idempotency as ACP §6 requires, backed by PostgreSQL.
//!
//! - Scope: (agent, method, path, key); the path includes the session id, so one key on two endpoints or two
//!   sessions gives independent results.
//! - Fingerprint: SHA-256 of the body's RFC 8785 canonical form (key order irrelevant, `1.0` = `1`, `null` ≠
//!   absent, arrays order-sensitive, unknown fields included). An empty body fingerprints as `{}`.
//! - A request first claims its record (`in_flight`, with a short lease renewed by a heartbeat while it runs) by
//!   inserting it: the primary key decides between concurrent requests and processes. The record becomes
//!   `finished`, with the response, in the same transaction as the business write ([`Claim::finish`]), so a crash
//!   leaves both or neither.
//! - 5xx responses are never stored. Before a payment was attempted the record is deleted and a retry runs fresh.
//!   Once a complete call has started a payment attempt, the record is linked to it (`payment_attempt_id`,
//!   recovery point `payment_attempted`) and is never deleted while the attempt is open: a 5xx ends its lease at
//!   once ([`ClaimHandle::yield_lease`]) so the next retry resumes the attempt, and whoever settles the attempt
//!   (that retry, another request, the reconciler, a Stripe event) stores the answer of every record linked to it
//!   ([`finish_for_attempt`]), so the agent's key then replays the outcome.
//! - A record whose holder died stays `in_flight` until its lease ends (seconds); then a retry takes it over.
//! - Records live `retention` (≥ 24 h in production); a sweeper deletes older ones (never one linked to an open
//!   attempt) and a reused expired key is a new request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The lease ran out and another request took the record over: this request must not commit.
    #[error("the idempotency record was taken over by a retry")]
    LostLease,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// SHA-256 of the RFC 8785 canonical form of `body` (raw bytes when it is not JSON, which the handler refuses).
pub fn fingerprint(body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    match canonical(body) {
        Some(c) => h.update(c.as_bytes()),
        None => {
            h.update(b"raw\0");
            h.update(body);
        }
    }
    h.finalize().to_vec()
}

/// The RFC 8785 canonical form of a JSON `body` (`{}` for an empty one); `None` when it is not JSON. Public so the
/// fuzz run can check that it is idempotent and blind to key order and whitespace.
pub fn canonical(body: &[u8]) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some("{}".to_owned());
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json_canonicalizer::to_string(&v).ok())
}

#[derive(Debug, Clone)]
pub struct Scope {
    pub agent_id: String,
    pub method: String,
    pub path: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryPoint {
    Started,
    /// A payment attempt exists for this request: the PSP may have been charged.
    PaymentAttempted,
}

/// Ownership of an in-flight record.
#[derive(Debug, Clone)]
pub struct Claim {
    pub scope: Scope,
    holder: Uuid,
    pub recovery_point: RecoveryPoint,
    pub payment_attempt_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// A JSON answer as it is both sent and stored.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// A JSON answer already printed.
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }
}

pub enum Begin {
    /// Run the request (a new record, or one taken over after its holder's lease ended).
    Proceed(Claim),
    Replay(StoredResponse),
    InFlight {
        retry_after_secs: u64,
    },
    Conflict,
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub lease: Duration,
    pub retention: Duration,
}

/// A statement whose first four parameters are the record's scope (agent, method, path, key).
fn scoped<'q>(
    sql: &'static str,
    scope: &'q Scope,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(&scope.agent_id)
        .bind(&scope.method)
        .bind(&scope.path)
        .bind(&scope.key)
}

fn scoped_as<'q, O>(
    sql: &'static str,
    scope: &'q Scope,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    sqlx::query_as(sql)
        .bind(&scope.agent_id)
        .bind(&scope.method)
        .bind(&scope.path)
        .bind(&scope.key)
}

#[derive(sqlx::FromRow)]
struct Existing {
    fingerprint: Vec<u8>,
    state: String,
    lease_over: bool,
    expired: bool,
    response_status: Option<i16>,
    response_headers: Option<serde_json::Value>,
    response_body: Option<Vec<u8>>,
    lease_left: f64,
}

/// A stored answer's columns: status, headers, body.
type AnswerRow = (Option<i16>, Option<serde_json::Value>, Option<Vec<u8>>);

fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

/// A record past its retention is gone as far as ACP is concerned, unless it is linked to an attempt that is
/// still open (its answer is not known yet, and the agent's retry must find the attempt).
const EXPIRED: &str = "expires_at <= now()
    and not (state = 'in_flight' and payment_attempt_id is not null and exists (
        select 1 from payment_attempt a where a.payment_attempt_id = idempotency_record.payment_attempt_id
          and a.state in ('started', 'indeterminate')))";

/// Claims the record for `scope`, or says why the request must not run now.
#[tracing::instrument(name = "db.idempotency.begin", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
pub async fn begin(
    pool: &PgPool,
    scope: &Scope,
    fingerprint: &[u8],
    policy: Policy,
    api_version: Option<&str>,
) -> Result<Begin, sqlx::Error> {
    let holder = Uuid::new_v4();
    let lease_ms = millis(policy.lease);
    let retention_ms = millis(policy.retention);
    // Insert first: a new key (the common case) costs this one statement. An expired record in the way is found
    // below and deleted before claiming again.
    let inserted = scoped(
        "insert into idempotency_record
             (agent_id, method, path, idempotency_key, fingerprint, state, holder, lease_until, expires_at,
              api_version)
         values ($1, $2, $3, $4, $5, 'in_flight', $6,
                 now() + $7 * interval '1 millisecond', now() + $8 * interval '1 millisecond', $9)
         on conflict do nothing",
        scope,
    )
    .bind(fingerprint)
    .bind(holder)
    .bind(lease_ms)
    .bind(retention_ms)
    .bind(api_version)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Begin::Proceed(Claim {
            scope: scope.clone(),
            holder,
            recovery_point: RecoveryPoint::Started,
            payment_attempt_id: None,
        }));
    }
    let row: Option<Existing> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select fingerprint, state, lease_until <= now() as lease_over, ({EXPIRED}) as expired,
                response_status, response_headers, response_body,
                greatest(extract(epoch from lease_until - now()), 0)::float8 as lease_left
         from idempotency_record
         where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4"
    )))
    .bind(&scope.agent_id)
    .bind(&scope.method)
    .bind(&scope.path)
    .bind(&scope.key)
    .fetch_optional(pool)
    .await?;
    let Some(existing) = row else {
        // Deleted between our insert and select (a 5xx released it): claim again.
        return Box::pin(begin(pool, scope, fingerprint, policy, api_version)).await;
    };
    if existing.expired {
        // Past its retention: the key is new again (ACP §6), whatever the old record said.
        delete_expired(pool, scope).await?;
        return Box::pin(begin(pool, scope, fingerprint, policy, api_version)).await;
    }
    // A different body is a conflict whatever the record's state (DIGEST §2.5 gap (b)).
    if existing.fingerprint != fingerprint {
        return Ok(Begin::Conflict);
    }
    if existing.state == "finished" {
        return Ok(Begin::Replay(stored(
            existing.response_status,
            existing.response_headers,
            existing.response_body,
        )));
    }
    if !existing.lease_over {
        return Ok(Begin::InFlight {
            retry_after_secs: (existing.lease_left.ceil() as u64).clamp(1, 60),
        });
    }
    take_over(pool, scope, holder, lease_ms).await
}

async fn delete_expired(pool: &PgPool, scope: &Scope) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "delete from idempotency_record
         where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4 and {EXPIRED}"
    )))
    .bind(&scope.agent_id)
    .bind(&scope.method)
    .bind(&scope.path)
    .bind(&scope.key)
    .execute(pool)
    .await?;
    Ok(())
}

fn stored(status: Option<i16>, headers: Option<serde_json::Value>, body: Option<Vec<u8>>) -> StoredResponse {
    StoredResponse {
        status: status.unwrap_or(200) as u16,
        headers: headers
            .and_then(|h| serde_json::from_value::<Vec<(String, String)>>(h).ok())
            .unwrap_or_default(),
        body: body.unwrap_or_default(),
    }
}

/// Takes over a record whose holder's lease ended (its process died or hung, or it gave the lease up after a
/// 5xx): exactly one retry wins.
async fn take_over(pool: &PgPool, scope: &Scope, holder: Uuid, lease_ms: f64) -> Result<Begin, sqlx::Error> {
    let taken: Option<(String, Option<String>)> = scoped_as(
        "update idempotency_record
         set holder = $5, lease_until = now() + $6 * interval '1 millisecond'
         where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4
           and state = 'in_flight' and lease_until <= now()
         returning recovery_point, payment_attempt_id",
        scope,
    )
    .bind(holder)
    .bind(lease_ms)
    .fetch_optional(pool)
    .await?;
    Ok(match taken {
        Some((point, payment_attempt_id)) => {
            tracing::warn!(path = %scope.path, "resuming a request whose previous attempt did not finish");
            Begin::Proceed(Claim {
                scope: scope.clone(),
                holder,
                recovery_point: if point == "payment_attempted" {
                    RecoveryPoint::PaymentAttempted
                } else {
                    RecoveryPoint::Started
                },
                payment_attempt_id,
            })
        }
        None => Begin::InFlight { retry_after_secs: 1 },
    })
}

impl Claim {
    /// Links the record to a payment attempt (recovery point `payment_attempted`), in the transaction that
    /// creates or takes over the attempt.
    pub async fn link_attempt(&mut self, conn: &mut PgConnection, attempt_id: &str) -> Result<(), IdempotencyError> {
        let updated = scoped(
            "update idempotency_record set recovery_point = 'payment_attempted', payment_attempt_id = $6
             where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4 and holder = $5
               and state = 'in_flight'",
            &self.scope,
        )
        .bind(self.holder)
        .bind(attempt_id)
        .execute(conn)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(IdempotencyError::LostLease);
        }
        self.recovery_point = RecoveryPoint::PaymentAttempted;
        self.payment_attempt_id = Some(attempt_id.to_owned());
        Ok(())
    }

    /// Stores the response and marks the record finished, in the caller's (business) transaction.
    #[tracing::instrument(name = "db.idempotency.finish", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
    pub async fn finish(&self, conn: &mut PgConnection, response: &StoredResponse) -> Result<(), IdempotencyError> {
        let headers = serde_json::to_value(&response.headers).unwrap_or_default();
        let updated = scoped(
            "update idempotency_record
             set state = 'finished', response_status = $6, response_headers = $7, response_body = $8
             where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4 and holder = $5
               and state = 'in_flight'",
            &self.scope,
        )
        .bind(self.holder)
        .bind(response.status as i16)
        .bind(headers)
        .bind(&response.body)
        .execute(conn)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(IdempotencyError::LostLease);
        }
        Ok(())
    }

    /// Forgets the record (after a 5xx before any payment attempt), so a retry runs fresh.
    pub async fn release(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        scoped(
            "delete from idempotency_record
             where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4 and holder = $5
               and state = 'in_flight' and recovery_point = 'started'",
            &self.scope,
        )
        .bind(self.holder)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Ends the lease now but keeps the record and its recovery point: the next retry takes over at once.
    pub async fn yield_lease(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        scoped(
            "update idempotency_record set lease_until = now()
             where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4 and holder = $5
               and state = 'in_flight'",
            &self.scope,
        )
        .bind(self.holder)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Extends the lease (heartbeat); false when the record is no longer ours or no longer in flight.
    pub async fn renew(&self, pool: &PgPool, lease: Duration) -> Result<bool, sqlx::Error> {
        let renewed = scoped(
            "update idempotency_record set lease_until = now() + $6 * interval '1 millisecond'
             where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4 and holder = $5
               and state = 'in_flight'",
            &self.scope,
        )
        .bind(self.holder)
        .bind(millis(lease))
        .execute(pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// The stored answer, when somebody else finished the record (a resolver of its payment attempt).
    pub async fn stored_answer(&self, pool: &PgPool) -> Result<Option<StoredResponse>, sqlx::Error> {
        let row: Option<AnswerRow> = scoped_as(
            "select response_status, response_headers, response_body from idempotency_record
             where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4 and state = 'finished'",
            &self.scope,
        )
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(status, headers, body)| stored(status, headers, body)))
    }
}

/// A claim shared by the HTTP layer (heartbeat, settle) and the use case that finishes it in its transaction.
#[derive(Clone)]
pub struct ClaimHandle(Arc<HandleInner>);

struct HandleInner {
    claim: tokio::sync::Mutex<Claim>,
    finished: AtomicBool,
}

impl ClaimHandle {
    pub fn new(claim: Claim) -> Self {
        Self(Arc::new(HandleInner {
            claim: tokio::sync::Mutex::new(claim),
            finished: AtomicBool::new(false),
        }))
    }

    pub async fn claim(&self) -> tokio::sync::MutexGuard<'_, Claim> {
        self.0.claim.lock().await
    }

    /// The client's key, for operations that derive ids from it.
    pub async fn key(&self) -> String {
        self.claim().await.scope.key.clone()
    }

    pub async fn payment_attempt_id(&self) -> Option<String> {
        self.claim().await.payment_attempt_id.clone()
    }

    pub async fn link_attempt(&self, conn: &mut PgConnection, attempt_id: &str) -> Result<(), IdempotencyError> {
        self.claim().await.link_attempt(conn, attempt_id).await
    }

    /// Stores `response` as the key's answer, in the business transaction.
    pub async fn finish(&self, conn: &mut PgConnection, response: &StoredResponse) -> Result<(), IdempotencyError> {
        self.claim().await.finish(conn, response).await?;
        self.mark_finished();
        Ok(())
    }

    /// Records that the answer was stored by someone else (or in a transaction that finished every record linked
    /// to the payment attempt).
    pub fn mark_finished(&self) {
        self.0.finished.store(true, Ordering::SeqCst);
    }

    pub fn is_finished(&self) -> bool {
        self.0.finished.load(Ordering::SeqCst)
    }
}

/// Stores the answer of every in-flight record linked to `attempt_id`, each rendered for its own ACP version,
/// in the caller's transaction (the one that settles the attempt). Returns how many.
pub async fn finish_for_attempt(
    conn: &mut PgConnection,
    attempt_id: &str,
    render: impl Fn(Option<&str>) -> StoredResponse,
) -> Result<u64, sqlx::Error> {
    let records: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "select agent_id, method, path, idempotency_key, api_version from idempotency_record
         where payment_attempt_id = $1 and state = 'in_flight' for update",
    )
    .bind(attempt_id)
    .fetch_all(&mut *conn)
    .await?;
    for (agent_id, method, path, key, version) in &records {
        let response = render(version.as_deref());
        sqlx::query(
            "update idempotency_record
             set state = 'finished', response_status = $5, response_headers = $6, response_body = $7
             where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4",
        )
        .bind(agent_id)
        .bind(method)
        .bind(path)
        .bind(key)
        .bind(response.status as i16)
        .bind(serde_json::to_value(&response.headers).unwrap_or_default())
        .bind(&response.body)
        .execute(&mut *conn)
        .await?;
    }
    Ok(records.len() as u64)
}

/// Unlinks every in-flight record from `attempt_id` (it ended without a charge and without an answer worth
/// storing): their next retry runs fresh, now.
pub async fn reset_for_attempt(conn: &mut PgConnection, attempt_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update idempotency_record
         set recovery_point = 'started', payment_attempt_id = null, lease_until = least(lease_until, now())
         where payment_attempt_id = $1 and state = 'in_flight'",
    )
    .bind(attempt_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends the lease of every in-flight record linked to `attempt_id` (its outcome is unknown for now): the agent's
/// next retry takes over at once and resumes the attempt.
pub async fn yield_for_attempt(conn: &mut PgConnection, attempt_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update idempotency_record set lease_until = least(lease_until, now())
         where payment_attempt_id = $1 and state = 'in_flight'",
    )
    .bind(attempt_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// What the one-transaction claim ([`claim_in_transaction`]) found.
#[derive(Debug)]
pub enum Claimed {
    /// The key is free (or its record expired, or its holder died): run the request in this transaction and
    /// store the answer with [`record_finished`] before committing.
    Proceed,
    Replay(StoredResponse),
    InFlight {
        retry_after_secs: u64,
    },
    Conflict,
}

/// The advisory-lock id of a scope: 64 bits of the SHA-256 of its four parts (each length-prefixed, so no two
/// scopes share an encoding).
pub fn scope_lock_id(scope: &Scope) -> i64 {
    let mut h = Sha256::new();
    for part in [&scope.agent_id, &scope.method, &scope.path, &scope.key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[derive(sqlx::FromRow)]
struct Locked {
    locked: bool,
    fingerprint: Option<Vec<u8>>,
    state: Option<String>,
    lease_over: Option<bool>,
    expired: Option<bool>,
    response_status: Option<i16>,
    response_headers: Option<serde_json::Value>,
    response_body: Option<Vec<u8>>,
    lease_left: Option<f64>,
}

/// The claim's one statement (see [`claim_in_transaction`]).
static CLAIM_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "select l.locked, r.fingerprint, r.state, r.lease_over, r.expired,
                    r.response_status, r.response_headers, r.response_body, r.lease_left
             from (select pg_try_advisory_xact_lock($5) as locked) l
             left join lateral (
                 select fingerprint, state, lease_until <= now() as lease_over, ({EXPIRED}) as expired,
                        response_status, response_headers, response_body,
                        greatest(extract(epoch from lease_until - now()), 0)::float8 as lease_left
                 from idempotency_record
                 where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4 and l.locked
             ) r on true"
    )
});

/// Claims `scope` for the caller's transaction in one statement: a transaction-scoped advisory lock on the scope
/// (not obtained: the same request is running, 409 at once) and the scope's record, read only once the lock is
/// held. The lock lives until the transaction ends, so no lease or heartbeat is needed; the record is written
/// once, finished, by [`record_finished`] in the same transaction. A record left by the committed-claim path
/// ([`begin`]) keeps its meaning: in flight under a live lease → 409; lease over (its holder died before
/// committing anything) or past retention → deleted in this transaction and the request runs.
#[tracing::instrument(name = "db.idempotency.claim", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
pub async fn claim_in_transaction(
    conn: &mut PgConnection,
    scope: &Scope,
    fingerprint: &[u8],
) -> Result<Claimed, sqlx::Error> {
    // The lock is taken in a subquery the record's lateral read depends on, so the read runs after it.
    let found: Locked = scoped_as(CLAIM_SQL.as_str(), scope)
        .bind(scope_lock_id(scope))
        .fetch_one(&mut *conn)
        .await?;
    if !found.locked {
        return Ok(Claimed::InFlight { retry_after_secs: 1 });
    }
    let Some(state) = found.state else {
        return Ok(Claimed::Proceed);
    };
    if found.expired == Some(true) {
        return forget_stale(conn, scope).await;
    }
    // A different body is a conflict whatever the record's state (DIGEST §2.5 gap (b)).
    if found.fingerprint.as_deref() != Some(fingerprint) {
        return Ok(Claimed::Conflict);
    }
    if state == "finished" {
        return Ok(Claimed::Replay(stored(
            found.response_status,
            found.response_headers,
            found.response_body,
        )));
    }
    if found.lease_over != Some(true) {
        return Ok(Claimed::InFlight {
            retry_after_secs: (found.lease_left.unwrap_or(1.0).ceil() as u64).clamp(1, 60),
        });
    }
    forget_stale(conn, scope).await
}

/// Deletes an expired record, or an in-flight one whose holder died before any payment attempt, in the claiming
/// transaction (a record linked to an open payment attempt is kept, and the request waits).
async fn forget_stale(conn: &mut PgConnection, scope: &Scope) -> Result<Claimed, sqlx::Error> {
    let deleted = scoped(
        "delete from idempotency_record
         where agent_id = $1 and method = $2 and path = $3 and idempotency_key = $4
           and (state = 'finished' or recovery_point = 'started')",
        scope,
    )
    .execute(conn)
    .await?;
    Ok(if deleted.rows_affected() == 1 {
        Claimed::Proceed
    } else {
        Claimed::InFlight { retry_after_secs: 1 }
    })
}

/// Stores `response` as the key's answer, finished, in the transaction that claimed it with
/// [`claim_in_transaction`]. False when a record appeared meanwhile: a duplicate that committed between this
/// transaction's claim snapshot and its lock; the caller must roll back (the duplicate's answer stands).
#[tracing::instrument(name = "db.idempotency.record", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
pub async fn record_finished(
    conn: &mut PgConnection,
    scope: &Scope,
    fingerprint: &[u8],
    policy: Policy,
    api_version: Option<&str>,
    response: &StoredResponse,
) -> Result<bool, sqlx::Error> {
    let inserted = scoped(
        "insert into idempotency_record
             (agent_id, method, path, idempotency_key, fingerprint, state, holder, lease_until, expires_at,
              api_version, response_status, response_headers, response_body)
         values ($1, $2, $3, $4, $5, 'finished', $6, now(), now() + $7 * interval '1 millisecond', $8, $9, $10, $11)
         on conflict do nothing",
        scope,
    )
    .bind(fingerprint)
    .bind(Uuid::new_v4())
    .bind(millis(policy.retention))
    .bind(api_version)
    .bind(response.status as i16)
    .bind(serde_json::to_value(&response.headers).unwrap_or_default())
    .bind(&response.body)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Deletes records past their retention; returns how many.
pub async fn sweep_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "delete from idempotency_record where {EXPIRED}"
    )))
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

#[cfg(test)]
mod tests {
    use serde_json_canonicalizer::to_string;

    use super::fingerprint;

    fn jcs(text: &str) -> String {
        to_string(&serde_json::from_str::<serde_json::Value>(text).unwrap()).unwrap()
    }

    /// RFC 8785 §3.2.3: the sample input and its canonical form.
    #[test]
    fn rfc8785_sample_object() {
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        let expected = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\
                        \"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
        assert_eq!(jcs(input), expected);
    }

    /// RFC 8785 Appendix B: IEEE 754 doubles and their canonical serialization.
    #[test]
    fn rfc8785_number_table() {
        let table: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, expected) in table {
            let value = serde_json::Value::from(f64::from_bits(*bits));
            assert_eq!(to_string(&value).unwrap(), *expected, "{bits:#018x}");
        }
    }

    #[test]
    fn fingerprints_follow_acp_equivalence() {
        let fp = |s: &str| fingerprint(s.as_bytes());
        assert_eq!(
            fp(r#"{"a":1,"b":[1,2]}"#),
            fp(r#"{ "b": [1, 2], "a": 1.0 }"#),
            "key order and 1.0 == 1"
        );
        assert_ne!(fp(r#"{"a":null}"#), fp(r#"{}"#), "null differs from absent");
        assert_ne!(fp(r#"{"b":[1,2]}"#), fp(r#"{"b":[2,1]}"#), "arrays are order-sensitive");
        assert_ne!(
            fp(r#"{"a":1}"#),
            fp(r#"{"a":1,"x_ext":true}"#),
            "unknown fields take part"
        );
        assert_eq!(fp(""), fp("{}"), "an absent body equals {{}}");
    }
}
