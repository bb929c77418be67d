//! Settling a payment attempt: the one transaction that turns what the PSP said into the session's next state.
//!
//! Every resolver goes through [`Checkout::settle`]: the request that ran the charge, a retry that resumed it, the
//! reconciler, and Stripe's own events. The transaction locks the session, then the attempt (the order every
//! writer uses), checks that the attempt is still open and still run by the writer (fencing: a stale runner
//! commits nothing), and then, together:
//! - charged → stock sold, the order and its `order_create` event, session `completed`;
//! - declined / waiting for 3-D Secure → stock and promotion redemptions released, session payable again;
//! - proven not charged → the same release, with a message when somebody should know;
//! - unknown → the attempt is `indeterminate` and keeps everything; nothing else changes;
//!
//! and stores the answer of every idempotency record linked to the attempt (each in its own ACP version), so
//! whichever key the agent retries replays the outcome.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    attempt::{self, Attempt, AttemptState},
    model::{Message, OrderRef, Session, Status},
    redemptions::release_redemptions,
    service::{Checkout, CheckoutError, declined_message, save, save_with_events},
    stock,
};
use crate::{
    analytics::{
        EventKind,
        events::{Detail, Event},
    },
    idempotency::{self, ClaimHandle, StoredResponse},
    orders::{
        self,
        model::{Order, OrderLine, OrderPayment},
    },
    protocol,
    webhooks::outbox,
};

/// What is known about an attempt's money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Charged {
        payment_id: String,
        captured: bool,
    },
    Declined {
        code: String,
        message: String,
        payment_id: Option<String>,
    },
    RequiresAction {
        payment_id: String,
    },
    /// Proven not charged: never sent, refused before acting, canceled, failed, or absent.
    NoCharge {
        detail: String,
        payment_id: Option<String>,
        /// Shown on the session when the agent should hear about it from the session itself.
        message: Option<String>,
    },
    /// Not proven either way: keep everything and ask again later.
    Unknown {
        reason: String,
        payment_id: Option<String>,
    },
}

/// Who writes the settlement.
#[derive(Debug, Clone, Copy)]
pub enum Writer {
    /// The attempt's current runner (a request, a resuming retry, the reconciler): fenced by its lease.
    Runner(Uuid),
    /// A definitive report from the PSP itself (a signed Stripe event): applies whoever runs the attempt.
    Psp,
}

#[derive(Debug)]
pub enum Settled {
    /// The attempt is closed; the session as it now is.
    Closed(Box<Session>),
    /// The outcome is still unknown: the attempt is `indeterminate`.
    StillOpen,
    /// Nothing written: the attempt is no longer open, or no longer this writer's.
    Fenced,
}

/// What the agent sees when nobody asked for a message.
pub const NO_CHARGE_MESSAGE: &str =
    "The payment could not be completed and nothing was charged; complete the checkout again to retry.";

impl Checkout {
    /// The stored answer for a session: 200 with the session, rendered in `version`.
    pub fn answer(&self, version: &str, session: &Session) -> StoredResponse {
        StoredResponse::json(200, &protocol::render_session(version, session, &self.wire))
    }

    /// Applies `resolution` to the attempt in one transaction (see the module docs). `own_claim` is the calling
    /// request's idempotency claim, marked finished when its record was among those answered.
    #[tracing::instrument(name = "db.payment.settle", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
    pub async fn settle(
        &self,
        pool: &PgPool,
        attempt_id: &str,
        writer: Writer,
        resolution: &Resolution,
        own_claim: Option<&ClaimHandle>,
    ) -> Result<Settled, CheckoutError> {
        let mut tx = pool.begin().await?;
        let Some(mut session) = session_of_attempt(&mut tx, attempt_id).await? else {
            return Ok(Settled::Fenced);
        };
        let Some(attempt) = attempt::load_for_update(&mut tx, attempt_id).await? else {
            return Ok(Settled::Fenced);
        };
        if !may_write(&attempt, &session, writer) {
            return Ok(Settled::Fenced);
        }
        let closed = self.apply(&mut tx, &mut session, &attempt, resolution).await?;
        let own_linked = match own_claim {
            Some(claim) => claim.payment_attempt_id().await.as_deref() == Some(attempt_id),
            None => false,
        };
        if closed {
            self.answer_linked_claims(&mut tx, &session, &attempt, resolution)
                .await?;
        } else {
            idempotency::yield_for_attempt(&mut tx, attempt_id).await?;
        }
        tx.commit().await?;
        if closed {
            self.webhooks_queued.wake();
        }
        log_settlement(&attempt, resolution, writer);
        if !closed {
            return Ok(Settled::StillOpen);
        }
        if own_linked
            && !matches!(resolution, Resolution::NoCharge { .. })
            && let Some(claim) = own_claim
        {
            claim.mark_finished();
        }
        Ok(Settled::Closed(Box::new(session)))
    }

    /// Writes the resolution; returns whether the attempt is closed now.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        session: &mut Session,
        attempt: &Attempt,
        resolution: &Resolution,
    ) -> Result<bool, CheckoutError> {
        let now = chrono::Utc::now();
        session.updated_at = now;
        match resolution {
            Resolution::Charged { payment_id, captured } => {
                attempt::set_state(conn, &attempt.id, AttemptState::Succeeded, Some(payment_id), None).await?;
                stock::sell(conn, &attempt.reservation).await?;
                self.complete_session(conn, session, attempt, payment_id, *captured)
                    .await?;
            }
            Resolution::Declined {
                code,
                message,
                payment_id,
            } => {
                attempt::set_state(
                    conn,
                    &attempt.id,
                    AttemptState::Declined,
                    payment_id.as_deref(),
                    Some(code),
                )
                .await?;
                self.reopen(conn, session, attempt, Some(declined_message(message)))
                    .await?;
                let detail = Detail {
                    amount: None,
                    reason: Some(code),
                    ..Detail::default()
                };
                self.funnel
                    .record(conn, session, EventKind::PaymentDeclined, now, detail)
                    .await?;
            }
            Resolution::RequiresAction { payment_id } => {
                attempt::set_state(conn, &attempt.id, AttemptState::RequiresAction, Some(payment_id), None).await?;
                session.authentication_pending = true;
                self.reopen(conn, session, attempt, None).await?;
                self.funnel
                    .record(conn, session, EventKind::AuthenticationRequired, now, Detail::default())
                    .await?;
            }
            Resolution::NoCharge {
                detail,
                payment_id,
                message,
            } => {
                attempt::set_state(
                    conn,
                    &attempt.id,
                    AttemptState::Failed,
                    payment_id.as_deref(),
                    Some(detail),
                )
                .await?;
                let message = message
                    .as_ref()
                    .map(|m| Message::error("payment_declined", "$.payment_data", m.clone(), "recoverable"));
                self.reopen(conn, session, attempt, message).await?;
            }
            Resolution::Unknown { reason, payment_id } => {
                attempt::set_state(
                    conn,
                    &attempt.id,
                    AttemptState::Indeterminate,
                    payment_id.as_deref(),
                    Some(reason),
                )
                .await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The attempt charged: the session is completed with its order, in this transaction.
    async fn complete_session(
        &self,
        conn: &mut PgConnection,
        session: &mut Session,
        attempt: &Attempt,
        payment_id: &str,
        captured: bool,
    ) -> Result<(), CheckoutError> {
        let order_id = attempt.order_reference.clone();
        let permalink_url = self.order_links.permalink(&order_id);
        session.status = Status::Completed;
        session.authentication_pending = false;
        session.order = Some(OrderRef {
            id: order_id.clone(),
            permalink_url,
        });
        session.computed.messages.clear();
        insert_order(conn, session, attempt, payment_id, captured).await?;
        let detail = Detail {
            amount: Some(attempt.amount),
            reason: None,
            ..Detail::default()
        };
        let events = vec![Event::new(EventKind::Completed, session.updated_at, detail)];
        save_with_events(conn, session, self.funnel.rows(session, events)).await?;
        Ok(())
    }

    /// The attempt did not charge: its stock and redemptions go back and the session is payable again.
    async fn reopen(
        &self,
        conn: &mut PgConnection,
        session: &mut Session,
        attempt: &Attempt,
        message: Option<Message>,
    ) -> Result<(), CheckoutError> {
        stock::release(conn, &attempt.reservation).await?;
        release_redemptions(conn, &session.id).await?;
        session.status = if session.authentication_pending {
            Status::AuthenticationRequired
        } else {
            Status::ReadyForPayment
        };
        if let Some(message) = message {
            session.authentication_pending = false;
            session.status = Status::ReadyForPayment;
            session.computed.messages.push(message);
        }
        save(conn, session).await?;
        Ok(())
    }

    /// Closed with an answer: every record linked to the attempt replays the session. Closed without a charge
    /// and without an answer: the records are unlinked and their retries run fresh.
    async fn answer_linked_claims(
        &self,
        conn: &mut PgConnection,
        session: &Session,
        attempt: &Attempt,
        resolution: &Resolution,
    ) -> Result<(), sqlx::Error> {
        if let Resolution::NoCharge { .. } = resolution {
            return idempotency::reset_for_attempt(conn, &attempt.id).await;
        }
        idempotency::finish_for_attempt(conn, &attempt.id, |version| {
            self.answer(version.unwrap_or(&attempt.api_version), session)
        })
        .await
        .map(drop)
    }
}

/// The session an attempt belongs to, locked (the session before the attempt: the order every writer uses), in one
/// statement; `None` when there is no such attempt.
#[tracing::instrument(name = "db.checkout_session.load", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
async fn session_of_attempt(conn: &mut PgConnection, attempt_id: &str) -> Result<Option<Session>, sqlx::Error> {
    let row: Option<sqlx::types::Json<Session>> = sqlx::query_scalar(
        "select state from checkout_session
         where checkout_session_id = (select checkout_session_id from payment_attempt where payment_attempt_id = $1)
         for update",
    )
    .bind(attempt_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|sqlx::types::Json(s)| s))
}

fn may_write(attempt: &Attempt, session: &Session, writer: Writer) -> bool {
    let holds_session =
        session.status == Status::CompleteInProgress && session.current_attempt_id.as_deref() == Some(&attempt.id);
    let ours = match writer {
        Writer::Runner(runner) => attempt.runner == Some(runner),
        Writer::Psp => true,
    };
    attempt.state.is_open() && holds_session && ours
}

fn log_settlement(attempt: &Attempt, resolution: &Resolution, writer: Writer) {
    let by = match writer {
        Writer::Runner(_) => "runner",
        Writer::Psp => "psp_event",
    };
    let outcome = match resolution {
        Resolution::Charged { .. } => "charged",
        Resolution::Declined { .. } => "declined",
        Resolution::RequiresAction { .. } => "requires_action",
        Resolution::NoCharge { .. } => "no_charge",
        Resolution::Unknown { .. } => "unknown",
    };
    tracing::info!(
        checkout_session_id = %attempt.checkout_session_id,
        payment_attempt_id = %attempt.id,
        outcome,
        by,
        "payment attempt settled"
    );
}

/// Creates the order and its `order_create` event, in the completing transaction.
/// The order's ACP version is the complete call's: its webhooks render in it unless the agent chose another.
async fn insert_order(
    conn: &mut PgConnection,
    s: &Session,
    attempt: &Attempt,
    payment_id: &str,
    captured: bool,
) -> Result<(), sqlx::Error> {
    let order_id = attempt.order_reference.as_str();
    let amount = attempt.amount;
    let now = chrono::Utc::now();
    let permalink_url = s.order.as_ref().map(|o| o.permalink_url.clone()).unwrap_or_default();
    let order = Order {
        id: order_id.to_owned(),
        checkout_session_id: s.id.clone(),
        agent_id: s.agent_id.clone(),
        api_version: attempt.api_version.clone(),
        permalink_url,
        currency: s.currency.clone(),
        charge_id: payment_id.to_owned(),
        lines: s
            .computed
            .lines
            .iter()
            .map(|l| OrderLine {
                id: l.id.clone(),
                item_id: l.item_id.clone(),
                title: l.name.clone(),
                product_id: l.product_id.clone(),
                unit_price: l.unit_amount,
                ordered: l.quantity,
                current: l.quantity,
                fulfilled: 0,
            })
            .collect(),
        fulfillments: Vec::new(),
        adjustments: Vec::new(),
        totals: s.computed.totals.clone(),
        canceled: false,
        payment: if captured {
            OrderPayment::captured(amount, now)
        } else {
            OrderPayment::authorized(now)
        },
        created_at: now,
        updated_at: now,
    };
    orders::insert(conn, &order).await?;
    outbox::enqueue(conn, &order, "order_create").await?;
    crate::webhooks::merchant::enqueue_order(conn, &order, "order.created").await?;
    Ok(())
}
