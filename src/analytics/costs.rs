//! Channel costs: what the merchant paid for a channel over a period. A cost counts toward a funnel period
//! pro-rated: `amount × overlap ÷ cost period` (time overlap of the cost's period with `[from, to)`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::AnalyticsError;

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Cost {
    #[sqlx(rename = "channel_cost_id")]
    pub id: i64,
    #[sqlx(rename = "channel_id")]
    pub channel: String,
    #[sqlx(rename = "period_start")]
    pub from: DateTime<Utc>,
    #[sqlx(rename = "period_end")]
    pub to: DateTime<Utc>,
    pub amount: i64,
    pub currency: String,
}

impl Cost {
    /// The part of this cost that falls in `[from, to)`, in (fractional) minor units.
    pub fn attributed(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Decimal {
        let start = self.from.max(from);
        let end = self.to.min(to);
        let whole = (self.to - self.from).num_milliseconds();
        let overlap = (end - start).num_milliseconds();
        if overlap <= 0 || whole <= 0 {
            return Decimal::ZERO;
        }
        Decimal::from(self.amount) * Decimal::from(overlap) / Decimal::from(whole)
    }
}

/// `POST /admin/analytics/costs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCost {
    pub channel: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub amount: i64,
    pub currency: String,
}

pub async fn record(pool: &PgPool, cost: &NewCost) -> Result<Cost, AnalyticsError> {
    if cost.channel.trim().is_empty() || cost.channel.len() > 64 {
        return Err(AnalyticsError::invalid(
            "$.channel",
            "channel must be 1 to 64 characters",
        ));
    }
    if cost.to <= cost.from {
        return Err(AnalyticsError::invalid("$.to", "`to` must be after `from`"));
    }
    if cost.amount < 0 {
        return Err(AnalyticsError::invalid("$.amount", "amount must be ≥ 0 (minor units)"));
    }
    if cost.currency.len() != 3 || !cost.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(AnalyticsError::invalid(
            "$.currency",
            "currency must be an ISO 4217 code",
        ));
    }
    Ok(sqlx::query_as(
        "insert into channel_cost (channel_id, period_start, period_end, amount, currency)
         values ($1, $2, $3, $4, $5)
         returning channel_cost_id, channel_id, period_start, period_end, amount, currency",
    )
    .bind(&cost.channel)
    .bind(cost.from)
    .bind(cost.to)
    .bind(cost.amount)
    .bind(cost.currency.to_ascii_lowercase())
    .fetch_one(pool)
    .await?)
}

/// The costs overlapping `[from, to)`, of `channels` when given (all channels otherwise).
pub async fn overlapping(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    channels: Option<&[String]>,
) -> Result<Vec<Cost>, sqlx::Error> {
    sqlx::query_as(
        "select channel_cost_id, channel_id, period_start, period_end, amount, currency from channel_cost
         where period_start < $2 and period_end > $1 and ($3::text[] is null or channel_id = any($3))
         order by channel_cost_id",
    )
    .bind(from)
    .bind(to)
    .bind(channels)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::hours(h)
    }

    #[test]
    fn a_cost_counts_by_the_share_of_its_period_inside_the_window() {
        let cost = Cost {
            id: 1,
            channel: "c".into(),
            from: at(0),
            to: at(10),
            amount: 1000,
            currency: "usd".into(),
        };
        assert_eq!(cost.attributed(at(0), at(10)), Decimal::from(1000));
        assert_eq!(cost.attributed(at(5), at(20)), Decimal::from(500));
        assert_eq!(cost.attributed(at(-5), at(1)), Decimal::from(100));
        assert_eq!(cost.attributed(at(10), at(20)), Decimal::ZERO);
    }
}
