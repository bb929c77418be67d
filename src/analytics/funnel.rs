//! The cohort funnel: the sessions created in `[from, to)` (optionally one agent, channel or currency), what
//! became of them, and what the channels cost per completed order. [`funnel`] reads the cohort's events in one
//! query; [`compute`] is the pure arithmetic (README "Analytics" has every formula).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use sqlx::PgPool;

use super::{AnalyticsError, costs::Cost};

/// Rates carry four decimals, rounded half to even.
pub const RATE_SCALE: u32 = 4;

#[derive(Debug, Clone, Default)]
pub struct FunnelQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub agent: Option<String>,
    pub channel: Option<String>,
    /// Lowercase ISO 4217.
    pub currency: Option<String>,
}

/// One event of a cohort session, as the funnel needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CohortEvent {
    pub checkout_session_id: String,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub channel_id: String,
    pub buyer_hash: Option<String>,
    pub currency: String,
    pub amount: Option<i64>,
    pub reason: Option<String>,
    /// On `completed`: the buyer completed an order before this session was created.
    pub returning: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub sessions: u64,
    pub ready_for_payment: u64,
    pub ready_rate: Option<String>,
    pub completed: u64,
    pub conversion_rate: Option<String>,
    pub canceled: u64,
    pub expired: u64,
    pub abandonment_rate: Option<String>,
    pub still_open: u64,
    pub payment_attempts: u64,
    pub declined_attempts: u64,
    pub authentication_required: u64,
    pub decline_rate: Option<String>,
    pub average_order_value: Vec<OrderValue>,
    pub buyers: Buyers,
    pub top_cancel_reasons: Vec<ReasonCount>,
    pub median_seconds_to_complete: Option<String>,
    pub cost_per_acquisition: Vec<Acquisition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderValue {
    pub currency: String,
    pub orders: u64,
    pub revenue: i64,
    /// Minor units, rounded half away from zero.
    pub average: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Buyers {
    pub new: u64,
    pub returning: u64,
    pub unknown: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Acquisition {
    pub currency: String,
    /// The channel costs attributed to the period (pro-rated), minor units.
    pub cost: i64,
    pub completed: u64,
    /// `cost ÷ completed`, minor units rounded half away from zero; null without completed orders.
    pub cost_per_order: Option<i64>,
}

/// The funnel of `query`'s cohort, CPA included.
pub async fn funnel(pool: &PgPool, query: &FunnelQuery) -> Result<Funnel, AnalyticsError> {
    if query.to <= query.from {
        return Err(AnalyticsError::invalid("to", "`to` must be after `from`"));
    }
    let events = cohort_events(pool, query).await?;
    let channels = cost_channels(query, &events);
    let costs = super::costs::overlapping(pool, query.from, query.to, channels.as_deref()).await?;
    Ok(compute(query, &events, &costs))
}

/// The channels whose costs count: the requested one; with an agent filter, those of the cohort; else all.
fn cost_channels(query: &FunnelQuery, events: &[CohortEvent]) -> Option<Vec<String>> {
    if let Some(channel) = &query.channel {
        return Some(vec![channel.clone()]);
    }
    query.agent.as_ref()?;
    let mut channels: Vec<String> = events.iter().map(|e| e.channel_id.clone()).collect();
    channels.sort();
    channels.dedup();
    Some(channels)
}

async fn cohort_events(pool: &PgPool, q: &FunnelQuery) -> Result<Vec<CohortEvent>, sqlx::Error> {
    sqlx::query_as(
        "with cohort as (
             select checkout_session_id, occurred_at as created_at from funnel_event
             where kind = 'session_created' and occurred_at >= $1 and occurred_at < $2
               and ($3::text is null or agent_id = $3) and ($4::text is null or channel_id = $4)
               and ($5::text is null or currency = $5))
         select e.checkout_session_id, e.kind, e.occurred_at, e.channel_id, e.buyer_hash, e.currency, e.amount,
                e.reason,
                (e.kind = 'completed' and e.buyer_hash is not null and exists (
                    select 1 from funnel_event p
                    where p.kind = 'completed' and p.buyer_hash = e.buyer_hash and p.occurred_at < c.created_at
                )) as returning
         from funnel_event e join cohort c using (checkout_session_id)
         order by e.funnel_event_id",
    )
    .bind(q.from)
    .bind(q.to)
    .bind(&q.agent)
    .bind(&q.channel)
    .bind(&q.currency)
    .fetch_all(pool)
    .await
}

/// The pure funnel arithmetic over a cohort's events and the costs overlapping the period.
pub fn compute(query: &FunnelQuery, events: &[CohortEvent], costs: &[Cost]) -> Funnel {
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count() as u64;
    let sessions = count("session_created");
    let ready = count("ready_for_payment");
    let completed = count("completed");
    let canceled = count("canceled");
    let expired = count("expired");
    let declined = count("payment_declined");
    let authentication = count("authentication_required");
    let attempts = declined + authentication + completed;
    Funnel {
        from: query.from,
        to: query.to,
        sessions,
        ready_for_payment: ready,
        ready_rate: rate(ready, sessions),
        completed,
        conversion_rate: rate(completed, sessions),
        canceled,
        expired,
        abandonment_rate: rate(canceled + expired, sessions),
        still_open: sessions.saturating_sub(completed + canceled + expired),
        payment_attempts: attempts,
        declined_attempts: declined,
        authentication_required: authentication,
        decline_rate: rate(declined, attempts),
        average_order_value: order_values(events),
        buyers: buyers(events),
        top_cancel_reasons: cancel_reasons(events),
        median_seconds_to_complete: median_seconds_to_complete(events),
        cost_per_acquisition: acquisitions(query, costs, completed),
    }
}

/// `part ÷ whole` with [`RATE_SCALE`] decimals (half to even); null when `whole` is 0.
pub fn rate(part: u64, whole: u64) -> Option<String> {
    if whole == 0 {
        return None;
    }
    let value = (Decimal::from(part) / Decimal::from(whole))
        .round_dp_with_strategy(RATE_SCALE, RoundingStrategy::MidpointNearestEven);
    Some(format!("{value:.4}"))
}

/// `numerator ÷ denominator` in whole minor units, half away from zero.
fn per(numerator: Decimal, denominator: u64) -> Option<i64> {
    if denominator == 0 {
        return None;
    }
    let value =
        (numerator / Decimal::from(denominator)).round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(value).ok()
}

fn order_values(events: &[CohortEvent]) -> Vec<OrderValue> {
    let mut by_currency: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "completed") {
        let entry = by_currency.entry(&e.currency).or_default();
        entry.0 += 1;
        entry.1 += e.amount.unwrap_or(0);
    }
    by_currency
        .into_iter()
        .map(|(currency, (orders, revenue))| OrderValue {
            currency: currency.to_owned(),
            orders,
            revenue,
            average: per(Decimal::from(revenue), orders).unwrap_or(0),
        })
        .collect()
}

fn buyers(events: &[CohortEvent]) -> Buyers {
    let mut buyers = Buyers::default();
    for e in events.iter().filter(|e| e.kind == "completed") {
        match (&e.buyer_hash, e.returning) {
            (None, _) => buyers.unknown += 1,
            (Some(_), true) => buyers.returning += 1,
            (Some(_), false) => buyers.new += 1,
        }
    }
    buyers
}

/// Cancel reasons by count (most first, then by name); a cancel without a reason counts as `unspecified`.
fn cancel_reasons(events: &[CohortEvent]) -> Vec<ReasonCount> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "canceled") {
        *counts.entry(e.reason.as_deref().unwrap_or("unspecified")).or_default() += 1;
    }
    let mut reasons: Vec<ReasonCount> = counts
        .into_iter()
        .map(|(reason, count)| ReasonCount {
            reason: reason.to_owned(),
            count,
        })
        .collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    reasons.truncate(10);
    reasons
}

/// The median of (completed − created) over completed sessions, in seconds with three decimals.
fn median_seconds_to_complete(events: &[CohortEvent]) -> Option<String> {
    let created: HashMap<&str, DateTime<Utc>> = events
        .iter()
        .filter(|e| e.kind == "session_created")
        .map(|e| (e.checkout_session_id.as_str(), e.occurred_at))
        .collect();
    let mut millis: Vec<i64> = events
        .iter()
        .filter(|e| e.kind == "completed")
        .filter_map(|e| Some((e.occurred_at - *created.get(e.checkout_session_id.as_str())?).num_milliseconds()))
        .collect();
    if millis.is_empty() {
        return None;
    }
    millis.sort_unstable();
    let middle = millis.len() / 2;
    let median_ms = if millis.len() % 2 == 1 {
        Decimal::from(millis[middle])
    } else {
        (Decimal::from(millis[middle - 1]) + Decimal::from(millis[middle])) / Decimal::from(2)
    };
    let seconds = (median_ms / Decimal::from(1000)).round_dp_with_strategy(3, RoundingStrategy::MidpointNearestEven);
    Some(format!("{seconds:.3}"))
}

fn acquisitions(query: &FunnelQuery, costs: &[Cost], completed: u64) -> Vec<Acquisition> {
    let mut by_currency: BTreeMap<&str, Decimal> = BTreeMap::new();
    for cost in costs {
        *by_currency.entry(&cost.currency).or_default() += cost.attributed(query.from, query.to);
    }
    by_currency
        .into_iter()
        .map(|(currency, cost)| {
            let cost = cost.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
            Acquisition {
                currency: currency.to_owned(),
                cost: i64::try_from(cost).unwrap_or(i64::MAX),
                completed,
                cost_per_order: per(cost, completed),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_four_decimals_rounded_half_to_even() {
        assert_eq!(rate(1, 3).as_deref(), Some("0.3333"));
        assert_eq!(rate(2, 3).as_deref(), Some("0.6667"));
        assert_eq!(rate(1, 1).as_deref(), Some("1.0000"));
        assert_eq!(rate(0, 5).as_deref(), Some("0.0000"));
        assert_eq!(rate(1, 0), None);
        // 1/32 = 0.03125: the midpoint rounds to the even digit.
        assert_eq!(rate(1, 32).as_deref(), Some("0.0312"));
    }

    #[test]
    fn per_order_amounts_round_half_away_from_zero() {
        assert_eq!(per(Decimal::from(5), 2), Some(3));
        assert_eq!(per(Decimal::from(7), 3), Some(2));
        assert_eq!(per(Decimal::from(7), 0), None);
    }
}
