//! The raw events for the merchant's warehouse, a page at a time in event-id order. The cursor is opaque to
//! clients (base64url of the last event id of the page). Only the buyer hash is exported, never an email.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::AnalyticsError;

pub const DEFAULT_LIMIT: i64 = 1000;
pub const MAX_LIMIT: i64 = 10_000;

/// The CSV columns, in order (the JSONL objects carry the same names).
pub const COLUMNS: [&str; 11] = [
    "id",
    "occurred_at",
    "checkout_session_id",
    "kind",
    "agent_id",
    "channel_id",
    "source",
    "buyer_hash",
    "currency",
    "amount",
    "reason",
];

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ExportedEvent {
    #[sqlx(rename = "funnel_event_id")]
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub checkout_session_id: String,
    pub kind: String,
    pub agent_id: String,
    pub channel_id: String,
    pub source: String,
    pub buyer_hash: Option<String>,
    pub currency: String,
    pub amount: Option<i64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Page {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

pub struct Events {
    pub events: Vec<ExportedEvent>,
    /// Present when more events follow this page.
    pub next_cursor: Option<String>,
}

pub fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("fe:{id}"))
}

fn decode_cursor(cursor: &str) -> Result<i64, AnalyticsError> {
    let bad = || AnalyticsError::invalid("cursor", "unknown cursor: pass next_cursor as it was given");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("fe:").and_then(|id| id.parse().ok()).ok_or_else(bad)
}

pub async fn page(pool: &PgPool, page: &Page) -> Result<Events, AnalyticsError> {
    let after = page.cursor.as_deref().map(decode_cursor).transpose()?.unwrap_or(0);
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AnalyticsError::invalid(
            "limit",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let mut events: Vec<ExportedEvent> = sqlx::query_as(
        "select funnel_event_id, occurred_at, checkout_session_id, kind, agent_id, channel_id, source, buyer_hash,
                currency, amount, reason
         from funnel_event
         where funnel_event_id > $1 and ($2::timestamptz is null or occurred_at >= $2)
           and ($3::timestamptz is null or occurred_at < $3)
         order by funnel_event_id limit $4",
    )
    .bind(after)
    .bind(page.from)
    .bind(page.to)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_cursor = if more {
        events.last().map(|e| encode_cursor(e.id))
    } else {
        None
    };
    Ok(Events { events, next_cursor })
}

pub fn jsonl(events: &[ExportedEvent]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::to_string(e).ok())
        .map(|line| line + "\n")
        .collect()
}

pub fn csv(events: &[ExportedEvent]) -> String {
    let mut out = COLUMNS.join(",") + "\n";
    for e in events {
        let fields = [
            e.id.to_string(),
            e.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            e.checkout_session_id.clone(),
            e.kind.clone(),
            e.agent_id.clone(),
            e.channel_id.clone(),
            e.source.clone(),
            e.buyer_hash.clone().unwrap_or_default(),
            e.currency.clone(),
            e.amount.map(|a| a.to_string()).unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)).ok(), Some(42));
        assert!(decode_cursor("not a cursor").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("xx:1")).is_err());
    }

    #[test]
    fn csv_fields_with_separators_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
