//! Stock that cannot lie: units on hand (`variant.stock_quantity`, what the merchant's sync sets; `null` = not
//! tracked) and units reserved by sessions being paid for (`variant.stock_reserved`) are kept apart.
//!
//! - reserve: `reserved += q` only while `on_hand − reserved ≥ q` (the last unit cannot be promised twice);
//! - release (no charge): `reserved −= q` — it never creates units, whatever a sync did meanwhile;
//! - sell (order created): `on_hand −= q`, `reserved −= q`;
//! - restock (order canceled before shipping): `on_hand += q`.
//!
//! Every statement locks the rows it touches in variant-id order (the order `variants_for_update` uses), so two
//! transactions working on overlapping variants wait for each other instead of deadlocking.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use super::{attempt::Reservation, model::RequestedItem};

/// Adds up the quantities of repeated item ids, keeping the first occurrence's position: limits (per-order
/// maximum, stock) then apply to the real total of each item.
pub fn merge_duplicates(items: Vec<RequestedItem>) -> Vec<RequestedItem> {
    let mut merged: Vec<RequestedItem> = Vec::with_capacity(items.len());
    for item in items {
        match merged.iter_mut().find(|m| m.item_id == item.item_id) {
            Some(existing) => existing.quantity = existing.quantity.saturating_add(item.quantity),
            None => merged.push(item),
        }
    }
    merged
}

/// The units `items` need, per variant, in variant-id order.
pub fn needed(items: &[RequestedItem]) -> Reservation {
    let mut by_variant: BTreeMap<&str, u32> = BTreeMap::new();
    for item in items {
        let units = by_variant.entry(item.item_id.as_str()).or_default();
        *units = units.saturating_add(item.quantity);
    }
    by_variant.into_iter().map(|(id, q)| (id.to_owned(), q)).collect()
}

/// Reserves `units` (already locked by the caller, in id order). `Ok(Err(variant))` names the first variant that
/// lacks stock; nothing is reserved then (the caller's transaction is rolled back).
pub async fn reserve(conn: &mut PgConnection, units: &Reservation) -> Result<Result<(), String>, sqlx::Error> {
    for (variant_id, quantity) in units {
        let reserved = sqlx::query(
            "update variant set stock_reserved = stock_reserved + $2, updated_at = now()
             where variant_id = $1 and (stock_quantity is null or stock_quantity - stock_reserved >= $2)",
        )
        .bind(variant_id)
        .bind(*quantity as i32)
        .execute(&mut *conn)
        .await?;
        if reserved.rows_affected() != 1 {
            return Ok(Err(variant_id.clone()));
        }
    }
    Ok(Ok(()))
}

/// Locks the rows of `units` in variant-id order, then applies `set` to all of them in one statement.
async fn apply(conn: &mut PgConnection, units: &Reservation, set: &'static str) -> Result<(), sqlx::Error> {
    if units.is_empty() {
        return Ok(());
    }
    let mut sorted = units.clone();
    sorted.sort();
    let ids: Vec<String> = sorted.iter().map(|(id, _)| id.clone()).collect();
    let quantities: Vec<i32> = sorted.iter().map(|(_, q)| *q as i32).collect();
    sqlx::query("select 1 from variant where variant_id = any($1) order by variant_id for update")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "update variant v set {set}, updated_at = now()
         from unnest($1::text[], $2::int[]) as x(id, q) where v.variant_id = x.id"
    )))
    .bind(&ids)
    .bind(&quantities)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives reserved units back (the attempt did not charge).
pub async fn release(conn: &mut PgConnection, units: &Reservation) -> Result<(), sqlx::Error> {
    apply(conn, units, "stock_reserved = v.stock_reserved - x.q").await
}

/// Turns reserved units into sold ones (the attempt charged).
pub async fn sell(conn: &mut PgConnection, units: &Reservation) -> Result<(), sqlx::Error> {
    apply(
        conn,
        units,
        "stock_reserved = v.stock_reserved - x.q, stock_quantity = v.stock_quantity - x.q",
    )
    .await
}

/// Puts units back on hand (an order canceled before they shipped).
pub async fn restock(conn: &mut PgConnection, units: &Reservation) -> Result<(), sqlx::Error> {
    apply(conn, units, "stock_quantity = v.stock_quantity + x.q").await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, quantity: u32) -> RequestedItem {
        RequestedItem {
            item_id: id.into(),
            quantity,
        }
    }

    #[test]
    fn duplicates_merge_in_first_position() {
        let merged = merge_duplicates(vec![item("b", 1), item("a", 2), item("b", 3)]);
        assert_eq!(merged, vec![item("b", 4), item("a", 2)]);
    }

    #[test]
    fn needed_units_are_per_variant_in_id_order() {
        assert_eq!(
            needed(&[item("b", 1), item("a", 2), item("b", 3)]),
            vec![("a".to_owned(), 2), ("b".to_owned(), 4)]
        );
    }
}
