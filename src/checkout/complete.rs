//! The complete use case: one domain function, [`Checkout::complete`], that owns the whole saga. The HTTP
//! handler only maps the request in and the answer out.
//!
//! 1. **Begin** (one transaction): lock the session; refuse what cannot be paid; reprice against locked stock
//!    rows and locked promotion counters, under the rules' stored version; if the total moved, store the new total *and* the answer together and charge nothing; otherwise reserve
//!    the stock and the promotion redemptions, write the payment attempt (its PSP key, amount, request
//!    fingerprint, runner lease), move the session to `complete_in_progress`, and link the request's idempotency
//!    record to the attempt.
//! 2. **Charge** (no transaction): cancel a predecessor payment still waiting for 3-D Secure, then charge under
//!    the attempt's key, with a heartbeat renewing the attempt's lease for as long as the PSP takes. The saga runs
//!    in a task of its own (see the HTTP handler), so a client that disconnects does not cut it short.
//! 3. **Settle** (one transaction, [`Checkout::settle`]): record what the PSP said, fenced by the runner's lease.
//!
//! A complete call that finds the session already `complete_in_progress` — a retry with the same key after a
//! crash or a 503, a retry with a new key or a new token — does not wait for anything: if the attempt's runner is
//! alive it answers 409 `idempotency_in_flight` with `Retry-After`; otherwise it takes the attempt over and settles
//! it by asking the PSP: a replay of the identical request under the attempt's key when this call carries the same
//! token and 3-D Secure data, a lookup otherwise. An attempt proven not charged reopens the session and this call
//! goes on with a fresh attempt of its own; an unknown outcome answers 503 with `Retry-After` and keeps the session
//! (and its stock) as it is.
//!
//! ## Round trips (issue 14)
//!
//! A complete that charges at once (no 3-D Secure predecessor, one idempotency record) costs, whatever the number
//! of items and discounts (each step below is one statement for all of them):
//!
//! | phase | round trips | statements |
//! |---|---|---|
//! | claim (src/idempotency, committed before anything else: it must survive the PSP call) | 1 (a new key) | one `INSERT … ON CONFLICT DO NOTHING`, autocommitted; a key already used adds a read (and, past its retention, a delete and the insert again) |
//! | begin (one transaction) | 9 (+1 when the cart can use a limited promotion, +1 when a discount applies) | `BEGIN`; session `for update`; variants `for update` (id order) with the rules' version in the same statement; the counters of the limited promotions this cart can use `for update` (id order), again with the version (only when the cart can use one); stock reserve (`unnest`); redemptions + counters (only when a discount applies); the predecessor lookup; attempt insert; session save; claim ↔ attempt link; `COMMIT` |
//! | charge | 1 PSP call | no transaction; a lease renewal every `idempotency_heartbeat_ms` while it runs |
//! | settle, charged (one transaction) | 13 | `BEGIN`; session by attempt `for update`; attempt `for update`; attempt state; stock sell (`unnest`, rows locked in id order by an init plan); order insert; the agent's webhook version; outbox insert; merchant subscribers; session save with its funnel event (one statement); linked idempotency records (read + one update each); `COMMIT` |
//!
//! Only when needed: one more in begin to count a buyer's redemptions (a usage limit per buyer among the cart's
//! promotions), one to reload the rules (their version moved since this process cached them: the cart is
//! repriced under the stored bundle before anything is charged), one for the funnel's first `ready_for_payment`;
//! none for redemptions when no discount applies. A settle that does not charge releases stock and redemptions
//! (one statement each) instead of selling and ordering. Before issue 14, begin also read the rules' version on its
//! own, took an advisory lock per limited promotion of the rules (used or not, which serialized completes
//! store-wide), counted redemptions with `count(*)`, and reserved stock and redemptions one row per statement;
//! settle read the attempt twice and locked stock rows in a statement of their own.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    attempt::{self, Attempt, AttemptState, NewAttempt},
    model::{Message, Session, Status},
    redemptions::{lock_counts, reserve_redemptions},
    service::{
        AuthenticationOutcome, Checkout, CheckoutError, CompleteInput, declined_message, expire_if_due, item_ids, load,
        save,
    },
    settle::{Resolution, Settled, Writer},
    stock,
};
use crate::{
    analytics::{EventKind, events::Detail},
    catalog::{self, VariantRow},
    idempotency::{ClaimHandle, StoredResponse},
    psp::{self, CancelOutcome, ChargeOutcome, ChargeRequest, Lookup, PaymentProvider, PspError},
};

/// One complete call, as the HTTP layer hands it over.
pub struct CompleteCall {
    pub agent_id: String,
    pub session_id: String,
    pub api_version: String,
    pub input: CompleteInput,
    /// The request's idempotency claim (absent for versions where the key is optional).
    pub claim: Option<ClaimHandle>,
}

enum Begun {
    /// Answered without charging (price change, failed 3-D Secure): already stored for the key.
    Answered(StoredResponse),
    /// The session is held by an attempt: settle it first.
    Resume(String),
    Charge(Box<Prepared>),
}

struct Prepared {
    attempt_id: String,
    charge: ChargeRequest,
    /// A payment of this session still waiting for 3-D Secure: canceled before a new one starts.
    predecessor: Option<Attempt>,
}

enum Resumed {
    Answer(StoredResponse),
    /// The attempt proved not charged and the session is payable again: start afresh.
    Reopened,
}

/// How often one call may find the session reopened under it before it gives up and asks for a retry.
const MAX_ROUNDS: usize = 3;

impl Checkout {
    /// Runs a complete call to its answer (see the module docs). The answer is a 200 already stored for the
    /// call's key; errors are mapped to ACP errors by the HTTP layer.
    pub async fn complete(&self, pool: &PgPool, call: &CompleteCall) -> Result<StoredResponse, CheckoutError> {
        let runner = Uuid::new_v4();
        for _ in 0..MAX_ROUNDS {
            let begun = match self.begin(pool, call, runner).await {
                // Another resolver settled this key's attempt between our claim and our read: replay its answer.
                Err(e @ CheckoutError::InvalidState { .. }) => {
                    return self.stored_for(pool, call).await?.ok_or(e);
                }
                other => other?,
            };
            let answer = match begun {
                Begun::Answered(response) => return Ok(response),
                Begun::Charge(prepared) => return self.run(pool, call, runner, *prepared).await,
                Begun::Resume(attempt_id) => self.resume(pool, call, runner, &attempt_id).await?,
            };
            match answer {
                Resumed::Answer(response) => return Ok(response),
                Resumed::Reopened => continue,
            }
        }
        Err(CheckoutError::InFlight { retry_after_secs: 1 })
    }

    /// Phase 1 (see the module docs).
    #[tracing::instrument(name = "db.complete.begin", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
    async fn begin(&self, pool: &PgPool, call: &CompleteCall, runner: Uuid) -> Result<Begun, CheckoutError> {
        let now = Utc::now();
        let input = &call.input;
        let mut tx = pool.begin().await?;
        let mut session = load(&mut tx, &call.agent_id, &call.session_id, true).await?;
        if expire_if_due(&mut session, now) {
            self.save_expired(&mut tx, &session, now).await?;
            tx.commit().await?;
            return Err(ended(&session));
        }
        match session.status {
            Status::CompleteInProgress => {
                let attempt_id = session
                    .current_attempt_id
                    .clone()
                    .ok_or(CheckoutError::InFlight { retry_after_secs: 1 })?;
                return Ok(Begun::Resume(attempt_id));
            }
            s if s.is_terminal() => return Err(ended(&session)),
            _ => {}
        }
        self.check_payable(&session, input)?;
        if let Some(buyer) = &input.buyer {
            session.buyer = Some(buyer.clone());
        }
        if let Some(notes) = &input.order_notes {
            session.order_notes = Some(notes.clone());
        }
        if let Some(details) = &input.fulfillment_details {
            apply_contact(&mut session, details)?;
        }
        // Reprice against locked rows: what we charge is what the stock check saw.
        let (rows, rules_version) = catalog::variants_for_update(&mut tx, &item_ids(&session.items)).await?;
        let catalog: std::collections::HashMap<String, VariantRow> =
            rows.into_iter().map(|v| (v.variant_id.clone(), v)).collect();
        // Usage limits are decided here, under locks on the counters of the limited promotions this cart can use,
        // held until this transaction commits; the same statement reads the rules' version, so a bundle changed
        // since it was cached is reloaded and priced here, before anything is charged.
        let (rules, redemptions) = lock_counts(&mut tx, &self.rules, &session, rules_version).await?;
        let quoted_total = session.computed.total();
        let was_not_ready = session.status == Status::NotReadyForPayment;
        super::compute::recompute(&mut session, &catalog, &rules, &redemptions, now);
        session.updated_at = now;
        if session.status == Status::NotReadyForPayment {
            save(&mut tx, &session).await?;
            tx.commit().await?;
            return Err(CheckoutError::NotPayable(Box::new(session)));
        }
        if was_not_ready {
            // Became payable only now (stock came back, contact given with complete): the funnel's first ready.
            self.funnel
                .record(&mut tx, &session, EventKind::ReadyForPayment, now, Detail::default())
                .await?;
        }
        if session.computed.total() != quoted_total {
            // Never charge an amount the agent has not seen: the new total and this answer commit together.
            session.computed.messages.push(Message::warning(
                "price_change",
                "$.totals",
                "The total changed since it was last shown (a price or a discount changed); review and complete again.",
            ));
            return self.answer_without_charge(tx, call, &session).await;
        }
        if input.authentication == Some(AuthenticationOutcome::Failed) {
            session
                .computed
                .messages
                .push(declined_message("3-D Secure authentication failed."));
            let detail = Detail {
                amount: None,
                reason: Some("authentication_failed"),
                ..Detail::default()
            };
            self.funnel
                .record(&mut tx, &session, EventKind::PaymentDeclined, now, detail)
                .await?;
            return self.answer_without_charge(tx, call, &session).await;
        }
        let units = stock::needed(&session.items);
        if let Err(variant) = stock::reserve(&mut tx, &units).await? {
            // Cannot happen under the row locks unless stock changed by another path; refuse cleanly.
            let index = session.items.iter().position(|i| i.item_id == variant).unwrap_or(0);
            return Err(CheckoutError::Invalid {
                code: "out_of_stock",
                param: format!("$.line_items[{index}]"),
                message: "An item ran out of stock".into(),
            });
        }
        reserve_redemptions(&mut tx, &session).await?;
        let predecessor = attempt::live_for_session(&mut tx, &session.id).await?;
        let attempt_id = attempt::new_id();
        session.attempt_count += 1;
        let order_reference = session
            .pending_order_id
            .get_or_insert_with(|| format!("ord_{}", Uuid::now_v7().simple()))
            .clone();
        let charge = ChargeRequest {
            attempt_id: attempt_id.clone(),
            idempotency_key: psp::attempt_idempotency_key(&attempt_id),
            checkout_session_id: session.id.clone(),
            order_reference,
            agent_id: session.agent_id.clone(),
            amount: session.computed.total(),
            currency: session.currency.clone(),
            token: input.token.clone(),
            three_ds: three_ds_of(input),
        };
        attempt::insert(
            &mut tx,
            &NewAttempt {
                id: &attempt_id,
                checkout_session_id: &session.id,
                number: session.attempt_count as i32,
                psp_idempotency_key: &charge.idempotency_key,
                request_fingerprint: &psp::request_fingerprint(&charge.token, charge.three_ds.as_ref()),
                amount: charge.amount,
                currency: &charge.currency,
                api_version: &call.api_version,
                order_reference: &charge.order_reference,
                reservation: &units,
                runner,
                lease: self.payments.lease,
            },
        )
        .await?;
        session.status = Status::CompleteInProgress;
        session.current_attempt_id = Some(attempt_id.clone());
        save(&mut tx, &session).await?;
        if let Some(claim) = &call.claim {
            claim.link_attempt(&mut tx, &attempt_id).await?;
        }
        tx.commit().await?;
        Ok(Begun::Charge(Box::new(Prepared {
            attempt_id,
            charge,
            predecessor,
        })))
    }

    /// Refuses, before anything is locked for long, what this call cannot pay for.
    fn check_payable(&self, session: &Session, input: &CompleteInput) -> Result<(), CheckoutError> {
        if !self.handler_ids.contains(&input.handler_id) {
            return Err(CheckoutError::Invalid {
                code: "invalid",
                param: "$.payment_data.handler_id".into(),
                message: format!("Unknown payment handler '{}'", input.handler_id),
            });
        }
        if session.status == Status::AuthenticationRequired && input.authentication.is_none() {
            return Err(CheckoutError::Invalid {
                code: "requires_3ds",
                param: "$.authentication_result".into(),
                message: "This checkout session requires 3-D Secure authentication".into(),
            });
        }
        Ok(())
    }

    /// Saves the session and stores the 200 that shows it, in one transaction: nothing is charged.
    async fn answer_without_charge(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        call: &CompleteCall,
        session: &Session,
    ) -> Result<Begun, CheckoutError> {
        save(&mut tx, session).await?;
        let response = self.answer(&call.api_version, session);
        if let Some(claim) = &call.claim {
            claim.finish(&mut tx, &response).await?;
        }
        tx.commit().await?;
        Ok(Begun::Answered(response))
    }

    /// Phases 2 and 3 for a fresh attempt.
    async fn run(
        &self,
        pool: &PgPool,
        call: &CompleteCall,
        runner: Uuid,
        prepared: Prepared,
    ) -> Result<StoredResponse, CheckoutError> {
        let id = &prepared.attempt_id;
        let heartbeat = self.keep_alive(pool, id, runner);
        if let Some(predecessor) = &prepared.predecessor
            && let Err(e) = self.retire(pool, predecessor).await
        {
            // The waiting payment could not be canceled: no second payment starts beside it.
            drop(heartbeat);
            let resolution = Resolution::NoCharge {
                detail: "predecessor_not_canceled".into(),
                payment_id: None,
                message: None,
            };
            self.settle(pool, id, Writer::Runner(runner), &resolution, call.claim.as_ref())
                .await?;
            return Err(e);
        }
        let started = std::time::Instant::now();
        let outcome = self.psp.charge(&prepared.charge).await;
        drop(heartbeat);
        tracing::info!(
            checkout_session_id = %prepared.charge.checkout_session_id,
            payment_attempt_id = %id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "psp charge answered"
        );
        let (resolution, failure) = resolution_of(outcome);
        self.conclude(pool, call, runner, id, &resolution, failure).await
    }

    /// Settles `id` with `resolution` and turns the result into the call's answer.
    async fn conclude(
        &self,
        pool: &PgPool,
        call: &CompleteCall,
        runner: Uuid,
        id: &str,
        resolution: &Resolution,
        failure: Option<CheckoutError>,
    ) -> Result<StoredResponse, CheckoutError> {
        match self
            .settle(pool, id, Writer::Runner(runner), resolution, call.claim.as_ref())
            .await?
        {
            Settled::Closed(session) => match failure {
                Some(error) => Err(error),
                None => Ok(self.answer(&call.api_version, &session)),
            },
            Settled::StillOpen => Err(CheckoutError::PaymentPending),
            Settled::Fenced => self.after_fence(pool, call).await,
        }
    }

    /// The answer somebody else stored for this call's key (a resolver of the attempt it was linked to).
    async fn stored_for(&self, pool: &PgPool, call: &CompleteCall) -> Result<Option<StoredResponse>, CheckoutError> {
        let Some(claim) = &call.claim else {
            return Ok(None);
        };
        let stored = claim.claim().await.stored_answer(pool).await?;
        if stored.is_some() {
            claim.mark_finished();
        }
        Ok(stored)
    }

    /// Somebody else settled the attempt (or runs it now): answer with what they stored, or with the session.
    async fn after_fence(&self, pool: &PgPool, call: &CompleteCall) -> Result<StoredResponse, CheckoutError> {
        if let Some(stored) = self.stored_for(pool, call).await? {
            return Ok(stored);
        }
        let session = load(&mut *pool.acquire().await?, &call.agent_id, &call.session_id, false).await?;
        if session.status == Status::CompleteInProgress {
            return Err(CheckoutError::InFlight { retry_after_secs: 1 });
        }
        Ok(self.answer(&call.api_version, &session))
    }

    /// Takes over the attempt holding the session (when nobody runs it) and settles it by asking the PSP.
    async fn resume(
        &self,
        pool: &PgPool,
        call: &CompleteCall,
        runner: Uuid,
        attempt_id: &str,
    ) -> Result<Resumed, CheckoutError> {
        let mut tx = pool.begin().await?;
        let session = load(&mut tx, &call.agent_id, &call.session_id, true).await?;
        let attempt = attempt::load_for_update(&mut tx, attempt_id).await?;
        let Some(attempt) = attempt.filter(|a| {
            a.state.is_open()
                && session.status == Status::CompleteInProgress
                && session.current_attempt_id.as_deref() == Some(&a.id)
        }) else {
            // Settled between our two reads: look again.
            return Ok(Resumed::Reopened);
        };
        if attempt.lease_live {
            return Err(CheckoutError::InFlight {
                retry_after_secs: (attempt.lease_left_ms as u64).div_ceil(1000).max(1),
            });
        }
        if !attempt::take_over(&mut tx, &attempt.id, runner, self.payments.lease).await? {
            return Err(CheckoutError::InFlight { retry_after_secs: 1 });
        }
        if let Some(claim) = &call.claim {
            claim.link_attempt(&mut tx, &attempt.id).await?;
        }
        tx.commit().await?;
        tracing::warn!(
            checkout_session_id = %session.id,
            payment_attempt_id = %attempt.id,
            "resuming a payment attempt whose runner is gone"
        );
        let heartbeat = self.keep_alive(pool, &attempt.id, runner);
        let three_ds = three_ds_of(&call.input);
        let replayable = attempt.request_fingerprint == psp::request_fingerprint(&call.input.token, three_ds.as_ref());
        let (resolution, failure) = if replayable {
            // The same request again: under the attempt's key the PSP answers with what it did, or does it now.
            resolution_of(self.psp.charge(&replay(&attempt, &session, &call.input)).await)
        } else {
            (self.ask(&attempt).await, None)
        };
        drop(heartbeat);
        if failure.is_none() && matches!(resolution, Resolution::NoCharge { .. }) {
            return match self
                .settle(
                    pool,
                    &attempt.id,
                    Writer::Runner(runner),
                    &resolution,
                    call.claim.as_ref(),
                )
                .await?
            {
                Settled::Fenced => self.after_fence(pool, call).await.map(Resumed::Answer),
                _ => Ok(Resumed::Reopened),
            };
        }
        self.conclude(pool, call, runner, &attempt.id, &resolution, failure)
            .await
            .map(Resumed::Answer)
    }

    /// Asks the PSP what became of an attempt whose answer was lost (no token needed).
    pub(super) async fn ask(&self, attempt: &Attempt) -> Resolution {
        let lookup = self.psp.lookup(&attempt.id, attempt.psp_payment_id.as_deref()).await;
        match lookup {
            Ok(Lookup::Charged { payment_id, captured }) => Resolution::Charged { payment_id, captured },
            Ok(Lookup::NotCharged { payment_id, detail }) => Resolution::NoCharge {
                detail,
                payment_id: Some(payment_id),
                message: Some(super::settle::NO_CHARGE_MESSAGE.into()),
            },
            Ok(Lookup::RequiresAuthentication { payment_id }) => Resolution::RequiresAction { payment_id },
            Ok(Lookup::Pending { payment_id }) => Resolution::Unknown {
                reason: "the payment is still processing".into(),
                payment_id,
            },
            Ok(Lookup::NotFound { authoritative }) => {
                let age = Utc::now() - attempt.created_at;
                let settled_by_time = age.to_std().unwrap_or(Duration::ZERO) >= self.payments.lookup_grace;
                if authoritative || settled_by_time {
                    Resolution::NoCharge {
                        detail: "no_payment_at_psp".into(),
                        payment_id: None,
                        message: Some(super::settle::NO_CHARGE_MESSAGE.into()),
                    }
                } else {
                    Resolution::Unknown {
                        reason: "no payment found yet (the PSP's search may lag)".into(),
                        payment_id: None,
                    }
                }
            }
            Err(e) => Resolution::Unknown {
                reason: format!("lookup failed: {e}"),
                payment_id: attempt.psp_payment_id.clone(),
            },
        }
    }

    /// Cancels a payment that waits for 3-D Secure and must not go on (a successor starts, or its session ended).
    /// A payment that turns out to have charged meanwhile is refunded: its session has moved on without it.
    pub async fn retire(&self, pool: &PgPool, waiting: &Attempt) -> Result<(), CheckoutError> {
        let Some(payment_id) = waiting.psp_payment_id.as_deref() else {
            return Ok(());
        };
        let key = format!("acp_cancel_{}", waiting.id);
        let outcome = self.psp.cancel(payment_id, &key).await.map_err(psp_failure)?;
        let detail = match outcome {
            CancelOutcome::Canceled => None,
            CancelOutcome::AlreadyCharged { captured } => {
                self.refund_stray(payment_id, waiting.amount, captured, &waiting.id)
                    .await?;
                Some("charged_after_supersede_refunded")
            }
        };
        let mut conn = pool.acquire().await?;
        sqlx::query(
            "update payment_attempt set state = 'canceled', outcome_detail = coalesce($2, outcome_detail),
                                        updated_at = now(), resolved_at = now()
             where payment_attempt_id = $1 and state = 'requires_action'",
        )
        .bind(&waiting.id)
        .bind(detail)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Gives back money taken for an attempt that no longer owns its session (it can never become an order).
    pub(super) async fn refund_stray(
        &self,
        payment_id: &str,
        amount: i64,
        captured: bool,
        attempt_id: &str,
    ) -> Result<(), CheckoutError> {
        let key = format!("acp_stray_{attempt_id}");
        if captured {
            self.psp.refund(payment_id, amount, &key).await.map_err(psp_failure)?;
        } else {
            self.psp.cancel(payment_id, &key).await.map_err(psp_failure)?;
        }
        tracing::error!(
            payment_attempt_id = %attempt_id,
            psp_payment_id = %payment_id,
            amount,
            "a payment charged for an attempt that no longer owns its session was given back"
        );
        Ok(())
    }

    pub(super) fn keep_alive(&self, pool: &PgPool, attempt_id: &str, runner: Uuid) -> tokio_util::sync::DropGuard {
        attempt::keep_alive(
            pool.clone(),
            attempt_id.to_owned(),
            runner,
            self.payments.lease,
            self.payments.heartbeat,
        )
        .drop_guard()
    }
}

/// Applies contact details sent with complete (name, email, phone). An address other than the one the session was
/// priced for is refused: the agent must update the session (and see the new total) first.
fn apply_contact(
    session: &mut Session,
    sent: &crate::checkout::model::FulfillmentDetails,
) -> Result<(), CheckoutError> {
    let current = session.fulfillment_details.get_or_insert_with(Default::default);
    if let Some(address) = &sent.address
        && current.address.as_ref() != Some(address)
    {
        return Err(CheckoutError::Conflict {
            param: "$.fulfillment_details.address".into(),
            message: "The address differs from the one this session was priced for; update the session first".into(),
        });
    }
    for (field, value) in [
        (&mut current.name, &sent.name),
        (&mut current.email, &sent.email),
        (&mut current.phone_number, &sent.phone_number),
    ] {
        if value.is_some() {
            field.clone_from(value);
        }
    }
    Ok(())
}

/// The refusal for a session that can no longer be completed.
fn ended(session: &Session) -> CheckoutError {
    CheckoutError::InvalidState {
        cancel: false,
        in_progress: false,
        message: format!(
            "The checkout session is {} and can no longer change",
            session.status.as_str()
        ),
    }
}

fn three_ds_of(input: &CompleteInput) -> Option<psp::ThreeDsData> {
    match &input.authentication {
        Some(AuthenticationOutcome::Authenticated(data)) => Some(data.clone()),
        _ => None,
    }
}

/// The attempt's request rebuilt from what it stored and what this call carries (same fingerprint: same bytes).
fn replay(attempt: &Attempt, session: &Session, input: &CompleteInput) -> ChargeRequest {
    ChargeRequest {
        attempt_id: attempt.id.clone(),
        idempotency_key: attempt.psp_idempotency_key.clone(),
        checkout_session_id: session.id.clone(),
        order_reference: attempt.order_reference.clone(),
        agent_id: session.agent_id.clone(),
        amount: attempt.amount,
        currency: attempt.currency.clone(),
        token: input.token.clone(),
        three_ds: three_ds_of(input),
    }
}

/// What a charge's result means for the attempt, and the error the call answers with when it closed the attempt
/// without a charge the agent can see in a session (the PSP was never reached, or refused us).
fn resolution_of(outcome: Result<ChargeOutcome, PspError>) -> (Resolution, Option<CheckoutError>) {
    match outcome {
        Ok(ChargeOutcome::Succeeded { payment_id, captured }) => (Resolution::Charged { payment_id, captured }, None),
        Ok(ChargeOutcome::Declined {
            code,
            message,
            payment_id,
        }) => (
            Resolution::Declined {
                code,
                message,
                payment_id,
            },
            None,
        ),
        Ok(ChargeOutcome::RequiresAuthentication { payment_id }) => (Resolution::RequiresAction { payment_id }, None),
        Err(PspError::Ambiguous { reason, payment_id }) => (Resolution::Unknown { reason, payment_id }, None),
        Err(PspError::NotSent(reason)) => (
            Resolution::NoCharge {
                detail: "not_sent".into(),
                payment_id: None,
                message: None,
            },
            Some(CheckoutError::PspNotReached(reason)),
        ),
        Err(PspError::Rejected { code, message }) => (
            Resolution::NoCharge {
                detail: code.clone(),
                payment_id: None,
                message: None,
            },
            Some(CheckoutError::PspRejected { code, message }),
        ),
        // The simulator's own storage failed mid-charge: it may or may not have recorded the charge.
        Err(PspError::Storage(e)) => (
            Resolution::Unknown {
                reason: format!("simulator storage: {e}"),
                payment_id: None,
            },
            None,
        ),
    }
}

/// A PSP failure outside a charge (cancel, refund), as the call's error.
pub(super) fn psp_failure(e: PspError) -> CheckoutError {
    match e {
        PspError::NotSent(reason) => CheckoutError::PspNotReached(reason),
        PspError::Rejected { code, message } => CheckoutError::PspRejected { code, message },
        PspError::Ambiguous { .. } | PspError::Storage(_) => CheckoutError::PaymentPending,
    }
}

/// Attempts in this state hold a live payment at the PSP.
pub fn is_live(attempt: &Attempt) -> bool {
    attempt.state == AttemptState::RequiresAction && attempt.psp_payment_id.is_some()
}
