//! Catalog and stock sync from the merchant's store (issue 15): a variant's price, availability and on-hand stock
//! changed one at a time or in bulk (`PATCH /admin/variants/{id}`, `POST /admin/variants/bulk`), in one
//! transaction. Open sessions see a change on their next update or complete (a changed total is a `price_change`
//! warning at complete, a stock-out an `out_of_stock` error); a GET never reprices. `catalog import` stays the
//! full-sync path.
//!
//! Stock comes as an absolute on-hand count, optionally counted at `as_of`: the sales, cancels and returns the
//! inventory ledger recorded after that instant are applied on top, so a count taken before a sale does not undo
//! it. Or as a delta (`manual`, or `return`). Reservations are never touched: a sync while a session is being paid
//! for leaves its units reserved.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::{CatalogError, feed};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantChange {
    #[serde(default)]
    pub price: Option<feed::Price>,
    #[serde(default)]
    pub available: Option<bool>,
    #[serde(default)]
    pub stock: Option<StockChange>,
}

/// Exactly one of `on_hand` (absolute; `null` stops tracking stock; optionally counted at `as_of`) and `delta`
/// (with its `reason`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockChange {
    #[serde(default, deserialize_with = "crate::protocol::double_option")]
    pub on_hand: Option<Option<u32>>,
    #[serde(default)]
    pub as_of: Option<DateTime<Utc>>,
    #[serde(default)]
    pub delta: Option<i32>,
    #[serde(default)]
    pub reason: Option<DeltaReason>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaReason {
    #[default]
    Manual,
    Return,
}

impl DeltaReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Return => "return",
        }
    }
}

/// A variant after a change.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct VariantState {
    pub variant_id: String,
    pub product_id: String,
    pub price_amount: Option<i64>,
    pub currency: Option<String>,
    pub available: bool,
    /// On hand; `None`: not tracked.
    pub stock_quantity: Option<i32>,
    pub stock_reserved: i32,
}

fn invalid(param: String, message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        param,
        message: message.into(),
    }
}

/// Applies `change` to `variant_id` in the caller's transaction; `at` is the JSONPath of the change in the body.
pub async fn apply(
    conn: &mut PgConnection,
    variant_id: &str,
    change: &VariantChange,
    at: &str,
) -> Result<VariantState, CatalogError> {
    let product_id: String = sqlx::query_scalar("select product_id from variant where variant_id = $1 for update")
        .bind(variant_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| CatalogError::UnknownVariant(variant_id.to_owned()))?;
    if change.price.is_some() || change.available.is_some() {
        change_feed(conn, &product_id, variant_id, change, at).await?;
    }
    if let Some(stock) = &change.stock {
        change_stock(conn, variant_id, stock, at).await?;
    }
    Ok(sqlx::query_as(
        "select variant_id, product_id, price_amount, currency, available, stock_quantity, stock_reserved
         from variant where variant_id = $1",
    )
    .bind(variant_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// Price and availability live in the feed Product (what export returns): the stored Product is changed and
/// upserted again, which rewrites the variant's row and keeps its merchant-only attributes.
async fn change_feed(
    conn: &mut PgConnection,
    product_id: &str,
    variant_id: &str,
    change: &VariantChange,
    at: &str,
) -> Result<(), CatalogError> {
    let stored: serde_json::Value = sqlx::query_scalar("select feed from product where product_id = $1 for update")
        .bind(product_id)
        .fetch_one(&mut *conn)
        .await?;
    let mut product: feed::Product = serde_json::from_value(stored).map_err(|e| CatalogError::Stored {
        product_id: product_id.to_owned(),
        message: e.to_string(),
    })?;
    let variant = product
        .variants
        .iter_mut()
        .find(|v| v.id == variant_id)
        .ok_or_else(|| CatalogError::UnknownVariant(variant_id.to_owned()))?;
    if let Some(price) = &change.price {
        feed::check_currency(&price.currency, &format!("{at}.price.currency"))
            .map_err(|(param, message)| invalid(param, message))?;
        variant.price = Some(price.clone());
    }
    if let Some(available) = change.available {
        let mut availability = variant.availability.clone().unwrap_or(feed::Availability {
            available: None,
            status: None,
        });
        // A status that would contradict the new flag goes; a consistent one stays.
        let contradicts = matches!(
            (available, availability.status.as_deref()),
            (true, Some("out_of_stock" | "discontinued")) | (false, Some("in_stock" | "limited_stock"))
        );
        if contradicts {
            availability.status = None;
        }
        availability.available = Some(available);
        variant.availability = Some(availability);
    }
    super::upsert_products_in(conn, std::slice::from_ref(&product)).await?;
    Ok(())
}

async fn change_stock(
    conn: &mut PgConnection,
    variant_id: &str,
    stock: &StockChange,
    at: &str,
) -> Result<(), CatalogError> {
    match (stock.on_hand, stock.delta) {
        (Some(on_hand), None) => {
            if stock.reason.is_some() {
                return Err(invalid(format!("{at}.stock.reason"), "a reason goes with a delta"));
            }
            if stock.as_of.is_some_and(|as_of| as_of > Utc::now()) {
                return Err(invalid(
                    format!("{at}.stock.as_of"),
                    "a count cannot be taken in the future",
                ));
            }
            // The ledger's sales, cancels and returns after `as_of` are applied on top of the count.
            sqlx::query(
                "update variant set stock_quantity = case when $2::int is null then null else $2 + coalesce(
                     (select sum(on_hand_delta) from inventory_movement
                      where variant_id = $1 and reason in ('sale', 'cancel', 'return') and occurred_at > $3), 0)::int
                     end, updated_at = now()
                 from (select set_config('acp.stock_reason', 'sync', true)) as r
                 where variant_id = $1",
            )
            .bind(variant_id)
            .bind(on_hand.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
            .bind(stock.as_of.unwrap_or_else(Utc::now))
            .execute(conn)
            .await?;
        }
        (None, Some(delta)) => {
            if stock.as_of.is_some() {
                return Err(invalid(format!("{at}.stock.as_of"), "as_of goes with an on_hand count"));
            }
            let reason = stock.reason.unwrap_or_default();
            let changed = sqlx::query(
                "update variant set stock_quantity = stock_quantity + $2, updated_at = now()
                 from (select set_config('acp.stock_reason', $3, true)) as r
                 where variant_id = $1 and stock_quantity is not null",
            )
            .bind(variant_id)
            .bind(delta)
            .bind(reason.as_str())
            .execute(conn)
            .await?;
            if changed.rows_affected() == 0 {
                return Err(invalid(
                    format!("{at}.stock.delta"),
                    "stock is not tracked for this variant; set on_hand first",
                ));
            }
        }
        _ => {
            return Err(invalid(format!("{at}.stock"), "give exactly one of on_hand and delta"));
        }
    }
    Ok(())
}
