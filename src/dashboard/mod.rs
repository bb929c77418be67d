//! The merchant dashboard (issue 13): one server-rendered page with the funnel, conversion, AOV and CPA over
//! time, webhook health and the recent orders. Every figure comes from [`crate::analytics::funnel`], the function
//! behind `GET /admin/analytics/funnel`, so the page and the API always agree. [`page`] renders the HTML,
//! [`session`] signs and checks the login cookie.

pub mod page;
pub mod session;

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use crate::analytics::{self, AnalyticsError, Funnel, FunnelQuery};

/// At most this many points on the over-time chart.
pub const MAX_BUCKETS: i64 = 31;
/// How many recent orders are listed.
pub const RECENT_ORDERS: i64 = 20;

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The whole period's funnel.
    pub funnel: Funnel,
    /// One funnel per bucket of the period, oldest first.
    pub over_time: Vec<Funnel>,
    pub webhooks: WebhookHealth,
    pub recent_orders: Vec<RecentOrder>,
}

#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct WebhookHealth {
    /// Undelivered: pending, or claimed by a worker and being delivered.
    pub pending: i64,
    pub dead: i64,
    /// Seconds since the oldest undelivered event was written; none without undelivered events.
    pub oldest_pending_secs: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecentOrder {
    pub order_id: String,
    pub status: String,
    pub total_amount: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub agent_id: String,
    /// The agent's display name (free text set by the merchant; escaped like everything else).
    pub agent_name: Option<String>,
}

/// Loads the dashboard of `[from, to)`.
pub async fn load(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Dashboard, AnalyticsError> {
    let funnel = analytics::funnel(pool, &period(from, to)).await?;
    let mut over_time = Vec::new();
    for (start, end) in buckets(from, to) {
        over_time.push(analytics::funnel(pool, &period(start, end)).await?);
    }
    Ok(Dashboard {
        funnel,
        over_time,
        webhooks: webhook_health(pool).await?,
        recent_orders: recent_orders(pool).await?,
    })
}

fn period(from: DateTime<Utc>, to: DateTime<Utc>) -> FunnelQuery {
    FunnelQuery {
        from,
        to,
        ..FunnelQuery::default()
    }
}

/// The over-time buckets of `[from, to)`: the shortest of an hour, a day, a week or 30 days that keeps the count
/// at or below [`MAX_BUCKETS`] (a longer period gets equal buckets); the last one ends at `to`.
pub fn buckets(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let span = to - from;
    if span <= Duration::zero() {
        return Vec::new();
    }
    let step = [
        Duration::hours(1),
        Duration::days(1),
        Duration::days(7),
        Duration::days(30),
    ]
    .into_iter()
    .find(|step| span.num_seconds() <= step.num_seconds() * MAX_BUCKETS)
    .unwrap_or_else(|| Duration::seconds((span.num_seconds() + MAX_BUCKETS - 1) / MAX_BUCKETS));
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = (start + step).min(to);
        out.push((start, end));
        start = end;
    }
    out
}

/// Undelivered (pending or being delivered) and dead-lettered order webhooks and the age of the oldest undelivered
/// one, in one query on the outbox.
pub async fn webhook_health(pool: &PgPool) -> Result<WebhookHealth, sqlx::Error> {
    sqlx::query_as(
        "select count(*) filter (where status in ('pending', 'delivering')) as pending,
                count(*) filter (where status = 'dead') as dead,
                (extract(epoch from now() - min(created_at) filter (where status in ('pending', 'delivering'))))::bigint
                    as oldest_pending_secs
         from webhook_event",
    )
    .fetch_one(pool)
    .await
}

pub async fn recent_orders(pool: &PgPool) -> Result<Vec<RecentOrder>, sqlx::Error> {
    sqlx::query_as(
        "select o.order_id, o.status, o.total_amount, o.currency, o.created_at, o.agent_id, a.name as agent_name
         from merchant_order o left join agent a using (agent_id)
         order by o.created_at desc, o.order_id desc limit $1",
    )
    .bind(RECENT_ORDERS)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn thirty_days_are_thirty_daily_buckets() {
        let b = buckets(at("2026-01-01T00:00:00Z"), at("2026-01-31T00:00:00Z"));
        assert_eq!(b.len(), 30);
        assert_eq!(b[1].0, at("2026-01-02T00:00:00Z"));
        assert_eq!(b[29].1, at("2026-01-31T00:00:00Z"));
    }

    #[test]
    fn short_periods_are_hourly_and_long_ones_stay_within_the_cap() {
        let b = buckets(at("2026-01-01T00:00:00Z"), at("2026-01-01T02:30:00Z"));
        assert_eq!(b.len(), 3);
        assert_eq!(b[2], (at("2026-01-01T02:00:00Z"), at("2026-01-01T02:30:00Z")));
        let year = buckets(at("2026-01-01T00:00:00Z"), at("2028-01-01T00:00:00Z"));
        assert!(year.len() as i64 <= MAX_BUCKETS, "{}", year.len());
        assert_eq!(year.last().unwrap().1, at("2028-01-01T00:00:00Z"));
        assert!(buckets(at("2026-01-02T00:00:00Z"), at("2026-01-01T00:00:00Z")).is_empty());
    }
}
