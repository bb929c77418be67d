//! What the versions before 2026-04-17 share: the order webhook body (`EventDataOrder` with `refunds[]`, no order
//! id, `additionalProperties: false`) and the order statuses it knows.

use serde_json::{Value, json};

use crate::orders::model::Order;

/// The legacy `EventDataOrder.status` for an order: `processing` had no name then (still `confirmed`), and
/// `completed` was `fulfilled` (VERSION_DIFFS §8).
pub fn order_status(order: &Order) -> &'static str {
    match order.status() {
        "canceled" => "canceled",
        "shipped" => "shipped",
        "completed" => "fulfilled",
        _ => "confirmed",
    }
}

/// `{type, data: {type: "order", checkout_session_id, permalink_url, status, refunds}}`: the completed refund
/// adjustments as `original_payment` refunds (store credit is not offered).
pub fn webhook_body(event_type: &str, order: &Order) -> Value {
    let refunds: Vec<Value> = order
        .adjustments
        .iter()
        .filter(|a| a.kind == "refund" && a.status == "completed")
        .map(|a| json!({"type": "original_payment", "amount": a.amount}))
        .collect();
    json!({
        "type": event_type,
        "data": {
            "type": "order",
            "checkout_session_id": order.checkout_session_id,
            "permalink_url": order.permalink_url,
            "status": order_status(order),
            "refunds": refunds,
        },
    })
}
