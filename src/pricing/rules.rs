//! The rule set a price is computed against: merchant tax settings, tax rules, shipping methods and promotions.
//! A snapshot of it is loaded once and shared; the engine only reads it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Banker's rounding: ties go to the even minor unit (no drift over many lines).
    #[default]
    HalfEven,
    HalfUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingLevel {
    /// Each line's tax is rounded on its own.
    #[default]
    Line,
    /// The order's tax is rounded once, then spread back over the lines by largest remainder.
    Order,
}

/// A tax rate for one jurisdiction and tax category. Every rule matching a destination applies and the rates add
/// up, so a country rule, a region (state) rule and a postal-prefix (local) rule combine as US sales taxes do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxRule {
    pub name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub postal_prefix: Option<String>,
    /// standard | reduced | zero | exempt | digital | …
    pub category: String,
    /// A fraction: 0.0625 for 6.25 %.
    pub rate: Decimal,
    /// Whether shipping is taxed in this jurisdiction (at this rule's rate, for the `standard` category).
    #[serde(default)]
    pub applies_to_shipping: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateBand {
    /// The band applies from this items subtotal (minor units) up.
    pub min_subtotal: i64,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingMethod {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub carrier: Option<String>,
    /// Countries served (alpha-2); empty means none.
    pub countries: Vec<String>,
    /// Regions served within those countries; empty means all.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Rate by items subtotal: the band with the highest `min_subtotal` not above the subtotal applies.
    pub bands: Vec<RateBand>,
    /// Added per started kilogram of shipped weight.
    #[serde(default)]
    pub per_kg: i64,
    /// Free from this items subtotal on.
    #[serde(default)]
    pub free_over: Option<i64>,
    pub min_business_days: u32,
    pub max_business_days: u32,
}

/// A store or locker where the buyer collects physical items; offered whatever the delivery address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickupLocation {
    pub id: String,
    pub name: String,
    pub address: PickupAddress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Usually 0.
    #[serde(default)]
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickupAddress {
    pub city: String,
    pub country: String,
    pub line_one: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_two: Option<String>,
    pub name: String,
    pub postal_code: String,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PromotionKind {
    /// A fraction of the eligible amount: 0.15 for 15 %.
    Percent {
        rate: Decimal,
    },
    /// A fixed amount in minor units (never more than the eligible amount).
    Fixed {
        amount: i64,
    },
    FreeShipping,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    Order,
    Products { ids: Vec<String> },
    Categories { names: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    pub id: String,
    pub name: String,
    /// Redeemed by entering this code (case-insensitive); `None` applies automatically.
    #[serde(default)]
    pub code: Option<String>,
    pub kind: PromotionKind,
    pub target: Target,
    #[serde(default)]
    pub min_subtotal: i64,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Stackable promotions combine; an exclusive one applies alone.
    #[serde(default = "yes")]
    pub stackable: bool,
    #[serde(default)]
    pub max_redemptions: Option<u32>,
    /// Redemptions allowed per buyer email.
    #[serde(default)]
    pub max_per_buyer: Option<u32>,
    /// How often it was redeemed so far (from completed orders).
    #[serde(default)]
    pub redeemed: u32,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// The currency every amount of the bundle is written in (ISO 4217, compared case-insensitively): fixed
    /// discounts, minimum subtotals, shipping bands, `per_kg`, `free_over` and pickup fees. A cart in another
    /// currency is priced without the rules that hold such amounts (rates still apply); the table in
    /// `pricing::engine`'s module docs lists each rule type. `None`: the amounts apply to any currency.
    #[serde(default)]
    pub currency: Option<String>,
    /// EU/UK style: prices include tax. US style (false): tax is added.
    #[serde(default)]
    pub tax_inclusive: bool,
    #[serde(default)]
    pub rounding: Rounding,
    #[serde(default)]
    pub rounding_level: RoundingLevel,
    #[serde(default)]
    pub taxes: Vec<TaxRule>,
    #[serde(default)]
    pub shipping: Vec<ShippingMethod>,
    #[serde(default)]
    pub promotions: Vec<Promotion>,
    #[serde(default)]
    pub pickup: Vec<PickupLocation>,
    /// What agents may sell, to which agents, up to what total ([`super::policy`]).
    #[serde(default, skip_serializing_if = "super::policy::SalesPolicy::is_empty")]
    pub sales_policy: super::policy::SalesPolicy,
}
