//! Order operations: ship, deliver, refund, cancel. Each change is saved together with its `order_update`
//! event. Every operation takes an operation key (the admin request's `Idempotency-Key`) from which the ids it
//! creates are derived, so a repeated operation finds its own earlier result instead of acting twice; refunds
//! pass a key derived from it to the PSP for the same reason.

use chrono::Utc;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::model::{Adjustment, Fulfillment, FulfillmentEvent, Order};
use crate::{
    psp::{PaymentProvider, Psp, PspError},
    webhooks::outbox,
};

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("{message}")]
    Invalid { param: String, message: String },
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

async fn load_locked(tx: &mut sqlx::PgConnection, order_id: &str) -> Result<Order, OrderError> {
    super::load(tx, order_id, true).await?.ok_or(OrderError::NotFound)
}

/// Saves the change and queues its `order_update`, in the caller's transaction.
async fn publish(tx: &mut sqlx::PgConnection, order: &mut Order) -> Result<(), OrderError> {
    order.updated_at = Utc::now();
    super::save(tx, order).await?;
    outbox::enqueue(tx, order, "order_update").await?;
    Ok(())
}

pub async fn ship(pool: &PgPool, order_id: &str, input: ShipInput, op_key: &str) -> Result<Order, OrderError> {
    let mut tx = pool.begin().await?;
    let mut order = load_locked(&mut tx, order_id).await?;
    let fulfillment_id = derived_id("ful", order_id, op_key);
    if order.fulfillments.iter().any(|f| f.id == fulfillment_id) {
        return Ok(order);
    }
    if order.canceled {
        return Err(invalid("$", "a canceled order cannot ship"));
    }
    let wanted = match input.line_items {
        Some(items) => items,
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
        id: fulfillment_id.clone(),
        kind: "shipping".into(),
        status: "shipped".into(),
        line_items: wanted,
        carrier: Some(input.carrier),
        tracking_number: Some(input.tracking_number),
        tracking_url: input.tracking_url,
        events: vec![FulfillmentEvent {
            id: format!("{fulfillment_id}_shipped"),
            kind: "shipped".into(),
            occurred_at: now,
        }],
    });
    publish(&mut tx, &mut order).await?;
    tx.commit().await?;
    Ok(order)
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
        publish(&mut tx, &mut order).await?;
    }
    tx.commit().await?;
    Ok(order)
}

/// Refunds `amount` (everything still refundable when `None`) through the PSP and records the adjustment.
pub async fn refund(
    pool: &PgPool,
    psp: &Psp,
    order_id: &str,
    amount: Option<i64>,
    reason: Option<String>,
    op_key: &str,
) -> Result<Order, OrderError> {
    let adjustment_id = derived_id("adj", order_id, op_key);
    let order = super::load(&mut *pool.acquire().await?, order_id, false)
        .await?
        .ok_or(OrderError::NotFound)?;
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
    // The PSP call sits outside any transaction; its key makes a retried refund the same refund.
    let refunded = psp.refund(&order.charge_id, amount, &adjustment_id).await?;
    record_refund(
        pool,
        order_id,
        &adjustment_id,
        refunded.amount,
        reason,
        Some(refunded.refund_id),
        false,
    )
    .await
}

/// Cancels an order that has not shipped, refunding what was paid.
pub async fn cancel(pool: &PgPool, psp: &Psp, order_id: &str, op_key: &str) -> Result<Order, OrderError> {
    let order = super::load(&mut *pool.acquire().await?, order_id, false)
        .await?
        .ok_or(OrderError::NotFound)?;
    if order.canceled {
        return Ok(order);
    }
    if order.fulfillments.iter().any(|f| f.status != "canceled") {
        return Err(invalid("$", "the order has shipped; refund it instead"));
    }
    let adjustment_id = derived_id("adj", order_id, op_key);
    let refundable = order.total() - order.amount_refunded();
    let refund_id = if refundable > 0 {
        Some(
            psp.refund(&order.charge_id, refundable, &adjustment_id)
                .await?
                .refund_id,
        )
    } else {
        None
    };
    record_refund(
        pool,
        order_id,
        &adjustment_id,
        refundable,
        Some("order canceled".into()),
        refund_id,
        true,
    )
    .await
}

async fn record_refund(
    pool: &PgPool,
    order_id: &str,
    adjustment_id: &str,
    amount: i64,
    reason: Option<String>,
    psp_refund_id: Option<String>,
    cancel: bool,
) -> Result<Order, OrderError> {
    let mut tx = pool.begin().await?;
    let mut order = load_locked(&mut tx, order_id).await?;
    if order.adjustments.iter().any(|a| a.id == adjustment_id) {
        return Ok(order);
    }
    if amount > 0 {
        order.adjustments.push(Adjustment {
            id: adjustment_id.to_owned(),
            kind: "refund".into(),
            occurred_at: Utc::now(),
            status: "completed".into(),
            amount,
            reason,
            psp_refund_id,
        });
    }
    if cancel {
        order.canceled = true;
        for line in order.lines.iter_mut() {
            line.current = 0;
        }
    }
    publish(&mut tx, &mut order).await?;
    tx.commit().await?;
    Ok(order)
}
