//! Checkout use cases: each runs in a transaction that locks the session row, applies the state machine,
//! recomputes and persists.
//!
//! State × endpoint (what every cell answers; each has a test in `tests/api/lifecycle.rs`):
//!
//! | state \ call | update | get | complete | cancel |
//! |---|---|---|---|---|
//! | (no such session, or another agent's) | 404 `not_found` | 404 | 404 | 404 |
//! | `not_ready_for_payment` | 200, recomputed | 200 | 400 with the blocking message's code (`out_of_stock`, …) or `missing` (param names what is missing) | 200 → `canceled` |
//! | `ready_for_payment` | 200, recomputed (may fall back) | 200 | charge → 200 `completed` + order; declined → 200 `ready_for_payment` + `payment_declined`; 3DS → 200 `authentication_required` | 200 → `canceled` |
//! | `authentication_required` | 200, recomputed (still owes 3-D Secure) | 200 (with `authentication_metadata`) | without `authentication_result` → 400 `requires_3ds`; authenticated → charge as above; failed → 200 + `payment_declined`, no charge | 200 → `canceled` |
//! | `complete_in_progress` | 409 `invalid_state` | 200 | 409 `invalid_state` | 405 `invalid_state` |
//! | `completed` | 400 `invalid_state` | 200 (with `order`) | 400 `invalid_state` | 405 `invalid_state` |
//! | `canceled` | 400 `invalid_state` | 200 | 400 `invalid_state` | 405 `invalid_state` |
//! | `expired` | 400 `invalid_state` | 200 | 400 `invalid_state` | 405 `invalid_state` |
//!
//! Complete reserves stock (row locks in id order, so the last unit cannot be sold twice) and marks the session
//! `complete_in_progress` in one transaction, charges the PSP outside any transaction, then either creates the
//! order (same transaction as the status change) or returns the stock.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, types::Json};

use super::{
    compute,
    model::{Buyer, FulfillmentDetails, Message, OrderRef, RequestedItem, SelectedOption, Session, Status},
};
use crate::{
    catalog::{self, VariantRow},
    orders::{
        self,
        model::{Order, OrderLine},
    },
    psp::{self, ChargeOutcome, ChargeRequest, Psp, PspError, ThreeDsData},
    webhooks::outbox,
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
    #[error("payment provider: {0}")]
    Psp(#[from] PspError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Everything the use cases need besides the database.
#[derive(Clone)]
pub struct Checkout {
    pub rules: crate::pricing::store::RulesCache,
    pub session_ttl: Duration,
    pub public_base_url: String,
    pub psp: Psp,
    pub handler_ids: Vec<String>,
}

pub struct CreateInput {
    pub items: Vec<RequestedItem>,
    pub agent_extensions: Vec<String>,
    pub discount_codes: Vec<String>,
    pub currency: String,
    pub buyer: Option<Buyer>,
    pub fulfillment_details: Option<FulfillmentDetails>,
    pub agent_interventions: Vec<String>,
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
}

impl Checkout {
    pub async fn create(
        &self,
        conn: &mut PgConnection,
        agent_id: &str,
        api_version: &str,
        input: CreateInput,
    ) -> Result<Session, CheckoutError> {
        let catalog = load_catalog(conn, &input.items).await?;
        let now = Utc::now();
        let mut session = Session {
            id: format!("cs_{}", uuid::Uuid::now_v7().simple()),
            agent_id: agent_id.to_owned(),
            api_version: api_version.to_owned(),
            status: Status::NotReadyForPayment,
            currency: input.currency.to_ascii_lowercase(),
            items: input.items,
            buyer: input.buyer,
            fulfillment_details: input.fulfillment_details,
            requested_selection: Vec::new(),
            agent_interventions: input.agent_interventions,
            agent_extensions: input.agent_extensions,
            discount_codes: input.discount_codes,
            order_notes: input.order_notes,
            computed: Default::default(),
            order: None,
            authentication_pending: false,
            pending_order_id: None,
            created_at: now,
            updated_at: now,
            expires_at: now + self.session_ttl,
        };
        let rules = self.rules.current(conn).await?;
        let redemptions = redemption_counts(conn, &rules, &session, false).await?;
        compute::recompute(&mut session, &catalog, &rules, &redemptions, now);
        insert(conn, &session).await?;
        Ok(session)
    }

    pub async fn get(&self, conn: &mut PgConnection, agent_id: &str, id: &str) -> Result<Session, CheckoutError> {
        let mut session = load(conn, agent_id, id, false).await?;
        if expire_if_due(&mut session, Utc::now()) {
            save(conn, &session).await?;
        }
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
        if let Some(items) = input.items {
            session.items = items;
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
        let catalog = load_catalog(conn, &session.items).await?;
        let rules = self.rules.current(conn).await?;
        let redemptions = redemption_counts(conn, &rules, &session, false).await?;
        compute::recompute(&mut session, &catalog, &rules, &redemptions, now);
        session.updated_at = now;
        save(conn, &session).await?;
        Ok(session)
    }

    pub async fn cancel(&self, conn: &mut PgConnection, agent_id: &str, id: &str) -> Result<Session, CheckoutError> {
        let now = Utc::now();
        let mut session = load(conn, agent_id, id, true).await?;
        let expired = expire_if_due(&mut session, now);
        if session.status.is_terminal() || session.status == Status::CompleteInProgress {
            if expired {
                save(conn, &session).await?;
            }
            return Err(CheckoutError::InvalidState {
                cancel: true,
                in_progress: false,
                message: format!("A {} checkout session cannot be canceled", session.status.as_str()),
            });
        }
        session.status = Status::Canceled;
        session.computed.messages = vec![Message::info("Checkout session has been canceled.")];
        session.updated_at = now;
        save(conn, &session).await?;
        Ok(session)
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
            save(conn, &session).await?;
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

    /// Phase 1 of complete, in the caller's transaction: validate, reserve stock, mark in progress. Returns the
    /// session and, when payment should proceed, the charge to make.
    pub async fn begin_complete(
        &self,
        conn: &mut PgConnection,
        agent_id: &str,
        id: &str,
        input: &CompleteInput,
    ) -> Result<(Session, Option<ChargeRequest>), CheckoutError> {
        let now = Utc::now();
        let mut session = self.load_mutable(conn, agent_id, id, now).await?;
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
        if let Some(buyer) = &input.buyer {
            session.buyer = Some(buyer.clone());
        }
        if let Some(notes) = &input.order_notes {
            session.order_notes = Some(notes.clone());
        }
        // Reprice against locked rows: what we charge is what the stock check saw.
        let ids = item_ids(&session.items);
        let rows = catalog::variants_for_update(conn, &ids).await?;
        let catalog: HashMap<String, VariantRow> = rows.into_iter().map(|v| (v.variant_id.clone(), v)).collect();
        let rules = self.rules.current(conn).await?;
        // Usage limits are decided here, under per-promotion locks held until this transaction commits.
        let redemptions = redemption_counts(conn, &rules, &session, true).await?;
        let quoted_total = session.computed.total();
        compute::recompute(&mut session, &catalog, &rules, &redemptions, now);
        session.updated_at = now;
        if session.status != Status::NotReadyForPayment && session.computed.total() != quoted_total {
            // Never charge an amount the agent has not seen: show the new total and let it confirm again.
            session.computed.messages.push(Message::warning(
                "price_change",
                "$.totals",
                "The total changed since it was last shown (a price or a discount changed); review and complete again.",
            ));
            save(conn, &session).await?;
            return Ok((session, None));
        }
        if session.status == Status::NotReadyForPayment {
            save(conn, &session).await?;
            return Ok((session, None));
        }
        if input.authentication == Some(AuthenticationOutcome::Failed) {
            session
                .computed
                .messages
                .push(declined_message("3-D Secure authentication failed."));
            save(conn, &session).await?;
            return Ok((session, None));
        }
        for item in &session.items {
            if !catalog::take_stock(conn, &item.item_id, item.quantity).await? {
                // Cannot happen under the row locks unless stock changed by another path; refuse cleanly.
                return Err(CheckoutError::Invalid {
                    code: "out_of_stock",
                    param: "$.line_items".into(),
                    message: "An item ran out of stock".into(),
                });
            }
        }
        // Reserved once per session and kept across attempts: a retried charge must send Stripe exactly the same
        // parameters under the same idempotency key.
        if session.pending_order_id.is_none() {
            session.pending_order_id = Some(format!("ord_{}", uuid::Uuid::now_v7().simple()));
        }
        let charge = charge_for(&session, input);
        reserve_redemptions(conn, &session).await?;
        session.status = Status::CompleteInProgress;
        save(conn, &session).await?;
        Ok((session, Some(charge)))
    }

    /// Phase 1 again, for a retry that finds the payment already attempted: no new reservation, just the same
    /// charge (same PSP key) rebuilt from the session as phase 1 left it.
    pub async fn resume_complete(
        &self,
        conn: &mut PgConnection,
        agent_id: &str,
        id: &str,
        input: &CompleteInput,
    ) -> Result<(Session, Option<ChargeRequest>), CheckoutError> {
        let session = load(conn, agent_id, id, true).await?;
        if session.status != Status::CompleteInProgress {
            // Nothing to resume (for example the outcome was recorded by another path): show the session.
            return Ok((session, None));
        }
        let charge = charge_for(&session, input);
        Ok((session, Some(charge)))
    }

    /// Phase 3 of complete, in a new transaction: record what the PSP said.
    pub async fn finish_complete(
        &self,
        conn: &mut PgConnection,
        session_id: &str,
        outcome: Result<ChargeOutcome, PspError>,
    ) -> Result<Session, CheckoutError> {
        let mut session = load_any(conn, session_id).await?;
        let now = Utc::now();
        session.updated_at = now;
        match outcome {
            Ok(ChargeOutcome::Succeeded { charge_id }) => {
                let order_id = session
                    .pending_order_id
                    .clone()
                    .unwrap_or_else(|| format!("ord_{}", uuid::Uuid::now_v7().simple()));
                let permalink_url = format!("{}/orders/{order_id}", self.public_base_url.trim_end_matches('/'));
                session.status = Status::Completed;
                session.authentication_pending = false;
                session.order = Some(OrderRef {
                    id: order_id.clone(),
                    permalink_url,
                });
                session.computed.messages.clear();
                insert_order(conn, &session, &order_id, &charge_id).await?;
                save(conn, &session).await?;
                Ok(session)
            }
            Ok(ChargeOutcome::Declined { message, .. }) => {
                self.release_stock(conn, &mut session).await?;
                release_redemptions(conn, &session.id).await?;
                session.authentication_pending = false;
                session.status = Status::ReadyForPayment;
                session.computed.messages.push(declined_message(&message));
                save(conn, &session).await?;
                Ok(session)
            }
            Ok(ChargeOutcome::RequiresAuthentication) => {
                self.release_stock(conn, &mut session).await?;
                release_redemptions(conn, &session.id).await?;
                session.authentication_pending = true;
                session.status = Status::AuthenticationRequired;
                save(conn, &session).await?;
                Ok(session)
            }
            Err(e) => {
                self.release_stock(conn, &mut session).await?;
                release_redemptions(conn, &session.id).await?;
                session.status = if session.authentication_pending {
                    Status::AuthenticationRequired
                } else {
                    Status::ReadyForPayment
                };
                save(conn, &session).await?;
                Err(CheckoutError::Psp(e))
            }
        }
    }

    async fn release_stock(&self, conn: &mut PgConnection, session: &mut Session) -> Result<(), sqlx::Error> {
        for item in &session.items {
            sqlx::query(
                "update variant set stock_quantity = stock_quantity + $2, updated_at = now()
                 where variant_id = $1 and stock_quantity is not null",
            )
            .bind(&item.item_id)
            .bind(item.quantity as i32)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

fn buyer_email(session: &Session) -> Option<&str> {
    session
        .buyer
        .as_ref()
        .map(|b| b.email.as_str())
        .or_else(|| session.fulfillment_details.as_ref().and_then(|d| d.email.as_deref()))
}

/// Redemptions so far of the rules' limited promotions: (all buyers, this session's buyer). With `lock`, each
/// limited promotion is locked until the transaction ends, so concurrent completes cannot both take the last use.
async fn redemption_counts(
    conn: &mut PgConnection,
    rules: &crate::pricing::Rules,
    session: &Session,
    lock: bool,
) -> Result<HashMap<String, (u32, u32)>, sqlx::Error> {
    let mut limited: Vec<String> = rules
        .promotions
        .iter()
        .filter(|p| p.max_redemptions.is_some() || p.max_per_buyer.is_some())
        .map(|p| p.id.clone())
        .collect();
    if limited.is_empty() {
        return Ok(HashMap::new());
    }
    limited.sort();
    if lock {
        for id in &limited {
            sqlx::query("select pg_advisory_xact_lock(hashtext('promotion:' || $1))")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select promotion_id, count(*), count(*) filter (where lower(buyer_email) = lower($2))
         from promotion_redemption where promotion_id = any($1) and checkout_session_id <> $3
         group by promotion_id",
    )
    .bind(&limited)
    .bind(buyer_email(session))
    .bind(&session.id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, all, mine)| (id, (all as u32, mine as u32)))
        .collect())
}

/// Counts this session's promotions as redeemed (undone by [`release_redemptions`] if the payment fails).
async fn reserve_redemptions(conn: &mut PgConnection, session: &Session) -> Result<(), sqlx::Error> {
    for applied in &session.computed.applied_discounts {
        sqlx::query(
            "insert into promotion_redemption (promotion_id, checkout_session_id, buyer_email) values ($1, $2, $3)
             on conflict do nothing",
        )
        .bind(&applied.promotion_id)
        .bind(&session.id)
        .bind(buyer_email(session))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn release_redemptions(conn: &mut PgConnection, session_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from promotion_redemption where checkout_session_id = $1")
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The charge a complete call makes: everything but the token comes from the session as phase 1 left it, so a
/// resumed attempt rebuilds exactly the same request (same PSP idempotency key).
fn charge_for(session: &Session, input: &CompleteInput) -> ChargeRequest {
    let three_ds = match &input.authentication {
        Some(AuthenticationOutcome::Authenticated(data)) => Some(data.clone()),
        _ => None,
    };
    let amount = session.computed.total();
    ChargeRequest {
        idempotency_key: psp::idempotency_key(&session.id, &input.token, amount, three_ds.is_some()),
        checkout_session_id: session.id.clone(),
        order_reference: session.pending_order_id.clone().unwrap_or_default(),
        agent_id: session.agent_id.clone(),
        amount,
        currency: session.currency.clone(),
        token: input.token.clone(),
        three_ds,
    }
}

fn declined_message(content: &str) -> Message {
    Message::error("payment_declined", "$.payment_data", content, "recoverable")
}

fn item_ids(items: &[RequestedItem]) -> Vec<String> {
    let mut ids: Vec<String> = items.iter().map(|i| i.item_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Loads the catalog rows for `items`, refusing the first unknown id.
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

fn expire_if_due(session: &mut Session, now: DateTime<Utc>) -> bool {
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

async fn load(conn: &mut PgConnection, agent_id: &str, id: &str, lock: bool) -> Result<Session, CheckoutError> {
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

async fn load_any(conn: &mut PgConnection, id: &str) -> Result<Session, CheckoutError> {
    let row: Option<Json<Session>> =
        sqlx::query_scalar("select state from checkout_session where checkout_session_id = $1 for update")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    row.map(|Json(s)| s).ok_or(CheckoutError::NotFound)
}

async fn insert(conn: &mut PgConnection, s: &Session) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into checkout_session (checkout_session_id, agent_id, api_version, status, currency, state,
                                       created_at, updated_at, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&s.id)
    .bind(&s.agent_id)
    .bind(&s.api_version)
    .bind(s.status.as_str())
    .bind(&s.currency)
    .bind(Json(s))
    .bind(s.created_at)
    .bind(s.updated_at)
    .bind(s.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn save(conn: &mut PgConnection, s: &Session) -> Result<(), sqlx::Error> {
    sqlx::query("update checkout_session set status = $2, state = $3, updated_at = $4 where checkout_session_id = $1")
        .bind(&s.id)
        .bind(s.status.as_str())
        .bind(Json(s))
        .bind(s.updated_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates the order and its `order_create` event, in the completing transaction.
async fn insert_order(
    conn: &mut PgConnection,
    s: &Session,
    order_id: &str,
    charge_id: &str,
) -> Result<(), sqlx::Error> {
    let now = Utc::now();
    let permalink_url = s.order.as_ref().map(|o| o.permalink_url.clone()).unwrap_or_default();
    let order = Order {
        id: order_id.to_owned(),
        checkout_session_id: s.id.clone(),
        agent_id: s.agent_id.clone(),
        api_version: s.api_version.clone(),
        permalink_url,
        currency: s.currency.clone(),
        charge_id: charge_id.to_owned(),
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
        created_at: now,
        updated_at: now,
    };
    orders::insert(conn, &order).await?;
    outbox::enqueue(conn, &order, "order_create").await?;
    Ok(())
}

/// Marks every session whose time ran out as `expired`; returns how many.
pub async fn sweep_expired(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "select checkout_session_id from checkout_session
         where expires_at <= now() and status not in ('completed', 'canceled', 'expired', 'complete_in_progress')
         limit 500",
    )
    .fetch_all(pool)
    .await?;
    let mut expired = 0;
    for id in ids {
        let mut tx = pool.begin().await?;
        let row: Option<Json<Session>> =
            sqlx::query_scalar("select state from checkout_session where checkout_session_id = $1 for update")
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(Json(mut session)) = row
            && expire_if_due(&mut session, Utc::now())
        {
            save(&mut tx, &session).await?;
            expired += 1;
        }
        tx.commit().await?;
    }
    Ok(expired)
}
