//! The pricing engine: a pure function from (cart, rules, destination, selections, codes, time) to a priced cart,
//! with no I/O, so it is unit- and property-testable and fast.
//!
//! Money rules: every amount in and out is an integer in minor units of the cart's currency; arithmetic happens in
//! `rust_decimal`; each tax is rounded once to a whole minor unit with the configured mode (half-even by default)
//! at the configured level (per line, or per order with the order's rounded tax spread back over the lines by the
//! largest-remainder method). Discounts are allocated over lines by largest remainder as well, so allocations always
//! add up exactly to the discount.

pub mod allocate;
pub mod currency;
pub mod engine;
pub mod listener;
pub mod policy;
pub mod rules;
pub mod store;

pub use engine::{PriceRequest, Priced, PricingError, price};
pub use rules::Rules;

#[cfg(test)]
mod tests;
