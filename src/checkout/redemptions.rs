//! Promotion usage limits: redemptions (`promotion_redemption`, one row per promotion and session) and the
//! per-promotion counters that mirror them (`promotion_usage.used`, kept in the statements that insert or delete
//! redemptions; see the migration `promotion_usage`).
//!
//! Only the limited promotions a cart can use are read or locked: those with a usage limit that apply
//! automatically or whose code the session carries, within their validity window ([`candidates`]). A complete
//! locks their counter rows in one statement, in id order (no deadlock between completes), and holds them until
//! it commits, so concurrent completes never both take the last use; completes whose carts share no limited
//! promotion never wait for each other. Every step is one statement whatever the number of discounts.

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use sqlx::PgConnection;

use super::{model::Session, service::buyer_email};
use crate::{
    catalog::RulesVersion,
    pricing::{Rules, store::RulesCache},
};

/// Redemptions so far per promotion: (all buyers, this session's buyer), this session's own excluded.
pub type Counts = HashMap<String, (u32, u32)>;

/// The limited promotions of `rules` this session can use now, sorted (the lock order).
fn candidates(rules: &Rules, session: &Session) -> Vec<String> {
    let now = Utc::now();
    let codes: Vec<String> = session.discount_codes.iter().map(|c| c.trim().to_lowercase()).collect();
    let mut ids: Vec<String> = rules
        .promotions
        .iter()
        .filter(|p| p.max_redemptions.is_some() || p.max_per_buyer.is_some())
        .filter(|p| p.code.as_ref().is_none_or(|c| codes.contains(&c.to_lowercase())))
        .filter(|p| p.starts_at.is_none_or(|s| s <= now) && p.ends_at.is_none_or(|e| now < e))
        .map(|p| p.id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Whether a candidate limits uses per buyer and the session names one (the per-buyer count is needed).
fn needs_buyer_counts(rules: &Rules, ids: &[String], session: &Session) -> bool {
    buyer_email(session).is_some()
        && rules
            .promotions
            .iter()
            .any(|p| p.max_per_buyer.is_some() && ids.contains(&p.id))
}

/// Redemptions so far of the promotions this session can use: read without locking (create, update: the
/// complete decides again under locks), or with `lock` their counters locked until the transaction ends (complete
/// uses [`lock_counts`], which also confirms the rules' version in the same statement).
pub(super) async fn redemption_counts(
    conn: &mut PgConnection,
    rules: &Rules,
    session: &Session,
    lock: bool,
) -> Result<Counts, sqlx::Error> {
    let ids = candidates(rules, session);
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    if lock {
        let mut counts = lock_rows(conn, &ids, session).await?.1;
        if needs_buyer_counts(rules, &ids, session) {
            add_buyer_counts(conn, &ids, session, &mut counts).await?;
        }
        return Ok(counts);
    }
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select u.promotion_id,
                u.used - (select count(*) from promotion_redemption r
                          where r.promotion_id = u.promotion_id and r.checkout_session_id = $3),
                (select count(*) from promotion_redemption r
                 where r.promotion_id = u.promotion_id and lower(r.buyer_email) = lower($2)
                   and r.checkout_session_id <> $3)
         from promotion_usage u where u.promotion_id = any($1)",
    )
    .bind(&ids)
    .bind(buyer_email(session))
    .bind(&session.id)
    .fetch_all(&mut *conn)
    .await?;
    if rows.len() < ids.len() {
        // A limited promotion without a counter yet (the configuration's fallback rules): create it, read again.
        ensure_counters(conn, &ids).await?;
        return Box::pin(redemption_counts(conn, rules, session, false)).await;
    }
    Ok(rows
        .into_iter()
        .map(|(id, all, mine)| (id, (count(all), count(mine))))
        .collect())
}

/// For complete: the rules stored at the version this transaction reads, and the redemptions of the promotions
/// this session can use under them, their counter rows locked until the transaction ends. The version is read in
/// the statement that locks (one round trip); the cached rules are used unless the version moved.
///
/// `read`: the version an earlier statement of this transaction already read (the variants' lock), used when the
/// cart has no counter to lock, instead of reading it again.
pub(super) async fn lock_counts(
    conn: &mut PgConnection,
    cache: &RulesCache,
    session: &Session,
    read: Option<RulesVersion>,
) -> Result<(Arc<Rules>, Counts), sqlx::Error> {
    let cached = cache.current(conn).await?;
    let ids = candidates(&cached, session);
    let (version, mut counts) = match read {
        Some(RulesVersion(version)) if ids.is_empty() => (version, HashMap::new()),
        _ => lock_rows(conn, &ids, session).await?,
    };
    let rules = cache.confirm(conn, version).await?;
    if !Arc::ptr_eq(&rules, &cached) {
        // The rules changed under us: lock and count what the stored ones make usable (already held rows too).
        let ids = candidates(&rules, session);
        counts = lock_rows(conn, &ids, session).await?.1;
        if needs_buyer_counts(&rules, &ids, session) {
            add_buyer_counts(conn, &ids, session, &mut counts).await?;
        }
        return Ok((rules, counts));
    }
    if needs_buyer_counts(&rules, &ids, session) {
        add_buyer_counts(conn, &ids, session, &mut counts).await?;
    }
    Ok((rules, counts))
}

/// Locks the counter rows of `ids` (sorted) and reads them with the stored rules' version, in one statement;
/// per-buyer counts are left at 0 (see [`add_buyer_counts`]).
async fn lock_rows(
    conn: &mut PgConnection,
    ids: &[String],
    session: &Session,
) -> Result<(Option<i64>, Counts), sqlx::Error> {
    if ids.is_empty() {
        let version: Option<i64> = sqlx::query_scalar("select version from pricing_rules where singleton")
            .fetch_optional(&mut *conn)
            .await?;
        return Ok((version, HashMap::new()));
    }
    let rows: Vec<(Option<i64>, String, i64)> = sqlx::query_as(
        "select (select version from pricing_rules where singleton), promotion_id,
                used - (select count(*) from promotion_redemption r
                        where r.promotion_id = promotion_usage.promotion_id and r.checkout_session_id = $2)
         from promotion_usage where promotion_id = any($1) order by promotion_id for update",
    )
    .bind(ids)
    .bind(&session.id)
    .fetch_all(&mut *conn)
    .await?;
    if rows.len() < ids.len() {
        ensure_counters(conn, ids).await?;
        return Box::pin(lock_rows(conn, ids, session)).await;
    }
    let version = rows.first().and_then(|(v, _, _)| *v);
    let counts = rows.into_iter().map(|(_, id, all)| (id, (count(all), 0))).collect();
    Ok((version, counts))
}

/// The session's buyer's redemptions of `ids`, read after the counters are locked (a fresh snapshot: it sees
/// every redemption committed by the completes that held them before us).
async fn add_buyer_counts(
    conn: &mut PgConnection,
    ids: &[String],
    session: &Session,
    counts: &mut Counts,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select promotion_id, count(*) from promotion_redemption
         where promotion_id = any($1) and lower(buyer_email) = lower($2) and checkout_session_id <> $3
         group by promotion_id",
    )
    .bind(ids)
    .bind(buyer_email(session))
    .bind(&session.id)
    .fetch_all(&mut *conn)
    .await?;
    for (id, mine) in rows {
        counts.entry(id).or_default().1 = count(mine);
    }
    Ok(())
}

/// Creates the missing counters of `ids` from the redemptions already recorded.
async fn ensure_counters(conn: &mut PgConnection, ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into promotion_usage (promotion_id, used)
         select id, (select count(*) from promotion_redemption r where r.promotion_id = id)
         from unnest($1::text[]) as id order by id
         on conflict (promotion_id) do nothing",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts this session's promotions as redeemed, counters included, in one statement (undone by
/// [`release_redemptions`] if the payment fails).
pub(super) async fn reserve_redemptions(conn: &mut PgConnection, session: &Session) -> Result<(), sqlx::Error> {
    let mut ids: Vec<&str> = session
        .computed
        .applied_discounts
        .iter()
        .map(|a| a.promotion_id.as_str())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    // The counters are locked in id order (an init plan, run before any update) like every other writer does.
    sqlx::query(
        "with added as (
             insert into promotion_redemption (promotion_id, checkout_session_id, buyer_email)
             select id, $2, $3 from unnest($1::text[]) as id
             on conflict do nothing returning promotion_id)
         update promotion_usage set used = used + 1
         where promotion_id = any(array(select u.promotion_id from promotion_usage u
                                        where u.promotion_id in (select promotion_id from added)
                                        order by u.promotion_id for update))",
    )
    .bind(&ids)
    .bind(&session.id)
    .bind(buyer_email(session))
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives this session's redemptions back, counters included, in one statement.
pub(super) async fn release_redemptions(conn: &mut PgConnection, session_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with gone as (delete from promotion_redemption where checkout_session_id = $1 returning promotion_id)
         update promotion_usage set used = used - 1
         where promotion_id = any(array(select u.promotion_id from promotion_usage u
                                        where u.promotion_id in (select promotion_id from gone)
                                        order by u.promotion_id for update))",
    )
    .bind(session_id)
    .execute(conn)
    .await?;
    Ok(())
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}
