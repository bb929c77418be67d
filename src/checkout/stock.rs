//! Stock that cannot lie: units on hand (`variant.stock_quantity`, what the merchant's sync sets; `null` = not
//! tracked) and units reserved by sessions being paid for (`variant.stock_reserved`) are kept apart.
//!
//! - reserve: `reserved += q` only while `on_hand − reserved ≥ q` (the last unit cannot be promised twice);
//! - release (no charge): `reserved −= q` — it never creates units, whatever a sync did meanwhile;
//! - sell (order created): `on_hand −= q`, `reserved −= q`;
//! - restock (order canceled before shipping): `on_hand += q`.
//!
//! Every statement locks the rows it touches in variant-id order (the order `variants_for_update` uses), so two
//! transactions working on overlapping variants wait for each other instead of deadlocking. Each step is one
//! statement over `unnest($1::text[], $2::int[])`, whatever the number of items (issue 14).

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

/// Why stock moved, as the inventory ledger records it (migration `inventory_ledger`): each statement below sets
/// it for the ledger's trigger in the statement itself, so it costs no round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Reserve,
    Release,
    Sale,
    Cancel,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Release => "release",
            Self::Sale => "sale",
            Self::Cancel => "cancel",
        }
    }
}

/// The ids and quantities of `units` as two arrays sorted by variant id, for `unnest($1::text[], $2::int[])`.
fn columns(units: &Reservation) -> (Vec<String>, Vec<i32>) {
    let mut sorted = units.clone();
    sorted.sort();
    sorted
        .into_iter()
        .map(|(id, q)| (id, i32::try_from(q).unwrap_or(i32::MAX)))
        .unzip()
}

/// Reserves `units` (already locked by the caller, in id order) in one statement. `Ok(Err(variant))` names the
/// first variant (in id order) that lacks stock; the caller's transaction is rolled back then, so nothing stays
/// reserved.
pub async fn reserve(conn: &mut PgConnection, units: &Reservation) -> Result<Result<(), String>, sqlx::Error> {
    if units.is_empty() {
        return Ok(Ok(()));
    }
    let (ids, quantities) = columns(units);
    let reserved: Vec<String> = sqlx::query_scalar(
        "update variant v set stock_reserved = v.stock_reserved + x.q, updated_at = now()
         from unnest($1::text[], $2::int[]) as x(id, q), (select set_config('acp.stock_reason', $3, true)) as r
         where v.variant_id = x.id and (v.stock_quantity is null or v.stock_quantity - v.stock_reserved >= x.q)
         returning v.variant_id",
    )
    .bind(&ids)
    .bind(&quantities)
    .bind(Reason::Reserve.as_str())
    .fetch_all(conn)
    .await?;
    match ids.into_iter().find(|id| !reserved.contains(id)) {
        Some(short) => Ok(Err(short)),
        None => Ok(Ok(())),
    }
}

/// Applies `set` to the rows of `units` in one statement, locking them first in variant-id order (an init plan
/// that runs before any row is updated).
async fn apply(
    conn: &mut PgConnection,
    units: &Reservation,
    set: &'static str,
    reason: Reason,
) -> Result<(), sqlx::Error> {
    if units.is_empty() {
        return Ok(());
    }
    let (ids, quantities) = columns(units);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "update variant v set {set}, updated_at = now()
         from unnest($1::text[], $2::int[]) as x(id, q), (select set_config('acp.stock_reason', $3, true)) as r
         where v.variant_id = x.id
           and v.variant_id = any(array(select variant_id from variant where variant_id = any($1)
                                        order by variant_id for update))"
    )))
    .bind(&ids)
    .bind(&quantities)
    .bind(reason.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives reserved units back (the attempt did not charge).
pub async fn release(conn: &mut PgConnection, units: &Reservation) -> Result<(), sqlx::Error> {
    apply(conn, units, "stock_reserved = v.stock_reserved - x.q", Reason::Release).await
}

/// Turns reserved units into sold ones (the attempt charged).
pub async fn sell(conn: &mut PgConnection, units: &Reservation) -> Result<(), sqlx::Error> {
    apply(
        conn,
        units,
        "stock_reserved = v.stock_reserved - x.q, stock_quantity = v.stock_quantity - x.q",
        Reason::Sale,
    )
    .await
}

/// Puts units back on hand (an order canceled before they shipped).
pub async fn restock(conn: &mut PgConnection, units: &Reservation) -> Result<(), sqlx::Error> {
    apply(conn, units, "stock_quantity = v.stock_quantity + x.q", Reason::Cancel).await
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
