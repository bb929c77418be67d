//! The canonical order (stored as JSON in `merchant_order.data`), with the statuses DIGEST §3.14 derives.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::checkout::model::Total;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub id: String,
    pub item_id: String,
    pub title: String,
    pub product_id: String,
    pub unit_price: i64,
    pub ordered: u32,
    /// What the buyer still gets (`ordered` minus removed units).
    pub current: u32,
    pub fulfilled: u32,
}

impl OrderLine {
    /// DIGEST §3.14: removed / fulfilled / partial / processing.
    pub fn status(&self) -> &'static str {
        if self.current == 0 {
            "removed"
        } else if self.fulfilled >= self.current {
            "fulfilled"
        } else if self.fulfilled > 0 {
            "partial"
        } else {
            "processing"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FulfillmentEvent {
    pub id: String,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fulfillment {
    pub id: String,
    /// shipping | digital
    pub kind: String,
    pub status: String,
    /// (order line id, quantity)
    pub line_items: Vec<(String, u32)>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub events: Vec<FulfillmentEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adjustment {
    pub id: String,
    /// refund (full and partial)
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub status: String,
    pub amount: i64,
    pub reason: Option<String>,
    pub psp_refund_id: Option<String>,
}

/// How the order was paid, for the merchant (never part of the ACP order object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPayment {
    /// `captured` (money taken), `authorized` (manual capture, not yet captured), `voided` (authorization
    /// canceled), `authorization_expired` (the PSP canceled an authorization nobody captured in time).
    pub status: String,
    pub amount_captured: i64,
    pub authorized_at: Option<DateTime<Utc>>,
    /// When an uncaptured authorization lapses (card authorizations last 7 days at Stripe).
    pub authorization_expires_at: Option<DateTime<Utc>>,
    pub captured_at: Option<DateTime<Utc>>,
    /// The capture's id, derived from the shipment that triggered it (so a retried ship captures once).
    pub capture_key: Option<String>,
}

impl OrderPayment {
    /// How long a card authorization can wait for its capture.
    pub const AUTHORIZATION_LIFETIME_DAYS: i64 = 7;

    pub fn captured(amount: i64, at: DateTime<Utc>) -> Self {
        Self {
            status: "captured".into(),
            amount_captured: amount,
            authorized_at: Some(at),
            authorization_expires_at: None,
            captured_at: Some(at),
            capture_key: None,
        }
    }

    pub fn authorized(at: DateTime<Utc>) -> Self {
        Self {
            status: "authorized".into(),
            amount_captured: 0,
            authorized_at: Some(at),
            authorization_expires_at: Some(at + chrono::Duration::days(Self::AUTHORIZATION_LIFETIME_DAYS)),
            captured_at: None,
            capture_key: None,
        }
    }

    pub fn is_authorized_only(&self) -> bool {
        self.status == "authorized"
    }
}

/// Orders written before payments were tracked were captured at once.
fn captured_before_tracking() -> OrderPayment {
    OrderPayment {
        status: "captured".into(),
        amount_captured: 0,
        authorized_at: None,
        authorization_expires_at: None,
        captured_at: None,
        capture_key: None,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub checkout_session_id: String,
    pub agent_id: String,
    /// The ACP version of the session: webhooks render in it.
    pub api_version: String,
    pub permalink_url: String,
    pub currency: String,
    pub charge_id: String,
    pub lines: Vec<OrderLine>,
    pub fulfillments: Vec<Fulfillment>,
    pub adjustments: Vec<Adjustment>,
    /// The session's totals at purchase: `total` stays the amount originally charged.
    pub totals: Vec<Total>,
    pub canceled: bool,
    #[serde(default = "captured_before_tracking")]
    pub payment: OrderPayment,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    pub fn total(&self) -> i64 {
        self.totals.iter().find(|t| t.kind == "total").map_or(0, |t| t.amount)
    }

    pub fn amount_refunded(&self) -> i64 {
        self.adjustments
            .iter()
            .filter(|a| a.kind == "refund" && a.status == "completed")
            .map(|a| a.amount)
            .sum()
    }

    /// DIGEST §3.14 (rfc.orders §7.1): canceled → completed (all delivered) → shipped (all fulfilled) →
    /// processing (anything under way) → confirmed.
    pub fn status(&self) -> &'static str {
        let live: Vec<&OrderLine> = self.lines.iter().filter(|l| l.current > 0).collect();
        if self.canceled || live.is_empty() {
            return "canceled";
        }
        let all_fulfilled = live.iter().all(|l| l.fulfilled >= l.current);
        let delivered = !self.fulfillments.is_empty() && self.fulfillments.iter().all(|f| f.status == "delivered");
        if all_fulfilled && delivered {
            "completed"
        } else if all_fulfilled {
            "shipped"
        } else if !self.fulfillments.is_empty() {
            "processing"
        } else {
            "confirmed"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(lines: &[(u32, u32, u32)], fulfillments: &[&str], canceled: bool) -> Order {
        let now = Utc::now();
        Order {
            id: "ord_1".into(),
            checkout_session_id: "cs_1".into(),
            agent_id: "a".into(),
            api_version: "2026-04-17".into(),
            permalink_url: "https://x/orders/ord_1".into(),
            currency: "usd".into(),
            charge_id: "pi_1".into(),
            lines: lines
                .iter()
                .enumerate()
                .map(|(i, (ordered, current, fulfilled))| OrderLine {
                    id: format!("li_{i}"),
                    item_id: format!("v{i}"),
                    title: "t".into(),
                    product_id: "p".into(),
                    unit_price: 100,
                    ordered: *ordered,
                    current: *current,
                    fulfilled: *fulfilled,
                })
                .collect(),
            fulfillments: fulfillments
                .iter()
                .map(|s| Fulfillment {
                    id: "f".into(),
                    kind: "shipping".into(),
                    status: (*s).into(),
                    line_items: vec![],
                    carrier: None,
                    tracking_number: None,
                    tracking_url: None,
                    events: vec![],
                })
                .collect(),
            adjustments: vec![],
            totals: vec![],
            canceled,
            payment: OrderPayment::captured(0, now),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn statuses_follow_the_digest_derivation() {
        assert_eq!(order(&[(2, 2, 0)], &[], false).status(), "confirmed");
        assert_eq!(order(&[(2, 2, 1)], &["shipped"], false).status(), "processing");
        assert_eq!(order(&[(2, 2, 2)], &["shipped"], false).status(), "shipped");
        assert_eq!(order(&[(2, 2, 2)], &["delivered"], false).status(), "completed");
        assert_eq!(order(&[(2, 0, 0)], &[], false).status(), "canceled");
        assert_eq!(order(&[(2, 2, 0)], &[], true).status(), "canceled");
    }

    #[test]
    fn line_statuses_follow_the_digest_derivation() {
        let o = order(&[(2, 0, 0), (2, 2, 2), (3, 3, 1), (1, 1, 0)], &[], false);
        let s: Vec<&str> = o.lines.iter().map(OrderLine::status).collect();
        assert_eq!(s, ["removed", "fulfilled", "partial", "processing"]);
    }
}
