//! ACP 2025-12-12 on the wire: `items` with integer quantities, `fulfillment_details`, nested
//! `selected_fulfillment_options`, legacy `payment_data {token, provider}`, delegated 3-D Secure with the
//! ten-outcome `authentication_result`, and a session with `payment_provider`, flat money and six statuses.
//! 2026-01-16 ([`super::v2026_01_16`]) reuses the request types and the writer of this module.
//!
//! Reading (tolerant, documented in `openapi/2025-12-12.json`): unknown fields are ignored and never echoed;
//! `phone` is accepted for `phone_number` (DIGEST §14 item 20); an explicit `null` clears `buyer` or
//! `fulfillment_details` on update; `affiliate_attribution` and the cancel body's `intent_trace` are validated and
//! not stored (`reason_code` and `provider` are open: unknown values are accepted, a reason as `other`). An
//! address's `company` and a buyer's `full_name` or `tax_exemption` are not fields of this version and are ignored
//! like any unknown field. The create request has no currency: the session takes the currency its items are priced
//! in (as 2025-09-29 does). Delegated 3-D Secure is part of the version, so its agents are recorded as supporting the `3ds`
//! intervention. `payment_data {token, provider: "stripe"}` becomes the `card_tokenized` handler with that Shared
//! Payment Token (`billing_address` is validated, not used). Outcomes `authenticated` and `attempt_acknowledged`
//! carry a cryptogram the PSP is given; every other outcome declines the payment without charging
//! (`informational` included, as in 2026-04-17: no authentication happened), and the session stays
//! `authentication_required` with a `payment_declined` message.
//!
//! Writing (strict: only fields 2025-12-12 defines, always the ones it requires). What the canonical session
//! holds that this version cannot say is mapped to the nearest thing it knows:
//!
//! | canonical | 2025-12-12 |
//! |---|---|
//! | status `complete_in_progress` | `in_progress` |
//! | status `expired` | `canceled` (terminal stays terminal), with the error message `invalid` "This checkout session has expired." |
//! | status `authentication_required` | native, with `authentication_metadata` |
//! | message `warning` (any code) | `info` with the same `param` and text (the code is dropped) |
//! | error codes `missing, invalid, out_of_stock, payment_declined, requires_sign_in, requires_3ds` | unchanged |
//! | other error codes (`quantity_exceeded`, `region_restricted`, `expired`, …) | `invalid`, same `param` and text |
//! | message `resolution` | dropped |
//! | message `param` `$.line_items[i].quantity` / `$.selected_fulfillment_options[i].option_id` / `$.discounts…` | `$.line_items[i].item.quantity` / `…[i].shipping.option_id` (or `.digital.`) / dropped (no discount extension here) |
//! | error `param` `$.line_items[i].id` (unknown item) | `$.items[i].id`, the request field ([`Adapter::request_param`]) |
//! | links `terms_of_use, privacy_policy, return_policy` | unchanged; other link types are dropped |
//! | totals | the canonical kinds are all in this version's enum; another kind would become `fee` |
//! | line item `quantity` + `totals[]` | `item {id, quantity}` and flat `base_amount, discount, subtotal, tax, total`, plus `name, unit_amount, description, images, disclosures` |
//! | line item `product_id`, stock hints, tax exemption | dropped |
//! | fulfillment option (shipping, digital) | flat `subtotal = total =` the option's price, `tax = 0` (tax on shipping is counted in the session's `tax` total, not per option), `subtitle =` description; all three amounts always sent (the OpenAPI requires them, DIGEST §14 item 25) |
//! | pickup options and selections | dropped (this version knows shipping and digital only; a 2025-12-12 agent never sees or selects pickup); a pickup chosen through a later version is named in an `info` message |
//! | flat selection `{type, option_id, item_ids}` | nested `{type, shipping\|digital: {option_id, item_ids}}` |
//! | `capabilities.payment.handlers` | `payment_provider {provider: "stripe", supported_payment_methods: [{type: "card", supported_card_networks}]}` from the card handler's `accepted_brands` |
//! | `authentication_metadata {acquirer_details, directory_server, flow_preference?}` | the same plus the required `channel`: `{type: "browser", browser: {accept_header: "", ip_address: "", javascript_enabled: false, language: "und", user_agent: ""}}`, meaning "the merchant has not seen the buyer's browser" (see `channel()`) |
//! | `buyer` | `{first_name, last_name, email, phone_number?}`; omitted when first or last name is unknown (both are required here) |
//! | `fulfillment_details.address.company` | dropped |
//! | `order` | `{id, checkout_session_id, permalink_url}` |
//! | `protocol`, `capabilities`, `discounts`, timestamps | omitted |
//! | webhook | [`super::legacy::webhook_body`]: `{type, data: {type: "order", checkout_session_id, permalink_url, status, refunds}}`, no order id; `processing → confirmed`, `completed → fulfilled`; completed refunds as `original_payment` |
//!
//! Official examples: every body of `examples/2025-12-12/examples.agentic_checkout.json` validates against its
//! schema (the violations DIGEST §14 item 32 lists are in other versions' files), so each request is sent as
//! written with the demo catalog's ids substituted. The webhook OpenAPI's inline example `amount: "1.00"` (a
//! string) is not a request to us; our webhook bodies carry integer amounts.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Adapter, WireContext, WireError, double_option, legacy, typed,
    v2026_04_17::{self, MAX_QUANTITY, OutcomeDetailsIn, SelectedIn},
};
use crate::checkout::{
    model::{
        Address, Buyer, FulfillmentDetails, FulfillmentKind, FulfillmentOption, Line, Message, MessageKind,
        RequestedItem, SelectedOption, Session, Status,
    },
    service::{AuthenticationOutcome, CompleteInput, CreateInput, UpdateInput},
};
use crate::psp::ThreeDsData;

pub const VERSION: &str = "2025-12-12";

/// The 2025-12-12 adapter.
pub struct V2025_12_12;

pub static V2025_12_12_DOC: &str = include_str!("../../openapi/2025-12-12.json");

impl Adapter for V2025_12_12 {
    fn version(&self) -> &'static str {
        VERSION
    }

    fn openapi(&self) -> &'static str {
        V2025_12_12_DOC
    }

    fn idempotency_key_required(&self) -> bool {
        false
    }

    fn idempotency_error_type(&self) -> &'static str {
        "request_not_idempotent"
    }

    fn create(&self, body: Value) -> Result<CreateInput, WireError> {
        Ok(typed::<CreateRequest>(body)?.into_input())
    }

    fn update(&self, body: Value) -> Result<UpdateInput, WireError> {
        Ok(typed::<UpdateRequest>(body)?.into_input())
    }

    fn complete(&self, body: Value) -> Result<CompleteInput, WireError> {
        typed::<CompleteRequest>(body)?.into_input(|outcome| Some(outcome))
    }

    fn request_param(&self, param: &str) -> Option<String> {
        request_param(param)
    }

    fn render(&self, session: &Session, ctx: &WireContext) -> Value {
        render(session, ctx)
    }

    fn webhook_body(&self, event_type: &str, order: &crate::orders::model::Order) -> Value {
        legacy::webhook_body(event_type, order)
    }
}

/// `Item`: both fields are required in this version; the schema bounds the quantity.
#[derive(Debug, Deserialize)]
pub struct ItemIn {
    pub id: String,
    pub quantity: u32,
}

/// `Buyer` of this version: first and last name are required, nothing else is read.
#[derive(Debug, Deserialize)]
pub struct BuyerIn {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    #[serde(default)]
    pub phone_number: Option<String>,
}

impl From<BuyerIn> for Buyer {
    fn from(b: BuyerIn) -> Self {
        Buyer {
            email: b.email,
            first_name: Some(b.first_name),
            last_name: Some(b.last_name),
            full_name: None,
            phone_number: b.phone_number,
            customer_id: None,
            tax_exemption: None,
        }
    }
}

/// `Address` of this version (no `company`).
#[derive(Debug, Deserialize)]
pub struct AddressIn {
    pub name: String,
    pub line_one: String,
    #[serde(default)]
    pub line_two: Option<String>,
    pub city: String,
    pub state: String,
    pub country: String,
    pub postal_code: String,
}

impl From<AddressIn> for Address {
    fn from(a: AddressIn) -> Self {
        Address {
            name: a.name,
            line_one: a.line_one,
            line_two: a.line_two,
            city: a.city,
            state: a.state,
            country: a.country,
            postal_code: a.postal_code,
            company: None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct FulfillmentDetailsIn {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub phone_number: Option<String>,
    /// Alias of `phone_number` (DIGEST §14 item 20); `phone_number` wins when both are sent.
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub address: Option<AddressIn>,
}

impl From<FulfillmentDetailsIn> for FulfillmentDetails {
    fn from(d: FulfillmentDetailsIn) -> Self {
        FulfillmentDetails {
            name: d.name,
            phone_number: d.phone_number.or(d.phone),
            email: d.email,
            address: d.address.map(Address::from),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    pub items: Vec<ItemIn>,
    #[serde(default)]
    pub buyer: Option<BuyerIn>,
    #[serde(default)]
    pub fulfillment_details: Option<FulfillmentDetailsIn>,
}

#[derive(Debug, Deserialize)]
pub struct UpdateRequest {
    #[serde(default)]
    pub items: Option<Vec<ItemIn>>,
    #[serde(default, deserialize_with = "double_option")]
    pub buyer: Option<Option<BuyerIn>>,
    #[serde(default, deserialize_with = "double_option")]
    pub fulfillment_details: Option<Option<FulfillmentDetailsIn>>,
    /// Nested (`{type, shipping|digital: {option_id, item_ids}}`); the schema admits no other shape here.
    #[serde(default)]
    pub selected_fulfillment_options: Option<Vec<SelectedIn>>,
}

/// `PaymentData {token, provider: "stripe", billing_address?}` (the billing address is not used).
#[derive(Deserialize)]
pub struct PaymentDataIn {
    pub token: String,
}

/// The payment token never reaches a `Debug` output.
impl std::fmt::Debug for PaymentDataIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaymentDataIn { token: [redacted] }")
    }
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
    pub buyer: Option<BuyerIn>,
    #[serde(default)]
    pub authentication_result: Option<AuthenticationResultIn>,
}

fn items(items: Vec<ItemIn>) -> Vec<RequestedItem> {
    debug_assert!(
        items
            .iter()
            .all(|i| (1..=MAX_QUANTITY).contains(&i64::from(i.quantity)))
    );
    items
        .into_iter()
        .map(|i| RequestedItem {
            item_id: i.id,
            quantity: i.quantity,
        })
        .collect()
}

impl CreateRequest {
    pub fn into_input(self) -> CreateInput {
        CreateInput {
            items: items(self.items),
            agent_extensions: Vec::new(),
            discount_codes: Vec::new(),
            // No currency in this version's request: the session takes the one its items are priced in.
            currency: None,
            buyer: self.buyer.map(Buyer::from),
            fulfillment_details: self.fulfillment_details.map(FulfillmentDetails::from),
            // Delegated 3-D Secure is part of this version: its agents can always be asked for it.
            agent_interventions: vec!["3ds".to_owned()],
            agent_payment_handlers: None,
            order_notes: None,
        }
    }
}

impl UpdateRequest {
    pub fn into_input(self) -> UpdateInput {
        UpdateInput {
            items: self.items.map(items),
            buyer: self.buyer.map(|b| b.map(Buyer::from)),
            fulfillment_details: self.fulfillment_details.map(|d| d.map(FulfillmentDetails::from)),
            selection: self
                .selected_fulfillment_options
                .map(|s| s.into_iter().map(SelectedIn::into_selection).collect()),
            order_notes: None,
            discount_codes: None,
            capabilities: None,
        }
    }
}

impl CompleteRequest {
    /// `outcome` maps the version's outcome name onto the ten 2025-12-12 outcomes (`None`: unknown, refused).
    pub fn into_input(self, outcome: fn(&str) -> Option<&str>) -> Result<CompleteInput, WireError> {
        let authentication = self
            .authentication_result
            .map(|result| authentication(result, outcome))
            .transpose()?;
        Ok(CompleteInput {
            handler_id: crate::protocol::CARD_HANDLER_ID.to_owned(),
            token: self.payment_data.token,
            buyer: self.buyer.map(Buyer::from),
            authentication,
            order_notes: None,
            fulfillment_details: None,
        })
    }
}

/// The canonical outcome of a 3-D Secure result: only an authentication that produced a cryptogram lets the
/// payment go on.
fn authentication(
    result: AuthenticationResultIn,
    outcome: fn(&str) -> Option<&str>,
) -> Result<AuthenticationOutcome, WireError> {
    match outcome(&result.outcome) {
        Some("authenticated" | "attempt_acknowledged") => {
            let details = result.outcome_details.ok_or_else(|| {
                WireError::missing(
                    "$.authentication_result.outcome_details",
                    "outcome_details is required when authentication succeeded",
                )
            })?;
            Ok(AuthenticationOutcome::Authenticated(ThreeDsData {
                cryptogram: details.three_ds_cryptogram,
                electronic_commerce_indicator: details.electronic_commerce_indicator,
                transaction_id: details.transaction_id,
                version: details.version,
            }))
        }
        Some(
            "abandoned" | "canceled" | "denied" | "informational" | "internal_error" | "not_supported"
            | "processing_error" | "rejected",
        ) => Ok(AuthenticationOutcome::Failed),
        _ => Err(WireError::invalid(
            "$.authentication_result.outcome",
            format!("unknown authentication outcome '{}'", result.outcome),
        )),
    }
}

/// `(index, rest)` of a path `<array>[index]<rest>`.
fn indexed<'p>(param: &'p str, array: &str) -> Option<(&'p str, &'p str)> {
    let inner = param.strip_prefix(array)?.strip_prefix('[')?;
    inner.split_once(']')
}

/// A canonical session path as this version's session spells it: a line's quantity is `item.quantity`, a
/// selection's option id sits under its kind, and the discount extension does not exist (`None`).
fn session_param(param: &str, selection: Option<&[SelectedOption]>) -> Option<String> {
    if param.starts_with("$.discounts") {
        return None;
    }
    if let Some((i, ".quantity")) = indexed(param, "$.line_items") {
        return Some(format!("$.line_items[{i}].item.quantity"));
    }
    if let Some((i, ".option_id")) = indexed(param, "$.selected_fulfillment_options") {
        let kind = selection.and_then(|s| s.get(i.parse::<usize>().ok()?)).map(|o| o.kind);
        return Some(match kind {
            Some(FulfillmentKind::Digital) => format!("$.selected_fulfillment_options[{i}].digital.option_id"),
            Some(_) => format!("$.selected_fulfillment_options[{i}].shipping.option_id"),
            None => format!("$.selected_fulfillment_options[{i}]"),
        });
    }
    Some(param.to_owned())
}

/// An error's `param` in this version's terms: an unknown item is `items[i].id` of the request; anything else
/// names the session as [`session_param`] spells it.
pub(crate) fn request_param(param: &str) -> Option<String> {
    match indexed(param, "$.line_items") {
        Some((i, ".id")) => Some(format!("$.items[{i}].id")),
        _ => session_param(param, None),
    }
}

/// The six statuses of this version; see the module table.
pub(crate) fn status(s: Status) -> &'static str {
    match s {
        Status::NotReadyForPayment => "not_ready_for_payment",
        Status::ReadyForPayment => "ready_for_payment",
        Status::AuthenticationRequired => "authentication_required",
        Status::CompleteInProgress => "in_progress",
        Status::Completed => "completed",
        Status::Canceled | Status::Expired => "canceled",
    }
}

const ERROR_CODES: [&str; 6] = [
    "missing",
    "invalid",
    "out_of_stock",
    "payment_declined",
    "requires_sign_in",
    "requires_3ds",
];

/// `MessageInfo` or `MessageError` of this version (warnings become info; unknown codes `invalid`; `param` as
/// [`session_param`] spells it).
pub(crate) fn message(m: &Message, selection: &[SelectedOption]) -> Value {
    let mut v = match m.kind {
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
    if let Some(param) = m.param.as_deref().and_then(|p| session_param(p, Some(selection))) {
        v["param"] = json!(param);
    }
    v["content_type"] = json!("plain");
    v["content"] = json!(m.content);
    v
}

/// The session's messages; an expired session (shown `canceled`) always says why, and a pickup chosen in another
/// version (which this one cannot show) is named.
pub(crate) fn messages(s: &Session) -> Vec<Value> {
    let selection = s.requested_selection.as_slice();
    let mut out: Vec<Value> = s.computed.messages.iter().map(|m| message(m, selection)).collect();
    let says_expired = s.computed.messages.iter().any(|m| m.code.as_deref() == Some("expired"));
    if s.status == Status::Expired && !says_expired {
        let expired = Message::error(
            "invalid",
            "$",
            "This checkout session has expired.",
            "requires_buyer_input",
        );
        out.push(message(&expired, selection));
    }
    let hidden = s.computed.selected.iter().filter(|o| !shown(o.kind));
    for o in hidden {
        let title = s
            .computed
            .fulfillment_options
            .iter()
            .find(|f| f.id == o.option_id)
            .map_or(o.option_id.as_str(), |f| f.title.as_str());
        let content = format!("The items are to be collected at {title} (pickup, which this API version cannot show).");
        out.push(message(&Message::info(content), selection));
    }
    out
}

/// Whether this version (and 2026-01-16) can show fulfillment of `kind`: shipping and digital only.
fn shown(kind: FulfillmentKind) -> bool {
    matches!(kind, FulfillmentKind::Shipping | FulfillmentKind::Digital)
}

const TOTAL_TYPES: [&str; 8] = [
    "items_base_amount",
    "items_discount",
    "subtotal",
    "discount",
    "fulfillment",
    "tax",
    "fee",
    "total",
];

pub(crate) fn totals(s: &Session) -> Vec<Value> {
    let mut out = v2026_04_17::totals(&s.computed.totals);
    for t in &mut out {
        if !t["type"].as_str().is_some_and(|k| TOTAL_TYPES.contains(&k)) {
            t["type"] = json!("fee");
        }
    }
    out
}

/// A line with this version's flat money (the line's `discount` is its `discount` or `items_discount` total).
pub(crate) fn line(l: &Line) -> Value {
    let amount = |kinds: &[&str]| {
        l.totals
            .iter()
            .find(|t| kinds.contains(&t.kind.as_str()))
            .map_or(0, |t| t.amount)
    };
    let mut v = json!({
        "id": l.id,
        "item": {"id": l.item_id, "quantity": l.quantity},
        "base_amount": amount(&["items_base_amount"]),
        "discount": amount(&["discount", "items_discount"]),
        "subtotal": amount(&["subtotal"]),
        "tax": amount(&["tax"]),
        "total": amount(&["total"]),
        "name": l.name,
        "unit_amount": l.unit_amount,
    });
    if let Some(d) = &l.description {
        v["description"] = json!(d);
    }
    if let Some(img) = &l.image_url {
        v["images"] = json!([img]);
    }
    if !l.disclosures.is_empty() {
        v["disclosures"] = l
            .disclosures
            .iter()
            .map(|d| json!({"type": "disclaimer", "content_type": d.content_type, "content": d.content}))
            .collect();
    }
    v
}

/// Shipping and digital options only: the kinds this version (and 2026-01-16) can describe.
pub(crate) fn known_options(s: &Session) -> impl Iterator<Item = &FulfillmentOption> {
    s.computed.fulfillment_options.iter().filter(|o| shown(o.kind))
}

/// A flat-money option; see the module table for what `tax` means.
fn fulfillment_option(o: &FulfillmentOption) -> Value {
    let mut v = json!({"type": o.kind, "id": o.id, "title": o.title});
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
    v["subtotal"] = json!(o.amount);
    v["tax"] = json!(0);
    v["total"] = json!(o.amount);
    v
}

/// `{type, shipping|digital: {option_id, item_ids}}` for the selections this version can name.
pub(crate) fn selected(s: &Session) -> Vec<Value> {
    s.computed
        .selected
        .iter()
        .filter_map(|o: &SelectedOption| {
            let key = match o.kind {
                FulfillmentKind::Shipping => "shipping",
                FulfillmentKind::Digital => "digital",
                FulfillmentKind::Pickup | FulfillmentKind::LocalDelivery => return None,
            };
            Some(json!({"type": key, key: {"option_id": o.option_id, "item_ids": o.item_ids}}))
        })
        .collect()
}

const LINK_TYPES: [&str; 3] = ["terms_of_use", "privacy_policy", "return_policy"];

pub(crate) fn links(ctx: &WireContext) -> Vec<Value> {
    ctx.links
        .iter()
        .filter(|l| l["type"].as_str().is_some_and(|t| LINK_TYPES.contains(&t)))
        .map(|l| json!({"type": l["type"], "url": l["url"]}))
        .collect()
}

const CARD_NETWORKS: [&str; 4] = ["amex", "discover", "mastercard", "visa"];

/// The card handler (the one this version's `payment_data` pays with), if the shop offers it.
pub(crate) fn card_handler(ctx: &WireContext) -> Option<&Value> {
    ctx.payment_handlers
        .iter()
        .find(|h| h["id"] == crate::protocol::CARD_HANDLER_ID)
}

/// `PaymentProvider` without `merchant_id` (2026-01-16 adds it): Stripe cards of the handler's brands.
pub(crate) fn payment_provider(handler: &Value) -> Value {
    let networks: Vec<&str> = handler["config"]["accepted_brands"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|b| CARD_NETWORKS.contains(b))
        .collect();
    json!({
        "provider": "stripe",
        "supported_payment_methods": [{"type": "card", "supported_card_networks": networks}],
    })
}

/// The required 3-D Secure `channel`. The merchant never sees the buyer's browser (the agent talks to the
/// authentication provider and passes the real browser there), so this says exactly that and nothing invented:
/// `type: browser` (the only value), `javascript_enabled: false` (so no screen fields are owed), unknown strings
/// empty, and `language: "und"` (BCP 47's own tag for "undetermined").
pub(crate) fn channel() -> Value {
    json!({
        "type": "browser",
        "browser": {
            "accept_header": "",
            "ip_address": "",
            "javascript_enabled": false,
            "language": "und",
            "user_agent": "",
        },
    })
}

/// `AuthenticationMetadata`: the shop's acquirer facts plus [`channel`], and only the properties the version
/// defines (2026-01-16 allows no others).
pub(crate) fn authentication_metadata(ctx: &WireContext) -> Value {
    let mut v = json!({"channel": channel()});
    for key in ["acquirer_details", "directory_server", "flow_preference"] {
        if let Some(value) = ctx.authentication_metadata.get(key) {
            v[key] = value.clone();
        }
    }
    v
}

/// `Buyer` of this version, when the session knows both names it requires.
fn buyer(b: &Buyer) -> Option<Value> {
    let (first, last) = (b.first_name.as_ref()?, b.last_name.as_ref()?);
    let mut v = json!({"first_name": first, "last_name": last, "email": b.email});
    if let Some(p) = &b.phone_number {
        v["phone_number"] = json!(p);
    }
    Some(v)
}

/// `FulfillmentDetails` with an address of this version (no `company`).
pub(crate) fn fulfillment_details(d: &FulfillmentDetails) -> Value {
    let mut d = d.clone();
    if let Some(a) = &mut d.address {
        a.company = None;
    }
    json!(d)
}

/// The session as 2025-12-12 defines `CheckoutSession` (with `order` once completed).
pub fn render(s: &Session, ctx: &WireContext) -> Value {
    let mut v = json!({
        "id": s.id,
        "status": status(s.status),
        "currency": s.currency,
        "line_items": s.computed.lines.iter().map(line).collect::<Vec<_>>(),
        "fulfillment_options": known_options(s).map(fulfillment_option).collect::<Vec<_>>(),
        "totals": totals(s),
        "messages": messages(s),
        "links": links(ctx),
    });
    if let Some(handler) = card_handler(ctx) {
        v["payment_provider"] = payment_provider(handler);
    }
    let selected = selected(s);
    if !selected.is_empty() {
        v["selected_fulfillment_options"] = json!(selected);
    }
    if let Some(b) = s.buyer.as_ref().and_then(buyer) {
        v["buyer"] = b;
    }
    if let Some(d) = &s.fulfillment_details {
        v["fulfillment_details"] = fulfillment_details(d);
    }
    if s.status == Status::AuthenticationRequired {
        v["authentication_metadata"] = authentication_metadata(ctx);
    }
    if let Some(order) = &s.order {
        v["order"] = json!({"id": order.id, "checkout_session_id": s.id, "permalink_url": order.permalink_url});
    }
    v
}
