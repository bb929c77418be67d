//! Worked examples (each checked by hand) and property tests: every priced cart reconciles to the minor unit.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::{
    engine::{CartLine, Destination, PriceRequest, Priced, RejectReason, price},
    engine::{Withheld, in_rules_currency},
    rules::{
        PickupAddress, PickupLocation, Promotion, PromotionKind, RateBand, Rounding, RoundingLevel, Rules,
        ShippingMethod, Target, TaxRule,
    },
};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn line(product: &str, unit: i64, quantity: u32) -> CartLine {
    CartLine {
        product_id: product.into(),
        product_category: Some("apparel".into()),
        tax_category: "standard".into(),
        unit_amount: unit,
        quantity,
        weight_grams: 400,
        requires_shipping: true,
    }
}

fn dest(country: &str, region: Option<&str>, postal: Option<&str>) -> Destination {
    Destination {
        country: country.into(),
        region: region.map(Into::into),
        postal_code: postal.map(Into::into),
    }
}

fn tax(name: &str, country: &str, region: Option<&str>, postal: Option<&str>, rate: &str, shipping: bool) -> TaxRule {
    TaxRule {
        name: name.into(),
        country: country.into(),
        region: region.map(Into::into),
        postal_prefix: postal.map(Into::into),
        category: "standard".into(),
        rate: rate.parse().expect("decimal"),
        applies_to_shipping: shipping,
    }
}

fn ground(countries: &[&str], amount: i64) -> ShippingMethod {
    ShippingMethod {
        id: "ground".into(),
        title: "Ground".into(),
        carrier: Some("UPS".into()),
        countries: countries.iter().map(|c| (*c).into()).collect(),
        regions: vec![],
        bands: vec![RateBand {
            min_subtotal: 0,
            amount,
        }],
        per_kg: 0,
        free_over: None,
        min_business_days: 3,
        max_business_days: 5,
    }
}

fn promo(id: &str, code: Option<&str>, kind: PromotionKind) -> Promotion {
    Promotion {
        id: id.into(),
        name: id.into(),
        code: code.map(Into::into),
        kind,
        target: Target::Order,
        min_subtotal: 0,
        starts_at: None,
        ends_at: None,
        stackable: true,
        max_redemptions: None,
        max_per_buyer: None,
        redeemed: 0,
    }
}

fn run(
    currency: &str,
    lines: &[CartLine],
    rules: &Rules,
    d: Option<&Destination>,
    ship: Option<&str>,
    codes: &[&str],
) -> Priced {
    let codes: Vec<String> = codes.iter().map(|c| (*c).to_owned()).collect();
    let request = PriceRequest {
        currency,
        lines,
        destination: d,
        shipping_method: ship,
        codes: &codes,
        now: now(),
        redemptions: &Default::default(),
        tax_exempt: false,
    };
    price(&request, rules).expect("priced")
}

#[test]
fn a_us_order_adds_state_and_local_tax_and_taxes_shipping_only_where_due() {
    let rules = Rules {
        taxes: vec![
            tax("California", "US", Some("CA"), None, "0.0725", false),
            tax("San Francisco", "US", Some("CA"), Some("941"), "0.01375", false),
            tax("New York", "US", Some("NY"), None, "0.04", true),
            tax("New York City", "US", Some("NY"), Some("100"), "0.045", false),
        ],
        shipping: vec![ground(&["US"], 500)],
        ..Rules::default()
    };
    let cart = [line("tee", 2500, 2)];
    // San Francisco: 8.625 % of 50.00 = 4.3125 → 4.31; shipping untaxed.
    let sf = run(
        "usd",
        &cart,
        &rules,
        Some(&dest("US", Some("CA"), Some("94131"))),
        Some("ground"),
        &[],
    );
    assert_eq!(sf.lines[0].tax, 431);
    assert_eq!(sf.shipping_tax, 0);
    assert_eq!(
        (
            sf.totals.subtotal,
            sf.totals.fulfillment,
            sf.totals.tax,
            sf.totals.total
        ),
        (5000, 500, 431, 5931)
    );
    // New York City: 8.5 % of 50.00 = 4.25; shipping taxed at the state's 4 % = 0.20.
    let ny = run(
        "usd",
        &cart,
        &rules,
        Some(&dest("US", Some("NY"), Some("10001"))),
        Some("ground"),
        &[],
    );
    assert_eq!(ny.lines[0].tax, 425);
    assert_eq!(ny.shipping_tax, 20);
    assert_eq!(ny.totals.total, 5000 + 500 + 445);
}

#[test]
fn an_eu_order_with_vat_included_in_prices() {
    let rules = Rules {
        tax_inclusive: true,
        taxes: vec![tax("Germany VAT", "DE", None, None, "0.19", true)],
        shipping: vec![ground(&["DE"], 595)],
        ..Rules::default()
    };
    let priced = run(
        "eur",
        &[line("tee", 11900, 1)],
        &rules,
        Some(&dest("DE", None, None)),
        Some("ground"),
        &[],
    );
    // 119.00 gross holds 19.00 VAT; 5.95 shipping holds 0.95.
    assert_eq!(priced.lines[0].tax, 1900);
    assert_eq!(priced.lines[0].total, 11900, "the price already includes the tax");
    assert_eq!(priced.shipping_tax, 95);
    assert_eq!((priced.totals.tax, priced.totals.total), (1995, 12495));
}

#[test]
fn a_jpy_order_has_no_minor_digits() {
    let rules = Rules {
        taxes: vec![tax("Japan", "JP", None, None, "0.10", false)],
        ..Rules::default()
    };
    let mut cart = [line("tea", 1500, 3)];
    cart[0].requires_shipping = false;
    let priced = run("jpy", &cart, &rules, Some(&dest("JP", None, None)), None, &[]);
    assert_eq!(
        (priced.totals.subtotal, priced.totals.tax, priced.totals.total),
        (4500, 450, 4950)
    );
}

#[test]
fn a_kwd_order_keeps_three_minor_digits() {
    let rules = Rules {
        shipping: vec![ground(&["KW"], 1_500)],
        ..Rules::default()
    };
    // 12.345 KWD × 2 + 1.500 KWD shipping, no VAT in Kuwait.
    let priced = run(
        "kwd",
        &[line("lamp", 12_345, 2)],
        &rules,
        Some(&dest("KW", None, None)),
        Some("ground"),
        &[],
    );
    assert_eq!(priced.totals.total, 26_190);
    assert!(run_err("xyz").is_err());
}

fn run_err(currency: &str) -> Result<Priced, super::PricingError> {
    let request = PriceRequest {
        currency,
        lines: &[],
        destination: None,
        shipping_method: None,
        codes: &[],
        now: now(),
        redemptions: &Default::default(),
        tax_exempt: false,
    };
    price(&request, &Rules::default())
}

#[test]
fn a_fixed_discount_over_three_lines_allocates_the_odd_cents() {
    let rules = Rules {
        promotions: vec![promo("ten", Some("TEN"), PromotionKind::Fixed { amount: 1000 })],
        ..Rules::default()
    };
    let cart = [line("a", 1999, 1), line("b", 1999, 1), line("c", 1999, 1)];
    let priced = run("usd", &cart, &rules, None, None, &["ten"]);
    let applied = &priced.applied[0];
    assert_eq!(applied.allocations, vec![334, 333, 333]);
    assert_eq!(applied.allocations.iter().sum::<i64>(), 1000);
    assert_eq!(priced.totals.items_discount, 1000);
    assert_eq!(priced.totals.subtotal, 5997 - 1000);
}

#[test]
fn codes_are_rejected_with_the_discount_extension_reasons() {
    let mut expired = promo(
        "old",
        Some("OLD"),
        PromotionKind::Percent {
            rate: "0.1".parse().unwrap(),
        },
    );
    expired.ends_at = Some(now() - Duration::days(1));
    let mut used_up = promo("gone", Some("GONE"), PromotionKind::Fixed { amount: 100 });
    used_up.max_redemptions = Some(5);
    used_up.redeemed = 5;
    let mut big = promo("big", Some("BIG"), PromotionKind::Fixed { amount: 100 });
    big.min_subtotal = 100_000;
    let mut solo = promo("solo", Some("SOLO"), PromotionKind::Fixed { amount: 100 });
    solo.stackable = false;
    let ok = promo("ok", Some("OK"), PromotionKind::Fixed { amount: 100 });
    let rules = Rules {
        promotions: vec![expired, used_up, big, solo, ok],
        ..Rules::default()
    };
    let priced = run(
        "usd",
        &[line("a", 5000, 1)],
        &rules,
        None,
        None,
        &["OLD", "gone", "Big", "nope", "ok", "SOLO"],
    );
    let reasons: Vec<(&str, &str)> = priced
        .rejected
        .iter()
        .map(|r| (r.code.as_str(), r.reason.code()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("nope", "discount_code_invalid"),
            ("OLD", "discount_code_expired"),
            ("gone", "discount_code_usage_limit_reached"),
            ("Big", "discount_code_minimum_not_met"),
            ("SOLO", "discount_code_combination_disallowed"),
        ]
    );
    assert_eq!(priced.applied.len(), 1, "only OK applies");
    assert_eq!(priced.totals.items_discount, 100);
    assert_eq!(RejectReason::Expired.code(), "discount_code_expired");
}

#[test]
fn redemption_counts_enforce_total_and_per_buyer_limits() {
    let mut once_each = promo("once", Some("ONCE"), PromotionKind::Fixed { amount: 100 });
    once_each.max_per_buyer = Some(1);
    let mut hundred = promo("hundred", Some("HUNDRED"), PromotionKind::Fixed { amount: 100 });
    hundred.max_redemptions = Some(100);
    let rules = Rules {
        promotions: vec![once_each, hundred],
        ..Rules::default()
    };
    let lines = [line("a", 5000, 1)];
    let codes = vec!["ONCE".to_owned(), "HUNDRED".to_owned()];
    let counts = |once: (u32, u32), hundred: (u32, u32)| {
        std::collections::HashMap::from([("once".to_owned(), once), ("hundred".to_owned(), hundred)])
    };
    let priced = |redemptions: &std::collections::HashMap<String, (u32, u32)>| {
        let request = PriceRequest {
            currency: "usd",
            lines: &lines,
            destination: None,
            shipping_method: None,
            codes: &codes,
            now: now(),
            redemptions,
            tax_exempt: false,
        };
        price(&request, &rules).expect("priced")
    };
    let fresh_counts = counts((40, 0), (99, 7));
    let fresh = priced(&fresh_counts);
    assert_eq!(
        fresh.applied.len(),
        2,
        "other buyers' uses do not count against this buyer"
    );
    let used_counts = counts((40, 1), (100, 0));
    let used = priced(&used_counts);
    let reasons: Vec<&str> = used.rejected.iter().map(|r| r.reason.code()).collect();
    assert_eq!(
        reasons,
        ["discount_code_usage_limit_reached", "discount_code_usage_limit_reached"]
    );
}

#[test]
fn an_address_change_drops_a_method_that_no_longer_serves_it() {
    let mut express = ground(&["US"], 1500);
    express.id = "express".into();
    express.regions = vec!["CA".into()];
    let rules = Rules {
        shipping: vec![ground(&["US", "CA"], 500), express],
        ..Rules::default()
    };
    let cart = [line("tee", 2500, 1)];
    let ca = run(
        "usd",
        &cart,
        &rules,
        Some(&dest("US", Some("CA"), None)),
        Some("express"),
        &[],
    );
    assert_eq!(ca.selected_shipping.as_deref(), Some("express"));
    let ny = run(
        "usd",
        &cart,
        &rules,
        Some(&dest("US", Some("NY"), None)),
        Some("express"),
        &[],
    );
    assert_eq!(ny.selected_shipping, None, "express does not serve NY");
    assert_eq!(ny.shipping_options.len(), 1);
    assert_eq!(ny.totals.fulfillment, 0);
}

#[test]
fn free_shipping_thresholds_bands_weight_and_promotions() {
    let mut method = ground(&["US"], 800);
    method.bands.push(RateBand {
        min_subtotal: 5000,
        amount: 400,
    });
    method.per_kg = 100;
    method.free_over = Some(10_000);
    let rules = Rules {
        shipping: vec![method],
        promotions: vec![promo("ship", Some("SHIP"), PromotionKind::FreeShipping)],
        ..Rules::default()
    };
    let us = dest("US", None, None);
    // 2 × 400 g = 0.8 kg → 1 started kg; subtotal 50.00 → the 4.00 band + 1.00.
    let p = run("usd", &[line("tee", 2500, 2)], &rules, Some(&us), Some("ground"), &[]);
    assert_eq!(p.totals.fulfillment, 500);
    let p = run("usd", &[line("tee", 2500, 4)], &rules, Some(&us), Some("ground"), &[]);
    assert_eq!(p.totals.fulfillment, 0, "free from 100.00");
    let p = run(
        "usd",
        &[line("tee", 2500, 1)],
        &rules,
        Some(&us),
        Some("ground"),
        &["ship"],
    );
    assert_eq!(p.totals.fulfillment, 0, "free-shipping code");
}

#[test]
fn order_level_rounding_spreads_the_rounded_tax_over_lines() {
    let rules = Rules {
        taxes: vec![tax("Tax", "US", None, None, "0.0825", false)],
        rounding_level: RoundingLevel::Order,
        ..Rules::default()
    };
    let cart = [line("a", 106, 1), line("b", 106, 1), line("c", 106, 1)];
    // Each line: 8.745 → per line half-even 9 each = 27; per order 26.235 → 26 spread as 9 + 9 + 8.
    let p = run("usd", &cart, &rules, Some(&dest("US", None, None)), None, &[]);
    assert_eq!(p.lines.iter().map(|l| l.tax).sum::<i64>(), 26);
    let per_line = run(
        "usd",
        &cart,
        &Rules {
            rounding_level: RoundingLevel::Line,
            ..rules.clone()
        },
        Some(&dest("US", None, None)),
        None,
        &[],
    );
    assert_eq!(per_line.totals.tax, 27);
    let half_up = Rules {
        rounding: Rounding::HalfUp,
        ..rules
    };
    let p = run(
        "usd",
        &[line("a", 1000, 1)],
        &Rules {
            taxes: vec![tax("T", "US", None, None, "0.0025", false)],
            ..half_up
        },
        Some(&dest("US", None, None)),
        None,
        &[],
    );
    assert_eq!(p.totals.tax, 3, "2.5 rounds up under half-up (half-even would give 2)");
}

fn pickup(id: &str, amount: i64) -> PickupLocation {
    PickupLocation {
        id: id.into(),
        name: id.into(),
        address: PickupAddress {
            name: "Store".into(),
            line_one: "1 Main St".into(),
            line_two: None,
            city: "Springfield".into(),
            state: "IL".into(),
            country: "US".into(),
            postal_code: "62701".into(),
        },
        phone: None,
        instructions: None,
        amount,
    }
}

/// A USD bundle holding one rule of every kind: rates, fixed and percent promotions (automatic and coded, with
/// and without minimums), a priced and a free shipping method, a paid and a free pickup location.
fn usd_bundle() -> Rules {
    let mut priced = ground(&["US", "JP"], 800);
    priced.per_kg = 150;
    priced.free_over = Some(20_000);
    priced.bands.push(RateBand {
        min_subtotal: 5000,
        amount: 400,
    });
    let mut min_percent = promo(
        "big_spender",
        Some("BIG"),
        PromotionKind::Percent {
            rate: "0.2".parse().unwrap(),
        },
    );
    min_percent.min_subtotal = 1000;
    let mut min_free_ship = promo("ship_over", None, PromotionKind::FreeShipping);
    min_free_ship.min_subtotal = 100;
    Rules {
        currency: Some("usd".into()),
        taxes: vec![
            tax("Japan", "JP", None, None, "0.10", true),
            tax("US", "US", None, None, "0.05", true),
        ],
        shipping: vec![priced],
        promotions: vec![
            promo("auto_fixed", None, PromotionKind::Fixed { amount: 500 }),
            promo(
                "auto_percent",
                None,
                PromotionKind::Percent {
                    rate: "0.1".parse().unwrap(),
                },
            ),
            min_free_ship,
            promo("save10", Some("SAVE10"), PromotionKind::Fixed { amount: 1000 }),
            min_percent,
            promo(
                "pct5",
                Some("PCT5"),
                PromotionKind::Percent {
                    rate: "0.05".parse().unwrap(),
                },
            ),
        ],
        pickup: vec![pickup("locker", 300), pickup("store", 0)],
        ..Rules::default()
    }
}

#[test]
fn a_cart_in_another_currency_is_priced_without_any_amount_of_the_rules_currency() {
    let rules = usd_bundle();
    let cart = [line("tea", 1500, 2)];
    let tokyo = dest("JP", Some("13"), Some("100-0001"));
    let p = run(
        "jpy",
        &cart,
        &rules,
        Some(&tokyo),
        Some("ground"),
        &["SAVE10", "big", "pct5"],
    );
    // No USD shipping: the priced method is not offered, so nothing is selected and nothing is charged for it.
    assert!(p.shipping_options.is_empty(), "{:?}", p.shipping_options);
    assert_eq!(p.selected_shipping, None);
    assert_eq!((p.totals.fulfillment, p.shipping_tax), (0, 0));
    // Only the currency-free promotions apply: 10 % automatic, then 5 % by code on what is left.
    let applied: Vec<&str> = p.applied.iter().map(|a| a.promotion_id.as_str()).collect();
    assert_eq!(applied, ["auto_percent", "pct5"]);
    assert_eq!(p.applied[0].amount, 300, "10 % of ¥3000");
    assert_eq!(p.applied[1].amount, 135, "5 % of ¥2700");
    let rejected: Vec<(&str, &str)> = p.rejected.iter().map(|r| (r.code.as_str(), r.reason.code())).collect();
    assert_eq!(
        rejected,
        [("SAVE10", "discount_code_invalid"), ("big", "discount_code_invalid")],
        "a fixed amount and a USD minimum cannot be redeemed in yen"
    );
    // Tax rates are fractions: 10 % of ¥2565.
    assert_eq!(p.totals.subtotal, 2565);
    assert_eq!(p.totals.tax, 256, "256.5, rounded half-even");
    assert_eq!(p.totals.total, p.totals.subtotal + p.totals.tax);
    assert_eq!(
        p.withheld,
        Some(Withheld {
            rules_currency: "usd".into(),
            shipping_methods: vec!["ground".into()],
            shipping_unavailable: true,
            pickup_locations: vec!["locker".into()],
            promotions: vec![
                "auto_fixed".into(),
                "ship_over".into(),
                "save10".into(),
                "big_spender".into()
            ],
        })
    );
}

#[test]
fn the_same_cart_in_the_rules_currency_gets_every_rule_whatever_the_case_of_the_code() {
    let rules = usd_bundle();
    let cart = [line("tea", 1500, 2)];
    let tokyo = dest("JP", Some("13"), Some("100-0001"));
    let p = run(
        "USD",
        &cart,
        &rules,
        Some(&tokyo),
        Some("ground"),
        &["SAVE10", "big", "pct5"],
    );
    let applied: Vec<(&str, i64)> = p.applied.iter().map(|a| (a.promotion_id.as_str(), a.amount)).collect();
    // 3000 − 500 = 2500; −10 % = 2250; −10.00 = 1250; −20 % = 1000; −5 % = 950. Shipping 8.00 + 1.50 per started
    // kg, waived by the free-shipping promotion (its minimum of 1.00 is met).
    assert_eq!(
        applied,
        [
            ("auto_fixed", 500),
            ("auto_percent", 250),
            ("ship_over", 950),
            ("save10", 1000),
            ("big_spender", 250),
            ("pct5", 50),
        ]
    );
    assert!(p.rejected.is_empty());
    assert_eq!(p.shipping_options[0].waived_by_promotion, 950);
    assert_eq!((p.totals.subtotal, p.totals.fulfillment, p.totals.tax), (950, 0, 95));
    assert_eq!(p.withheld, None);

    // Rules without a currency apply to every cart (the merchant said the amounts fit any currency).
    let any = Rules {
        currency: None,
        ..rules.clone()
    };
    let yen = run("jpy", &cart, &any, Some(&tokyo), Some("ground"), &["SAVE10"]);
    assert_eq!(yen.applied.len(), 4, "{:?}", yen.applied);
    assert_eq!(yen.withheld, None);

    assert!(in_rules_currency(&rules, "usd"));
    assert!(in_rules_currency(&rules, "USD"));
    assert!(in_rules_currency(
        &Rules {
            currency: Some("USD".into()),
            ..Rules::default()
        },
        "usd"
    ));
    assert!(!in_rules_currency(&rules, "jpy"));
    assert!(in_rules_currency(&Rules::default(), "jpy"));
}

#[test]
fn free_shipping_methods_and_free_pickup_stay_offered_in_another_currency() {
    let mut rules = usd_bundle();
    let mut post = ground(&["JP"], 0);
    post.id = "free_post".into();
    rules.shipping.push(post);
    let cart = [line("tea", 1500, 1)];
    let tokyo = dest("JP", None, None);
    let p = run("jpy", &cart, &rules, Some(&tokyo), Some("free_post"), &[]);
    let offered: Vec<(&str, i64)> = p.shipping_options.iter().map(|q| (q.id.as_str(), q.amount)).collect();
    assert_eq!(offered, [("free_post", 0)], "zero is zero in every currency");
    assert_eq!(p.selected_shipping.as_deref(), Some("free_post"));
    let withheld = p.withheld.expect("the priced method and the paid locker are left out");
    assert_eq!(withheld.shipping_methods, ["ground"]);
    assert!(!withheld.shipping_unavailable, "the free method still ships it");

    // A pickup location with a fee cannot be chosen; a free one can.
    let locker = run("jpy", &cart, &rules, Some(&tokyo), Some("locker"), &[]);
    assert_eq!(locker.selected_shipping, None);
    assert_eq!(locker.totals.fulfillment, 0);
    let store = run("jpy", &cart, &rules, None, Some("store"), &[]);
    assert_eq!(store.selected_shipping.as_deref(), Some("store"));
    let usd_locker = run("usd", &cart, &rules, None, Some("locker"), &[]);
    assert_eq!(
        usd_locker.totals.fulfillment, 300,
        "in dollars the locker's fee applies"
    );
}

#[test]
fn what_is_withheld_is_only_what_concerns_the_cart() {
    let rules = Rules {
        promotions: vec![],
        ..usd_bundle()
    };
    // Digital goods: shipping and pickup do not concern them, so nothing is withheld at all.
    let mut ebook = line("ebook", 1500, 1);
    ebook.requires_shipping = false;
    let digital = run(
        "jpy",
        std::slice::from_ref(&ebook),
        &rules,
        Some(&dest("JP", None, None)),
        None,
        &[],
    );
    assert_eq!(digital.withheld, None);
    // A destination no method serves: that is a region problem, not a currency one.
    let cart = [line("tea", 1500, 1)];
    let france = run("jpy", &cart, &rules, Some(&dest("FR", None, None)), None, &[]);
    let withheld = france.withheld.expect("the paid locker");
    assert!(withheld.shipping_methods.is_empty() && !withheld.shipping_unavailable);
    assert_eq!(withheld.pickup_locations, ["locker"]);
    // No destination yet: every priced method counts, and none is left to ship with.
    let nowhere = run("jpy", &cart, &rules, None, None, &[]);
    let withheld = nowhere.withheld.expect("the priced method");
    assert_eq!(withheld.shipping_methods, ["ground"]);
    assert!(withheld.shipping_unavailable);
}

/// A promotion naming money: a fixed amount or a minimum subtotal.
fn has_amounts(p: &Promotion) -> bool {
    matches!(p.kind, PromotionKind::Fixed { .. }) || p.min_subtotal != 0
}

/// The rules a cart in another currency must be priced with: the bundle without every rule holding an amount.
fn without_amounts(rules: &Rules) -> Rules {
    Rules {
        currency: None,
        shipping: rules
            .shipping
            .iter()
            .filter(|m| m.per_kg == 0 && m.bands.iter().all(|b| b.amount == 0))
            .cloned()
            .collect(),
        promotions: rules.promotions.iter().filter(|p| !has_amounts(p)).cloned().collect(),
        pickup: rules.pickup.iter().filter(|p| p.amount <= 0).cloned().collect(),
        ..rules.clone()
    }
}

fn arb_rules() -> impl Strategy<Value = Rules> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec((0u32..3000, any::<bool>()), 0..4),
        proptest::collection::vec(
            (0u32..4, 0i64..5000, 0u32..60, prop_oneof![Just(0i64), 1i64..3000]),
            0..4,
        ),
        0i64..2000,
        prop_oneof![Just(None), Just(Some("usd")), Just(Some("USD")), Just(Some("jpy"))],
        proptest::option::of(0i64..500),
    )
        .prop_map(
            |(inclusive, half_up, order_level, taxes, promos, ship, currency, pickup_fee)| Rules {
                pickup: pickup_fee.map(|fee| vec![pickup("store", fee)]).unwrap_or_default(),
                sales_policy: Default::default(),
                currency: currency.map(Into::into),
                tax_inclusive: inclusive,
                rounding: if half_up { Rounding::HalfUp } else { Rounding::HalfEven },
                rounding_level: if order_level {
                    RoundingLevel::Order
                } else {
                    RoundingLevel::Line
                },
                taxes: taxes
                    .into_iter()
                    .map(|(bp, on_ship)| TaxRule {
                        name: "t".into(),
                        country: "US".into(),
                        region: None,
                        postal_prefix: None,
                        category: "standard".into(),
                        rate: Decimal::new(i64::from(bp), 4),
                        applies_to_shipping: on_ship,
                    })
                    .collect(),
                shipping: vec![ground(&["US"], ship)],
                promotions: promos
                    .into_iter()
                    .enumerate()
                    .map(|(i, (kind, fixed, pct, minimum))| {
                        let kind = match kind {
                            0 => PromotionKind::Fixed { amount: fixed },
                            1 => PromotionKind::Percent {
                                rate: Decimal::new(i64::from(pct), 2),
                            },
                            2 => PromotionKind::FreeShipping,
                            _ => PromotionKind::Percent {
                                rate: Decimal::new(i64::from(pct % 30), 2),
                            },
                        };
                        let mut p = promo(&format!("p{i}"), if i % 2 == 0 { None } else { Some("CODE") }, kind);
                        p.min_subtotal = minimum;
                        p.target = if i == 3 {
                            Target::Products { ids: vec!["p1".into()] }
                        } else {
                            Target::Order
                        };
                        p
                    })
                    .collect(),
            },
        )
}

fn arb_lines() -> impl Strategy<Value = Vec<CartLine>> {
    proptest::collection::vec((0i64..200_000, 1u32..20, 0usize..3, any::<bool>()), 1..25).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(unit, qty, product, shipped)| CartLine {
                product_id: format!("p{product}"),
                product_category: None,
                tax_category: "standard".into(),
                unit_amount: unit,
                quantity: qty,
                weight_grams: 250,
                requires_shipping: shipped,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_priced_cart_reconciles_to_the_minor_unit(
        rules in arb_rules(),
        lines in arb_lines(),
        with_address in any::<bool>(),
        currency in prop_oneof![Just("usd"), Just("jpy")],
        method in prop_oneof![Just("ground"), Just("store")],
        codes in proptest::collection::vec(prop_oneof![Just("CODE".to_owned()), Just("code".to_owned()), Just("zzz".to_owned())], 0..3),
    ) {
        let destination = dest("US", Some("CA"), Some("94131"));
        let d = with_address.then_some(&destination);
        let request = PriceRequest { currency, lines: &lines, destination: d, shipping_method: Some(method), codes: &codes, now: now(), redemptions: &Default::default(), tax_exempt: false };
        let priced = price(&request, &rules).expect("priced");
        let again = price(&request, &rules).expect("priced");
        prop_assert_eq!(&priced, &again, "pricing is deterministic");

        for (l, cart) in priced.lines.iter().zip(&lines) {
            prop_assert!(l.base >= 0 && l.discount >= 0 && l.subtotal >= 0 && l.tax >= 0 && l.total >= 0);
            prop_assert_eq!(l.base, cart.unit_amount * i64::from(cart.quantity));
            prop_assert_eq!(l.subtotal, l.base - l.discount);
            if rules.tax_inclusive {
                prop_assert_eq!(l.total, l.subtotal);
                prop_assert!(l.tax <= l.total);
            } else {
                prop_assert_eq!(l.total, l.subtotal + l.tax);
            }
        }
        for (i, _) in lines.iter().enumerate() {
            let allocated: i64 = priced.applied.iter().map(|a| a.allocations[i]).sum();
            prop_assert_eq!(allocated, priced.lines[i].discount, "allocations add up per line");
        }
        let waived = priced.selected_shipping.as_ref()
            .and_then(|id| priced.shipping_options.iter().find(|q| &q.id == id))
            .map_or(0, |q| q.waived_by_promotion);
        for a in &priced.applied {
            prop_assert!(a.amount >= 0);
            if a.free_shipping {
                // Free shipping is worth what it waived on the fulfillment total; no line carries it.
                prop_assert!(a.allocations.iter().all(|x| *x == 0));
                prop_assert_eq!(a.amount, waived);
            } else {
                prop_assert_eq!(a.allocations.iter().sum::<i64>(), a.amount, "allocations add up to the discount");
            }
        }
        let t = &priced.totals;
        prop_assert!(t.items_base >= 0 && t.items_discount >= 0 && t.subtotal >= 0 && t.fulfillment >= 0 && t.tax >= 0 && t.total >= 0);
        prop_assert_eq!(t.items_base, priced.lines.iter().map(|l| l.base).sum::<i64>());
        prop_assert_eq!(t.items_discount, priced.lines.iter().map(|l| l.discount).sum::<i64>());
        prop_assert_eq!(t.subtotal, t.items_base - t.items_discount);
        prop_assert_eq!(t.tax, priced.lines.iter().map(|l| l.tax).sum::<i64>() + priced.shipping_tax);
        let expected_total = t.subtotal + t.fulfillment + if rules.tax_inclusive { 0 } else { t.tax };
        prop_assert_eq!(t.total, expected_total, "the total equals the sum of its parts");

        // A cart in another currency than the rules' is priced exactly as if the rules holding amounts did not
        // exist: no amount written in the rules' currency reaches it.
        if in_rules_currency(&rules, currency) {
            prop_assert_eq!(&priced.withheld, &None);
        } else {
            let stripped = price(&request, &without_amounts(&rules)).expect("priced");
            prop_assert_eq!(&priced.lines, &stripped.lines);
            prop_assert_eq!(&priced.totals, &stripped.totals);
            prop_assert_eq!(&priced.applied, &stripped.applied);
            prop_assert_eq!(&priced.shipping_options, &stripped.shipping_options);
            prop_assert_eq!(&priced.selected_shipping, &stripped.selected_shipping);
            prop_assert_eq!(t.fulfillment, 0, "only free methods and free pickup are left");
            for a in &priced.applied {
                let p = rules.promotions.iter().find(|p| p.id == a.promotion_id).expect("a rule");
                prop_assert!(!has_amounts(p), "{} holds an amount", p.id);
            }
            for r in &priced.rejected {
                let entered = r.code.trim().to_lowercase();
                let promotion = rules.promotions.iter().find(|p| p.code.as_ref().is_some_and(|c| c.to_lowercase() == entered));
                if promotion.is_some_and(has_amounts) {
                    prop_assert_eq!(r.reason, RejectReason::Invalid);
                }
            }
        }
    }
}
