//! Pricing speed: a 100-line cart against 20 rules (10 tax rules, 5 shipping methods, 5 promotions), the size the
//! pricing issue budgets at under 100 µs median. Run with `cargo bench --bench pricing`.

use std::hint::black_box;

use acp_merchant::pricing::{
    engine::{CartLine, Destination, PriceRequest, price},
    rules::{Promotion, PromotionKind, RateBand, Rules, ShippingMethod, Target, TaxRule},
};
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;

fn rules() -> Rules {
    let taxes = (0..10)
        .map(|i| TaxRule {
            name: format!("tax{i}"),
            country: "US".into(),
            region: (i % 2 == 0).then(|| "CA".into()),
            postal_prefix: (i % 3 == 0).then(|| "94".into()),
            category: if i % 4 == 0 {
                "reduced".into()
            } else {
                "standard".into()
            },
            rate: Decimal::new(100 + i64::from(i) * 37, 4),
            applies_to_shipping: i % 2 == 1,
        })
        .collect();
    let shipping = (0..5)
        .map(|i| ShippingMethod {
            id: format!("m{i}"),
            title: format!("Method {i}"),
            carrier: Some("UPS".into()),
            countries: vec!["US".into(), "CA".into()],
            regions: vec![],
            bands: vec![
                RateBand {
                    min_subtotal: 0,
                    amount: 500 + i * 100,
                },
                RateBand {
                    min_subtotal: 10_000,
                    amount: 300,
                },
            ],
            per_kg: 50,
            free_over: Some(500_000),
            min_business_days: 2,
            max_business_days: 6,
        })
        .collect();
    let promotions = (0..5)
        .map(|i| Promotion {
            id: format!("p{i}"),
            name: format!("Promo {i}"),
            code: (i % 2 == 1).then(|| format!("CODE{i}")),
            kind: if i % 2 == 0 {
                PromotionKind::Percent {
                    rate: Decimal::new(5, 2),
                }
            } else {
                PromotionKind::Fixed { amount: 700 }
            },
            target: if i == 4 {
                Target::Products {
                    ids: vec!["prod_7".into()],
                }
            } else {
                Target::Order
            },
            min_subtotal: 1000,
            starts_at: None,
            ends_at: None,
            stackable: true,
            max_redemptions: None,
            max_per_buyer: None,
            redeemed: 0,
        })
        .collect();
    Rules {
        taxes,
        shipping,
        promotions,
        ..Rules::default()
    }
}

fn cart() -> Vec<CartLine> {
    (0..100)
        .map(|i| CartLine {
            product_id: format!("prod_{}", i % 13),
            product_category: Some("outdoor".into()),
            tax_category: if i % 5 == 0 {
                "reduced".into()
            } else {
                "standard".into()
            },
            unit_amount: 199 + i64::from(i) * 37,
            quantity: 1 + u32::try_from(i % 4).unwrap_or(0),
            weight_grams: 350,
            requires_shipping: i % 10 != 0,
        })
        .collect()
}

fn bench_pricing(c: &mut Criterion) {
    let rules = rules();
    let lines = cart();
    let destination = Destination {
        country: "US".into(),
        region: Some("CA".into()),
        postal_code: Some("94131".into()),
    };
    let codes = vec!["CODE1".to_owned(), "code3".to_owned()];
    let now = Utc::now();
    let redemptions = std::collections::HashMap::new();
    c.bench_function("price 100 lines x 20 rules", |b| {
        b.iter(|| {
            let request = PriceRequest {
                currency: "usd",
                lines: black_box(&lines),
                destination: Some(&destination),
                shipping_method: Some("m2"),
                codes: &codes,
                now,
                redemptions: &redemptions,
                tax_exempt: false,
            };
            black_box(price(&request, &rules).expect("priced"))
        });
    });
}

criterion_group!(benches, bench_pricing);
criterion_main!(benches);
