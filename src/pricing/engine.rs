//! `price`: the pure pricing function.
//!
//! Order of work: line bases → promotions (automatic first, then codes in the order given; each works on what the
//! earlier ones left, allocated over eligible lines by largest remainder) → shipping quotes for the destination →
//! taxes (every matching jurisdiction rule adds up, e.g. state + local; exclusive or inclusive; rounded per line
//! or per order) → totals.
//!
//! ## Rules in another currency
//!
//! A bundle may name the currency its amounts are written in (`Rules.currency`). A cart in another currency
//! (compared case-insensitively) is never priced with those amounts: a rule that holds an amount of money is left
//! out, and [`Priced::withheld`] says what was left out so the checkout can tell the buyer why. Rates and
//! fractions mean the same in every currency and still apply. A rule whose amounts are all zero names no money
//! (zero is zero in every currency) and still applies too.
//!
//! | rule | cart in the rules' currency (or rules without one) | cart in another currency |
//! |---|---|---|
//! | tax rule (`rate`), `tax_inclusive`, rounding | applies | applies |
//! | percent promotion | applies | applies, unless it has a `min_subtotal` |
//! | free-shipping promotion | applies | applies (it waives what is left, i.e. nothing priced), unless it has a `min_subtotal` |
//! | fixed-amount promotion | applies | left out: an automatic one is skipped, a code is rejected `discount_code_invalid` |
//! | any promotion with `min_subtotal` > 0 | applies when the minimum is met | left out as above (the minimum cannot be compared) |
//! | shipping method with a non-zero band amount or `per_kg` | offered | not offered (bands, `per_kg`, `free_over` are amounts) |
//! | shipping method whose bands and `per_kg` are all zero | offered, free | offered, free |
//! | pickup location with an `amount` > 0 | offered | not offered |
//! | pickup location with `amount` 0 | offered | offered |

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy, prelude::ToPrimitive};

use super::{
    allocate::largest_remainder,
    currency,
    rules::{PickupLocation, Promotion, PromotionKind, Rounding, RoundingLevel, Rules, ShippingMethod, Target},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    pub product_id: String,
    /// Promotion category (merchant taxonomy), if any.
    pub product_category: Option<String>,
    /// standard | reduced | zero | exempt | digital | …
    pub tax_category: String,
    pub unit_amount: i64,
    pub quantity: u32,
    pub weight_grams: u32,
    pub requires_shipping: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub country: String,
    pub region: Option<String>,
    pub postal_code: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PriceRequest<'a> {
    pub currency: &'a str,
    pub lines: &'a [CartLine],
    pub destination: Option<&'a Destination>,
    pub shipping_method: Option<&'a str>,
    pub codes: &'a [String],
    pub now: DateTime<Utc>,
    /// Redemptions so far per promotion id: (all buyers, this buyer). Missing ids count as none.
    pub redemptions: &'a HashMap<String, (u32, u32)>,
    /// The buyer holds a tax exemption valid for this destination: no tax on lines or shipping.
    pub tax_exempt: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub base: i64,
    pub discount: i64,
    /// base − discount: what the buyer pays for the line before tax (exclusive) or in total (inclusive).
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingQuote {
    pub id: String,
    pub title: String,
    pub carrier: Option<String>,
    pub amount: i64,
    /// What a free-shipping promotion took off this method (0 without one).
    pub waived_by_promotion: i64,
    pub min_business_days: u32,
    pub max_business_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedDiscount {
    pub promotion_id: String,
    pub name: String,
    pub code: Option<String>,
    pub amount: i64,
    /// Per cart line, in cart order; adds up to `amount`.
    pub allocations: Vec<i64>,
    pub free_shipping: bool,
}

/// The discount extension's reasons (`DiscountErrorCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Invalid,
    Expired,
    MinimumNotMet,
    UsageLimitReached,
    CombinationDisallowed,
}

impl RejectReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "discount_code_invalid",
            Self::Expired => "discount_code_expired",
            Self::MinimumNotMet => "discount_code_minimum_not_met",
            Self::UsageLimitReached => "discount_code_usage_limit_reached",
            Self::CombinationDisallowed => "discount_code_combination_disallowed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedCode {
    pub code: String,
    pub reason: RejectReason,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub items_base: i64,
    pub items_discount: i64,
    pub subtotal: i64,
    pub fulfillment: i64,
    pub tax: i64,
    pub total: i64,
}

/// What a cart in another currency than the rules' was priced without (see the module docs). Ids in rule order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// The currency the rules are written in, as the rules name it.
    pub rules_currency: String,
    /// Shipping methods with amounts that would otherwise be considered for this cart (it has physical items; they
    /// serve its destination, or any destination while it has none).
    pub shipping_methods: Vec<String>,
    /// Every shipping method that could serve the cart was left out: it cannot be shipped (only collected).
    pub shipping_unavailable: bool,
    /// Pickup locations with a fee (for a cart with physical items).
    pub pickup_locations: Vec<String>,
    /// Promotions with amounts: automatic ones skipped, entered codes rejected.
    pub promotions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub lines: Vec<PricedLine>,
    pub shipping_options: Vec<ShippingQuote>,
    /// The requested method when the destination still offers it.
    pub selected_shipping: Option<String>,
    pub shipping_tax: i64,
    pub applied: Vec<AppliedDiscount>,
    pub rejected: Vec<RejectedCode>,
    pub totals: Totals,
    pub tax_inclusive: bool,
    /// Rules left out because they are written in another currency (`None`: nothing was).
    pub withheld: Option<Withheld>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("unknown currency `{0}`")]
    UnknownCurrency(String),
    #[error("amounts too large to price")]
    Overflow,
}

fn round(amount: Decimal, mode: Rounding) -> i64 {
    let strategy = match mode {
        Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
        Rounding::HalfUp => RoundingStrategy::MidpointAwayFromZero,
    };
    amount.round_dp_with_strategy(0, strategy).to_i64().unwrap_or(i64::MAX)
}

pub fn price(request: &PriceRequest<'_>, rules: &Rules) -> Result<Priced, PricingError> {
    currency::exponent(request.currency).ok_or_else(|| PricingError::UnknownCurrency(request.currency.to_owned()))?;
    let bases: Vec<i64> = request
        .lines
        .iter()
        .map(|l| {
            l.unit_amount
                .max(0)
                .checked_mul(i64::from(l.quantity))
                .ok_or(PricingError::Overflow)
        })
        .collect::<Result<_, _>>()?;
    bases
        .iter()
        .try_fold(0i64, |acc, b| acc.checked_add(*b))
        .ok_or(PricingError::Overflow)?;

    let foreign = !in_rules_currency(rules, request.currency);
    let mut remaining = bases.clone();
    let (applied, rejected, withheld_promotions) = apply_promotions(request, rules, foreign, &bases, &mut remaining);
    let free_shipping = applied.iter().any(|a| a.free_shipping);

    let subtotal: i64 = remaining.iter().sum();
    let shipping_options = quotes(request, rules, foreign, subtotal, free_shipping);
    let selected = request
        .shipping_method
        .and_then(|id| shipping_options.iter().find(|q| q.id == id))
        .cloned()
        .or_else(|| pickup_quote(request, rules));
    let shipping = selected.as_ref().map_or(0, |q| q.amount);
    // A free-shipping promotion is worth what it waived on the method that applies.
    let mut applied = applied;
    for a in applied.iter_mut().filter(|a| a.free_shipping) {
        a.amount = selected.as_ref().map_or(0, |q| q.waived_by_promotion);
    }

    // An exempt buyer is taxed as if no jurisdiction applied.
    let taxed_destination = if request.tax_exempt { None } else { request.destination };
    let line_rates: Vec<Decimal> = request
        .lines
        .iter()
        .map(|l| tax_rate(rules, taxed_destination, &l.tax_category, false))
        .collect();
    let shipping_rate = tax_rate(rules, taxed_destination, "standard", true);
    let (line_taxes, shipping_tax) = taxes(rules, &remaining, &line_rates, shipping, shipping_rate);

    let lines: Vec<PricedLine> = bases
        .iter()
        .zip(&remaining)
        .zip(&line_taxes)
        .map(|((base, sub), tax)| PricedLine {
            base: *base,
            discount: base - sub,
            subtotal: *sub,
            tax: *tax,
            total: if rules.tax_inclusive { *sub } else { sub + tax },
        })
        .collect();
    let tax = line_taxes.iter().sum::<i64>() + shipping_tax;
    let totals = Totals {
        items_base: bases.iter().sum(),
        items_discount: lines.iter().map(|l| l.discount).sum(),
        subtotal,
        fulfillment: shipping,
        tax,
        total: subtotal + shipping + if rules.tax_inclusive { 0 } else { tax },
    };
    Ok(Priced {
        lines,
        shipping_options,
        selected_shipping: selected.map(|q| q.id),
        shipping_tax,
        applied,
        rejected,
        totals,
        tax_inclusive: rules.tax_inclusive,
        withheld: if foreign {
            withheld(request, rules, withheld_promotions)
        } else {
            None
        },
    })
}

/// Whether a cart in `currency` is priced with every rule of `rules`: the rules name no currency, or this one
/// (case-insensitively). Otherwise the rules holding amounts are left out (see the module docs).
pub fn in_rules_currency(rules: &Rules, currency: &str) -> bool {
    rules
        .currency
        .as_deref()
        .is_none_or(|c| c.trim().eq_ignore_ascii_case(currency.trim()))
}

/// A promotion holds an amount of money: a fixed discount, or a minimum subtotal.
fn promotion_has_amounts(p: &Promotion) -> bool {
    matches!(p.kind, PromotionKind::Fixed { .. }) || p.min_subtotal != 0
}

/// A shipping method holds an amount of money: it can cost something. (Band thresholds and `free_over` only
/// matter when it can.)
fn method_has_amounts(m: &ShippingMethod) -> bool {
    m.per_kg != 0 || m.bands.iter().any(|b| b.amount != 0)
}

/// Whether a pickup location is offered for a cart in `currency` under `rules`: it is free, or the cart is in the
/// rules' currency.
pub fn pickup_offered(rules: &Rules, currency: &str, location: &PickupLocation) -> bool {
    location.amount <= 0 || in_rules_currency(rules, currency)
}

/// What a cart in a foreign currency is priced without; `None` when nothing that concerns it was left out.
fn withheld(request: &PriceRequest<'_>, rules: &Rules, promotions: Vec<String>) -> Option<Withheld> {
    let physical = request.lines.iter().any(|l| l.requires_shipping);
    let candidates: Vec<&ShippingMethod> = if physical {
        rules
            .shipping
            .iter()
            .filter(|m| request.destination.is_none_or(|d| serves(m, d)))
            .collect()
    } else {
        Vec::new()
    };
    let shipping_methods: Vec<String> = candidates
        .iter()
        .filter(|m| method_has_amounts(m))
        .map(|m| m.id.clone())
        .collect();
    let pickup_locations: Vec<String> = if physical {
        rules
            .pickup
            .iter()
            .filter(|p| !pickup_offered(rules, request.currency, p))
            .map(|p| p.id.clone())
            .collect()
    } else {
        Vec::new()
    };
    if shipping_methods.is_empty() && pickup_locations.is_empty() && promotions.is_empty() {
        return None;
    }
    Some(Withheld {
        rules_currency: rules.currency.clone().unwrap_or_default(),
        shipping_unavailable: !shipping_methods.is_empty() && shipping_methods.len() == candidates.len(),
        shipping_methods,
        pickup_locations,
        promotions,
    })
}

/// Why a promotion cannot apply now, if it cannot.
fn ineligible(p: &Promotion, request: &PriceRequest<'_>, items_base: i64) -> Option<RejectReason> {
    let now = request.now;
    let (total, by_buyer) = request.redemptions.get(&p.id).copied().unwrap_or((0, 0));
    if p.ends_at.is_some_and(|end| now >= end) {
        return Some(RejectReason::Expired);
    }
    if p.starts_at.is_some_and(|start| now < start) {
        return Some(RejectReason::Invalid);
    }
    if p.max_redemptions.is_some_and(|max| p.redeemed.max(total) >= max)
        || p.max_per_buyer.is_some_and(|max| by_buyer >= max)
    {
        return Some(RejectReason::UsageLimitReached);
    }
    if items_base < p.min_subtotal {
        return Some(RejectReason::MinimumNotMet);
    }
    None
}

fn eligible(target: &Target, line: &CartLine) -> bool {
    match target {
        Target::Order => true,
        Target::Products { ids } => ids.contains(&line.product_id),
        Target::Categories { names } => line.product_category.as_ref().is_some_and(|c| names.contains(c)),
    }
}

/// Applies the promotions; returns the applied ones, the rejected codes, and the ids of promotions left out
/// because they hold amounts in another currency than the cart's (`foreign`).
fn apply_promotions(
    request: &PriceRequest<'_>,
    rules: &Rules,
    foreign: bool,
    bases: &[i64],
    remaining: &mut [i64],
) -> (Vec<AppliedDiscount>, Vec<RejectedCode>, Vec<String>) {
    let items_base: i64 = bases.iter().sum();
    let mut applied: Vec<AppliedDiscount> = Vec::new();
    let mut rejected = Vec::new();
    let mut withheld = Vec::new();
    let mut exclusive_applied = false;
    let automatic = rules.promotions.iter().filter(|p| p.code.is_none()).map(|p| (None, p));
    let mut seen_codes: Vec<String> = Vec::new();
    let mut coded = Vec::new();
    for code in request.codes {
        let normalized = code.trim().to_lowercase();
        if seen_codes.contains(&normalized) {
            continue;
        }
        seen_codes.push(normalized.clone());
        match rules
            .promotions
            .iter()
            .find(|p| p.code.as_ref().is_some_and(|c| c.to_lowercase() == normalized))
        {
            Some(p) => coded.push((Some(code.clone()), p)),
            None => rejected.push(RejectedCode {
                code: code.clone(),
                reason: RejectReason::Invalid,
            }),
        }
    }
    for (code, promotion) in automatic.chain(coded) {
        let reject = |reason| code.clone().map(|code| RejectedCode { code, reason });
        if foreign && promotion_has_amounts(promotion) {
            // Its amount (or minimum) is in the rules' currency: never applied to this cart, whatever it says.
            withheld.push(promotion.id.clone());
            rejected.extend(reject(RejectReason::Invalid));
            continue;
        }
        if let Some(reason) = ineligible(promotion, request, items_base) {
            rejected.extend(reject(reason));
            continue;
        }
        if exclusive_applied || (!promotion.stackable && !applied.is_empty()) {
            rejected.extend(reject(RejectReason::CombinationDisallowed));
            continue;
        }
        let weights: Vec<i64> = request
            .lines
            .iter()
            .zip(remaining.iter())
            .map(|(line, left)| if eligible(&promotion.target, line) { *left } else { 0 })
            .collect();
        let eligible_amount: i64 = weights.iter().sum();
        let (amount, free_shipping) = match &promotion.kind {
            PromotionKind::Percent { rate } => {
                let rate = (*rate).clamp(Decimal::ZERO, Decimal::ONE);
                (
                    round(Decimal::from(eligible_amount) * rate, rules.rounding).min(eligible_amount),
                    false,
                )
            }
            PromotionKind::Fixed { amount } => ((*amount).clamp(0, eligible_amount), false),
            PromotionKind::FreeShipping => (0, true),
        };
        if !free_shipping && eligible_amount == 0 {
            rejected.extend(reject(RejectReason::Invalid));
            continue;
        }
        let allocations = largest_remainder(amount, &weights);
        for (left, part) in remaining.iter_mut().zip(&allocations) {
            *left -= part;
        }
        exclusive_applied |= !promotion.stackable;
        applied.push(AppliedDiscount {
            promotion_id: promotion.id.clone(),
            name: promotion.name.clone(),
            code,
            amount,
            allocations,
            free_shipping,
        });
    }
    (applied, rejected, withheld)
}

/// A pickup location chosen as the fulfillment method: priced like a shipping method, never taxed as shipping's
/// destination differs (the store), and only for carts with something physical.
fn pickup_quote(request: &PriceRequest<'_>, rules: &Rules) -> Option<ShippingQuote> {
    let id = request.shipping_method?;
    if !request.lines.iter().any(|l| l.requires_shipping) {
        return None;
    }
    rules
        .pickup
        .iter()
        .filter(|p| pickup_offered(rules, request.currency, p))
        .find(|p| p.id == id)
        .map(|p| ShippingQuote {
            id: p.id.clone(),
            title: p.name.clone(),
            carrier: None,
            amount: p.amount.max(0),
            waived_by_promotion: 0,
            min_business_days: 0,
            max_business_days: 0,
        })
}

fn serves(method: &ShippingMethod, destination: &Destination) -> bool {
    let country = method
        .countries
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&destination.country));
    let region = method.regions.is_empty()
        || destination
            .region
            .as_ref()
            .is_some_and(|r| method.regions.iter().any(|m| m.eq_ignore_ascii_case(r)));
    country && region
}

fn quotes(
    request: &PriceRequest<'_>,
    rules: &Rules,
    foreign: bool,
    subtotal: i64,
    free_shipping: bool,
) -> Vec<ShippingQuote> {
    let shipped: Vec<&CartLine> = request.lines.iter().filter(|l| l.requires_shipping).collect();
    let Some(destination) = request.destination else {
        return Vec::new();
    };
    if shipped.is_empty() {
        return Vec::new();
    }
    let grams: u64 = shipped
        .iter()
        .map(|l| u64::from(l.weight_grams) * u64::from(l.quantity))
        .sum();
    let started_kg = i64::try_from(grams.div_ceil(1000)).unwrap_or(i64::MAX);
    rules
        .shipping
        .iter()
        .filter(|m| serves(m, destination))
        .filter(|m| !(foreign && method_has_amounts(m)))
        .map(|m| {
            let band = m
                .bands
                .iter()
                .filter(|b| b.min_subtotal <= subtotal)
                .max_by_key(|b| b.min_subtotal);
            let mut amount = band
                .map_or(0, |b| b.amount)
                .saturating_add(m.per_kg.saturating_mul(started_kg))
                .max(0);
            if m.free_over.is_some_and(|free| subtotal >= free) {
                amount = 0;
            }
            let waived_by_promotion = if free_shipping { amount } else { 0 };
            amount -= waived_by_promotion;
            ShippingQuote {
                id: m.id.clone(),
                title: m.title.clone(),
                carrier: m.carrier.clone(),
                amount,
                waived_by_promotion,
                min_business_days: m.min_business_days,
                max_business_days: m.max_business_days,
            }
        })
        .collect()
}

/// The sum of every rule matching the destination and category (country, region and postal-prefix rules add up,
/// as US state and local taxes do). No destination, no tax yet.
fn tax_rate(rules: &Rules, destination: Option<&Destination>, category: &str, shipping: bool) -> Decimal {
    let Some(d) = destination else { return Decimal::ZERO };
    rules
        .taxes
        .iter()
        .filter(|r| r.category == category && (!shipping || r.applies_to_shipping))
        .filter(|r| r.country.eq_ignore_ascii_case(&d.country))
        .filter(|r| {
            r.region
                .as_ref()
                .is_none_or(|region| d.region.as_ref().is_some_and(|dr| dr.eq_ignore_ascii_case(region)))
        })
        .filter(|r| {
            r.postal_prefix
                .as_ref()
                .is_none_or(|p| d.postal_code.as_ref().is_some_and(|pc| pc.starts_with(p.as_str())))
        })
        .map(|r| r.rate)
        .sum()
}

/// Taxes for the lines and for shipping, as integer minor units, at the configured level.
fn taxes(rules: &Rules, amounts: &[i64], rates: &[Decimal], shipping: i64, shipping_rate: Decimal) -> (Vec<i64>, i64) {
    let raw = |amount: i64, rate: Decimal| {
        let amount = Decimal::from(amount);
        if rules.tax_inclusive {
            // The tax inside a gross amount: gross × r / (1 + r).
            amount * rate / (Decimal::ONE + rate)
        } else {
            amount * rate
        }
    };
    let mut raws: Vec<Decimal> = amounts.iter().zip(rates).map(|(a, r)| raw(*a, *r)).collect();
    raws.push(raw(shipping, shipping_rate));
    let rounded: Vec<i64> = match rules.rounding_level {
        RoundingLevel::Line => raws.iter().map(|r| round(*r, rules.rounding)).collect(),
        RoundingLevel::Order => spread(round(raws.iter().sum(), rules.rounding), &raws),
    };
    let (lines, shipping) = rounded.split_at(amounts.len());
    (lines.to_vec(), shipping.first().copied().unwrap_or(0))
}

/// Spreads a rounded order total over raw parts: each part's floor, then the units left to the largest fractions.
fn spread(total: i64, raws: &[Decimal]) -> Vec<i64> {
    let floors: Vec<i64> = raws.iter().map(|r| r.floor().to_i64().unwrap_or(0)).collect();
    let mut left = total - floors.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..raws.len()).collect();
    order.sort_by(|a, b| {
        (raws[*b] - raws[*b].floor())
            .cmp(&(raws[*a] - raws[*a].floor()))
            .then(a.cmp(b))
    });
    let mut parts = floors;
    // round(Σ raw) − Σ floor(raw) lies in [0, n], so one pass over the parts hands out every unit.
    for i in order {
        if left <= 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}
