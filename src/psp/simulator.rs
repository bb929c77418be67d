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

use super::{ChargeOutcome, ChargeRequest, PspError};

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

    pub async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
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
            TokenKind::ThreeDs if !request.authenticated => ("requires_action", ChargeOutcome::RequiresAuthentication),
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

    pub async fn void(&self, charge_id: &str) -> Result<(), PspError> {
        sqlx::query("update simulator_charge set status = 'voided', updated_at = now() where charge_id = $1")
            .bind(charge_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn declined(code: &str, message: &str) -> ChargeOutcome {
    ChargeOutcome::Declined {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}
