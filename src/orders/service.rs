//! Order operations: ship, deliver, refund, cancel, and what the PSP reports afterwards (refunds made elsewhere,
//! disputes, lapsed authorizations). Each change is saved together with its `order_update` event. Every operation
//! takes an operation key (the admin request's `Idempotency-Key`) from which the ids it creates are derived, so a
//! repeated operation finds its own earlier result instead of acting twice; PSP calls pass keys derived from it
//! for the same reason.
//!
//! Manual capture: an order whose payment is only authorized is captured by its first shipment (the capture runs
//! before the shipment is recorded; a capture that fails records nothing). Refunding or canceling an uncaptured
//! order voids the authorization instead of refunding; a partial refund before capture lowers what the shipment
//! will capture.

use chrono::Utc;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use super::model::{Adjustment, Fulfillment, FulfillmentEvent, Order};
use crate::{
    checkout::stock,
    psp::{CancelOutcome, PaymentProvider, Psp, PspError, ReportedRefund},
    webhooks::{merchant, outbox},
};

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("{message}")]
    Invalid { param: String, message: String },
    /// The authorization can no longer be captured (canceled, or lapsed at the PSP).
    #[error("{0}")]
    NotCapturable(String),
    #[error("payment provider: {0}")]
    Psp(#[from] PspError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

fn invalid(param: &str, message: impl Into<String>) -> OrderError {
    OrderError::Invalid {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// A short stable id from the order and the operation key.
fn derived_id(prefix: &str, order_id: &str, op_key: &str) -> String {
    let digest = Sha256::digest(format!("{order_id}\0{op_key}").as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

#[derive(Debug, Clone)]
pub struct ShipInput {
    pub carrier: String,
    pub tracking_number: String,
    pub tracking_url: Option<String>,
    /// (order line id, quantity); `None` ships everything not yet fulfilled.
    pub line_items: Option<Vec<(String, u32)>>,
}

async fn load_locked(tx: &mut PgConnection, order_id: &str) -> Result<Order, OrderError> {
    super::load(tx, order_id, true).await?.ok_or(OrderError::NotFound)
}

async fn load_unlocked(pool: &PgPool, order_id: &str) -> Result<Order, OrderError> {
    super::load(&mut *pool.acquire().await?, order_id, false)
        .await?
        .ok_or(OrderError::NotFound)
}

/// Saves the change and queues its `order_update` for the agent and `merchant_event` (`order.updated` or
/// `order.refunded`) for the merchant's endpoints, in the caller's transaction.
async fn publish(tx: &mut PgConnection, order: &mut Order, merchant_event: &str) -> Result<(), OrderError> {
    order.updated_at = Utc::now();
    super::save(tx, order).await?;
    outbox::enqueue(tx, order, "order_update").await?;
    merchant::enqueue_order(tx, order, merchant_event).await?;
    Ok(())
}

/// Applies the shipment to `order` (validated against what is left to ship).
fn add_shipment(order: &mut Order, input: &ShipInput, fulfillment_id: &str) -> Result<(), OrderError> {
    if order.canceled {
        return Err(invalid("$", "a canceled order cannot ship"));
    }
    let wanted = match &input.line_items {
        Some(items) => items.clone(),
        None => order
            .lines
            .iter()
            .filter(|l| l.current > l.fulfilled)
            .map(|l| (l.id.clone(), l.current - l.fulfilled))
            .collect(),
    };
    if wanted.is_empty() {
        return Err(invalid("$.line_items", "nothing is left to ship"));
    }
    for (i, (line_id, quantity)) in wanted.iter().enumerate() {
        let line = order.lines.iter_mut().find(|l| &l.id == line_id).ok_or_else(|| {
            invalid(
                &format!("$.line_items[{i}].id"),
                format!("no line {line_id} in this order"),
            )
        })?;
        if *quantity == 0 || line.fulfilled + quantity > line.current {
            return Err(invalid(
                &format!("$.line_items[{i}].quantity"),
                "more than is left to ship on this line",
            ));
        }
        line.fulfilled += quantity;
    }
    let now = Utc::now();
    order.fulfillments.push(Fulfillment {
        id: fulfillment_id.to_owned(),
        kind: "shipping".into(),
        status: "shipped".into(),
        line_items: wanted,
        carrier: Some(input.carrier.clone()),
        tracking_number: Some(input.tracking_number.clone()),
        tracking_url: input.tracking_url.clone(),
        events: vec![FulfillmentEvent {
            id: format!("{fulfillment_id}_shipped"),
            kind: "shipped".into(),
            occurred_at: now,
        }],
    });
    Ok(())
}

/// Ships (part of) an order; the first shipment of an authorized-only payment captures it first.
pub async fn ship(
    pool: &PgPool,
    psp: &Psp,
    order_id: &str,
    input: ShipInput,
    op_key: &str,
) -> Result<Order, OrderError> {
    let fulfillment_id = derived_id("ful", order_id, op_key);
    let current = load_unlocked(pool, order_id).await?;
    if current.fulfillments.iter().any(|f| f.id == fulfillment_id) {
        return Ok(current);
    }
    // Validate on a copy before any money moves.
    add_shipment(&mut current.clone(), &input, &fulfillment_id)?;
    let capture = if current.payment.is_authorized_only() {
        Some(capture(pool, psp, &current, op_key).await?)
    } else {
        None
    };
    let mut tx = pool.begin().await?;
    let mut order = load_locked(&mut tx, order_id).await?;
    if order.fulfillments.iter().any(|f| f.id == fulfillment_id) {
        return Ok(order);
    }
    add_shipment(&mut order, &input, &fulfillment_id)?;
    if let Some((key, amount)) = capture {
        order.payment.status = "captured".into();
        order.payment.amount_captured = amount;
        order.payment.captured_at = Some(Utc::now());
        order.payment.authorization_expires_at = None;
        order.payment.capture_key = Some(key);
    }
    publish(&mut tx, &mut order, "order.updated").await?;
    tx.commit().await?;
    Ok(order)
}

/// Captures what the buyer still owes (the total less refunds recorded before capture). Idempotent: the key is
/// derived from the shipment. A lapsed or voided authorization is recorded on the order and refused.
async fn capture(pool: &PgPool, psp: &Psp, order: &Order, op_key: &str) -> Result<(String, i64), OrderError> {
    let key = derived_id("cap", &order.id, op_key);
    let amount = order.total() - order.amount_refunded();
    match psp.capture(&order.charge_id, amount, &key).await {
        Ok(()) => Ok((key, amount)),
        Err(PspError::Rejected { code, .. }) if code == "authorization_canceled" => {
            record_authorization_canceled(pool, &order.charge_id, true).await?;
            Err(OrderError::NotCapturable(
                "the payment authorization expired or was voided before capture; nothing was shipped".into(),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Marks one fulfillment (or every shipped one) delivered.
pub async fn deliver(pool: &PgPool, order_id: &str, fulfillment_id: Option<&str>) -> Result<Order, OrderError> {
    let mut tx = pool.begin().await?;
    let mut order = load_locked(&mut tx, order_id).await?;
    let now = Utc::now();
    let mut changed = false;
    let mut found = fulfillment_id.is_none();
    for f in order.fulfillments.iter_mut() {
        if fulfillment_id.is_some_and(|id| id != f.id) {
            continue;
        }
        found = true;
        if f.status != "delivered" && f.status != "canceled" {
            f.status = "delivered".into();
            f.events.push(FulfillmentEvent {
                id: format!("{}_delivered", f.id),
                kind: "delivered".into(),
                occurred_at: now,
            });
            changed = true;
        }
    }
    if !found {
        return Err(invalid("$.fulfillment_id", "no such fulfillment in this order"));
    }
    if order.fulfillments.is_empty() {
        return Err(invalid("$", "nothing has shipped yet"));
    }
    if changed {
        publish(&mut tx, &mut order, "order.updated").await?;
    }
    tx.commit().await?;
    Ok(order)
}

/// Refunds `amount` (everything still refundable when `None`) through the PSP and records the adjustment. An
/// uncaptured payment is not refunded: a full refund voids the authorization, a partial one lowers the capture.
pub async fn refund(
    pool: &PgPool,
    psp: &Psp,
    order_id: &str,
    amount: Option<i64>,
    reason: Option<String>,
    op_key: &str,
) -> Result<Order, OrderError> {
    let adjustment_id = derived_id("adj", order_id, op_key);
    let order = load_unlocked(pool, order_id).await?;
    if order.adjustments.iter().any(|a| a.id == adjustment_id) {
        return Ok(order);
    }
    let refundable = order.total() - order.amount_refunded();
    let amount = amount.unwrap_or(refundable);
    if amount <= 0 || amount > refundable {
        return Err(invalid(
            "$.amount",
            format!("the amount must be between 1 and {refundable}"),
        ));
    }
    let settlement = if order.payment.is_authorized_only() {
        if amount == refundable {
            void(psp, &order, &adjustment_id).await?;
            Settlement::Voided
        } else {
            Settlement::LowersCapture
        }
    } else {
        // The PSP call sits outside any transaction; its key makes a retried refund the same refund.
        Settlement::Refunded(psp.refund(&order.charge_id, amount, &adjustment_id).await?.refund_id)
    };
    let change = Change {
        adjustment_id: &adjustment_id,
        amount,
        reason,
        settlement,
        cancel: false,
    };
    record(pool, order_id, change).await
}

/// Cancels an order that has not shipped: refunds what was paid (or voids an uncaptured authorization) and puts
/// the units back on hand.
pub async fn cancel(pool: &PgPool, psp: &Psp, order_id: &str, op_key: &str) -> Result<Order, OrderError> {
    let order = load_unlocked(pool, order_id).await?;
    if order.canceled {
        return Ok(order);
    }
    if order.fulfillments.iter().any(|f| f.status != "canceled") {
        return Err(invalid("$", "the order has shipped; refund it instead"));
    }
    let adjustment_id = derived_id("adj", order_id, op_key);
    let refundable = order.total() - order.amount_refunded();
    let settlement = if order.payment.is_authorized_only() {
        void(psp, &order, &adjustment_id).await?;
        Settlement::Voided
    } else if refundable > 0 {
        Settlement::Refunded(
            psp.refund(&order.charge_id, refundable, &adjustment_id)
                .await?
                .refund_id,
        )
    } else {
        Settlement::LowersCapture
    };
    let change = Change {
        adjustment_id: &adjustment_id,
        amount: refundable,
        reason: Some("order canceled".into()),
        settlement,
        cancel: true,
    };
    record(pool, order_id, change).await
}

/// Voids an uncaptured authorization. One that charged meanwhile cannot be voided: refund it instead.
async fn void(psp: &Psp, order: &Order, key: &str) -> Result<(), OrderError> {
    match psp.cancel(&order.charge_id, key).await? {
        CancelOutcome::Canceled => Ok(()),
        CancelOutcome::AlreadyCharged { .. } => {
            Err(invalid("$", "the payment was captured meanwhile; retry to refund it"))
        }
    }
}

/// How the money of a refund or cancel was settled with the PSP.
enum Settlement {
    Refunded(String),
    Voided,
    /// Nothing to do at the PSP now (a partial refund before capture, or nothing left to refund).
    LowersCapture,
}

struct Change<'a> {
    adjustment_id: &'a str,
    amount: i64,
    reason: Option<String>,
    settlement: Settlement,
    cancel: bool,
}

async fn record(pool: &PgPool, order_id: &str, change: Change<'_>) -> Result<Order, OrderError> {
    let mut tx = pool.begin().await?;
    let mut order = load_locked(&mut tx, order_id).await?;
    if order.adjustments.iter().any(|a| a.id == change.adjustment_id) {
        return Ok(order);
    }
    if change.amount > 0 {
        order.adjustments.push(Adjustment {
            id: change.adjustment_id.to_owned(),
            kind: "refund".into(),
            occurred_at: Utc::now(),
            status: "completed".into(),
            amount: change.amount,
            reason: change.reason,
            psp_refund_id: match &change.settlement {
                Settlement::Refunded(id) => Some(id.clone()),
                _ => None,
            },
        });
    }
    if let Settlement::Voided = change.settlement {
        order.payment.status = "voided".into();
        order.payment.authorization_expires_at = None;
    }
    if change.cancel {
        // Units not shipped go back on hand.
        let unshipped: Vec<(String, u32)> = order
            .lines
            .iter()
            .filter(|l| l.current > l.fulfilled)
            .map(|l| (l.item_id.clone(), l.current - l.fulfilled))
            .collect();
        stock::restock(&mut tx, &unshipped).await?;
        order.canceled = true;
        for line in order.lines.iter_mut() {
            line.current = line.fulfilled;
        }
    }
    publish(
        &mut tx,
        &mut order,
        if change.cancel {
            "order.updated"
        } else {
            "order.refunded"
        },
    )
    .await?;
    tx.commit().await?;
    Ok(order)
}

/// The order paid by `payment_id`, locked.
async fn order_paid_by(tx: &mut PgConnection, payment_id: &str) -> Result<Option<Order>, OrderError> {
    let id: Option<String> = sqlx::query_scalar("select order_id from merchant_order where psp_charge_id = $1")
        .bind(payment_id)
        .fetch_optional(&mut *tx)
        .await?;
    match id {
        Some(id) => Ok(Some(load_locked(tx, &id).await?)),
        None => Ok(None),
    }
}

/// Records refunds the PSP reports. One this server made carries its adjustment id and is already recorded (or
/// is about to be, under that same id); one made elsewhere (the PSP's dashboard) becomes a `refund` adjustment
/// with an `order_update`. Returns how many were new.
pub async fn record_reported_refunds(
    pool: &PgPool,
    payment_id: &str,
    refunds: &[ReportedRefund],
) -> Result<usize, OrderError> {
    let mut tx = pool.begin().await?;
    let Some(mut order) = order_paid_by(&mut tx, payment_id).await? else {
        return Ok(0);
    };
    let mut added = 0;
    for refund in refunds {
        let id = refund
            .adjustment_id
            .clone()
            .unwrap_or_else(|| format!("adj_{}", refund.refund_id));
        let known = order
            .adjustments
            .iter()
            .any(|a| a.id == id || a.psp_refund_id.as_deref() == Some(&refund.refund_id));
        if known || refund.adjustment_id.is_some() {
            continue;
        }
        order.adjustments.push(Adjustment {
            id,
            kind: "refund".into(),
            occurred_at: Utc::now(),
            status: "completed".into(),
            amount: refund.amount,
            reason: Some("refunded at the payment provider".into()),
            psp_refund_id: Some(refund.refund_id.clone()),
        });
        added += 1;
    }
    if added > 0 {
        publish(&mut tx, &mut order, "order.refunded").await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// Records a dispute the PSP reports as a pending `dispute` adjustment (once per dispute).
pub async fn record_dispute(
    pool: &PgPool,
    payment_id: &str,
    dispute_id: &str,
    amount: i64,
    reason: &str,
) -> Result<bool, OrderError> {
    let mut tx = pool.begin().await?;
    let Some(mut order) = order_paid_by(&mut tx, payment_id).await? else {
        return Ok(false);
    };
    let id = format!("adj_{dispute_id}");
    if order.adjustments.iter().any(|a| a.id == id) {
        return Ok(false);
    }
    order.adjustments.push(Adjustment {
        id,
        kind: "dispute".into(),
        occurred_at: Utc::now(),
        status: "pending".into(),
        amount,
        reason: Some(reason.to_owned()),
        psp_refund_id: None,
    });
    publish(&mut tx, &mut order, "order.updated").await?;
    tx.commit().await?;
    Ok(true)
}

/// Marks an order's uncaptured authorization as gone: `authorization_expired` when it lapsed at the PSP,
/// `voided` otherwise. A merchant-only fact: no agent webhook.
pub async fn record_authorization_canceled(pool: &PgPool, payment_id: &str, lapsed: bool) -> Result<(), OrderError> {
    let mut tx = pool.begin().await?;
    if let Some(mut order) = order_paid_by(&mut tx, payment_id).await?
        && order.payment.is_authorized_only()
    {
        order.payment.status = if lapsed { "authorization_expired" } else { "voided" }.into();
        order.updated_at = Utc::now();
        super::save(&mut tx, &order).await?;
    }
    tx.commit().await?;
    Ok(())
}
