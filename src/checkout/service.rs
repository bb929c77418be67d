//! Checkout use cases: create, read, update and cancel, each in a transaction that locks the session row,
//! applies the state machine, recomputes and persists. Complete lives in [`super::complete`], settling a payment
//! attempt in [`super::settle`], the background reconciler in [`super::reconcile`].
//!
//! State × endpoint (what every cell answers; each has a test in `tests/api/lifecycle.rs`):
//!
//! | state \ call | update | get | complete | cancel |
//! |---|---|---|---|---|
//! | (no such session, or another agent's) | 404 `not_found` | 404 | 404 | 404 |
//! | `not_ready_for_payment` | 200, recomputed | 200 | 400 with the blocking message's code (`out_of_stock`, …) or `missing` (param names what is missing) | 200 → `canceled` |
//! | `ready_for_payment` | 200, recomputed (may fall back) | 200 | charge → 200 `completed` + order; declined → 200 `ready_for_payment` + `payment_declined`; 3DS → 200 `authentication_required`; outcome unknown → 503 + `Retry-After`, session held | 200 → `canceled` |
//! | `authentication_required` | 200, recomputed (still owes 3-D Secure) | 200 (with `authentication_metadata`) | without `authentication_result` → 400 `requires_3ds`; authenticated → the waiting payment is canceled, then charge as above; failed → 200 + `payment_declined`, no charge | 200 → `canceled` (the waiting payment is canceled at the PSP) |
//! | `complete_in_progress` | 409 `invalid_state` | 200 | attempt running → 409 `idempotency_in_flight` + `Retry-After`; otherwise the attempt is resumed and settled | 405 `invalid_state` |
//! | `completed` | 400 `invalid_state` | 200 (with `order`) | 400 `invalid_state` | 405 `invalid_state` |
//! | `canceled` | 400 `invalid_state` | 200 | 400 `invalid_state` | 405 `invalid_state` |
//! | `expired` | 400 `invalid_state` | 200 | 400 `invalid_state` | 405 `invalid_state` |
//!
//! GET never writes: a session past its expiry is shown `expired` and the sweeper persists it under a lock.
//!
//! Round trips per request (statements plus BEGIN/COMMIT; one pooled connection, no ping on acquire). Create,
//! update and cancel run in the request's transaction, which the idempotency layer opened and claimed the key in
//! (see `crate::http::idempotent`); authentication adds 0 statements for the environment agent, 1 for a stored
//! agent (the agent and its signature policy in one read), outside the transaction:
//!
//! | endpoint | round trips | statements |
//! |---|---|---|
//! | create | 6 (7 with limited promotions) | BEGIN, claim (advisory lock + record read), catalog, redemption counts (only when the rules have a limited promotion), insert session with its funnel events (one statement: a CTE), record, COMMIT |
//! | update | 7 (8 with limited promotions) | BEGIN, claim, load for update, catalog, redemption counts (as for create), save with its funnel events, record, COMMIT; + 2 (save with the `expired` event, merchant subscribers) when the session just expired |
//! | cancel | 8 | BEGIN, claim, load for update, waiting 3-D Secure payment, save with its funnel event, merchant subscribers (`checkout.abandoned`), record, COMMIT (+ the PSP cancel and its own update, through the pool, when a payment waits) |
//! | GET | 1 | one SELECT on a kept read connection (`crate::db::kept`: no release ping), no transaction |
//!
//! The rules in force come from a cache (refreshed by LISTEN/NOTIFY): no read of their version here. When each
//! funnel event was a statement of its own, create took 7–8 round trips and update 8–9.
//!
//! Each of create, update and cancel commits exactly one transaction (`tests/api/round_trips.rs` counts them from
//! `pg_stat_database.xact_commit`).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, types::Json};

use std::{sync::Arc, time::Duration as StdDuration};

use sqlx::PgPool;

use super::{
    attempt, compute,
    model::{Buyer, FulfillmentDetails, Message, RequestedItem, SelectedOption, Session, Status},
    negotiation,
    redemptions::redemption_counts,
    stock,
};
use crate::{
    analytics::{
        EventKind,
        events::{Detail, Event, Row, insert_funnel_events},
    },
    catalog::{self, VariantRow},
    idempotency::IdempotencyError,
    protocol::WireContext,
    psp::{Psp, ThreeDsData},
};

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("checkout session not found")]
    NotFound,
    #[error("unknown item `{id}`")]
    UnknownItem { index: usize, id: String },
    #[error("{message}")]
    InvalidState {
        cancel: bool,
        in_progress: bool,
        message: String,
    },
    #[error("{message}")]
    Invalid {
        code: &'static str,
        param: String,
        message: String,
    },
    /// The request contradicts the session in a way only a new priced state could resolve (409 `conflict`).
    #[error("{message}")]
    Conflict { param: String, message: String },
    /// Complete on a session that is not ready: the session (saved, recomputed) says why.
    #[error("the checkout session is not ready for payment")]
    NotPayable(Box<Session>),
    /// A payment attempt for this session is running right now.
    #[error("a payment for this checkout session is in progress")]
    InFlight { retry_after_secs: u64 },
    /// The PSP's answer did not prove the outcome: the session stays held until it is settled.
    #[error("the payment outcome is not known yet")]
    PaymentPending,
    /// The PSP could not be reached: nothing was charged.
    #[error("payment provider unreachable: {0}")]
    PspNotReached(String),
    /// The PSP refused our request as malformed or unauthorized: nothing was charged; a merchant-side fault.
    #[error("payment provider refused the request ({code}): {message}")]
    PspRejected { code: String, message: String },
    #[error("idempotency: {0}")]
    Idempotency(#[from] IdempotencyError),
    /// An order change a PSP event asked for.
    #[error("order: {0}")]
    Order(#[from] crate::orders::service::OrderError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// The timing knobs of payment attempts (all configurable, so tests run them in milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct PaymentTiming {
    /// How long a runner owns an attempt without renewing (a dead runner's attempt is free after this).
    pub lease: StdDuration,
    /// How often a running attempt renews its lease.
    pub heartbeat: StdDuration,
    /// How old an attempt must be before "the PSP's search found nothing" proves it never charged.
    pub lookup_grace: StdDuration,
    /// How long a `started` attempt may sit untouched (runner gone) before the reconciler settles it.
    pub reconcile_after: StdDuration,
}

/// Everything the use cases need besides the database.
#[derive(Clone)]
pub struct Checkout {
    pub rules: crate::pricing::store::RulesCache,
    pub session_ttl: Duration,
    /// Builds the orders' `permalink_url` (issue 13: the order page).
    pub order_links: crate::order_page::OrderLinks,
    pub psp: Psp,
    pub handler_ids: Vec<String>,
    pub wire: Arc<WireContext>,
    pub payments: PaymentTiming,
    /// Writes the funnel events (issue 13) in the transactions below.
    pub funnel: crate::analytics::Recorder,
    /// Woken after a settlement commits (it queued order webhooks), so the worker delivers them at once.
    pub webhooks_queued: crate::webhooks::Wakeup,
}

pub struct CreateInput {
    pub items: Vec<RequestedItem>,
    pub agent_extensions: Vec<String>,
    pub discount_codes: Vec<String>,
    /// `None` for versions whose create request carries no currency (before 2026-01-30): the session takes the
    /// currency its items are priced in (see [`session_currency`]).
    pub currency: Option<String>,
    pub buyer: Option<Buyer>,
    pub fulfillment_details: Option<FulfillmentDetails>,
    pub agent_interventions: Vec<String>,
    /// Handler names the agent declared in `capabilities.payment.handlers` (`None`: no list).
    pub agent_payment_handlers: Option<Vec<String>>,
    pub order_notes: Option<String>,
}

/// `None` leaves a field unchanged; `Some(None)` clears it (JSON `null`).
#[derive(Default)]
pub struct UpdateInput {
    pub items: Option<Vec<RequestedItem>>,
    pub buyer: Option<Option<Buyer>>,
    pub fulfillment_details: Option<Option<FulfillmentDetails>>,
    pub selection: Option<Vec<SelectedOption>>,
    pub order_notes: Option<Option<String>>,
    /// Replaces the codes when present (`[]` clears them).
    pub discount_codes: Option<Vec<String>>,
    /// Capabilities re-declared on update (a tolerated extension of the update request).
    pub capabilities: Option<super::negotiation::Declared>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthenticationOutcome {
    Authenticated(ThreeDsData),
    Failed,
}

pub struct CompleteInput {
    pub handler_id: String,
    pub token: String,
    pub buyer: Option<Buyer>,
    pub authentication: Option<AuthenticationOutcome>,
    pub order_notes: Option<String>,
    /// Contact details to apply before paying (the `unreleased` version's complete request). A different address is
    /// refused: it would change what was priced.
    pub fulfillment_details: Option<FulfillmentDetails>,
}

impl Checkout {
    pub async fn create(
        &self,
        conn: &mut PgConnection,
        agent_id: &str,
        api_version: &str,
        input: CreateInput,
    ) -> Result<Session, CheckoutError> {
        let items = stock::merge_duplicates(input.items);
        let catalog = load_catalog(conn, &items).await?;
        let rules = self.rules.current(conn).await?;
        let currency = match input.currency {
            Some(currency) => currency.to_ascii_lowercase(),
            None => session_currency(&items, &catalog, &rules),
        };
        let now = Utc::now();
        let mut session = Session {
            id: format!("cs_{}", uuid::Uuid::now_v7().simple()),
            agent_id: agent_id.to_owned(),
            api_version: api_version.to_owned(),
            status: Status::NotReadyForPayment,
            currency,
            items,
            buyer: input.buyer,
            fulfillment_details: input.fulfillment_details,
            requested_selection: Vec::new(),
            agent_interventions: Vec::new(),
            agent_extensions: Vec::new(),
            negotiation: Default::default(),
            discount_codes: input.discount_codes,
            order_notes: input.order_notes,
            computed: Default::default(),
            order: None,
            authentication_pending: false,
            pending_order_id: None,
            current_attempt_id: None,
            attempt_count: 0,
            created_at: now,
            updated_at: now,
            expires_at: now + self.session_ttl,
        };
        if negotiation::negotiates(api_version) {
            session.negotiation.required_interventions = self.wire.required_interventions.clone();
        }
        let declared = negotiation::Declared {
            interventions: input.agent_interventions,
            extensions: input.agent_extensions,
            payment_handlers: input.agent_payment_handlers,
        };
        negotiation::apply(&mut session, declared, &self.wire.payment_handlers);
        let redemptions = redemption_counts(conn, &rules, &session, false).await?;
        compute::recompute(&mut session, &catalog, &rules, &redemptions, now);
        let mut events = vec![Event::new(EventKind::SessionCreated, now, Detail::shown(&session))];
        if session.status == Status::ReadyForPayment {
            events.push(Event::new(EventKind::ReadyForPayment, now, Detail::default()));
        }
        insert(conn, &session, self.funnel.rows(&session, events)).await?;
        Ok(session)
    }

    /// Reads a session. Never writes: one past its expiry is shown `expired` (the sweeper saves that under a
    /// lock), so a read can never overwrite a concurrent change with a stale copy.
    pub async fn get(&self, conn: &mut PgConnection, agent_id: &str, id: &str) -> Result<Session, CheckoutError> {
        let mut session = load(conn, agent_id, id, false).await?;
        expire_if_due(&mut session, Utc::now());
        Ok(session)
    }

    pub async fn update(
        &self,
        conn: &mut PgConnection,
        agent_id: &str,
        id: &str,
        input: UpdateInput,
    ) -> Result<Session, CheckoutError> {
        let now = Utc::now();
        let mut session = self.load_mutable(conn, agent_id, id, now).await?;
        let was_ready = session.status == Status::ReadyForPayment;
        if let Some(items) = input.items {
            session.items = stock::merge_duplicates(items);
        }
        if let Some(buyer) = input.buyer {
            session.buyer = buyer;
        }
        if let Some(details) = input.fulfillment_details {
            session.fulfillment_details = details;
        }
        if let Some(selection) = input.selection {
            session.requested_selection = selection;
        }
        if let Some(notes) = input.order_notes {
            session.order_notes = notes;
        }
        if let Some(codes) = input.discount_codes {
            session.discount_codes = codes;
        }
        if let Some(declared) = input.capabilities {
            negotiation::apply(&mut session, declared, &self.wire.payment_handlers);
        }
        let catalog = load_catalog(conn, &session.items).await?;
        let rules = self.rules.current(conn).await?;
        let redemptions = redemption_counts(conn, &rules, &session, false).await?;
        compute::recompute(&mut session, &catalog, &rules, &redemptions, now);
        session.updated_at = now;
        let mut events = vec![Event::new(EventKind::SessionUpdated, now, Detail::shown(&session))];
        if !was_ready && session.status == Status::ReadyForPayment {
            // Once per session (unique index): a session that falls back and is ready again records nothing.
            events.push(Event::new(EventKind::ReadyForPayment, now, Detail::default()));
        }
        save_with_events(conn, &session, self.funnel.rows(&session, events)).await?;
        Ok(session)
    }

    /// Cancels the session; `reason` is the intent trace's reason code, kept with the funnel event. A payment of
    /// this session that waits for 3-D Secure is canceled at the PSP first (through `pool`: the network call
    /// holds this session's row lock, which only concurrent calls on this same ending session wait for).
    pub async fn cancel(
        &self,
        conn: &mut PgConnection,
        pool: &PgPool,
        agent_id: &str,
        id: &str,
        reason: Option<&str>,
    ) -> Result<Session, CheckoutError> {
        let now = Utc::now();
        let mut session = load(conn, agent_id, id, true).await?;
        let expired = expire_if_due(&mut session, now);
        if session.status.is_terminal() || session.status == Status::CompleteInProgress {
            if expired {
                self.save_expired(conn, &session, now).await?;
            }
            return Err(CheckoutError::InvalidState {
                cancel: true,
                in_progress: false,
                message: format!("A {} checkout session cannot be canceled", session.status.as_str()),
            });
        }
        if let Some(waiting) = attempt::live_for_session(conn, &session.id).await? {
            self.retire(pool, &waiting).await?;
        }
        session.status = Status::Canceled;
        session.computed.messages = vec![Message::info("Checkout session has been canceled.")];
        session.updated_at = now;
        let detail = Detail {
            reason,
            ..Detail::default()
        };
        let events = vec![Event::new(EventKind::Canceled, now, detail)];
        save_with_events(conn, &session, self.funnel.rows(&session, events)).await?;
        crate::webhooks::merchant::enqueue_abandoned(conn, &session, reason).await?;
        Ok(session)
    }

    /// Saves a session [`expire_if_due`] just expired, with its funnel event.
    pub(super) async fn save_expired(
        &self,
        conn: &mut PgConnection,
        session: &Session,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let events = vec![Event::new(EventKind::Expired, now, Detail::default())];
        save_with_events(conn, session, self.funnel.rows(session, events)).await?;
        crate::webhooks::merchant::enqueue_abandoned(conn, session, None).await
    }

    /// Loads a session for a mutation, refusing states that cannot change.
    async fn load_mutable(
        &self,
        conn: &mut PgConnection,
        agent_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Session, CheckoutError> {
        let mut session = load(conn, agent_id, id, true).await?;
        if expire_if_due(&mut session, now) {
            self.save_expired(conn, &session, now).await?;
        }
        match session.status {
            Status::CompleteInProgress => Err(CheckoutError::InvalidState {
                cancel: false,
                in_progress: true,
                message: "Payment for this checkout session is in progress".into(),
            }),
            s if s.is_terminal() => Err(CheckoutError::InvalidState {
                cancel: false,
                in_progress: false,
                message: format!("The checkout session is {} and can no longer change", s.as_str()),
            }),
            _ => Ok(session),
        }
    }

    /// Marks every session whose time ran out as `expired` (canceling a payment that waits for 3-D Secure
    /// first); returns how many.
    pub async fn sweep_expired(&self, pool: &PgPool) -> Result<u64, CheckoutError> {
        // `open` (generated from the status) is what the partial expiry index is defined on.
        let ids: Vec<String> = sqlx::query_scalar(
            "select checkout_session_id from checkout_session
             where open and expires_at <= now() and status <> 'complete_in_progress'
             limit 500",
        )
        .fetch_all(pool)
        .await?;
        let mut expired = 0;
        for id in ids {
            let waiting = attempt::live_for_session(&mut *pool.acquire().await?, &id).await?;
            if let Some(waiting) = waiting
                && let Err(e) = self.retire(pool, &waiting).await
            {
                tracing::warn!(checkout_session_id = %id, error = %e, "could not cancel a waiting payment; expiry retried later");
                continue;
            }
            let mut tx = pool.begin().await?;
            let row: Option<Json<Session>> =
                sqlx::query_scalar("select state from checkout_session where checkout_session_id = $1 for update")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let now = Utc::now();
            if let Some(Json(mut session)) = row
                && expire_if_due(&mut session, now)
            {
                self.save_expired(&mut tx, &session, now).await?;
                expired += 1;
            }
            tx.commit().await?;
        }
        Ok(expired)
    }
}

/// The currency of a session created without one: that of the first requested item with a price, else the
/// pricing rules' currency, else US dollars (the store's default).
fn session_currency(
    items: &[RequestedItem],
    catalog: &HashMap<String, VariantRow>,
    rules: &crate::pricing::Rules,
) -> String {
    items
        .iter()
        .filter_map(|i| catalog.get(&i.item_id))
        .find(|v| v.price_amount.is_some())
        .and_then(|v| v.currency.clone())
        .or_else(|| rules.currency.clone())
        .unwrap_or_else(|| "usd".to_owned())
        .to_ascii_lowercase()
}

/// The buyer's email: from `buyer`, else from the fulfillment details.
pub(crate) fn buyer_email(session: &Session) -> Option<&str> {
    session
        .buyer
        .as_ref()
        .map(|b| b.email.as_str())
        .or_else(|| session.fulfillment_details.as_ref().and_then(|d| d.email.as_deref()))
}

pub(super) fn declined_message(content: &str) -> Message {
    Message::error("payment_declined", "$.payment_data", content, "recoverable")
}

pub(super) fn item_ids(items: &[RequestedItem]) -> Vec<String> {
    let mut ids: Vec<String> = items.iter().map(|i| i.item_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Loads the catalog rows for `items`, refusing the first unknown id.
#[tracing::instrument(name = "db.catalog.load", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
async fn load_catalog(
    conn: &mut PgConnection,
    items: &[RequestedItem],
) -> Result<HashMap<String, VariantRow>, CheckoutError> {
    let rows = catalog::variants(conn, &item_ids(items)).await?;
    let catalog: HashMap<String, VariantRow> = rows.into_iter().map(|v| (v.variant_id.clone(), v)).collect();
    if let Some((index, item)) = items
        .iter()
        .enumerate()
        .find(|(_, i)| !catalog.contains_key(&i.item_id))
    {
        return Err(CheckoutError::UnknownItem {
            index,
            id: item.item_id.clone(),
        });
    }
    Ok(catalog)
}

pub(super) fn expire_if_due(session: &mut Session, now: DateTime<Utc>) -> bool {
    let due =
        now >= session.expires_at && !session.status.is_terminal() && session.status != Status::CompleteInProgress;
    if due {
        session.status = Status::Expired;
        session.computed.messages = vec![Message::error(
            "expired",
            "$",
            "This checkout session has expired.",
            "requires_buyer_input",
        )];
    }
    due
}

#[tracing::instrument(name = "db.checkout_session.load", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
pub(super) async fn load(
    conn: &mut PgConnection,
    agent_id: &str,
    id: &str,
    lock: bool,
) -> Result<Session, CheckoutError> {
    let sql = if lock {
        "select state from checkout_session where checkout_session_id = $1 and agent_id = $2 for update"
    } else {
        "select state from checkout_session where checkout_session_id = $1 and agent_id = $2"
    };
    let row: Option<Json<Session>> = sqlx::query_scalar(sql)
        .bind(id)
        .bind(agent_id)
        .fetch_optional(conn)
        .await?;
    row.map(|Json(s)| s).ok_or(CheckoutError::NotFound)
}

#[tracing::instrument(name = "db.checkout_session.load", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
pub(super) async fn load_any(conn: &mut PgConnection, id: &str) -> Result<Session, CheckoutError> {
    let row: Option<Json<Session>> =
        sqlx::query_scalar("select state from checkout_session where checkout_session_id = $1 for update")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    row.map(|Json(s)| s).ok_or(CheckoutError::NotFound)
}

#[tracing::instrument(name = "db.checkout_session.insert", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
/// Inserts a new session and, in the same statement, its funnel `events` ([`Recorder::rows`]).
async fn insert(conn: &mut PgConnection, s: &Session, events: Json<Vec<Row<'_>>>) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "with saved as (
             insert into checkout_session (checkout_session_id, agent_id, api_version, status, currency, state,
                                           created_at, updated_at, expires_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             returning checkout_session_id, agent_id, currency) ",
        insert_funnel_events!("$10")
    ))
    .bind(&s.id)
    .bind(&s.agent_id)
    .bind(&s.api_version)
    .bind(s.status.as_str())
    .bind(&s.currency)
    .bind(crate::db::JsonText(s))
    .bind(s.created_at)
    .bind(s.updated_at)
    .bind(s.expires_at)
    .bind(events)
    .execute(conn)
    .await?;
    Ok(())
}

/// Saves a session and, in the same statement, the funnel `events` its change makes ([`Recorder::rows`]).
#[tracing::instrument(name = "db.checkout_session.save", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
pub(super) async fn save_with_events(
    conn: &mut PgConnection,
    s: &Session,
    events: Json<Vec<Row<'_>>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "with saved as (
             update checkout_session set status = $2, state = $3, updated_at = $4 where checkout_session_id = $1
             returning checkout_session_id, agent_id, currency) ",
        insert_funnel_events!("$5")
    ))
    .bind(&s.id)
    .bind(s.status.as_str())
    .bind(crate::db::JsonText(s))
    .bind(s.updated_at)
    .bind(events)
    .execute(conn)
    .await?;
    Ok(())
}

/// Saves a session whose change makes no funnel event.
pub(super) async fn save(conn: &mut PgConnection, s: &Session) -> Result<(), sqlx::Error> {
    save_with_events(conn, s, Json(Vec::new())).await
}
