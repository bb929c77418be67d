//! The PSP's own notifications (Stripe events, verified and deduplicated by the HTTP layer) fed into the same
//! resolution as every other resolver.
//!
//! - A payment succeeded / failed / was canceled: an open attempt is settled at once, whoever runs it (a
//!   PaymentIntent in those states cannot change any more, so the report is definitive; the runner's own
//!   settlement is then fenced off and replays what this one stored). A success for an attempt that already
//!   closed without a charge is a stray charge and is given back. A report about an attempt already settled the
//!   same way changes nothing.
//! - Refunds and disputes become order adjustments with an `order_update` to the agent; a refund this server made
//!   itself is recognised by its adjustment id and changes nothing.
//! - An uncaptured authorization canceled by the PSP shows on the order as expired.

use sqlx::PgPool;

use super::{
    attempt::{self, AttemptState},
    service::{Checkout, CheckoutError},
    settle::{NO_CHARGE_MESSAGE, Resolution, Settled, Writer},
};
use crate::{orders, psp::PspEvent};

impl Checkout {
    /// Applies one PSP event; returns what it did (recorded with the event id).
    pub async fn on_psp_event(&self, pool: &PgPool, event: PspEvent) -> Result<&'static str, CheckoutError> {
        match event {
            PspEvent::PaymentSucceeded {
                attempt_id,
                payment_id,
                captured,
            } => {
                let resolution = Resolution::Charged {
                    payment_id: payment_id.clone(),
                    captured,
                };
                self.on_attempt_report(pool, attempt_id, &payment_id, resolution).await
            }
            PspEvent::PaymentFailed {
                attempt_id,
                payment_id,
                code,
            } => {
                let resolution = Resolution::Declined {
                    code,
                    message: "The card was declined.".into(),
                    payment_id: Some(payment_id.clone()),
                };
                self.on_attempt_report(pool, attempt_id, &payment_id, resolution).await
            }
            PspEvent::PaymentCanceled {
                attempt_id,
                payment_id,
                reason,
            } => self.on_canceled(pool, attempt_id, &payment_id, reason).await,
            PspEvent::Refunded { payment_id, refunds } => {
                let recorded = orders::service::record_reported_refunds(pool, &payment_id, &refunds).await?;
                Ok(if recorded > 0 {
                    "refund_recorded"
                } else {
                    "refund_already_known"
                })
            }
            PspEvent::Disputed {
                payment_id,
                dispute_id,
                amount,
                reason,
            } => {
                let recorded = orders::service::record_dispute(pool, &payment_id, &dispute_id, amount, &reason).await?;
                Ok(if recorded {
                    "dispute_recorded"
                } else {
                    "dispute_already_known"
                })
            }
            PspEvent::Ignored => Ok("ignored"),
        }
    }

    async fn on_attempt_report(
        &self,
        pool: &PgPool,
        attempt_id: Option<String>,
        payment_id: &str,
        resolution: Resolution,
    ) -> Result<&'static str, CheckoutError> {
        let found = attempt::find(&mut *pool.acquire().await?, attempt_id.as_deref(), Some(payment_id)).await?;
        let Some(found) = found else {
            tracing::warn!(psp_payment_id = %payment_id, "a PSP event names a payment this server does not know");
            return Ok("unknown_payment");
        };
        if found.state.is_open() {
            return Ok(
                match self.settle(pool, &found.id, Writer::Psp, &resolution, None).await? {
                    Settled::Closed(_) => "attempt_settled",
                    _ => "attempt_busy",
                },
            );
        }
        let charged = matches!(resolution, Resolution::Charged { .. });
        if charged && found.state != AttemptState::Succeeded {
            // Charged although its attempt closed without a charge (superseded, canceled, proven absent).
            let captured = matches!(resolution, Resolution::Charged { captured: true, .. });
            self.refund_stray(payment_id, found.amount, captured, &found.id).await?;
            return Ok("stray_charge_given_back");
        }
        Ok("already_settled")
    }

    async fn on_canceled(
        &self,
        pool: &PgPool,
        attempt_id: Option<String>,
        payment_id: &str,
        reason: Option<String>,
    ) -> Result<&'static str, CheckoutError> {
        let found = attempt::find(&mut *pool.acquire().await?, attempt_id.as_deref(), Some(payment_id)).await?;
        let Some(found) = found else {
            return Ok("unknown_payment");
        };
        match found.state {
            s if s.is_open() => {
                let resolution = Resolution::NoCharge {
                    detail: "canceled".into(),
                    payment_id: Some(payment_id.to_owned()),
                    message: Some(NO_CHARGE_MESSAGE.into()),
                };
                self.settle(pool, &found.id, Writer::Psp, &resolution, None).await?;
                Ok("attempt_settled")
            }
            AttemptState::RequiresAction => {
                sqlx::query(
                    "update payment_attempt set state = 'canceled', updated_at = now(), resolved_at = now()
                     where payment_attempt_id = $1 and state = 'requires_action'",
                )
                .bind(&found.id)
                .execute(pool)
                .await?;
                Ok("waiting_payment_canceled")
            }
            AttemptState::Succeeded => {
                let lapsed = reason.as_deref() == Some("automatic");
                orders::service::record_authorization_canceled(pool, payment_id, lapsed).await?;
                Ok("authorization_canceled")
            }
            _ => Ok("already_settled"),
        }
    }
}
