//! The built-in payment simulator, for development and tests. It follows the same model as the Stripe adapter:
//! it behaves like an external PSP that outlives a merchant crash. Every charge is committed to its own table
//! (`simulator_charge`) under the attempt's PSP key, with the attempt id beside it (Stripe's metadata), before it
//! answers; a repeated key gets the recorded charge back, and [`PaymentProvider::lookup`] finds a charge by its id
//! or by the attempt id, exactly (its "nothing found" is authoritative).
//!
//! Test tokens (any other `spt_…` token succeeds):
//! | token | behaviour |
//! |---|---|
//! | `spt_sim_decline` | declined, `card_declined` |
//! | `spt_sim_insufficient_funds` | declined, `insufficient_funds` |
//! | `spt_sim_3ds` | requires 3-D Secure authentication (succeeds once an authentication result is sent) |
//! | `spt_sim_hold` | commits the charge, then blocks before answering until released (admin) or the process dies; a repeated key answers at once, like a PSP replaying its stored response |
//! | `spt_sim_unavailable_once` | the first charge per session and token never leaves (nothing recorded, [`PspError::NotSent`]); later ones succeed |
//! | `spt_sim_lost` | commits the charge, then loses the answer ([`PspError::Ambiguous`]); a replay under the same key answers the recorded charge |
//! | `spt_sim_rejected` | refused before charging, as a PSP refuses a bad parameter ([`PspError::Rejected`]) |

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use sqlx::PgPool;
use tokio::sync::Notify;

use super::{CancelOutcome, ChargeOutcome, ChargeRequest, Lookup, PaymentProvider, PspError, RefundOutcome};

#[derive(Clone)]
pub struct Simulator {
    pool: PgPool,
    release: Arc<Notify>,
    /// (session, token) pairs that already had their one failure (`spt_sim_unavailable_once`).
    failed_once: Arc<Mutex<HashSet<String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Ok,
    Decline,
    InsufficientFunds,
    ThreeDs,
    Hold,
    UnavailableOnce,
    Lost,
    Rejected,
}

impl TokenKind {
    fn of(token: &str) -> Self {
        match token {
            "spt_sim_decline" => Self::Decline,
            "spt_sim_insufficient_funds" => Self::InsufficientFunds,
            "spt_sim_3ds" => Self::ThreeDs,
            "spt_sim_hold" => Self::Hold,
            "spt_sim_unavailable_once" => Self::UnavailableOnce,
            "spt_sim_lost" => Self::Lost,
            "spt_sim_rejected" => Self::Rejected,
            _ => Self::Ok,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Decline => "decline",
            Self::InsufficientFunds => "insufficient_funds",
            Self::ThreeDs => "3ds",
            Self::Hold => "hold",
            Self::UnavailableOnce => "unavailable_once",
            Self::Lost => "lost",
            Self::Rejected => "rejected",
        }
    }
}

/// A charge as the simulator's ledger holds it.
#[derive(sqlx::FromRow)]
struct Recorded {
    charge_id: String,
    status: String,
    token_kind: String,
}

impl Recorded {
    fn outcome(self) -> ChargeOutcome {
        match self.status.as_str() {
            "succeeded" => ChargeOutcome::Succeeded {
                payment_id: self.charge_id,
                captured: true,
            },
            "requires_action" => ChargeOutcome::RequiresAuthentication {
                payment_id: self.charge_id,
            },
            _ if self.token_kind == TokenKind::InsufficientFunds.name() => {
                declined("insufficient_funds", "The card has insufficient funds.", self.charge_id)
            }
            _ => declined("card_declined", "The card was declined.", self.charge_id),
        }
    }

    fn lookup(self) -> Lookup {
        match self.status.as_str() {
            "succeeded" => Lookup::Charged {
                payment_id: self.charge_id,
                captured: true,
            },
            "requires_action" => Lookup::RequiresAuthentication {
                payment_id: self.charge_id,
            },
            other => Lookup::NotCharged {
                payment_id: self.charge_id,
                detail: other.to_owned(),
            },
        }
    }
}

impl Simulator {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            release: Arc::new(Notify::new()),
            failed_once: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Lets every charge blocked on the hold token answer.
    pub fn release_held(&self) {
        self.release.notify_waiters();
    }

    fn first_failure(&self, request: &ChargeRequest) -> bool {
        self.failed_once
            .lock()
            .map(|mut seen| seen.insert(format!("{}\0{}", request.checkout_session_id, request.token)))
            .unwrap_or(false)
    }

    async fn record(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
        let kind = TokenKind::of(&request.token);
        match kind {
            TokenKind::UnavailableOnce if self.first_failure(request) => {
                return Err(PspError::NotSent("simulated outage".into()));
            }
            TokenKind::Rejected => {
                return Err(PspError::Rejected {
                    code: "parameter_invalid".into(),
                    message: "the simulator refuses this request".into(),
                });
            }
            _ => {}
        }
        let status = match kind {
            TokenKind::Decline | TokenKind::InsufficientFunds => "declined",
            TokenKind::ThreeDs if request.three_ds.is_none() => "requires_action",
            _ => "succeeded",
        };
        // Register for the release before the charge commits, so a release right after the commit is not lost.
        let released = self.release.notified();
        let mut released = std::pin::pin!(released);
        released.as_mut().enable();
        // The ledger row commits before we answer, like a PSP that charged and then lost the connection.
        let inserted: Option<Recorded> = sqlx::query_as(
            "insert into simulator_charge (psp_idempotency_key, charge_id, checkout_session_id, amount, currency,
                                           token_kind, status, payment_attempt_id)
             values ($1, $2, $3, $4, $5, $6, $7, $8)
             on conflict (psp_idempotency_key) do nothing
             returning charge_id, status, token_kind",
        )
        .bind(&request.idempotency_key)
        .bind(format!("sim_ch_{}", uuid::Uuid::now_v7().simple()))
        .bind(&request.checkout_session_id)
        .bind(request.amount)
        .bind(&request.currency)
        .bind(kind.name())
        .bind(status)
        .bind(&request.attempt_id)
        .fetch_optional(&self.pool)
        .await?;
        let fresh = inserted.is_some();
        let recorded = match inserted {
            Some(row) => row,
            // A repeated key: answer with the recorded charge, at once.
            None => {
                sqlx::query_as(
                    "select charge_id, status, token_kind from simulator_charge where psp_idempotency_key = $1",
                )
                .bind(&request.idempotency_key)
                .fetch_one(&self.pool)
                .await?
            }
        };
        if fresh && kind == TokenKind::Hold {
            released.await;
        }
        if fresh && kind == TokenKind::Lost {
            return Err(PspError::ambiguous("simulated lost answer after the charge"));
        }
        Ok(recorded.outcome())
    }

    async fn status_of(&self, charge_id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("select status from simulator_charge where charge_id = $1")
            .bind(charge_id)
            .fetch_optional(&self.pool)
            .await
    }
}

fn unknown_charge(charge_id: &str) -> PspError {
    PspError::Rejected {
        code: "resource_missing".into(),
        message: format!("no such charge {charge_id}"),
    }
}

impl PaymentProvider for Simulator {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
        self.record(request).await
    }

    async fn lookup(&self, attempt_id: &str, payment_id: Option<&str>) -> Result<Lookup, PspError> {
        let found: Option<Recorded> = sqlx::query_as(
            "select charge_id, status, token_kind from simulator_charge
             where charge_id = $1 or payment_attempt_id = $2
             order by (status = 'succeeded') desc limit 1",
        )
        .bind(payment_id)
        .bind(attempt_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.map_or(Lookup::NotFound { authoritative: true }, Recorded::lookup))
    }

    /// Simulated charges settle at once, so capture only checks the charge exists and succeeded.
    async fn capture(&self, charge_id: &str, _amount: i64, _key: &str) -> Result<(), PspError> {
        match self.status_of(charge_id).await?.as_deref() {
            Some("succeeded") => Ok(()),
            Some("voided") => Err(PspError::Rejected {
                code: "authorization_canceled".into(),
                message: "the charge was voided".into(),
            }),
            Some(other) => Err(PspError::Rejected {
                code: "payment_intent_unexpected_state".into(),
                message: format!("a {other} charge cannot be captured"),
            }),
            None => Err(unknown_charge(charge_id)),
        }
    }

    async fn cancel(&self, charge_id: &str, _key: &str) -> Result<CancelOutcome, PspError> {
        let voided = sqlx::query(
            "update simulator_charge set status = 'voided', updated_at = now()
             where charge_id = $1 and status = 'requires_action'",
        )
        .bind(charge_id)
        .execute(&self.pool)
        .await?;
        if voided.rows_affected() == 1 {
            return Ok(CancelOutcome::Canceled);
        }
        match self.status_of(charge_id).await?.as_deref() {
            Some("succeeded") => Ok(CancelOutcome::AlreadyCharged { captured: true }),
            Some(_) => Ok(CancelOutcome::Canceled),
            None => Err(unknown_charge(charge_id)),
        }
    }

    async fn refund(&self, charge_id: &str, amount: i64, key: &str) -> Result<RefundOutcome, PspError> {
        let mut tx = self.pool.begin().await?;
        // A repeated key answers with the refund it already made.
        let existing: Option<(String, i64)> =
            sqlx::query_as("select refund_id, amount from simulator_refund where idempotency_key = $1")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((refund_id, amount)) = existing {
            return Ok(RefundOutcome { refund_id, amount });
        }
        let refunded = sqlx::query(
            "update simulator_charge set refunded_amount = refunded_amount + $2, updated_at = now()
             where charge_id = $1 and status = 'succeeded' and refunded_amount + $2 <= amount and $2 > 0",
        )
        .bind(charge_id)
        .bind(amount)
        .execute(&mut *tx)
        .await?;
        if refunded.rows_affected() == 0 {
            return Err(PspError::Rejected {
                code: "amount_too_large".into(),
                message: format!("cannot refund {amount} on {charge_id}"),
            });
        }
        let refund_id = format!("sim_re_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(
            "insert into simulator_refund (idempotency_key, refund_id, charge_id, amount) values ($1, $2, $3, $4)",
        )
        .bind(key)
        .bind(&refund_id)
        .bind(charge_id)
        .bind(amount)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RefundOutcome { refund_id, amount })
    }
}

fn declined(code: &str, message: &str, payment_id: String) -> ChargeOutcome {
    ChargeOutcome::Declined {
        code: code.to_owned(),
        message: message.to_owned(),
        payment_id: Some(payment_id),
    }
}
