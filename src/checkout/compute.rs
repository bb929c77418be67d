//! The pure recomputation run on every mutation: lines and their totals, fulfillment options for the address,
//! the selection that applies, order totals, business messages, and the status they imply. No I/O: the caller
//! passes the catalog rows and the pricing rules snapshot.
//!
//! Money comes from the pricing engine (`crate::pricing`): tax, shipping and promotions from the rules, exact
//! to the minor unit. This module adds what is about the checkout rather than the price: availability,
//! per-order limits, currencies, fulfillment coverage and the status.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, Utc};

use super::model::{
    AppliedDiscount, Computed, FulfillmentKind, FulfillmentOption, Line, Message, MessageKind, RejectedDiscount,
    RequestedItem, SelectedOption, Session, Status, Total,
};
use crate::{
    catalog::VariantRow,
    pricing::{
        self, Rules,
        engine::{self, CartLine, Destination, PriceRequest, Priced, ShippingQuote, Withheld},
        rules::{PromotionKind, RateBand, ShippingMethod},
    },
};

/// The shipping methods configuration describes (used while no pricing rules are stored): standard and express
/// to `ship_to_countries`, flat amounts, no tax.
pub fn default_rules(ship_to_countries: &[String], standard: i64, express: i64) -> Rules {
    let method = |id: &str, title: &str, amount: i64, days: (u32, u32)| ShippingMethod {
        id: id.into(),
        title: title.into(),
        carrier: Some("USPS".into()),
        countries: ship_to_countries.to_vec(),
        regions: vec![],
        bands: vec![RateBand {
            min_subtotal: 0,
            amount,
        }],
        per_kg: 0,
        free_over: None,
        min_business_days: days.0,
        max_business_days: days.1,
    };
    Rules {
        shipping: vec![
            method("ship_standard", "Standard", standard, (3, 5)),
            method("ship_express", "Express", express, (1, 2)),
        ],
        ..Rules::default()
    }
}

fn total(kind: &str, display_text: &str, amount: i64) -> Total {
    Total {
        kind: kind.to_owned(),
        display_text: display_text.to_owned(),
        amount,
    }
}

/// Recomputes everything derived from the session's inputs. `catalog` must contain every requested item (the
/// caller refuses unknown ids before this point).
pub fn recompute(
    session: &mut Session,
    catalog: &HashMap<String, VariantRow>,
    rules: &Rules,
    redemptions: &HashMap<String, (u32, u32)>,
    now: DateTime<Utc>,
) {
    let mut messages = Vec::new();
    let rows: Vec<(&RequestedItem, &VariantRow)> = session
        .items
        .iter()
        .filter_map(|item| catalog.get(&item.item_id).map(|v| (item, v)))
        .collect();
    for (i, (item, v)) in rows.iter().enumerate() {
        check_line(i, item, v, &session.currency, &mut messages);
        if let Some(refusal) = rules
            .sales_policy
            .refusal(&session.agent_id, &v.product_id, v.category.as_deref())
        {
            messages.push(Message::error(
                refusal.code(),
                format!("$.line_items[{i}].item.id"),
                refusal.content(&v.title),
                "requires_buyer_input",
            ));
        }
    }
    let destination = destination(session);
    let requested_shipping = session
        .requested_selection
        .iter()
        .find(|s| s.any_kind || matches!(s.kind, FulfillmentKind::Shipping | FulfillmentKind::Pickup))
        .map(|s| s.option_id.clone());
    let exempt = tax_exempt(session, destination.as_ref(), now);
    let pricing = Pricing {
        tax_exempt: exempt,
        rules,
        redemptions,
        destination: destination.as_ref(),
        requested_shipping: requested_shipping.as_deref(),
        now,
    };
    let priced = price(session, &rows, pricing, &mut messages);
    let lines: Vec<Line> = rows
        .iter()
        .enumerate()
        .map(|(i, (item, v))| Line {
            tax_exempt: exempt,
            ..line(i, item, v, priced.as_ref())
        })
        .collect();
    let options = fulfillment_options(session, &lines, rules, priced.as_ref(), now, &mut messages);
    let selected = apply_selection(session, &lines, &options, &mut messages);
    if let Some(withheld) = priced.as_ref().and_then(|p| p.withheld.as_ref()) {
        messages.push(currency_message(&session.currency, withheld, &lines, &selected));
    }
    let totals = order_totals(priced.as_ref(), &selected);
    if let Some(message) = over_agent_maximum(session, rules, &totals) {
        messages.push(message);
    }
    let (applied_discounts, rejected_discounts) = discounts(session, rules, priced.as_ref(), &mut messages);
    messages.extend(super::negotiation::messages(session));
    let ready =
        messages.iter().all(|m| m.kind != MessageKind::Error) && fulfillment_complete(session, &lines, &selected);
    session.computed = Computed {
        applied_discounts,
        rejected_discounts,
        lines,
        fulfillment_options: options,
        selected,
        totals,
        messages,
    };
    if !session.status.is_terminal() && session.status != Status::CompleteInProgress {
        session.status = match (ready, session.authentication_pending) {
            (true, true) => Status::AuthenticationRequired,
            (true, false) => Status::ReadyForPayment,
            (false, _) => Status::NotReadyForPayment,
        };
    }
}

/// The sales policy's maximum order total for the session's agent, when the total is over it. The limit is in the
/// bundle's currency, like every amount of the bundle, so it holds for carts in that currency (or in any, when the
/// bundle names none).
fn over_agent_maximum(session: &Session, rules: &Rules, totals: &[Total]) -> Option<Message> {
    let max = rules.sales_policy.max_order_amount(&session.agent_id)?;
    if rules
        .currency
        .as_deref()
        .is_some_and(|c| !c.eq_ignore_ascii_case(&session.currency))
    {
        return None;
    }
    let total = totals.iter().find(|t| t.kind == "total")?.amount;
    (total > max).then(|| {
        let exponent = crate::pricing::currency::exponent(&session.currency).unwrap_or(2);
        let shown = |amount: i64| rust_decimal::Decimal::new(amount, exponent).to_string();
        Message::error(
            "maximum_exceeded",
            "$.totals",
            format!(
                "Orders through this agent are limited to {} {}; this one is {} {}.",
                shown(max),
                session.currency.to_uppercase(),
                shown(total),
                session.currency.to_uppercase()
            ),
            "requires_buyer_input",
        )
    })
}

fn destination(session: &Session) -> Option<Destination> {
    let address = session.fulfillment_details.as_ref()?.address.as_ref()?;
    Some(Destination {
        country: address.country.clone(),
        region: Some(address.state.clone()),
        postal_code: Some(address.postal_code.clone()),
    })
}

/// What pricing a session needs besides the session itself.
struct Pricing<'a> {
    tax_exempt: bool,
    rules: &'a Rules,
    redemptions: &'a HashMap<String, (u32, u32)>,
    destination: Option<&'a Destination>,
    requested_shipping: Option<&'a str>,
    now: DateTime<Utc>,
}

/// The buyer's exemption applies when it has not expired and covers the destination's region (or lists none).
fn tax_exempt(session: &Session, destination: Option<&Destination>, now: DateTime<Utc>) -> bool {
    let Some(exemption) = session.buyer.as_ref().and_then(|b| b.tax_exemption.as_ref()) else {
        return false;
    };
    if exemption.expires_at.is_some_and(|at| at <= now) {
        return false;
    }
    if exemption.exempt_regions.is_empty() {
        return true;
    }
    let Some(d) = destination else { return false };
    let region = d.region.as_deref().unwrap_or("");
    let qualified = format!("{}-{region}", d.country);
    exemption
        .exempt_regions
        .iter()
        .any(|r| r.eq_ignore_ascii_case(region) || r.eq_ignore_ascii_case(&qualified))
}

/// Prices the cart; the requested shipping method if the destination offers it, else the first one offered.
fn price(
    session: &Session,
    rows: &[(&RequestedItem, &VariantRow)],
    pricing: Pricing<'_>,
    messages: &mut Vec<Message>,
) -> Option<Priced> {
    let Pricing {
        tax_exempt: exempt,
        rules,
        redemptions,
        destination,
        requested_shipping,
        now,
    } = pricing;
    if pricing::currency::exponent(&session.currency).is_none() {
        messages.push(Message::error(
            "invalid",
            "$.currency",
            format!(
                "{} is not a currency this store prices in.",
                session.currency.to_uppercase()
            ),
            "requires_buyer_input",
        ));
        return None;
    }
    let lines: Vec<CartLine> = rows
        .iter()
        .map(|(item, v)| CartLine {
            product_id: v.product_id.clone(),
            product_category: v.category.clone(),
            tax_category: v.tax_category.clone(),
            unit_amount: v.price_amount.unwrap_or(0),
            quantity: item.quantity,
            weight_grams: u32::try_from(v.weight_grams).unwrap_or(0),
            requires_shipping: v.requires_shipping,
        })
        .collect();
    let run = |method: Option<&str>| {
        let request = PriceRequest {
            currency: &session.currency,
            lines: &lines,
            destination,
            shipping_method: method,
            codes: &session.discount_codes,
            now,
            redemptions,
            tax_exempt: exempt,
        };
        pricing::price(&request, rules).ok()
    };
    let first = run(requested_shipping)?;
    if first.selected_shipping.is_some() || first.shipping_options.is_empty() {
        return Some(first);
    }
    let default = first.shipping_options[0].id.clone();
    run(Some(&default))
}

fn check_line(index: usize, item: &RequestedItem, v: &VariantRow, currency: &str, messages: &mut Vec<Message>) {
    let at = format!("$.line_items[{index}]");
    let stock = v.stock_quantity.map(|s| s.max(0) as u32);
    if v.price_amount.is_none() {
        messages.push(Message::error(
            "invalid",
            format!("{at}.item.id"),
            format!("'{}' has no price and cannot be bought.", v.title),
            "requires_buyer_input",
        ));
    } else if v.currency.as_deref() != Some(currency) {
        messages.push(Message::error(
            "invalid",
            format!("{at}.item.id"),
            format!(
                "'{}' is priced in {}, not {}.",
                v.title,
                v.currency.as_deref().unwrap_or("?").to_uppercase(),
                currency.to_uppercase()
            ),
            "requires_buyer_input",
        ));
    }
    if !v.available || stock == Some(0) {
        messages.push(Message::error(
            "out_of_stock",
            format!("{at}.item.id"),
            format!("'{}' is currently out of stock.", v.title),
            "requires_buyer_input",
        ));
    } else if let Some(s) = stock.filter(|s| *s < item.quantity) {
        messages.push(Message::error(
            "out_of_stock",
            format!("{at}.quantity"),
            format!("Only {s} of '{}' are in stock.", v.title),
            "recoverable",
        ));
    }
    if let Some(m) = v
        .max_quantity_per_order
        .map(|m| m.max(1) as u32)
        .filter(|m| item.quantity > *m)
    {
        messages.push(Message::error(
            "quantity_exceeded",
            format!("{at}.quantity"),
            format!("At most {m} of '{}' can be bought per order.", v.title),
            "recoverable",
        ));
    }
}

fn line(index: usize, item: &RequestedItem, v: &VariantRow, priced: Option<&Priced>) -> Line {
    let p = priced.and_then(|p| p.lines.get(index));
    let (base, discount, subtotal, tax, line_total) =
        p.map_or((0, 0, 0, 0, 0), |l| (l.base, l.discount, l.subtotal, l.tax, l.total));
    let mut totals = vec![total("items_base_amount", "Base Amount", base)];
    if discount > 0 {
        totals.push(total("discount", "Discount", discount));
    }
    totals.extend([
        total("subtotal", "Subtotal", subtotal),
        total("tax", "Tax", tax),
        total("total", "Total", line_total),
    ]);
    Line {
        id: format!("li_{}", index + 1),
        item_id: item.item_id.clone(),
        quantity: item.quantity,
        name: v.title.clone(),
        description: v.description.clone(),
        image_url: v.image_url.clone(),
        url: v.url.clone(),
        product_id: v.product_id.clone(),
        unit_amount: v.price_amount.unwrap_or(0),
        requires_shipping: v.requires_shipping,
        disclosures: v.disclosures.0.clone(),
        available_quantity: v.stock_quantity.map(|s| s.max(0) as u32),
        max_quantity_per_order: v.max_quantity_per_order.map(|m| m.max(1) as u32),
        totals,
        tax_exempt: false,
    }
}

fn fulfillment_options(
    session: &Session,
    lines: &[Line],
    rules: &Rules,
    priced: Option<&Priced>,
    now: DateTime<Utc>,
    messages: &mut Vec<Message>,
) -> Vec<FulfillmentOption> {
    let shipped: Vec<String> = lines
        .iter()
        .filter(|l| l.requires_shipping)
        .map(|l| l.item_id.clone())
        .collect();
    let digital: Vec<String> = lines
        .iter()
        .filter(|l| !l.requires_shipping)
        .map(|l| l.item_id.clone())
        .collect();
    let quotes: &[ShippingQuote] = priced.map_or(&[], |p| p.shipping_options.as_slice());
    let mut options: Vec<FulfillmentOption> = if shipped.is_empty() {
        Vec::new()
    } else {
        quotes.iter().map(|q| shipping_option(q, &shipped, now)).collect()
    };
    let address = session.fulfillment_details.as_ref().and_then(|d| d.address.as_ref());
    // Methods that serve the address but are priced in another currency: the currency message says so instead.
    let withheld = priced.is_some_and(|p| p.withheld.as_ref().is_some_and(|w| w.shipping_unavailable));
    if let (false, true, false, Some(address)) = (shipped.is_empty(), options.is_empty(), withheld, address) {
        messages.push(Message::error(
            "region_restricted",
            "$.fulfillment_details.address.country",
            format!("We do not ship to {}.", address.country),
            "requires_buyer_input",
        ));
    }
    if !shipped.is_empty() {
        let offered = rules
            .pickup
            .iter()
            .filter(|p| engine::pickup_offered(rules, &session.currency, p));
        options.extend(offered.map(|p| FulfillmentOption {
            kind: FulfillmentKind::Pickup,
            id: p.id.clone(),
            title: p.name.clone(),
            description: p.instructions.clone(),
            carrier: None,
            earliest_delivery_time: None,
            latest_delivery_time: None,
            item_ids: shipped.clone(),
            amount: p.amount.max(0),
            location: Some(p.clone()),
        }));
    }
    if !digital.is_empty() {
        options.push(FulfillmentOption {
            location: None,
            kind: FulfillmentKind::Digital,
            id: "digital_delivery".to_owned(),
            title: "Digital delivery".to_owned(),
            description: Some("Delivered by email right after purchase".to_owned()),
            carrier: None,
            earliest_delivery_time: None,
            latest_delivery_time: None,
            item_ids: digital,
            amount: 0,
        });
    }
    options
}

fn shipping_option(q: &ShippingQuote, items: &[String], now: DateTime<Utc>) -> FulfillmentOption {
    FulfillmentOption {
        kind: FulfillmentKind::Shipping,
        id: q.id.clone(),
        title: q.title.clone(),
        description: Some(format!(
            "Arrives in {}-{} business days",
            q.min_business_days, q.max_business_days
        )),
        carrier: q.carrier.clone(),
        earliest_delivery_time: Some(business_days_after(now, i64::from(q.min_business_days))),
        latest_delivery_time: Some(business_days_after(now, i64::from(q.max_business_days))),
        item_ids: items.to_vec(),
        amount: q.amount,
        location: None,
    }
}

/// `days` business days (Monday to Friday) after `start`.
fn business_days_after(start: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    let mut t = start;
    let mut left = days;
    while left > 0 {
        t += Duration::days(1);
        if t.weekday().number_from_monday() <= 5 {
            left -= 1;
        }
    }
    t
}

/// The selection that applies: the agent's choices that still exist (others are dropped with a message), then
/// defaults: digital delivery always, the first shipping option when none was chosen.
fn apply_selection(
    session: &Session,
    lines: &[Line],
    options: &[FulfillmentOption],
    messages: &mut Vec<Message>,
) -> Vec<SelectedOption> {
    let line_to_item: HashMap<&str, &str> = lines.iter().map(|l| (l.id.as_str(), l.item_id.as_str())).collect();
    let mut selected: Vec<SelectedOption> = Vec::new();
    for (i, wanted) in session.requested_selection.iter().enumerate() {
        match options
            .iter()
            .find(|o| o.id == wanted.option_id && (wanted.any_kind || o.kind == wanted.kind))
        {
            Some(option) => {
                // item_ids may name items or line items (examples use both); keep those the option covers.
                let mut item_ids: Vec<String> = wanted
                    .item_ids
                    .iter()
                    .map(|id| {
                        line_to_item
                            .get(id.as_str())
                            .map_or(id.as_str(), |item| *item)
                            .to_owned()
                    })
                    .filter(|id| option.item_ids.contains(id))
                    .collect();
                if item_ids.is_empty() {
                    item_ids = option.item_ids.clone();
                }
                selected.push(SelectedOption {
                    kind: option.kind,
                    option_id: option.id.clone(),
                    item_ids,
                    any_kind: false,
                });
            }
            None => messages.push(Message::error(
                "invalid",
                format!("$.selected_fulfillment_options[{i}].option_id"),
                format!(
                    "Fulfillment option '{}' is not available for this checkout.",
                    wanted.option_id
                ),
                "recoverable",
            )),
        }
    }
    let pickup_chosen = selected.iter().any(|s| s.kind == FulfillmentKind::Pickup);
    for kind in [FulfillmentKind::Digital, FulfillmentKind::Shipping] {
        let chosen = selected.iter().any(|s| s.kind == kind) || (kind == FulfillmentKind::Shipping && pickup_chosen);
        if let (false, Some(option)) = (chosen, options.iter().find(|o| o.kind == kind)) {
            selected.push(SelectedOption {
                kind,
                option_id: option.id.clone(),
                item_ids: option.item_ids.clone(),
                any_kind: false,
            });
        }
    }
    selected
}

/// Every shipped item needs an address and a selected option covering it; digital items need their option.
fn fulfillment_complete(session: &Session, lines: &[Line], selected: &[SelectedOption]) -> bool {
    if lines.is_empty() {
        return false;
    }
    let collected = |item: &String| {
        selected
            .iter()
            .any(|s| s.kind == FulfillmentKind::Pickup && s.item_ids.contains(item))
    };
    let needs_address = lines.iter().any(|l| l.requires_shipping && !collected(&l.item_id));
    let has_address = session
        .fulfillment_details
        .as_ref()
        .is_some_and(|d| d.address.is_some());
    if needs_address && !has_address {
        return false;
    }
    lines
        .iter()
        .all(|l| selected.iter().any(|s| s.item_ids.contains(&l.item_id)))
}

/// Why a cart in another currency than the pricing rules' misses shipping or discounts. An error (the session
/// cannot be paid) when its physical items can no longer be shipped and are not all collected at a pickup
/// location; information otherwise.
fn currency_message(currency: &str, withheld: &Withheld, lines: &[Line], selected: &[SelectedOption]) -> Message {
    let shipping = !withheld.shipping_methods.is_empty() || !withheld.pickup_locations.is_empty();
    let discounts = !withheld.promotions.is_empty();
    let rules = withheld.rules_currency.to_uppercase();
    let cart = currency.to_uppercase();
    let content = match (shipping, discounts) {
        (true, true) => format!(
            "Shipping and fixed discounts are set up in {rules}; this cart is in {cart}, so they cannot be offered."
        ),
        (true, false) => format!("Shipping is set up in {rules}; this cart is in {cart}, so it cannot be offered."),
        _ => format!("Fixed discounts are set up in {rules}; this cart is in {cart}, so they cannot be applied."),
    };
    let collected = |item: &String| {
        selected
            .iter()
            .any(|s| s.kind == FulfillmentKind::Pickup && s.item_ids.contains(item))
    };
    let stranded = withheld.shipping_unavailable && lines.iter().any(|l| l.requires_shipping && !collected(&l.item_id));
    if stranded {
        Message::error("invalid", "$.currency", content, "requires_buyer_input")
    } else {
        Message::info(content)
    }
}

/// The discount extension's view of the promotions: applied ones with their line allocations, rejected codes
/// with the schema's reason and a warning message pointing at the code.
fn discounts(
    session: &Session,
    rules: &Rules,
    priced: Option<&Priced>,
    messages: &mut Vec<Message>,
) -> (Vec<AppliedDiscount>, Vec<RejectedDiscount>) {
    let Some(priced) = priced else {
        return (Vec::new(), Vec::new());
    };
    let applied = priced
        .applied
        .iter()
        .map(|a| {
            let kind = rules
                .promotions
                .iter()
                .find(|p| p.id == a.promotion_id)
                .map(|p| p.kind.clone());
            AppliedDiscount {
                promotion_id: a.promotion_id.clone(),
                name: a.name.clone(),
                code: a.code.clone(),
                amount: a.amount,
                allocations: a
                    .allocations
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(_, amount)| *amount > 0)
                    .collect(),
                percent_off: match &kind {
                    Some(PromotionKind::Percent { rate }) => Some(*rate * rust_decimal::Decimal::ONE_HUNDRED),
                    _ => None,
                },
                amount_off: match kind {
                    Some(PromotionKind::Fixed { amount }) => Some(amount),
                    Some(PromotionKind::FreeShipping) => Some(a.amount),
                    _ => None,
                },
                free_shipping: a.free_shipping,
            }
        })
        .collect();
    let rejected = priced
        .rejected
        .iter()
        .map(|r| {
            let index = session.discount_codes.iter().position(|c| *c == r.code).unwrap_or(0);
            let message = format!(
                "Code '{}' could not be applied ({}).",
                r.code,
                r.reason.code().trim_start_matches("discount_code_").replace('_', " ")
            );
            messages.push(Message::warning(
                r.reason.code(),
                format!("$.discounts.codes[{index}]"),
                message.clone(),
            ));
            RejectedDiscount {
                code: r.code.clone(),
                reason: r.reason.code().to_owned(),
                message,
            }
        })
        .collect();
    (applied, rejected)
}

fn order_totals(priced: Option<&Priced>, selected: &[SelectedOption]) -> Vec<Total> {
    let t = priced.map(|p| p.totals.clone()).unwrap_or_default();
    let mut totals = vec![total("items_base_amount", "Item(s) total", t.items_base)];
    if t.items_discount > 0 {
        totals.push(total("items_discount", "Discounts", t.items_discount));
    }
    totals.push(total("subtotal", "Subtotal", t.subtotal));
    if !selected.is_empty() {
        totals.push(total("fulfillment", "Fulfillment", t.fulfillment));
    }
    totals.push(total("tax", "Tax", t.tax));
    totals.push(total("total", "Total", t.total));
    totals
}
