//! The 2026-04-17 `CheckoutSession` as typed views that borrow from the canonical session, serialized straight to
//! the response bytes. Building a `serde_json::Value` tree first cost a GET about a fifth of the server's CPU
//! (an allocation and a map insert per field, then a second walk to print it).
//!
//! Every struct lists its fields in the byte order of their JSON names, which is the order a `Value` object
//! (a sorted map) prints them in: the bytes an agent receives are the same whether a body is printed from these
//! views or from `serde_json::to_value` of them, which older versions' adapters reshape. A unit test holds every
//! view to that.

use serde::Serialize;
use serde_json::Value;

use crate::catalog::{ContentType, Disclosure};
use crate::checkout::{
    model::{
        AppliedDiscount, FulfillmentKind, FulfillmentOption, Line, Message, MessageKind, RejectedDiscount,
        SelectedOption, Session, Status, Total,
    },
    negotiation,
};
use crate::pricing::rules::{PickupAddress, PickupLocation};

use super::WireContext;

/// The version string every view renders.
const VERSION: &str = super::v2026_04_17::VERSION;

#[derive(Serialize)]
pub struct SessionView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    authentication_metadata: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buyer: Option<&'a crate::checkout::model::Buyer>,
    capabilities: CapabilitiesView<'a, &'a Value>,
    created_at: String,
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    discounts: Option<DiscountsView<'a>>,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fulfillment_details: Option<&'a crate::checkout::model::FulfillmentDetails>,
    fulfillment_options: Vec<FulfillmentOptionView<'a>>,
    id: &'a str,
    line_items: Vec<LineView<'a>>,
    links: &'a [Value],
    messages: Vec<MessageView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<OrderRefView<'a>>,
    protocol: ProtocolView,
    #[serde(skip_serializing_if = "Option::is_none")]
    selected_fulfillment_options: Option<Vec<SelectedView<'a>>>,
    status: &'static str,
    totals: Vec<TotalView<'a>>,
    updated_at: String,
}

impl<'a> SessionView<'a> {
    /// The full authoritative session (plus `order` once completed).
    pub fn new(s: &'a Session, ctx: &'a WireContext) -> Self {
        let mut capabilities = CapabilitiesView::new(s, ctx, |h| h);
        if super::v2026_04_17::discount_extension_active(s) {
            capabilities.extensions = Some([DISCOUNT_EXTENSION]);
        }
        Self {
            authentication_metadata: (s.status == Status::AuthenticationRequired)
                .then_some(&ctx.authentication_metadata),
            buyer: s.buyer.as_ref(),
            capabilities,
            created_at: s.created_at.to_rfc3339(),
            currency: &s.currency,
            discounts: super::v2026_04_17::discount_extension_active(s).then(|| DiscountsView::new(s)),
            expires_at: s.expires_at.to_rfc3339(),
            fulfillment_details: s.fulfillment_details.as_ref(),
            fulfillment_options: s
                .computed
                .fulfillment_options
                .iter()
                .map(FulfillmentOptionView::new)
                .collect(),
            id: &s.id,
            line_items: s.computed.lines.iter().map(LineView::new).collect(),
            links: &ctx.links,
            messages: s.computed.messages.iter().map(MessageView::new).collect(),
            order: s.order.as_ref().map(|o| OrderRefView {
                checkout_session_id: &s.id,
                id: &o.id,
                permalink_url: &o.permalink_url,
            }),
            protocol: ProtocolView { version: VERSION },
            selected_fulfillment_options: (!s.computed.selected.is_empty())
                .then(|| s.computed.selected.iter().map(SelectedView::new).collect()),
            status: s.status.as_str(),
            totals: s.computed.totals.iter().map(TotalView::new).collect(),
            updated_at: s.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize)]
struct ProtocolView {
    version: &'static str,
}

#[derive(Serialize)]
struct OrderRefView<'a> {
    checkout_session_id: &'a str,
    id: &'a str,
    permalink_url: &'a str,
}

/// The negotiated `capabilities`: handlers (each of type `H`, as the version shapes it), interventions, and the
/// extensions in play.
#[derive(Serialize)]
pub struct CapabilitiesView<'a, H> {
    #[serde(skip_serializing_if = "Option::is_none")]
    extensions: Option<[ExtensionView; 1]>,
    interventions: InterventionsView<'a>,
    payment: PaymentView<H>,
}

impl<'a, H> CapabilitiesView<'a, H> {
    /// The merchant's handlers the agent can use (each shaped by `handler`), the interventions both sides
    /// support, and what the merchant requires; no extensions.
    pub fn new(s: &'a Session, ctx: &'a WireContext, handler: impl Fn(&'a Value) -> H) -> Self {
        Self {
            extensions: None,
            interventions: InterventionsView {
                enforcement: negotiation::enforcement(&s.negotiation),
                required: &s.negotiation.required_interventions,
                supported: ctx
                    .seller_interventions
                    .iter()
                    .map(String::as_str)
                    .filter(|i| s.agent_interventions.iter().any(|a| a == i))
                    .collect(),
            },
            payment: PaymentView {
                handlers: ctx
                    .payment_handlers
                    .iter()
                    .filter(|h| negotiation::offers(&s.negotiation, h))
                    .map(handler)
                    .collect(),
            },
        }
    }
}

#[derive(Serialize)]
struct InterventionsView<'a> {
    enforcement: &'static str,
    required: &'a [String],
    supported: Vec<&'a str>,
}

#[derive(Serialize)]
struct PaymentView<H> {
    handlers: Vec<H>,
}

#[derive(Serialize)]
struct ExtensionView {
    extends: [&'static str; 3],
    name: &'static str,
}

const DISCOUNT_EXTENSION: ExtensionView = ExtensionView {
    extends: [
        "$.CheckoutSessionCreateRequest.discounts",
        "$.CheckoutSessionUpdateRequest.discounts",
        "$.CheckoutSession.discounts",
    ],
    name: "discount",
};

/// One `Total` (`type`, `display_text`, `amount`).
#[derive(Serialize)]
pub struct TotalView<'a> {
    amount: i64,
    display_text: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

impl<'a> TotalView<'a> {
    pub fn new(t: &'a Total) -> Self {
        Self {
            amount: t.amount,
            display_text: &t.display_text,
            kind: &t.kind,
        }
    }
}

/// One `LineItem`.
#[derive(Serialize)]
pub struct LineView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    available_quantity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    disclosures: Vec<DisclosureView<'a>>,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    images: Option<[&'a str; 1]>,
    item: ItemRefView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_quantity_per_order: Option<u32>,
    name: &'a str,
    product_id: &'a str,
    quantity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tax_exempt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tax_exemption_reason: Option<&'static str>,
    totals: Vec<TotalView<'a>>,
    unit_amount: i64,
}

impl<'a> LineView<'a> {
    pub fn new(l: &'a Line) -> Self {
        Self {
            available_quantity: l.available_quantity,
            description: l.description.as_deref(),
            disclosures: l.disclosures.iter().map(DisclosureView::new).collect(),
            id: &l.id,
            images: l.image_url.as_deref().map(|url| [url]),
            item: ItemRefView { id: &l.item_id },
            max_quantity_per_order: l.max_quantity_per_order,
            name: &l.name,
            product_id: &l.product_id,
            quantity: l.quantity,
            tax_exempt: l.tax_exempt.then_some(true),
            tax_exemption_reason: l.tax_exempt.then_some("The buyer's tax-exemption certificate applies."),
            totals: l.totals.iter().map(TotalView::new).collect(),
            unit_amount: l.unit_amount,
        }
    }
}

#[derive(Serialize)]
struct ItemRefView<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct DisclosureView<'a> {
    content: &'a str,
    content_type: ContentType,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl<'a> DisclosureView<'a> {
    fn new(d: &'a Disclosure) -> Self {
        Self {
            content: &d.content,
            content_type: d.content_type,
            kind: "disclaimer",
        }
    }
}

/// One `FulfillmentOption` (in-store pickup when it has a location).
#[derive(Serialize)]
pub struct FulfillmentOptionView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    earliest_delivery_time: Option<String>,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest_delivery_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<LocationView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pickup_type: Option<&'static str>,
    title: &'a str,
    totals: [TotalView<'a>; 1],
    #[serde(rename = "type")]
    kind: FulfillmentKind,
}

impl<'a> FulfillmentOptionView<'a> {
    pub fn new(o: &'a FulfillmentOption) -> Self {
        let label = if o.kind == FulfillmentKind::Shipping {
            "Shipping"
        } else {
            "Delivery"
        };
        Self {
            carrier: o.carrier.as_deref(),
            description: o.description.as_deref(),
            earliest_delivery_time: o.earliest_delivery_time.map(|t| t.to_rfc3339()),
            id: &o.id,
            latest_delivery_time: o.latest_delivery_time.map(|t| t.to_rfc3339()),
            location: o.location.as_ref().map(LocationView::new),
            pickup_type: o.location.as_ref().map(|_| "in_store"),
            title: &o.title,
            totals: [TotalView {
                amount: o.amount,
                display_text: label,
                kind: "total",
            }],
            kind: o.kind,
        }
    }
}

#[derive(Serialize)]
struct LocationView<'a> {
    address: &'a PickupAddress,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a str>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<&'a str>,
}

impl<'a> LocationView<'a> {
    fn new(l: &'a PickupLocation) -> Self {
        Self {
            address: &l.address,
            instructions: l.instructions.as_deref(),
            name: &l.name,
            phone: l.phone.as_deref(),
        }
    }
}

/// One `Message` (plain text).
#[derive(Serialize)]
pub struct MessageView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    content: &'a str,
    content_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolution: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl<'a> MessageView<'a> {
    pub fn new(m: &'a Message) -> Self {
        Self {
            code: m.code.as_deref(),
            content: &m.content,
            content_type: "plain",
            param: m.param.as_deref(),
            resolution: m.resolution.as_deref(),
            kind: match m.kind {
                MessageKind::Info => "info",
                MessageKind::Warning => "warning",
                MessageKind::Error => "error",
            },
        }
    }
}

#[derive(Serialize)]
struct SelectedView<'a> {
    item_ids: &'a [String],
    option_id: &'a str,
    #[serde(rename = "type")]
    kind: FulfillmentKind,
}

impl<'a> SelectedView<'a> {
    fn new(o: &'a SelectedOption) -> Self {
        Self {
            item_ids: &o.item_ids,
            option_id: &o.option_id,
            kind: o.kind,
        }
    }
}

/// `DiscountsResponse`: the codes as sent, what applied (with per-line allocations) and what was rejected.
#[derive(Serialize)]
pub struct DiscountsView<'a> {
    applied: Vec<AppliedView<'a>>,
    codes: &'a [String],
    rejected: Vec<RejectedView<'a>>,
}

impl<'a> DiscountsView<'a> {
    pub fn new(s: &'a Session) -> Self {
        Self {
            applied: s
                .computed
                .applied_discounts
                .iter()
                .map(|a| AppliedView::new(a, &s.currency))
                .collect(),
            codes: &s.discount_codes,
            rejected: s.computed.rejected_discounts.iter().map(RejectedView::new).collect(),
        }
    }
}

#[derive(Serialize)]
struct AppliedView<'a> {
    allocations: Vec<AllocationView>,
    amount: i64,
    automatic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    coupon: CouponView<'a>,
    id: String,
    method: &'static str,
}

impl<'a> AppliedView<'a> {
    fn new(a: &'a AppliedDiscount, currency: &'a str) -> Self {
        let allocations = if a.free_shipping {
            vec![AllocationView {
                amount: a.amount,
                path: "$.totals.fulfillment".to_owned(),
            }]
        } else {
            a.allocations
                .iter()
                .map(|(i, amount)| AllocationView {
                    amount: *amount,
                    path: format!("$.line_items[{i}]"),
                })
                .collect()
        };
        Self {
            allocations,
            amount: a.amount,
            automatic: a.code.is_none(),
            code: a.code.as_deref(),
            coupon: CouponView {
                amount_off: a.amount_off,
                currency: a.amount_off.map(|_| currency),
                id: &a.promotion_id,
                name: &a.name,
                percent_off: a
                    .percent_off
                    .map(|p| p.normalize().to_string().parse::<f64>().unwrap_or(0.0)),
            },
            id: format!("di_{}", a.promotion_id),
            // A percentage comes off each line; a fixed amount is spread across them.
            method: if a.percent_off.is_some() { "each" } else { "across" },
        }
    }
}

#[derive(Serialize)]
struct AllocationView {
    amount: i64,
    path: String,
}

#[derive(Serialize)]
struct CouponView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_off: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    id: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    percent_off: Option<f64>,
}

#[derive(Serialize)]
struct RejectedView<'a> {
    code: &'a str,
    message: &'a str,
    reason: &'a str,
}

impl<'a> RejectedView<'a> {
    fn new(r: &'a RejectedDiscount) -> Self {
        Self {
            code: &r.code,
            message: &r.message,
            reason: &r.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A session with every optional field the views print filled in, so a field out of byte order anywhere
    /// shows as a difference.
    fn everything() -> Session {
        let address = json!({"name": "Ada", "line_one": "1 Main St", "line_two": "Apt 2", "city": "Springfield",
            "state": "IL", "country": "US", "postal_code": "62701", "company": "Acme"});
        let at = "2026-12-06T12:00:00Z";
        let total = |kind: &str, amount: i64| json!({"kind": kind, "display_text": kind, "amount": amount});
        serde_json::from_value(json!({
            "id": "cs_1", "agent_id": "agent", "api_version": VERSION, "status": "authentication_required",
            "currency": "usd", "items": [{"item_id": "var_a", "quantity": 2}],
            "buyer": {"email": "ada@example.com", "first_name": "Ada", "last_name": "L", "full_name": "Ada L",
                "phone_number": "+15555550100", "customer_id": "c_1",
                "tax_exemption": {"certificate_id": "ex_1", "certificate_type": "resale",
                    "exempt_regions": ["US-IL"], "expires_at": at}},
            "fulfillment_details": {"name": "Ada", "phone_number": "+15555550100", "email": "ada@example.com",
                "address": address},
            "requested_selection": [],
            "agent_interventions": ["3ds"],
            "agent_extensions": ["discount"],
            "negotiation": {"agent_handlers": null, "required_interventions": ["3ds"], "no_common_handler": false},
            "discount_codes": ["SAVE10", "NOPE"],
            "order_notes": null,
            "computed": computed(&total, at),
            "order": {"id": "ord_1", "permalink_url": "https://example.com/o/1"},
            "authentication_pending": true,
            "created_at": at, "updated_at": at, "expires_at": at,
        }))
        .expect("the fixture is a session")
    }

    /// The computed part of [`everything`]: lines, options, discounts and messages with every optional field.
    fn computed(total: &dyn Fn(&str, i64) -> serde_json::Value, at: &str) -> serde_json::Value {
        json!({
                "applied_discounts": [
                    {"promotion_id": "p10", "name": "Ten off", "code": "SAVE10", "amount": 100,
                     "allocations": [[0, 100]], "percent_off": "10.50", "amount_off": null},
                    {"promotion_id": "p5", "name": "Five", "code": null, "amount": 500,
                     "allocations": [[0, 500]], "percent_off": null, "amount_off": 500},
                    {"promotion_id": "ship", "name": "Free shipping", "code": null, "amount": 700,
                     "allocations": [], "percent_off": null, "amount_off": null, "free_shipping": true}],
                "rejected_discounts": [{"code": "NOPE", "reason": "discount_code_invalid", "message": "Unknown"}],
                "lines": [{"id": "li_1", "item_id": "var_a", "quantity": 2, "name": "A", "description": "An A",
                    "image_url": "https://example.com/a.png", "url": null, "product_id": "p", "unit_amount": 500,
                    "requires_shipping": true,
                    "disclosures": [{"content_type": "markdown", "content": "**Final sale**"}],
                    "available_quantity": 7, "max_quantity_per_order": 5,
                    "totals": [total("items_base_amount", 1000), total("total", 1000)], "tax_exempt": true}],
                "fulfillment_options": [
                    {"kind": "shipping", "id": "ship_standard", "title": "Standard", "description": "3-5 days",
                     "carrier": "UPS", "earliest_delivery_time": at, "latest_delivery_time": at,
                     "item_ids": ["var_a"], "amount": 700},
                    {"kind": "pickup", "id": "pickup_store", "title": "Pickup", "description": null,
                     "carrier": null, "earliest_delivery_time": null, "latest_delivery_time": null,
                     "item_ids": ["var_a"], "amount": 0,
                     "location": {"id": "loc", "name": "Store", "phone": "+15555550101", "instructions": "Desk",
                        "address": {"name": "Store", "line_one": "2 Main St", "line_two": "Unit 1",
                            "city": "Springfield", "state": "IL", "country": "US", "postal_code": "62701"}}}],
                "selected": [{"kind": "shipping", "option_id": "ship_standard", "item_ids": ["var_a"]}],
                "totals": [total("subtotal", 1000), total("total", 1700)],
                "messages": [
                    {"kind": "warning", "code": "price_change", "param": "$.line_items[0]", "content": "Changed",
                     "resolution": "recoverable"},
                    {"kind": "info", "code": null, "param": null, "content": "Hello", "resolution": null}]})
    }

    fn context() -> WireContext {
        WireContext {
            payment_handlers: vec![json!({"name": "dev.acp.tokenized.card", "id": "card", "version": "1"})],
            seller_interventions: vec!["3ds".into(), "address_verification".into()],
            required_interventions: vec!["3ds".into()],
            links: vec![json!({"type": "terms_of_use", "url": "https://example.com/terms"})],
            authentication_metadata: json!({"acquirer_country": "US", "channel": {"type": "browser"}}),
        }
    }

    #[test]
    fn printing_a_view_gives_the_bytes_its_value_tree_prints() {
        let (session, ctx) = (everything(), context());
        let view = SessionView::new(&session, &ctx);
        let tree = serde_json::to_value(&view).expect("a tree");
        assert_eq!(
            String::from_utf8(super::super::print(&view)).expect("utf-8"),
            serde_json::to_string(&tree).expect("printed"),
            "a view's fields are out of byte order"
        );
        // The fixture reaches every optional field, or the comparison above would not cover it.
        for path in [
            "/authentication_metadata",
            "/buyer/tax_exemption/expires_at",
            "/buyer/customer_id",
            "/fulfillment_details/address/company",
            "/capabilities/extensions/0/extends",
            "/capabilities/interventions/supported/0",
            "/capabilities/payment/handlers/0/name",
            "/discounts/applied/0/coupon/percent_off",
            "/discounts/applied/1/coupon/currency",
            "/discounts/applied/2/allocations/0/path",
            "/discounts/rejected/0/reason",
            "/line_items/0/disclosures/0/type",
            "/line_items/0/images/0",
            "/line_items/0/tax_exemption_reason",
            "/line_items/0/available_quantity",
            "/line_items/0/max_quantity_per_order",
            "/fulfillment_options/0/earliest_delivery_time",
            "/fulfillment_options/0/carrier",
            "/fulfillment_options/1/location/address/line_two",
            "/fulfillment_options/1/location/instructions",
            "/fulfillment_options/1/pickup_type",
            "/messages/0/resolution",
            "/order/permalink_url",
            "/selected_fulfillment_options/0/item_ids/0",
            "/protocol/version",
        ] {
            assert!(
                tree.pointer(path).is_some_and(|v| !v.is_null()),
                "{path} is not rendered"
            );
        }
        assert_eq!(tree["discounts"]["applied"][0]["coupon"]["percent_off"], json!(10.5));
        assert_eq!(tree["line_items"][0]["images"], json!(["https://example.com/a.png"]));
    }

    #[test]
    fn a_bare_session_leaves_the_optional_fields_out() {
        let mut session = everything();
        session.status = Status::NotReadyForPayment;
        session.buyer = None;
        session.fulfillment_details = None;
        session.agent_extensions.clear();
        session.discount_codes.clear();
        session.order = None;
        session.computed.selected.clear();
        let ctx = context();
        let tree = serde_json::to_value(SessionView::new(&session, &ctx)).expect("a tree");
        for absent in [
            "authentication_metadata",
            "buyer",
            "fulfillment_details",
            "discounts",
            "order",
            "selected_fulfillment_options",
        ] {
            assert!(tree.get(absent).is_none(), "{absent} is rendered");
        }
        assert!(tree["capabilities"].get("extensions").is_none());
    }
}
