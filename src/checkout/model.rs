//! The canonical checkout session, independent of any ACP wire version. It is stored as JSON in
//! `checkout_session.state`; per-version adapters in `protocol/` render it and parse requests into it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    NotReadyForPayment,
    ReadyForPayment,
    AuthenticationRequired,
    /// A complete call holds the session while the PSP is charged.
    CompleteInProgress,
    Completed,
    Canceled,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotReadyForPayment => "not_ready_for_payment",
            Self::ReadyForPayment => "ready_for_payment",
            Self::AuthenticationRequired => "authentication_required",
            Self::CompleteInProgress => "complete_in_progress",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Canceled | Self::Expired)
    }
}

/// One requested item: a variant id and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedItem {
    pub item_id: String,
    pub quantity: u32,
}

/// Fields in the byte order of their names: the 2026-04-17 session embeds the buyer as stored, and a JSON object
/// prints its keys sorted (see `protocol::session_view`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Buyer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_exemption: Option<TaxExemption>,
}

/// A buyer's tax-exemption certificate (2026-04-17 `TaxExemption`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaxExemption {
    pub certificate_id: String,
    pub certificate_type: String,
    /// Where it applies, as region codes (`CA`) or country-region codes (`US-CA`); empty means everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt_regions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Fields in the byte order of their names, as [`Buyer`]'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    pub country: String,
    pub line_one: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_two: Option<String>,
    pub name: String,
    pub postal_code: String,
    pub state: String,
}

/// Fields in the byte order of their names, as [`Buyer`]'s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FulfillmentDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, alias = "phone", skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FulfillmentKind {
    Shipping,
    Digital,
    Pickup,
    LocalDelivery,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectedOption {
    pub kind: FulfillmentKind,
    pub option_id: String,
    pub item_ids: Vec<String>,
    /// The selection names an option by id alone (2025-09-29's `fulfillment_option_id`): it matches an option of
    /// any kind, for every item that option covers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_kind: bool,
}

/// A money line as ACP `Total` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Total {
    pub kind: String,
    pub display_text: String,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub id: String,
    pub item_id: String,
    pub quantity: u32,
    pub name: String,
    pub description: Option<String>,
    pub image_url: Option<String>,
    pub url: Option<String>,
    pub product_id: String,
    pub unit_amount: i64,
    pub requires_shipping: bool,
    pub disclosures: Vec<crate::catalog::Disclosure>,
    pub available_quantity: Option<u32>,
    pub max_quantity_per_order: Option<u32>,
    pub totals: Vec<Total>,
    /// No tax was charged on this line because the buyer's exemption applies.
    #[serde(default)]
    pub tax_exempt: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FulfillmentOption {
    pub kind: FulfillmentKind,
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub carrier: Option<String>,
    pub earliest_delivery_time: Option<DateTime<Utc>>,
    pub latest_delivery_time: Option<DateTime<Utc>>,
    /// Item ids this option can fulfil.
    pub item_ids: Vec<String>,
    pub amount: i64,
    /// Pickup options: where to collect.
    #[serde(default)]
    pub location: Option<crate::pricing::rules::PickupLocation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub kind: MessageKind,
    pub code: Option<String>,
    pub param: Option<String>,
    pub content: String,
    pub resolution: Option<String>,
}

impl Message {
    pub fn error(code: &str, param: impl Into<String>, content: impl Into<String>, resolution: &str) -> Self {
        Self {
            kind: MessageKind::Error,
            code: Some(code.to_owned()),
            param: Some(param.into()),
            content: content.into(),
            resolution: Some(resolution.to_owned()),
        }
    }

    pub fn warning(code: &str, param: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            kind: MessageKind::Warning,
            code: Some(code.to_owned()),
            param: Some(param.into()),
            content: content.into(),
            resolution: Some("recoverable".to_owned()),
        }
    }

    pub fn info(content: impl Into<String>) -> Self {
        Self {
            kind: MessageKind::Info,
            code: None,
            param: None,
            content: content.into(),
            resolution: None,
        }
    }
}

/// A promotion that applied, with its share of each line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedDiscount {
    pub promotion_id: String,
    pub name: String,
    pub code: Option<String>,
    pub amount: i64,
    /// (line index, amount), only lines with a share.
    pub allocations: Vec<(usize, i64)>,
    pub percent_off: Option<rust_decimal::Decimal>,
    pub amount_off: Option<i64>,
    /// A free-shipping promotion: its amount is allocated to the fulfillment total, not to lines.
    #[serde(default)]
    pub free_shipping: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedDiscount {
    pub code: String,
    pub reason: String,
    pub message: String,
}

/// The authoritative computation from the last mutation: what every response shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Computed {
    #[serde(default)]
    pub applied_discounts: Vec<AppliedDiscount>,
    #[serde(default)]
    pub rejected_discounts: Vec<RejectedDiscount>,
    pub lines: Vec<Line>,
    pub fulfillment_options: Vec<FulfillmentOption>,
    pub selected: Vec<SelectedOption>,
    pub totals: Vec<Total>,
    pub messages: Vec<Message>,
}

impl Computed {
    pub fn total(&self) -> i64 {
        self.totals.iter().find(|t| t.kind == "total").map_or(0, |t| t.amount)
    }

    pub fn has_errors(&self) -> bool {
        self.messages.iter().any(|m| m.kind == MessageKind::Error)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRef {
    pub id: String,
    pub permalink_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub agent_id: String,
    /// The ACP version the session was created with (webhooks render in it).
    pub api_version: String,
    pub status: Status,
    pub currency: String,
    pub items: Vec<RequestedItem>,
    pub buyer: Option<Buyer>,
    pub fulfillment_details: Option<FulfillmentDetails>,
    /// What the agent asked for; `computed.selected` is what applies.
    pub requested_selection: Vec<SelectedOption>,
    /// Interventions the agent declared it supports.
    pub agent_interventions: Vec<String>,
    /// Extensions the agent declared (`capabilities.extensions`), e.g. `discount`.
    #[serde(default)]
    pub agent_extensions: Vec<String>,
    /// Capability negotiation beyond interventions and extensions: declared handlers, required interventions.
    #[serde(default)]
    pub negotiation: super::negotiation::Negotiation,
    /// Discount codes as the agent last sent them (`discounts.codes`, or the deprecated `coupons`).
    #[serde(default)]
    pub discount_codes: Vec<String>,
    pub order_notes: Option<String>,
    pub computed: Computed,
    pub order: Option<OrderRef>,
    /// Set while status is `authentication_required`.
    pub authentication_pending: bool,
    /// The order id reserved when payment starts, so the PSP's metadata can name the order before it exists.
    #[serde(default)]
    pub pending_order_id: Option<String>,
    /// The payment attempt that holds the session while it is `complete_in_progress` (and the last one after).
    #[serde(default)]
    pub current_attempt_id: Option<String>,
    /// How many payment attempts the session has started.
    #[serde(default)]
    pub attempt_count: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}
