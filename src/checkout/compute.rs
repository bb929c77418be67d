//! The pure recomputation run on every mutation: lines and their totals, fulfillment options for the address,
//! the selection that applies, order totals, business messages, and the status they imply. No I/O: the caller
//! passes the catalog rows and the shop rules.
//!
//! Money: catalog prices are integer minor units; arithmetic is done in `rust_decimal` and converted back with
//! an explicit rounding rule (half-even) so every total reconciles exactly. Tax is zero until the pricing engine
//! lands; shipping is flat per method.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::{Decimal, RoundingStrategy, prelude::ToPrimitive};

use super::model::{
    Computed, FulfillmentKind, FulfillmentOption, Line, Message, RequestedItem, SelectedOption, Session, Status, Total,
};
use crate::catalog::VariantRow;

/// Shop rules the computation needs (from configuration until the pricing engine moves them to the database).
#[derive(Debug, Clone)]
pub struct ShopRules {
    pub ship_to_countries: Vec<String>,
    pub shipping_standard_amount: i64,
    pub shipping_express_amount: i64,
}

/// Converts a decimal amount to integer minor units, rounding half to even.
pub fn to_minor(amount: Decimal) -> i64 {
    amount
        .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        .to_i64()
        .unwrap_or(i64::MAX)
}

fn total(kind: &str, display_text: &str, amount: Decimal) -> Total {
    Total {
        kind: kind.to_owned(),
        display_text: display_text.to_owned(),
        amount: to_minor(amount),
    }
}

/// Recomputes everything derived from the session's inputs. `catalog` must contain every requested item (the
/// caller refuses unknown ids before this point).
pub fn recompute(session: &mut Session, catalog: &HashMap<String, VariantRow>, rules: &ShopRules, now: DateTime<Utc>) {
    let mut messages = Vec::new();
    let lines: Vec<Line> = session
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            catalog
                .get(&item.item_id)
                .map(|v| price_line(i, item, v, &session.currency, &mut messages))
        })
        .collect();
    let options = fulfillment_options(session, &lines, rules, now, &mut messages);
    let selected = apply_selection(session, &lines, &options, &mut messages);
    let totals = order_totals(&lines, &options, &selected);
    let ready = messages.iter().all(|m| m.kind != super::model::MessageKind::Error)
        && fulfillment_complete(session, &lines, &selected);
    session.computed = Computed {
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

fn price_line(index: usize, item: &RequestedItem, v: &VariantRow, currency: &str, messages: &mut Vec<Message>) -> Line {
    let at = format!("$.line_items[{index}]");
    let unit = v.price_amount.unwrap_or(0);
    let base = Decimal::from(unit) * Decimal::from(item.quantity);
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
    let max = v.max_quantity_per_order.map(|m| m.max(1) as u32);
    if let Some(m) = max.filter(|m| item.quantity > *m) {
        messages.push(Message::error(
            "quantity_exceeded",
            format!("{at}.quantity"),
            format!("At most {m} of '{}' can be bought per order.", v.title),
            "recoverable",
        ));
    }
    Line {
        id: format!("li_{}", index + 1),
        item_id: item.item_id.clone(),
        quantity: item.quantity,
        name: v.title.clone(),
        description: v.description.clone(),
        image_url: v.image_url.clone(),
        url: v.url.clone(),
        product_id: v.product_id.clone(),
        unit_amount: unit,
        requires_shipping: v.requires_shipping,
        disclosures: v.disclosures.0.clone(),
        available_quantity: stock,
        max_quantity_per_order: max,
        totals: vec![
            total("items_base_amount", "Base Amount", base),
            total("subtotal", "Subtotal", base),
            total("tax", "Tax", Decimal::ZERO),
            total("total", "Total", base),
        ],
    }
}

fn fulfillment_options(
    session: &Session,
    lines: &[Line],
    rules: &ShopRules,
    now: DateTime<Utc>,
    messages: &mut Vec<Message>,
) -> Vec<FulfillmentOption> {
    let mut options = Vec::new();
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
    let address = session.fulfillment_details.as_ref().and_then(|d| d.address.as_ref());
    if let (false, Some(address)) = (shipped.is_empty(), address) {
        if rules
            .ship_to_countries
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&address.country))
        {
            options.push(shipping_option(
                "ship_standard",
                "Standard",
                "Arrives in 3-5 business days",
                rules.shipping_standard_amount,
                (3, 5),
                &shipped,
                now,
            ));
            options.push(shipping_option(
                "ship_express",
                "Express",
                "Arrives in 1-2 business days",
                rules.shipping_express_amount,
                (1, 2),
                &shipped,
                now,
            ));
        } else {
            messages.push(Message::error(
                "region_restricted",
                "$.fulfillment_details.address.country",
                format!("We do not ship to {}.", address.country),
                "requires_buyer_input",
            ));
        }
    }
    if !digital.is_empty() {
        options.push(FulfillmentOption {
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

fn shipping_option(
    id: &str,
    title: &str,
    description: &str,
    amount: i64,
    (earliest_days, latest_days): (i64, i64),
    items: &[String],
    now: DateTime<Utc>,
) -> FulfillmentOption {
    FulfillmentOption {
        kind: FulfillmentKind::Shipping,
        id: id.to_owned(),
        title: title.to_owned(),
        description: Some(description.to_owned()),
        carrier: Some("USPS".to_owned()),
        earliest_delivery_time: Some(business_days_after(now, earliest_days)),
        latest_delivery_time: Some(business_days_after(now, latest_days)),
        item_ids: items.to_vec(),
        amount,
    }
}

/// `days` business days (Monday to Friday) after `start`.
fn business_days_after(start: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    use chrono::Datelike;
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
            .find(|o| o.id == wanted.option_id && o.kind == wanted.kind)
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
    for kind in [FulfillmentKind::Digital, FulfillmentKind::Shipping] {
        let chosen = selected.iter().any(|s| s.kind == kind);
        if let (false, Some(option)) = (chosen, options.iter().find(|o| o.kind == kind)) {
            selected.push(SelectedOption {
                kind,
                option_id: option.id.clone(),
                item_ids: option.item_ids.clone(),
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
    let needs_address = lines.iter().any(|l| l.requires_shipping);
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

fn order_totals(lines: &[Line], options: &[FulfillmentOption], selected: &[SelectedOption]) -> Vec<Total> {
    let sum = |kind: &str| -> Decimal {
        lines
            .iter()
            .flat_map(|l| l.totals.iter())
            .filter(|t| t.kind == kind)
            .map(|t| Decimal::from(t.amount))
            .sum()
    };
    let items_base = sum("items_base_amount");
    let subtotal = sum("subtotal");
    let tax = sum("tax");
    let fulfillment: Decimal = selected
        .iter()
        .filter_map(|s| options.iter().find(|o| o.id == s.option_id))
        .map(|o| Decimal::from(o.amount))
        .sum();
    let mut totals = vec![
        total("items_base_amount", "Item(s) total", items_base),
        total("subtotal", "Subtotal", subtotal),
    ];
    if !selected.is_empty() {
        totals.push(total("fulfillment", "Fulfillment", fulfillment));
    }
    totals.push(total("tax", "Tax", tax));
    totals.push(total("total", "Total", subtotal + fulfillment + tax));
    totals
}
