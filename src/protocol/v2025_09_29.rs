//! ACP 2025-09-29 on the wire, the oldest version: requests parsed into the canonical inputs, the canonical
//! session shown in this version's shapes. Tolerant reader (documented deviations only), strict writer.
//!
//! | | 2025-09-29 | canonical |
//! |---|---|---|
//! | items | `items[{id, quantity}]`, quantity a whole number 1..=99 999 (deviation: the spec's HEAD allows decimals; this store sells whole units, so a fraction is refused with a 400 naming the field) | `RequestedItem` |
//! | currency | none in the request | the currency the items are priced in |
//! | address | `fulfillment_address` (Address, no `company`) | `fulfillment_details.address` |
//! | selection | `fulfillment_option_id` | one selection of any kind (`any_kind`) |
//! | payment | `payment_data {token, provider: "stripe", billing_address?}` | the card handler, an SPT credential |
//! | cancel body | none: any JSON object is ignored, anything else refused | (no intent trace) |
//! | `Idempotency-Key` | optional (honoured when sent); refusals are `request_not_idempotent` | required |
//! | payment config | `payment_provider {provider: "stripe", supported_payment_methods: ["card"]}` | handlers |
//! | money | flat `base_amount/discount/subtotal/tax/total` per line; `subtotal/tax/total` per option | `totals[]` |
//! | status | 5 values: `authentication_required` → `not_ready_for_payment` + `requires_3ds` error message; `complete_in_progress` → `in_progress`; `expired` → `canceled` (terminal stays terminal; its `expired` message is shown as `invalid` and says the session expired) | 7 values |
//! | messages | `info` and `error`; warnings become `info` (no code), error codes outside the version's six become `invalid`; no `resolution` | 3 types, 21 codes |
//! | links | `terms_of_use`, `privacy_policy`, `seller_shop_policies` (= the return policy) | |
//! | buyer | shown only with first and last names (the version requires them; so do its requests) | |
//! | options | shipping and digital only; a selected pickup (chosen in a newer version) is shown as `not_ready_for_payment` with a message | + pickup |
//! | order | `{id, checkout_session_id, permalink_url}`; webhooks in the legacy `EventDataOrder` shape | |
//!
//! 3-D Secure: this version cannot carry an authentication result. A card that needs it leaves the session
//! `authentication_required` in the domain (the payment waits at the PSP, nothing is charged), shown here as
//! `not_ready_for_payment` with a `requires_3ds` message that says what to do; completing again in this version
//! answers 400 `requires_3ds` and charges nothing; canceling cancels the waiting payment.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Adapter, CARD_HANDLER_ID, WireContext, WireError, double_option, legacy, typed};
use crate::checkout::{
    model::{
        Address, Buyer, FulfillmentDetails, FulfillmentKind, FulfillmentOption, Line, Message, MessageKind,
        RequestedItem, SelectedOption, Session, Status, Total,
    },
    service::{CompleteInput, CreateInput, UpdateInput},
};

pub const VERSION: &str = "2025-09-29";

/// The 2025-09-29 adapter.
pub struct V2025_09_29;

pub static V2025_09_29_DOC: &str = include_str!("../../openapi/2025-09-29.json");

/// What a 2025-09-29 agent is told when a card needs 3-D Secure (the session message and the 400 on complete).
pub const THREE_DS_UNSUPPORTED: &str = "This card needs 3-D Secure authentication, which ACP 2025-09-29 cannot \
    carry, so nothing was charged. Cancel this checkout and start a new one with another payment method, or \
    complete it with a newer API version that sends an authentication result.";

impl Adapter for V2025_09_29 {
    fn version(&self) -> &'static str {
        VERSION
    }

    fn openapi(&self) -> &'static str {
        V2025_09_29_DOC
    }

    fn idempotency_key_required(&self) -> bool {
        false
    }

    fn idempotency_error_type(&self) -> &'static str {
        "request_not_idempotent"
    }

    fn create(&self, body: Value) -> Result<CreateInput, WireError> {
        let request = typed::<CreateRequest>(body)?;
        Ok(CreateInput {
            items: items(request.items)?,
            agent_extensions: Vec::new(),
            discount_codes: Vec::new(),
            currency: None,
            buyer: request.buyer.map(BuyerIn::into_buyer),
            fulfillment_details: request.fulfillment_address.map(AddressIn::into_details),
            agent_interventions: Vec::new(),
            agent_payment_handlers: None,
            order_notes: None,
        })
    }

    fn update(&self, body: Value) -> Result<UpdateInput, WireError> {
        let request = typed::<UpdateRequest>(body)?;
        Ok(UpdateInput {
            items: request.items.map(items).transpose()?,
            buyer: request.buyer.map(|b| b.map(BuyerIn::into_buyer)),
            fulfillment_details: request.fulfillment_address.map(|a| a.map(AddressIn::into_details)),
            selection: request.fulfillment_option_id.map(|id| {
                vec![SelectedOption {
                    kind: FulfillmentKind::Shipping,
                    option_id: id,
                    item_ids: Vec::new(),
                    any_kind: true,
                }]
            }),
            order_notes: None,
            discount_codes: None,
            capabilities: None,
        })
    }

    fn complete(&self, body: Value) -> Result<CompleteInput, WireError> {
        let request = typed::<CompleteRequest>(body)?;
        Ok(CompleteInput {
            handler_id: CARD_HANDLER_ID.to_owned(),
            token: request.payment_data.token,
            buyer: request.buyer.map(BuyerIn::into_buyer),
            authentication: None,
            order_notes: None,
            fulfillment_details: None,
        })
    }

    fn render(&self, session: &Session, ctx: &WireContext) -> Value {
        render(session, ctx)
    }

    fn webhook_body(&self, event_type: &str, order: &crate::orders::model::Order) -> Value {
        legacy::webhook_body(event_type, order)
    }

    fn request_param(&self, param: &str) -> Option<String> {
        if let Some((index, tail)) = line_item(param) {
            // A line's item id (as session messages name it) is the request item's id.
            let tail = if tail == ".item.id" { ".id" } else { tail };
            return Some(format!("$.items[{index}]{tail}"));
        }
        if let Some(renamed) = fulfillment_param(param) {
            return Some(renamed);
        }
        // The canonical handler_id and instrument are one token here; this version's own members (schema errors)
        // stay as they are.
        let canonical_payment = ["$.payment_data.handler_id", "$.payment_data.instrument"];
        if canonical_payment.iter().any(|field| under(param, field).is_some()) {
            return Some("$.payment_data.token".to_owned());
        }
        let absent = [
            "$.authentication_result",
            "$.currency",
            "$.discounts",
            "$.coupons",
            "$.order_notes",
            "$.capabilities",
        ];
        if absent.iter().any(|field| under(param, field).is_some()) {
            return None;
        }
        Some(param.to_owned())
    }

    fn error_message(&self, code: &str, message: String) -> String {
        match code {
            "requires_3ds" => THREE_DS_UNSUPPORTED.to_owned(),
            _ => message,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ItemIn {
    id: String,
    /// A number, as JSON has it: `2.0` is the whole number 2 (the schema and the idempotency fingerprint agree).
    quantity: serde_json::Number,
}

impl ItemIn {
    fn whole_quantity(&self) -> Option<u32> {
        let whole = match self.quantity.as_i64() {
            Some(n) => n,
            None => self.quantity.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15)? as i64,
        };
        u32::try_from(whole)
            .ok()
            .filter(|q| (1..=super::v2026_04_17::MAX_QUANTITY).contains(&i64::from(*q)))
    }
}

#[derive(Debug, Deserialize)]
struct AddressIn {
    name: String,
    line_one: String,
    #[serde(default)]
    line_two: Option<String>,
    city: String,
    state: String,
    country: String,
    postal_code: String,
}

impl AddressIn {
    fn into_details(self) -> FulfillmentDetails {
        FulfillmentDetails {
            address: Some(Address {
                name: self.name,
                line_one: self.line_one,
                line_two: self.line_two,
                city: self.city,
                state: self.state,
                country: self.country,
                postal_code: self.postal_code,
                company: None,
            }),
            ..FulfillmentDetails::default()
        }
    }
}

#[derive(Debug, Deserialize)]
struct BuyerIn {
    first_name: String,
    last_name: String,
    email: String,
    #[serde(default)]
    phone_number: Option<String>,
}

impl BuyerIn {
    fn into_buyer(self) -> Buyer {
        Buyer {
            email: self.email,
            first_name: Some(self.first_name),
            last_name: Some(self.last_name),
            full_name: None,
            phone_number: self.phone_number,
            customer_id: None,
            tax_exemption: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CreateRequest {
    items: Vec<ItemIn>,
    #[serde(default)]
    buyer: Option<BuyerIn>,
    #[serde(default)]
    fulfillment_address: Option<AddressIn>,
}

#[derive(Debug, Deserialize)]
struct UpdateRequest {
    #[serde(default)]
    items: Option<Vec<ItemIn>>,
    #[serde(default, deserialize_with = "double_option")]
    buyer: Option<Option<BuyerIn>>,
    #[serde(default, deserialize_with = "double_option")]
    fulfillment_address: Option<Option<AddressIn>>,
    #[serde(default)]
    fulfillment_option_id: Option<String>,
}

/// `provider` is checked by the schema (`stripe` only); `billing_address` is accepted and not used.
#[derive(Deserialize)]
struct PaymentDataIn {
    token: String,
}

/// The payment token never reaches a `Debug` output.
impl std::fmt::Debug for PaymentDataIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaymentDataIn { token: [redacted] }")
    }
}

#[derive(Debug, Deserialize)]
struct CompleteRequest {
    payment_data: PaymentDataIn,
    #[serde(default)]
    buyer: Option<BuyerIn>,
}

/// The schema already bounds every quantity; this keeps the conversion honest should the two ever disagree.
fn items(items: Vec<ItemIn>) -> Result<Vec<RequestedItem>, WireError> {
    if items.is_empty() {
        return Err(WireError::invalid("$.items", "items must contain at least one item"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item.whole_quantity() {
            Some(quantity) => Ok(RequestedItem {
                item_id: item.id,
                quantity,
            }),
            None => Err(WireError::invalid(
                format!("$.items[{i}].quantity"),
                format!(
                    "quantity must be a whole number of units from 1 to {}",
                    super::v2026_04_17::MAX_QUANTITY
                ),
            )),
        })
        .collect()
}

/// `param` when it is `prefix` or lies below it (`prefix.…`, `prefix[…]`): what follows the prefix.
fn under<'a>(param: &'a str, prefix: &str) -> Option<&'a str> {
    let tail = param.strip_prefix(prefix)?;
    (tail.is_empty() || tail.starts_with('.') || tail.starts_with('[')).then_some(tail)
}

/// `$.line_items[3].rest` → (`3`, `.rest`).
fn line_item(param: &str) -> Option<(&str, &str)> {
    let (index, tail) = param.strip_prefix("$.line_items[")?.split_once(']')?;
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then_some((index, tail))
}

/// The address and selection fields, which this version names differently in requests and sessions alike.
fn fulfillment_param(param: &str) -> Option<String> {
    if let Some(tail) = under(param, "$.fulfillment_details.address") {
        return Some(format!("$.fulfillment_address{tail}"));
    }
    if under(param, "$.fulfillment_details").is_some() {
        return Some("$.fulfillment_address".to_owned());
    }
    if under(param, "$.selected_fulfillment_options").is_some() {
        return Some("$.fulfillment_option_id".to_owned());
    }
    None
}

/// A session message's `param` (a path into the session) in this version's session; `None` when it points at
/// something this version does not show.
fn session_param(param: &str) -> Option<String> {
    if let Some((index, tail)) = line_item(param) {
        let tail = if tail == ".quantity" { ".item.quantity" } else { tail };
        return Some(format!("$.line_items[{index}]{tail}"));
    }
    if let Some(renamed) = fulfillment_param(param) {
        return Some(renamed);
    }
    if ["$.discounts", "$.authentication_result", "$.capabilities"]
        .iter()
        .any(|field| under(param, field).is_some())
    {
        return None;
    }
    Some(param.to_owned())
}

/// The six `MessageError` codes of this version; any other is shown as `invalid`.
const ERROR_CODES: [&str; 6] = [
    "missing",
    "invalid",
    "out_of_stock",
    "payment_declined",
    "requires_sign_in",
    "requires_3ds",
];

fn message(m: &Message) -> Value {
    let mut v = match m.kind {
        // No warnings in this version: what they say is information (price_change, discount notices).
        MessageKind::Info | MessageKind::Warning => json!({"type": "info"}),
        MessageKind::Error => {
            let code = m
                .code
                .as_deref()
                .filter(|c| ERROR_CODES.contains(c))
                .unwrap_or("invalid");
            json!({"type": "error", "code": code})
        }
    };
    if let Some(param) = m.param.as_deref().and_then(session_param) {
        v["param"] = json!(param);
    }
    v["content_type"] = json!("plain");
    v["content"] = json!(m.content);
    v
}

fn error_message(code: &str, param: Option<&str>, content: &str) -> Value {
    let mut v = json!({"type": "error", "code": code, "content_type": "plain", "content": content});
    if let Some(param) = param {
        v["param"] = json!(param);
    }
    v
}

/// The amount of the total of `kind` among `totals` (0 when absent).
fn amount(totals: &[Total], kind: &str) -> i64 {
    totals.iter().find(|t| t.kind == kind).map_or(0, |t| t.amount)
}

fn line(l: &Line) -> Value {
    json!({
        "id": l.id,
        "item": {"id": l.item_id, "quantity": l.quantity},
        "base_amount": amount(&l.totals, "items_base_amount"),
        "discount": amount(&l.totals, "discount"),
        "subtotal": amount(&l.totals, "subtotal"),
        "tax": amount(&l.totals, "tax"),
        "total": amount(&l.totals, "total"),
    })
}

/// Shipping and digital options, the only kinds this version has; the option's price is its subtotal and total
/// (tax on shipping is part of the session's tax total).
fn fulfillment_option(o: &FulfillmentOption) -> Option<Value> {
    if !shown(o.kind) {
        return None;
    }
    let mut v = json!({
        "type": o.kind,
        "id": o.id,
        "title": o.title,
        "subtotal": o.amount,
        "tax": 0,
        "total": o.amount,
    });
    if let Some(d) = &o.description {
        v["subtitle"] = json!(d);
    }
    if o.kind == FulfillmentKind::Shipping {
        if let Some(c) = &o.carrier {
            v["carrier"] = json!(c);
        }
        if let Some(t) = o.earliest_delivery_time {
            v["earliest_delivery_time"] = json!(t.to_rfc3339());
        }
        if let Some(t) = o.latest_delivery_time {
            v["latest_delivery_time"] = json!(t.to_rfc3339());
        }
    }
    Some(v)
}

fn shown(kind: FulfillmentKind) -> bool {
    matches!(kind, FulfillmentKind::Shipping | FulfillmentKind::Digital)
}

/// The eight total types of this version; newer ones are folded into the nearest (`fee`, `discount`), and a
/// refund total (orders only) is left out.
fn total(t: &Total) -> Option<Value> {
    let kind = match t.kind.as_str() {
        k @ ("items_base_amount" | "items_discount" | "subtotal" | "discount" | "fulfillment" | "tax" | "fee"
        | "total") => k,
        "store_credit" => "discount",
        "amount_refunded" => return None,
        _ => "fee",
    };
    Some(json!({"type": kind, "display_text": t.display_text, "amount": t.amount}))
}

/// The configured policy links this version can name: the return policy is its `seller_shop_policies`.
fn link(l: &Value) -> Option<Value> {
    let kind = match l["type"].as_str()? {
        k @ ("terms_of_use" | "privacy_policy") => k,
        "return_policy" => "seller_shop_policies",
        _ => return None,
    };
    Some(json!({"type": kind, "url": l["url"]}))
}

/// The buyer, when the names this version requires are known.
fn buyer(b: &Buyer) -> Option<Value> {
    let (first, last) = (b.first_name.as_ref()?, b.last_name.as_ref()?);
    let mut v = json!({"first_name": first, "last_name": last, "email": b.email});
    if let Some(phone) = &b.phone_number {
        v["phone_number"] = json!(phone);
    }
    Some(v)
}

fn address(a: &Address) -> Value {
    let mut v = json!({
        "name": a.name, "line_one": a.line_one, "city": a.city, "state": a.state, "country": a.country,
        "postal_code": a.postal_code,
    });
    if let Some(two) = &a.line_two {
        v["line_two"] = json!(two);
    }
    v
}

/// The full authoritative session as 2025-09-29 defines `CheckoutSession` (plus `order` once completed).
pub fn render(s: &Session, ctx: &WireContext) -> Value {
    let mut messages: Vec<Value> = s.computed.messages.iter().map(message).collect();
    // A selection this version cannot show (pickup, chosen with a newer version) cannot be paid from here.
    let hidden = s.computed.selected.iter().find(|o| !shown(o.kind));
    let payable = matches!(s.status, Status::ReadyForPayment | Status::AuthenticationRequired);
    if let (Some(hidden), true) = (hidden, payable) {
        messages.push(error_message(
            "invalid",
            Some("$.fulfillment_option_id"),
            &format!(
                "The fulfillment option '{}' was chosen with a newer API version and cannot be shown in ACP \
                 2025-09-29; choose one of fulfillment_options with fulfillment_option_id.",
                hidden.option_id
            ),
        ));
    }
    let status = match s.status {
        Status::ReadyForPayment if hidden.is_none() => "ready_for_payment",
        Status::ReadyForPayment | Status::NotReadyForPayment => "not_ready_for_payment",
        // A terminal session stays terminal: the version has no `expired`, and its message says why.
        Status::Expired => "canceled",
        Status::AuthenticationRequired => {
            messages.push(error_message("requires_3ds", None, THREE_DS_UNSUPPORTED));
            "not_ready_for_payment"
        }
        Status::CompleteInProgress => "in_progress",
        Status::Completed => "completed",
        Status::Canceled => "canceled",
    };
    let mut v = json!({
        "id": s.id,
        "payment_provider": {"provider": "stripe", "supported_payment_methods": ["card"]},
        "status": status,
        "currency": s.currency,
        "line_items": s.computed.lines.iter().map(line).collect::<Vec<_>>(),
        "fulfillment_options": s.computed.fulfillment_options.iter().filter_map(fulfillment_option).collect::<Vec<_>>(),
        "totals": s.computed.totals.iter().filter_map(total).collect::<Vec<_>>(),
        "messages": messages,
        "links": ctx.links.iter().filter_map(link).collect::<Vec<_>>(),
    });
    // One id: the shipping choice of a cart that also has digital items.
    let selected = s
        .computed
        .selected
        .iter()
        .find(|o| o.kind == FulfillmentKind::Shipping)
        .or_else(|| s.computed.selected.iter().find(|o| o.kind == FulfillmentKind::Digital));
    if let (Some(selected), None) = (selected, hidden) {
        v["fulfillment_option_id"] = json!(selected.option_id);
    }
    if let Some(b) = s.buyer.as_ref().and_then(buyer) {
        v["buyer"] = b;
    }
    if let Some(a) = s.fulfillment_details.as_ref().and_then(|d| d.address.as_ref()) {
        v["fulfillment_address"] = address(a);
    }
    if let Some(order) = &s.order {
        v["order"] = json!({
            "id": order.id,
            "checkout_session_id": s.id,
            "permalink_url": order.permalink_url,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::checkout::model::Computed;

    fn t(kind: &str, amount: i64) -> Total {
        Total {
            kind: kind.into(),
            display_text: kind.into(),
            amount,
        }
    }

    fn option(kind: FulfillmentKind, id: &str, amount: i64) -> FulfillmentOption {
        FulfillmentOption {
            kind,
            id: id.into(),
            title: id.into(),
            description: Some("Arrives soon".into()),
            carrier: Some("USPS".into()),
            earliest_delivery_time: Some(Utc::now()),
            latest_delivery_time: Some(Utc::now()),
            item_ids: vec!["var_a".into()],
            amount,
            location: None,
        }
    }

    fn selected(kind: FulfillmentKind, id: &str) -> SelectedOption {
        SelectedOption {
            kind,
            option_id: id.into(),
            item_ids: vec!["var_a".into()],
            any_kind: false,
        }
    }

    fn session(status: Status) -> Session {
        let now = Utc::now();
        Session {
            id: "cs_1".into(),
            agent_id: "agent".into(),
            api_version: VERSION.into(),
            status,
            currency: "usd".into(),
            items: vec![RequestedItem {
                item_id: "var_a".into(),
                quantity: 2,
            }],
            buyer: None,
            fulfillment_details: None,
            requested_selection: vec![],
            agent_interventions: vec![],
            agent_extensions: vec![],
            negotiation: Default::default(),
            discount_codes: vec![],
            order_notes: None,
            computed: Computed {
                lines: vec![Line {
                    id: "li_1".into(),
                    item_id: "var_a".into(),
                    quantity: 2,
                    name: "A".into(),
                    description: None,
                    image_url: None,
                    url: None,
                    product_id: "p".into(),
                    unit_amount: 500,
                    requires_shipping: true,
                    disclosures: vec![],
                    available_quantity: None,
                    max_quantity_per_order: None,
                    totals: vec![
                        t("items_base_amount", 1000),
                        t("discount", 100),
                        t("subtotal", 900),
                        t("tax", 72),
                        t("total", 972),
                    ],
                    tax_exempt: false,
                }],
                fulfillment_options: vec![
                    option(FulfillmentKind::Shipping, "ship_standard", 500),
                    option(FulfillmentKind::Pickup, "pickup_store", 0),
                ],
                selected: vec![selected(FulfillmentKind::Shipping, "ship_standard")],
                totals: vec![t("items_base_amount", 1000), t("tip", 50), t("total", 1522)],
                ..Computed::default()
            },
            order: None,
            authentication_pending: false,
            pending_order_id: None,
            current_attempt_id: None,
            attempt_count: 0,
            created_at: now,
            updated_at: now,
            expires_at: now,
        }
    }

    fn ctx() -> WireContext {
        WireContext {
            payment_handlers: vec![],
            seller_interventions: vec![],
            required_interventions: vec![],
            links: vec![
                json!({"type": "terms_of_use", "url": "https://s.example/terms"}),
                json!({"type": "return_policy", "url": "https://s.example/returns"}),
                json!({"type": "faq", "url": "https://s.example/faq"}),
            ],
            authentication_metadata: json!({"directory_server": "visa"}),
        }
    }

    #[test]
    fn money_is_flat_and_newer_kinds_are_folded_or_dropped() {
        let v = render(&session(Status::ReadyForPayment), &ctx());
        assert_eq!(v["status"], "ready_for_payment");
        assert_eq!(
            v["line_items"][0],
            json!({"id": "li_1", "item": {"id": "var_a", "quantity": 2}, "base_amount": 1000, "discount": 100,
                   "subtotal": 900, "tax": 72, "total": 972})
        );
        let options = v["fulfillment_options"].as_array().unwrap();
        assert_eq!(options.len(), 1, "pickup has no shape in this version: {options:?}");
        assert_eq!(options[0]["subtotal"], 500);
        assert_eq!(options[0]["total"], 500);
        assert_eq!(options[0]["subtitle"], "Arrives soon");
        assert_eq!(v["fulfillment_option_id"], "ship_standard");
        assert_eq!(v["totals"][1]["type"], "fee", "a tip is a fee here");
        assert_eq!(
            v["links"],
            json!([{"type": "terms_of_use", "url": "https://s.example/terms"},
                   {"type": "seller_shop_policies", "url": "https://s.example/returns"}])
        );
        assert_eq!(v["payment_provider"]["provider"], "stripe");
        assert!(v.get("buyer").is_none() && v.get("capabilities").is_none());
    }

    #[test]
    fn statuses_of_newer_versions_are_shown_in_the_five() {
        let waiting = render(&session(Status::AuthenticationRequired), &ctx());
        assert_eq!(waiting["status"], "not_ready_for_payment");
        let last = waiting["messages"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["code"], "requires_3ds");
        assert_eq!(last["content"], THREE_DS_UNSUPPORTED);
        assert!(waiting.get("authentication_metadata").is_none());
        assert_eq!(
            render(&session(Status::CompleteInProgress), &ctx())["status"],
            "in_progress"
        );
        let mut expired = session(Status::Expired);
        expired.computed.messages = vec![Message::error(
            "expired",
            "$",
            "This checkout session has expired.",
            "x",
        )];
        let expired = render(&expired, &ctx());
        assert_eq!(expired["status"], "canceled");
        assert_eq!(
            expired["messages"][0],
            json!({"type": "error", "code": "invalid", "param": "$", "content_type": "plain",
                   "content": "This checkout session has expired."})
        );
    }

    #[test]
    fn a_pickup_chosen_elsewhere_cannot_be_paid_from_this_version() {
        let mut s = session(Status::ReadyForPayment);
        s.computed.selected = vec![selected(FulfillmentKind::Pickup, "pickup_store")];
        let v = render(&s, &ctx());
        assert_eq!(v["status"], "not_ready_for_payment");
        assert!(v.get("fulfillment_option_id").is_none());
        assert_eq!(v["messages"][0]["param"], "$.fulfillment_option_id");
    }

    #[test]
    fn messages_speak_this_version() {
        let cases = [
            (
                Message::warning("price_change", "$.totals", "moved"),
                json!({"type": "info", "param": "$.totals", "content_type": "plain", "content": "moved"}),
            ),
            (
                Message::warning("discount_code_expired", "$.discounts.codes[0]", "old"),
                json!({"type": "info", "content_type": "plain", "content": "old"}),
            ),
            (
                Message::error(
                    "quantity_exceeded",
                    "$.line_items[0].quantity",
                    "at most 2",
                    "recoverable",
                ),
                json!({"type": "error", "code": "invalid", "param": "$.line_items[0].item.quantity",
                       "content_type": "plain", "content": "at most 2"}),
            ),
            (
                Message::error("region_restricted", "$.fulfillment_details.address.country", "no", "x"),
                json!({"type": "error", "code": "invalid", "param": "$.fulfillment_address.country",
                       "content_type": "plain", "content": "no"}),
            ),
            (
                Message::error("invalid", "$.selected_fulfillment_options[0].option_id", "gone", "x"),
                json!({"type": "error", "code": "invalid", "param": "$.fulfillment_option_id",
                       "content_type": "plain", "content": "gone"}),
            ),
            (
                Message::error("out_of_stock", "$.line_items[1].item.id", "none", "x"),
                json!({"type": "error", "code": "out_of_stock", "param": "$.line_items[1].item.id",
                       "content_type": "plain", "content": "none"}),
            ),
        ];
        for (canonical, shown) in cases {
            assert_eq!(message(&canonical), shown, "{canonical:?}");
        }
    }

    #[test]
    fn error_params_name_this_versions_request_fields() {
        let a = V2025_09_29;
        for (canonical, mine) in [
            ("$.line_items[2].id", Some("$.items[2].id")),
            ("$.line_items[0].item.id", Some("$.items[0].id")),
            ("$.line_items[0].quantity", Some("$.items[0].quantity")),
            ("$.line_items[0]", Some("$.items[0]")),
            ("$.fulfillment_details.address", Some("$.fulfillment_address")),
            (
                "$.fulfillment_details.address.country",
                Some("$.fulfillment_address.country"),
            ),
            ("$.selected_fulfillment_options", Some("$.fulfillment_option_id")),
            ("$.payment_data.handler_id", Some("$.payment_data.token")),
            (
                "$.payment_data.instrument.credential.token",
                Some("$.payment_data.token"),
            ),
            ("$.payment_data", Some("$.payment_data")),
            ("$.payment_data.provider", Some("$.payment_data.provider")),
            (
                "$.payment_data.billing_address.city",
                Some("$.payment_data.billing_address.city"),
            ),
            ("$.authentication_result", None),
            ("$.currency", None),
            // Already this version's (schema errors): unchanged.
            ("$.items[0].quantity", Some("$.items[0].quantity")),
            ("$.fulfillment_address.country", Some("$.fulfillment_address.country")),
            ("$.headers['Idempotency-Key']", Some("$.headers['Idempotency-Key']")),
            ("$", Some("$")),
        ] {
            assert_eq!(a.request_param(canonical).as_deref(), mine, "{canonical}");
        }
        assert_eq!(a.error_message("requires_3ds", "x".into()), THREE_DS_UNSUPPORTED);
        assert_eq!(a.error_message("invalid", "x".into()), "x");
    }

    #[test]
    fn requests_become_canonical_inputs() {
        let a = V2025_09_29;
        let created = a
            .create(json!({"items": [{"id": "var_a", "quantity": 3}],
                           "fulfillment_address": {"name": "J", "line_one": "1 Main", "city": "C", "state": "IL",
                                                   "country": "US", "postal_code": "1", "company": "ignored"},
                           "buyer": {"first_name": "J", "last_name": "B", "email": "j@b.example"}}))
            .unwrap();
        assert_eq!(created.currency, None);
        assert_eq!(created.items[0].quantity, 3);
        let details = created.fulfillment_details.unwrap();
        assert_eq!(details.address.unwrap().company, None, "not a field of this version");
        assert_eq!(created.buyer.unwrap().first_name.as_deref(), Some("J"));

        let updated = a
            .update(json!({"fulfillment_option_id": "ship_express", "fulfillment_address": null}))
            .unwrap();
        let selection = updated.selection.unwrap();
        assert!(selection[0].any_kind);
        assert_eq!(selection[0].option_id, "ship_express");
        assert_eq!(updated.fulfillment_details, Some(None));
        assert!(updated.items.is_none() && updated.buyer.is_none());

        let complete = a
            .complete(json!({"payment_data": {"token": "spt_1", "provider": "stripe"}}))
            .unwrap();
        assert_eq!(complete.handler_id, CARD_HANDLER_ID);
        assert_eq!(complete.token, "spt_1");
        assert!(complete.authentication.is_none());

        let Err(zero) = a.create(json!({"items": [{"id": "var_a", "quantity": 0}]})) else {
            panic!("a zero quantity is refused");
        };
        assert_eq!(zero.param, "$.items[0].quantity");
        let whole = a
            .create(json!({"items": [{"id": "var_a", "quantity": 2.0}]}))
            .ok()
            .unwrap();
        assert_eq!(whole.items[0].quantity, 2);
        assert!(a.create(json!({"items": [{"id": "var_a", "quantity": 2.5}]})).is_err());
    }
}
