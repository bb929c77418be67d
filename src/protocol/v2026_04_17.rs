//! ACP 2026-04-17 on the wire: request bodies parsed into the canonical inputs, sessions rendered from the
//! canonical model. Tolerant reader (documented deviations only), strict writer.
//!
//! Deviations from the official request schema, all deliberate (see README, "Requests"):
//! - request items may carry `quantity` (integer 1..=99 999, default 1), as the RFC and examples send it;
//! - `capabilities` may be absent on create (an agent declaring nothing);
//! - `capabilities` may be re-declared on update (negotiation is recomputed; [`crate::checkout::negotiation`]);
//! - `items` is accepted as an alias of `line_items`, `phone` of `phone_number` (DIGEST §14 items 2, 20);
//! - unknown fields are ignored and never echoed.

use serde::Deserialize;
use serde_json::{Value, json};

use super::session_view::{CapabilitiesView, DiscountsView, FulfillmentOptionView, LineView, SessionView, TotalView};
use super::{Adapter, WireContext, WireError, double_option, typed};
use crate::checkout::{
    model::{
        Address, Buyer, FulfillmentDetails, FulfillmentKind, FulfillmentOption, Line, RequestedItem, SelectedOption,
        Session, Total,
    },
    negotiation::{self, Declared},
    service::{AuthenticationOutcome, CompleteInput, CreateInput, UpdateInput},
};
use crate::psp::ThreeDsData;

pub const VERSION: &str = "2026-04-17";

/// Largest quantity one line may request: far above any real order, and small enough that money arithmetic
/// cannot overflow.
pub const MAX_QUANTITY: i64 = 99_999;

fn invalid(param: impl Into<String>, message: impl Into<String>) -> WireError {
    WireError::invalid(param, message)
}

/// The 2026-04-17 adapter.
pub struct V2026_04_17;

pub static V2026_04_17_DOC: &str = include_str!("../../openapi/2026-04-17.json");

impl Adapter for V2026_04_17 {
    fn version(&self) -> &'static str {
        VERSION
    }

    fn openapi(&self) -> &'static str {
        V2026_04_17_DOC
    }

    fn idempotency_key_required(&self) -> bool {
        true
    }

    fn create(&self, body: Value) -> Result<CreateInput, WireError> {
        typed::<CreateRequest>(body)?.into_input()
    }

    fn update(&self, body: Value) -> Result<UpdateInput, WireError> {
        typed::<UpdateRequest>(body)?.into_input()
    }

    fn complete(&self, body: Value) -> Result<CompleteInput, WireError> {
        typed::<CompleteRequest>(body)?.into_input()
    }

    fn render(&self, session: &Session, ctx: &WireContext) -> Value {
        render(session, ctx)
    }

    fn render_bytes(&self, session: &Session, ctx: &WireContext) -> Vec<u8> {
        super::print(&SessionView::new(session, ctx))
    }

    fn webhook_body(&self, event_type: &str, order: &crate::orders::model::Order) -> Value {
        webhook_body(event_type, order)
    }
}

#[derive(Debug, Deserialize)]
pub struct ItemIn {
    pub id: String,
    #[serde(default)]
    /// A JSON number: `2.0` is the whole number 2 (the schema's `integer` admits it, and so do fingerprints).
    pub quantity: Option<serde_json::Number>,
}

#[derive(Debug, Deserialize)]
pub struct InterventionsIn {
    #[serde(default)]
    pub supported: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct CapabilitiesIn {
    #[serde(default)]
    pub interventions: Option<InterventionsIn>,
    /// Extension names the agent supports (request form: strings; anything else is ignored).
    #[serde(default)]
    pub extensions: Option<Vec<Value>>,
    /// `payment.handlers` the agent can use (objects with a `name`, or bare names; anything else is ignored).
    #[serde(default)]
    pub payment: Option<Value>,
}

impl CapabilitiesIn {
    /// What negotiation needs from the declaration; non-string extensions are ignored.
    pub fn declared(self) -> Declared {
        Declared {
            interventions: self.interventions.map(|i| i.supported).unwrap_or_default(),
            extensions: self
                .extensions
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            payment_handlers: negotiation::declared_handler_names(self.payment.as_ref()),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct DiscountsIn {
    #[serde(default)]
    pub codes: Vec<String>,
}

/// `discounts.codes` wins over the deprecated `coupons` alias when both are sent.
fn codes(discounts: Option<DiscountsIn>, coupons: Option<Vec<String>>) -> Option<Vec<String>> {
    discounts.map(|d| d.codes).or(coupons)
}

/// A selection, flat (`{type, option_id, item_ids}`) or nested as 2025-12-12 sent it
/// (`{type, shipping: {option_id, item_ids}}`; DIGEST §14 item 19).
#[derive(Debug, Deserialize)]
pub struct SelectedIn {
    #[serde(rename = "type")]
    pub kind: FulfillmentKind,
    #[serde(default)]
    pub option_id: Option<String>,
    #[serde(default)]
    pub item_ids: Option<Vec<String>>,
    #[serde(default)]
    pub shipping: Option<NestedSelectionIn>,
    #[serde(default)]
    pub digital: Option<NestedSelectionIn>,
    #[serde(default)]
    pub pickup: Option<NestedSelectionIn>,
    #[serde(default)]
    pub local_delivery: Option<NestedSelectionIn>,
}

#[derive(Debug, Deserialize)]
pub struct NestedSelectionIn {
    pub option_id: String,
    #[serde(default)]
    pub item_ids: Vec<String>,
}

impl SelectedIn {
    pub fn into_selection(self) -> SelectedOption {
        let nested = match self.kind {
            FulfillmentKind::Shipping => self.shipping,
            FulfillmentKind::Digital => self.digital,
            FulfillmentKind::Pickup => self.pickup,
            FulfillmentKind::LocalDelivery => self.local_delivery,
        };
        let (nested_id, nested_items) = nested.map_or((None, None), |n| (Some(n.option_id), Some(n.item_ids)));
        SelectedOption {
            kind: self.kind,
            option_id: self.option_id.or(nested_id).unwrap_or_default(),
            item_ids: self.item_ids.or(nested_items).unwrap_or_default(),
            any_kind: false,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    #[serde(alias = "items")]
    pub line_items: Vec<ItemIn>,
    pub currency: String,
    #[serde(default)]
    pub capabilities: Option<CapabilitiesIn>,
    #[serde(default)]
    pub buyer: Option<Buyer>,
    #[serde(default)]
    pub fulfillment_details: Option<FulfillmentDetails>,
    #[serde(default)]
    pub order_notes: Option<String>,
    #[serde(default)]
    pub discounts: Option<DiscountsIn>,
    #[serde(default)]
    pub coupons: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct UpdateRequest {
    #[serde(default, alias = "items")]
    pub line_items: Option<Vec<ItemIn>>,
    #[serde(default, deserialize_with = "double_option")]
    pub buyer: Option<Option<Buyer>>,
    #[serde(default, deserialize_with = "double_option")]
    pub fulfillment_details: Option<Option<FulfillmentDetails>>,
    #[serde(default)]
    pub selected_fulfillment_options: Option<Vec<SelectedIn>>,
    #[serde(default, deserialize_with = "double_option")]
    pub order_notes: Option<Option<String>>,
    #[serde(default)]
    pub discounts: Option<DiscountsIn>,
    #[serde(default)]
    pub coupons: Option<Vec<String>>,
    /// Not in the official update request: an agent may re-declare its capabilities (README, "Capability
    /// negotiation"), replacing what it declared before.
    #[serde(default)]
    pub capabilities: Option<CapabilitiesIn>,
}

/// `Debug` is written by hand: it leaves the payment token out.
#[derive(Deserialize)]
pub struct CredentialIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub token: String,
}

impl std::fmt::Debug for CredentialIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialIn")
            .field("kind", &self.kind)
            .field("token", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Deserialize)]
pub struct InstrumentIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub credential: CredentialIn,
}

#[derive(Debug, Deserialize)]
pub struct PaymentDataIn {
    pub handler_id: String,
    pub instrument: InstrumentIn,
}

#[derive(Debug, Deserialize)]
pub struct OutcomeDetailsIn {
    pub three_ds_cryptogram: String,
    pub electronic_commerce_indicator: String,
    pub transaction_id: String,
    pub version: String,
}

#[derive(Debug, Deserialize)]
pub struct AuthenticationResultIn {
    pub outcome: String,
    #[serde(default)]
    pub outcome_details: Option<OutcomeDetailsIn>,
}

#[derive(Debug, Deserialize)]
pub struct CompleteRequest {
    pub payment_data: PaymentDataIn,
    #[serde(default)]
    pub buyer: Option<Buyer>,
    #[serde(default)]
    pub authentication_result: Option<AuthenticationResultIn>,
    #[serde(default)]
    pub order_notes: Option<String>,
}

fn items(items: Vec<ItemIn>) -> Result<Vec<RequestedItem>, WireError> {
    if items.is_empty() {
        return Err(invalid("$.line_items", "line_items must contain at least one item"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let quantity = item.quantity.as_ref().map_or(Some(1), whole_number).unwrap_or(0);
            if !(1..=MAX_QUANTITY).contains(&quantity) {
                return Err(invalid(
                    format!("$.line_items[{i}].quantity"),
                    format!("quantity must be an integer from 1 to {MAX_QUANTITY}"),
                ));
            }
            if item.id.is_empty() {
                return Err(invalid(format!("$.line_items[{i}].id"), "item id must not be empty"));
            }
            Ok(RequestedItem {
                item_id: item.id,
                quantity: quantity as u32,
            })
        })
        .collect()
}

/// The number as an integer when it is one (`2`, `2.0`), else `None`.
fn whole_number(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

fn check_currency(currency: &str) -> Result<(), WireError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(())
    } else {
        Err(invalid("$.currency", "currency must be a three-letter ISO 4217 code"))
    }
}

fn check_address(address: &Address, at: &str) -> Result<(), WireError> {
    if address.country.len() != 2 || !address.country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            format!("{at}.country"),
            "country must be an ISO 3166-1 alpha-2 code such as US",
        ));
    }
    Ok(())
}

fn check_details(details: &FulfillmentDetails) -> Result<(), WireError> {
    match &details.address {
        Some(a) => check_address(a, "$.fulfillment_details.address"),
        None => Ok(()),
    }
}

impl CreateRequest {
    pub fn into_input(self) -> Result<CreateInput, WireError> {
        check_currency(&self.currency)?;
        if let Some(d) = &self.fulfillment_details {
            check_details(d)?;
        }
        let declared = self.capabilities.map(CapabilitiesIn::declared).unwrap_or_default();
        Ok(CreateInput {
            agent_extensions: declared.extensions,
            discount_codes: codes(self.discounts, self.coupons).unwrap_or_default(),
            items: items(self.line_items)?,
            currency: Some(self.currency),
            buyer: self.buyer,
            fulfillment_details: self.fulfillment_details,
            agent_interventions: declared.interventions,
            agent_payment_handlers: declared.payment_handlers,
            order_notes: self.order_notes,
        })
    }
}

impl UpdateRequest {
    pub fn into_input(self) -> Result<UpdateInput, WireError> {
        if let Some(Some(d)) = &self.fulfillment_details {
            check_details(d)?;
        }
        Ok(UpdateInput {
            discount_codes: codes(self.discounts, self.coupons),
            items: self.line_items.map(items).transpose()?,
            buyer: self.buyer,
            fulfillment_details: self.fulfillment_details,
            selection: self
                .selected_fulfillment_options
                .map(|s| s.into_iter().map(SelectedIn::into_selection).collect()),
            order_notes: self.order_notes,
            capabilities: self.capabilities.map(CapabilitiesIn::declared),
        })
    }
}

impl CompleteRequest {
    pub fn into_input(self) -> Result<CompleteInput, WireError> {
        let credential = &self.payment_data.instrument.credential;
        if credential.kind != "spt" {
            return Err(invalid(
                "$.payment_data.instrument.credential.type",
                "only Shared Payment Token credentials (type spt) are accepted",
            ));
        }
        let authentication = match self.authentication_result.as_ref().map(|a| a.outcome.as_str()) {
            None => None,
            Some("authenticated" | "attempt_acknowledged") => {
                let details = self
                    .authentication_result
                    .as_ref()
                    .and_then(|a| a.outcome_details.as_ref())
                    .ok_or_else(|| {
                        WireError::missing(
                            "$.authentication_result.outcome_details",
                            "outcome_details is required when authentication succeeded",
                        )
                    })?;
                Some(AuthenticationOutcome::Authenticated(ThreeDsData {
                    cryptogram: details.three_ds_cryptogram.clone(),
                    electronic_commerce_indicator: details.electronic_commerce_indicator.clone(),
                    transaction_id: details.transaction_id.clone(),
                    version: details.version.clone(),
                }))
            }
            Some(
                "abandoned" | "canceled" | "denied" | "informational" | "internal_error" | "not_supported"
                | "processing_error" | "rejected",
            ) => Some(AuthenticationOutcome::Failed),
            Some(other) => {
                return Err(invalid(
                    "$.authentication_result.outcome",
                    format!("unknown authentication outcome '{other}'"),
                ));
            }
        };
        Ok(CompleteInput {
            handler_id: self.payment_data.handler_id,
            token: self.payment_data.instrument.credential.token,
            buyer: self.buyer,
            authentication,
            order_notes: self.order_notes,
            fulfillment_details: None,
        })
    }
}

/// A value of a view: `Value`'s own serializer cannot fail on the views' plain fields.
fn value_of(view: impl serde::Serialize) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}

pub(crate) fn totals(totals: &[Total]) -> Vec<Value> {
    totals.iter().map(|t| value_of(TotalView::new(t))).collect()
}

pub(crate) fn line(l: &Line) -> Value {
    value_of(LineView::new(l))
}

pub(crate) fn fulfillment_option(o: &FulfillmentOption) -> Value {
    value_of(FulfillmentOptionView::new(o))
}

/// The discount extension is active when the agent declared it, or sent codes anyway.
pub(crate) fn discount_extension_active(s: &Session) -> bool {
    s.agent_extensions
        .iter()
        .any(|e| e == "discount" || e.starts_with("discount@"))
        || !s.discount_codes.is_empty()
}

/// `DiscountsResponse`: the codes as sent, what applied (with per-line allocations) and what was rejected.
pub(crate) fn discounts(s: &Session) -> Value {
    value_of(DiscountsView::new(s))
}

/// The negotiated `capabilities` (without `extensions`): the merchant's handlers the agent can use (each shaped by
/// `handler` for the version), the interventions both sides support, and what the merchant requires.
pub fn capabilities(s: &Session, ctx: &WireContext, handler: impl Fn(&Value) -> Value) -> Value {
    value_of(CapabilitiesView::new(s, ctx, handler))
}

/// The full authoritative session as 2026-04-17 defines `CheckoutSession` (plus `order` once completed), as a
/// tree for the versions that reshape it; this version's own answers print [`SessionView`] directly.
pub fn render(s: &Session, ctx: &WireContext) -> Value {
    value_of(SessionView::new(s, ctx))
}

/// The full `Order` as 2026-04-17 defines it (complete response `order` is the short form; webhooks carry this).
pub fn render_order(o: &crate::orders::model::Order) -> Value {
    let lines: Vec<Value> = o
        .lines
        .iter()
        .map(|l| {
            json!({
                "id": l.id,
                "title": l.title,
                "product_id": l.product_id,
                "unit_price": l.unit_price,
                "subtotal": l.unit_price * i64::from(l.ordered),
                "quantity": {"ordered": l.ordered, "current": l.current, "fulfilled": l.fulfilled},
                "status": l.status(),
            })
        })
        .collect();
    let fulfillments: Vec<Value> = o
        .fulfillments
        .iter()
        .map(|f| {
            let mut v = json!({
                "id": f.id,
                "type": f.kind,
                "status": f.status,
                "line_items": f.line_items.iter().map(|(id, q)| json!({"id": id, "quantity": q})).collect::<Vec<_>>(),
                "events": f.events.iter().map(|e| json!({"id": e.id, "type": e.kind, "occurred_at": e.occurred_at.to_rfc3339()})).collect::<Vec<_>>(),
            });
            for (key, value) in [("carrier", &f.carrier), ("tracking_number", &f.tracking_number), ("tracking_url", &f.tracking_url)] {
                if let Some(value) = value {
                    v[key] = json!(value);
                }
            }
            v
        })
        .collect();
    let adjustments: Vec<Value> = o
        .adjustments
        .iter()
        .map(|a| {
            let mut v = json!({
                "id": a.id, "type": a.kind, "occurred_at": a.occurred_at.to_rfc3339(), "status": a.status,
                "amount": a.amount, "currency": o.currency,
            });
            if let Some(reason) = &a.reason {
                v["reason"] = json!(reason);
            }
            v
        })
        .collect();
    let mut order_totals = totals(&o.totals);
    order_totals.push(json!({"type": "amount_refunded", "display_text": "Refunded", "amount": o.amount_refunded()}));
    json!({
        "type": "order",
        "id": o.id,
        "checkout_session_id": o.checkout_session_id,
        "permalink_url": o.permalink_url,
        "status": o.status(),
        "line_items": lines,
        "fulfillments": fulfillments,
        "adjustments": adjustments,
        "totals": order_totals,
    })
}

/// `WebhookEvent`: `{type, data: full Order}`; the schema forbids anything else in the body.
pub fn webhook_body(event_type: &str, order: &crate::orders::model::Order) -> Value {
    json!({"type": event_type, "data": render_order(order)})
}
