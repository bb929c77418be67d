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
