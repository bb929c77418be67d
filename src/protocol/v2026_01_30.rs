//! ACP 2026-01-30 on the wire: the version closest to 2026-04-17, so requests are parsed with the 2026-04-17
//! request types and sessions are rendered with its helpers, narrowed to what 2026-01-30 defines. Tolerant
//! reader (documented deviations only), strict writer: a response never carries a field this version does not
//! define, and always carries what it requires.
//!
//! # Requests
//!
//! Same tolerances as 2026-04-17, written into `openapi/2026-01-30.json`:
//! - request items may carry `quantity` (integer 1..=99 999, default 1), as the RFC and examples send it;
//! - `capabilities` may be absent on create (an agent declaring nothing), although the official schema requires
//!   it: the official discount-extension examples omit it;
//! - `capabilities` may be re-declared on update (negotiation is recomputed; [`crate::checkout::negotiation`]);
//! - `items` is accepted as an alias of `line_items`, `phone` of `phone_number`, nested
//!   `selected_fulfillment_options` (`{type, shipping: {option_id, item_ids}}`) as well as flat ones (DIGEST §14
//!   items 2, 19, 20);
//! - unknown fields are ignored and never echoed, including the 2026-04-17 fields `order_notes` and
//!   `Address.company`, which are removed before parsing (so they are neither stored nor type-checked);
//! - `payment_data` must be the handler form (`handler_id` + `instrument` with an `spt` credential);
//!   `payment_terms` other than `immediate` and `approval_required: true` are refused: this seller offers
//!   neither net terms nor approval flows.
//!
//! Idempotency: `Idempotency-Key` is optional; idempotency refusals (409, 422) carry `Error.type`
//! `request_not_idempotent`.
//!
//! # Responses: what the canonical model becomes in 2026-01-30
//!
//! | canonical | 2026-01-30 |
//! |---|---|
//! | status (7 values) | native (all 7 are among this version's 11, including `complete_in_progress` and `expired`) |
//! | payment handlers | `capabilities.payment.handlers`, without `display_name` / `display_order` |
//! | interventions | `supported` = seller ∩ agent ∩ {3ds, biometric, address_verification}; `required` and `enforcement` from negotiation ([`crate::checkout::negotiation`]) |
//! | payment handlers offered | the merchant's handlers whose `name` the agent declared (all when it declared no list) |
//! | discount extension | `capabilities.extensions` declaration and `discounts` (as 2026-04-17) |
//! | line items, fulfillment options, selections | as 2026-04-17 (flat selections) |
//! | totals | the 11 types of this version; `amount_refunded` (orders only) is never sent |
//! | message info | `info`, severity `info` |
//! | message warning | `warning` with its code, severity `medium`; a code outside the version's 14 → `info` without code |
//! | message error | `error` with its code, severity `high` (it blocks payment); a code outside the version's 21 → `invalid` |
//! | message `resolution` | dropped (arrives in 2026-04-17) |
//! | links | the 8 link types of the version, with a `title` (`Terms of use`, …) |
//! | `Address.company` | dropped (fulfillment details) |
//! | `order_notes` | not sent (the version has none) |
//! | authentication metadata | configured `acquirer_details` and `directory_server`, plus the required `channel`: the seller never sees the buyer's browser, so it says so with the unspecified values (`accept_header` `*/*`, `ip_address` `0.0.0.0`, `language` `und`, `user_agent` `unknown`, `javascript_enabled` false); the agent gives its 3DS server the real ones |
//! | order | `id`, `checkout_session_id`, `permalink_url`, `order_number` (= the order id, what the permalink page shows), `estimated_delivery` (the window of the selected shipping option(s), when they have one); no `status` (below); no `confirmation` (no e-mail is sent) and no `support` (none configured) |
//! | marketing consent | never sent (arrives in 2026-04-17) |
//! | webhook body | the pre-2026-04-17 `EventDataOrder` ([`crate::protocol::legacy`]): `created`/`manual_review`/`confirmed`/`processing` → `confirmed`, `shipped` → `shipped`, `completed` → `fulfilled`, `canceled` → `canceled`; completed refunds as `original_payment` |
//!
//! `Order.status` is left out on purpose: the canonical session keeps only a reference to its order, frozen at
//! completion, and the [`Adapter::render`] contract has no access to the live order. Mapping it per VERSION_DIFFS
//! §9.3 (`created`/`manual_review` → `confirmed`, `completed` → `delivered`, `canceled` → no status) needs the
//! live order; a frozen `confirmed` would be wrong once the order ships. The live status travels in the webhooks.
//!
//! # Official examples (DIGEST §14 item 32)
//!
//! Every request of `examples/2026-01-30/examples.agentic_checkout.json` validates against the official JSON
//! Schema; the tests send each one (placeholder ids replaced by the demo catalog's). The examples that do not
//! validate, and how they are handled:
//! - the five `discount-extension/*.json` requests send `quantity` on items and omit the required
//!   `capabilities`: both are tolerated and the requests are accepted (their responses also carry
//!   `capabilities.payment_methods`, which the schema forbids: never emitted here);
//! - the official OpenAPI's inline request examples use `items` + `quantity` without `currency` or `capabilities`
//!   (answered 400 `missing` `$.currency`), the nested selection (accepted), and the legacy
//!   `payment_data: {token, provider}` (answered 400 `missing` `$.payment_data.handler_id`);
//! - the OpenAPI `CheckoutSessionWithOrder` example cannot validate (its base forbids `order`): responses are
//!   validated against the JSON Schema bundle instead (DIGEST §14 item 8).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{
    Adapter, WireContext, WireError, legacy, typed,
    v2026_04_17::{self, CompleteRequest, CreateRequest, UpdateRequest},
};
use crate::checkout::model::{Message, MessageKind, OrderRef, Session, Status, Total};

pub const VERSION: &str = "2026-01-30";

pub static V2026_01_30_DOC: &str = include_str!("../../openapi/2026-01-30.json");

/// The 2026-01-30 adapter.
pub struct V2026_01_30;

impl Adapter for V2026_01_30 {
    fn version(&self) -> &'static str {
        VERSION
    }

    fn openapi(&self) -> &'static str {
        V2026_01_30_DOC
    }

    fn idempotency_key_required(&self) -> bool {
        false
    }

    fn idempotency_error_type(&self) -> &'static str {
        "request_not_idempotent"
    }

    fn create(&self, body: Value) -> Result<crate::checkout::service::CreateInput, WireError> {
        typed::<CreateRequest>(without_later_fields(body))?.into_input()
    }

    fn update(&self, body: Value) -> Result<crate::checkout::service::UpdateInput, WireError> {
        typed::<UpdateRequest>(without_later_fields(body))?.into_input()
    }

    fn complete(&self, body: Value) -> Result<crate::checkout::service::CompleteInput, WireError> {
        typed::<CompleteRequest>(without_later_fields(body))?.into_input()
    }

    fn render(&self, session: &Session, ctx: &WireContext) -> Value {
        render(session, ctx)
    }

    fn webhook_body(&self, event_type: &str, order: &crate::orders::model::Order) -> Value {
        legacy::webhook_body(event_type, order)
    }
}

/// Removes the fields 2026-04-17 added that the shared request types would otherwise read: to a 2026-01-30 agent
/// they are unknown fields, ignored whatever their type.
fn without_later_fields(mut body: Value) -> Value {
    if let Some(top) = body.as_object_mut() {
        top.remove("order_notes");
    }
    if let Some(address) = body
        .pointer_mut("/fulfillment_details/address")
        .and_then(Value::as_object_mut)
    {
        address.remove("company");
    }
    body
}

/// `Total.type` values of this version.
const TOTAL_TYPES: [&str; 11] = [
    "items_base_amount",
    "items_discount",
    "subtotal",
    "discount",
    "fulfillment",
    "tax",
    "fee",
    "gift_wrap",
    "tip",
    "store_credit",
    "total",
];

/// `MessageWarning.code` values of this version.
const WARNING_CODES: [&str; 14] = [
    "low_stock",
    "high_demand",
    "shipping_delay",
    "price_change",
    "expiring_promotion",
    "limited_availability",
    "discount_code_expired",
    "discount_code_invalid",
    "discount_code_already_applied",
    "discount_code_combination_disallowed",
    "discount_code_minimum_not_met",
    "discount_code_user_not_logged_in",
    "discount_code_user_ineligible",
    "discount_code_usage_limit_reached",
];

/// `MessageError.code` values of this version.
const ERROR_CODES: [&str; 21] = [
    "missing",
    "invalid",
    "out_of_stock",
    "payment_declined",
    "requires_sign_in",
    "requires_3ds",
    "low_stock",
    "quantity_exceeded",
    "coupon_invalid",
    "coupon_expired",
    "minimum_not_met",
    "maximum_exceeded",
    "region_restricted",
    "age_verification_required",
    "approval_required",
    "unsupported",
    "not_found",
    "conflict",
    "rate_limited",
    "expired",
    "intervention_required",
];

/// `Link.type` values of this version, with the title each is sent with.
const LINK_TITLES: [(&str, &str); 8] = [
    ("terms_of_use", "Terms of use"),
    ("privacy_policy", "Privacy policy"),
    ("return_policy", "Return policy"),
    ("shipping_policy", "Shipping policy"),
    ("contact_us", "Contact us"),
    ("about_us", "About us"),
    ("faq", "FAQ"),
    ("support", "Support"),
];

/// `PaymentHandler` properties of this version (`display_name` and `display_order` arrive in 2026-04-17).
const HANDLER_FIELDS: [&str; 10] = [
    "id",
    "name",
    "version",
    "spec",
    "requires_delegate_payment",
    "requires_pci_compliance",
    "psp",
    "config_schema",
    "instrument_schemas",
    "config",
];

/// `InterventionCapabilities.supported` values of this version.
const INTERVENTIONS: [&str; 3] = ["3ds", "biometric", "address_verification"];

/// Totals of the types this version knows (`amount_refunded` belongs to orders of 2026-04-17).
fn totals(all: &[Total]) -> Vec<Value> {
    let known: Vec<Total> = all
        .iter()
        .filter(|t| TOTAL_TYPES.contains(&t.kind.as_str()))
        .cloned()
        .collect();
    v2026_04_17::totals(&known)
}

/// A message with the version's `severity` and without `resolution`; codes it does not know are mapped to the
/// nearest it does.
fn message(m: &Message) -> Value {
    let code = m.code.as_deref();
    let (kind, severity, code) = match m.kind {
        MessageKind::Info => ("info", "info", None),
        MessageKind::Warning => match code.filter(|c| WARNING_CODES.contains(c)) {
            Some(c) => ("warning", "medium", Some(c)),
            None => ("info", "info", None),
        },
        MessageKind::Error => (
            "error",
            "high",
            Some(code.filter(|c| ERROR_CODES.contains(c)).unwrap_or("invalid")),
        ),
    };
    let mut v = json!({"type": kind, "severity": severity, "content_type": "plain", "content": m.content});
    if let Some(code) = code {
        v["code"] = json!(code);
    }
    if let Some(param) = &m.param {
        v["param"] = json!(param);
    }
    v
}

fn handler(h: &Value) -> Value {
    let kept: Map<String, Value> = HANDLER_FIELDS
        .iter()
        .filter_map(|k| h.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    Value::Object(kept)
}

fn links(ctx: &WireContext) -> Vec<Value> {
    ctx.links
        .iter()
        .filter_map(|l| {
            let kind = l["type"].as_str()?;
            let (_, title) = LINK_TITLES.iter().find(|(k, _)| *k == kind)?;
            Some(json!({"type": kind, "title": title, "url": l["url"]}))
        })
        .collect()
}

fn capabilities(s: &Session, ctx: &WireContext) -> Value {
    let mut v = v2026_04_17::capabilities(s, ctx, handler);
    if let Some(supported) = v["interventions"]["supported"].as_array_mut() {
        supported.retain(|i| i.as_str().is_some_and(|i| INTERVENTIONS.contains(&i)));
    }
    v
}

/// The configured 3DS metadata plus the `channel` this version requires (see the module docs).
fn authentication_metadata(ctx: &WireContext) -> Value {
    let mut metadata = ctx.authentication_metadata.clone();
    metadata["channel"] = json!({
        "type": "browser",
        "browser": {
            "accept_header": "*/*",
            "ip_address": "0.0.0.0",
            "javascript_enabled": false,
            "language": "und",
            "user_agent": "unknown",
        },
    });
    metadata
}

/// The earliest and latest delivery over the selected options that announce a window.
fn delivery_window(s: &Session) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = s
        .computed
        .fulfillment_options
        .iter()
        .filter(|o| s.computed.selected.iter().any(|sel| sel.option_id == o.id))
        .filter_map(|o| Some((o.earliest_delivery_time?, o.latest_delivery_time?)))
        .collect();
    let earliest = windows.iter().map(|w| w.0).min()?;
    let latest = windows.iter().map(|w| w.1).max()?;
    Some((earliest, latest))
}

fn order(s: &Session, o: &OrderRef) -> Value {
    let mut v = json!({
        "id": o.id,
        "checkout_session_id": s.id,
        "permalink_url": o.permalink_url,
        "order_number": o.id,
    });
    if let Some((earliest, latest)) = delivery_window(s) {
        v["estimated_delivery"] = json!({"earliest": earliest.to_rfc3339(), "latest": latest.to_rfc3339()});
    }
    v
}

fn line(l: &crate::checkout::model::Line) -> Value {
    let mut v = v2026_04_17::line(l);
    v["totals"] = json!(totals(&l.totals));
    v
}

fn fulfillment_details(d: &crate::checkout::model::FulfillmentDetails) -> Value {
    let mut v = json!(d);
    if let Some(address) = v.get_mut("address").and_then(Value::as_object_mut) {
        address.remove("company");
    }
    v
}

/// The session as 2026-01-30 defines `CheckoutSession` (plus `order` once completed).
pub fn render(s: &Session, ctx: &WireContext) -> Value {
    let mut v = json!({
        "id": s.id,
        "protocol": {"version": VERSION},
        "capabilities": capabilities(s, ctx),
        "status": s.status.as_str(),
        "currency": s.currency,
        "line_items": s.computed.lines.iter().map(line).collect::<Vec<_>>(),
        "fulfillment_options": s.computed.fulfillment_options.iter().map(v2026_04_17::fulfillment_option).collect::<Vec<_>>(),
        "totals": totals(&s.computed.totals),
        "messages": s.computed.messages.iter().map(message).collect::<Vec<_>>(),
        "links": links(ctx),
        "created_at": s.created_at.to_rfc3339(),
        "updated_at": s.updated_at.to_rfc3339(),
        "expires_at": s.expires_at.to_rfc3339(),
    });
    if !s.computed.selected.is_empty() {
        v["selected_fulfillment_options"] = s
            .computed
            .selected
            .iter()
            .map(|o| json!({"type": o.kind, "option_id": o.option_id, "item_ids": o.item_ids}))
            .collect();
    }
    if let Some(b) = &s.buyer {
        v["buyer"] = json!(b);
    }
    if let Some(d) = &s.fulfillment_details {
        v["fulfillment_details"] = fulfillment_details(d);
    }
    if s.status == Status::AuthenticationRequired {
        v["authentication_metadata"] = authentication_metadata(ctx);
    }
    if v2026_04_17::discount_extension_active(s) {
        v["capabilities"]["extensions"] = json!([{
            "name": "discount",
            "extends": ["$.CheckoutSessionCreateRequest.discounts", "$.CheckoutSessionUpdateRequest.discounts",
                        "$.CheckoutSession.discounts"],
        }]);
        v["discounts"] = v2026_04_17::discounts(s);
    }
    if let Some(o) = &s.order {
        v["order"] = order(s, o);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: MessageKind, code: Option<&str>) -> Message {
        Message {
            kind,
            code: code.map(str::to_owned),
            param: Some("$.x".into()),
            content: "c".into(),
            resolution: Some("recoverable".into()),
        }
    }

    #[test]
    fn messages_lose_resolution_and_unknown_codes() {
        let warning = message(&msg(MessageKind::Warning, Some("price_change")));
        assert_eq!(
            warning,
            json!({"type": "warning", "code": "price_change", "severity": "medium", "param": "$.x",
                   "content_type": "plain", "content": "c"})
        );
        let odd_warning = message(&msg(MessageKind::Warning, Some("made_up")));
        assert_eq!(odd_warning["type"], "info");
        assert!(odd_warning.get("code").is_none());
        let odd_error = message(&msg(MessageKind::Error, Some("made_up")));
        assert_eq!(
            (&odd_error["code"], &odd_error["severity"]),
            (&json!("invalid"), &json!("high"))
        );
        assert!(odd_error.get("resolution").is_none());
    }

    #[test]
    fn later_totals_handler_fields_and_request_fields_are_dropped() {
        let t = |kind: &str| Total {
            kind: kind.into(),
            display_text: kind.into(),
            amount: 1,
        };
        assert_eq!(totals(&[t("total"), t("amount_refunded")]).len(), 1);
        let h = handler(&json!({"id": "h", "display_name": "Card", "display_order": 0, "config": {}}));
        assert_eq!(h, json!({"id": "h", "config": {}}));
        let body = without_later_fields(json!({"order_notes": 5, "fulfillment_details": {"address": {"company": 1}}}));
        assert_eq!(body, json!({"fulfillment_details": {"address": {}}}));
    }
}
