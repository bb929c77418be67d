//! The built-in payment simulator, for development and tests. It behaves like an external PSP that outlives a
//! merchant crash: every charge is committed to its own table (`simulator_charge`) under the PSP idempotency
//! key before it answers, and a repeated key gets the recorded charge back.
//!
//! Test tokens (any other `spt_…` token succeeds):
//! | token | behaviour |
//! |---|---|
//! | `spt_sim_decline` | declined, `card_declined` |
//! | `spt_sim_insufficient_funds` | declined, `insufficient_funds` |
//! | `spt_sim_3ds` | requires 3-D Secure authentication (succeeds once an authentication result is sent) |
//! | `spt_sim_hold` | commits the charge, then blocks before answering until released (admin) or the process dies; a repeated key answers at once, like a PSP replaying its stored response |
//! | `spt_sim_unavailable_once` | the first attempt per PSP key fails as unavailable (nothing recorded), later ones succeed |

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use sqlx::PgPool;
use tokio::sync::Notify;

use super::{ChargeOutcome, ChargeRequest, ChargeStatus, PaymentProvider, PspError, RefundOutcome};

#[derive(Clone)]
pub struct Simulator {
    pool: PgPool,
    release: Arc<Notify>,
    /// PSP keys that already had their one unavailable answer (`spt_sim_unavailable_once`).
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
}

impl TokenKind {
    fn of(token: &str) -> Self {
        match token {
            "spt_sim_decline" => Self::Decline,
            "spt_sim_insufficient_funds" => Self::InsufficientFunds,
            "spt_sim_3ds" => Self::ThreeDs,
            "spt_sim_hold" => Self::Hold,
            "spt_sim_unavailable_once" => Self::UnavailableOnce,
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

    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
        let kind = TokenKind::of(&request.token);
        if kind == TokenKind::UnavailableOnce {
            let first = self
                .failed_once
                .lock()
                .map(|mut seen| seen.insert(request.idempotency_key.clone()))
                .unwrap_or(false);
            if first {
                return Err(PspError::Unavailable("simulated outage".into()));
            }
        }
        let (status, outcome) = match kind {
            TokenKind::Decline => ("declined", declined("card_declined", "The card was declined.")),
            TokenKind::InsufficientFunds => (
                "declined",
                declined("insufficient_funds", "The card has insufficient funds."),
            ),
            TokenKind::ThreeDs if request.three_ds.is_none() => {
                ("requires_action", ChargeOutcome::RequiresAuthentication)
            }
            TokenKind::Ok | TokenKind::Hold | TokenKind::ThreeDs | TokenKind::UnavailableOnce => (
                "succeeded",
                ChargeOutcome::Succeeded {
                    charge_id: String::new(),
                },
            ),
        };
        let charge_id = format!("sim_ch_{}", uuid::Uuid::now_v7().simple());
        // Register for the release before the charge commits, so a release right after the commit is not lost.
        let released = self.release.notified();
        let mut released = std::pin::pin!(released);
        released.as_mut().enable();
        // The ledger row commits before we answer, like a PSP that charged and then lost the connection.
        let inserted: Option<(String, String)> = sqlx::query_as(
            "insert into simulator_charge (psp_idempotency_key, charge_id, checkout_session_id, amount, currency,
                                           token_kind, status)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (psp_idempotency_key) do nothing
             returning charge_id, status",
        )
        .bind(&request.idempotency_key)
        .bind(&charge_id)
        .bind(&request.checkout_session_id)
        .bind(request.amount)
        .bind(&request.currency)
        .bind(kind.name())
        .bind(status)
        .fetch_optional(&self.pool)
        .await?;
        let fresh = inserted.is_some();
        let recorded = match inserted {
            Some(row) => row,
            // A repeated key: answer with the recorded charge, at once.
            None => {
                sqlx::query_as("select charge_id, status from simulator_charge where psp_idempotency_key = $1")
                    .bind(&request.idempotency_key)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        if kind == TokenKind::Hold && fresh {
            released.await;
        }
        Ok(match outcome {
            ChargeOutcome::Succeeded { .. } if recorded.1 == "succeeded" => {
                ChargeOutcome::Succeeded { charge_id: recorded.0 }
            }
            ChargeOutcome::Succeeded { .. } => declined("charge_voided", "The earlier charge was voided."),
            other => other,
        })
    }

    async fn set_status(&self, charge_id: &str, from: &[&str], to: &str) -> Result<(), PspError> {
        let from: Vec<String> = from.iter().map(|s| (*s).to_owned()).collect();
        let updated = sqlx::query(
            "update simulator_charge set status = $3, updated_at = now() where charge_id = $1 and status = any($2)",
        )
        .bind(charge_id)
        .bind(&from)
        .bind(to)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(PspError::Refused(format!("charge {charge_id} cannot become {to}")));
        }
        Ok(())
    }
}

impl PaymentProvider for Simulator {
    async fn confirm(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
        self.charge(request).await
    }

    /// Simulated charges settle at once, so capture only checks the charge exists and succeeded.
    async fn capture(&self, charge_id: &str, _key: &str) -> Result<(), PspError> {
        self.set_status(charge_id, &["succeeded"], "succeeded").await
    }

    async fn cancel(&self, charge_id: &str, _key: &str) -> Result<(), PspError> {
        self.set_status(charge_id, &["succeeded", "requires_action"], "voided")
            .await
    }

    async fn retrieve(&self, charge_id: &str) -> Result<ChargeStatus, PspError> {
        let status: Option<String> = sqlx::query_scalar("select status from simulator_charge where charge_id = $1")
            .bind(charge_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match status.as_deref() {
            Some("succeeded") => ChargeStatus::Succeeded,
            Some("requires_action") => ChargeStatus::RequiresAuthentication,
            Some("voided") => ChargeStatus::Canceled,
            _ => ChargeStatus::Failed,
        })
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
            return Err(PspError::Refused(format!("cannot refund {amount} on {charge_id}")));
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

fn declined(code: &str, message: &str) -> ChargeOutcome {
    ChargeOutcome::Declined {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}
