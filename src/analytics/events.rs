//! Funnel events, each written by the transaction that makes the change it describes, with no extra read: the
//! agent's channel is looked up inside the insert. Where the change is a session's own insert or save, the events
//! ride in that same statement ([`insert_funnel_events`], [`Recorder::rows`]): no round trip of their own.
//! Once-per-session kinds are guarded by a unique index, so a second path to the same state writes nothing.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, types::Json};

/// The part of a statement that writes the funnel events bound as the JSON array `$p` (made by
/// [`Recorder::rows`]) for the session row that the statement's CTE `saved` returns (its `checkout_session_id`,
/// `agent_id` and `currency`). A macro, so each statement stays one literal that sqlx prepares once.
macro_rules! insert_funnel_events {
    ($p:literal) => {
        concat!(
            "insert into funnel_event (occurred_at, checkout_session_id, kind, agent_id, channel_id, source,
                                       buyer_hash, currency, amount, reason, attrs)
             select e.occurred_at, s.checkout_session_id, e.kind, s.agent_id,
                    coalesce((select channel_id from agent_channel where agent_id = s.agent_id), s.agent_id),
                    e.source, e.buyer_hash, s.currency, e.amount, e.reason, coalesce(e.attrs, '{}')
             from saved s
                  cross join jsonb_to_recordset(",
            $p,
            "::jsonb) as e(occurred_at timestamptz, kind text, source text, buyer_hash text, amount bigint,
                           reason text, attrs jsonb)
             on conflict do nothing"
        )
    };
}
pub(crate) use insert_funnel_events;

use crate::{checkout::model::Session, config::Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    SessionCreated,
    /// Every update (the support view's timeline; not a funnel step).
    SessionUpdated,
    ReadyForPayment,
    AuthenticationRequired,
    PaymentDeclined,
    Completed,
    Canceled,
    Expired,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionCreated => "session_created",
            Self::SessionUpdated => "session_updated",
            Self::ReadyForPayment => "ready_for_payment",
            Self::AuthenticationRequired => "authentication_required",
            Self::PaymentDeclined => "payment_declined",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
        }
    }
}

/// What an event says besides its kind.
#[derive(Debug, Default, Clone)]
pub struct Detail<'a> {
    /// Minor units (completed).
    pub amount: Option<i64>,
    /// Decline code or cancel reason.
    pub reason: Option<&'a str>,
    /// What else the support view shows (the status and messages after a create or an update).
    pub attrs: Option<serde_json::Value>,
}

impl Detail<'_> {
    /// The session's status and the messages the agent was shown (type, code, param, content).
    pub fn shown(session: &Session) -> Self {
        let messages: Vec<serde_json::Value> = session
            .computed
            .messages
            .iter()
            .map(|m| serde_json::json!({"type": m.kind, "code": m.code, "param": m.param, "content": m.content}))
            .collect();
        Self {
            attrs: Some(serde_json::json!({"status": session.status.as_str(), "messages": messages})),
            ..Self::default()
        }
    }
}

/// Writes funnel events; holds the salt of the buyer hash (`ACP_ANALYTICS_SALT`).
#[derive(Clone)]
pub struct Recorder {
    salt: Secret,
}

impl Recorder {
    pub fn new(salt: Secret) -> Self {
        Self { salt }
    }

    /// Salted SHA-256 (hex) of the lowercased, trimmed email: the same buyer hashes alike across sessions
    /// without the email being stored with the events.
    pub fn buyer_hash(&self, email: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.salt.expose().as_bytes());
        hasher.update([0u8]);
        hasher.update(email.trim().to_lowercase().as_bytes());
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Records `kind` for `session` at `at`, in the caller's transaction.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        session: &Session,
        kind: EventKind,
        at: DateTime<Utc>,
        detail: Detail<'_>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(concat!(
            "with saved (checkout_session_id, agent_id, currency) as (select $1::text, $2::text, $3::text) ",
            insert_funnel_events!("$4")
        ))
        .bind(&session.id)
        .bind(&session.agent_id)
        .bind(&session.currency)
        .bind(self.rows(session, vec![Event { kind, at, detail }]))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// `events` of `session` as the JSON array [`insert_funnel_events`] reads.
    pub fn rows<'a>(&self, session: &Session, events: Vec<Event<'a>>) -> Json<Vec<Row<'a>>> {
        let buyer_hash = buyer_email(session).map(|e| self.buyer_hash(e));
        Json(
            events
                .into_iter()
                .map(|e| Row {
                    // Microseconds, as PostgreSQL stores them (and as sqlx binds a timestamp).
                    occurred_at: e.at.to_rfc3339_opts(SecondsFormat::Micros, true),
                    kind: e.kind.as_str(),
                    source: super::SOURCE,
                    buyer_hash: buyer_hash.clone(),
                    amount: e.detail.amount,
                    reason: e.detail.reason,
                    attrs: e.detail.attrs,
                })
                .collect(),
        )
    }
}

/// One event to record.
pub struct Event<'a> {
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    pub detail: Detail<'a>,
}

impl<'a> Event<'a> {
    pub fn new(kind: EventKind, at: DateTime<Utc>, detail: Detail<'a>) -> Self {
        Self { kind, at, detail }
    }
}

/// One event as bound: the columns that are not the session's own.
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    occurred_at: String,
    kind: &'static str,
    source: &'static str,
    buyer_hash: Option<String>,
    amount: Option<i64>,
    reason: Option<&'a str>,
    attrs: Option<serde_json::Value>,
}

/// The email the buyer hash is made of; a blank one counts as unknown.
fn buyer_email(session: &Session) -> Option<&str> {
    crate::checkout::service::buyer_email(session).filter(|e| !e.trim().is_empty())
}

/// The cancel reasons an intent trace may carry (DIGEST §3.15); any other code counts as `other`.
const REASON_CODES: [&str; 10] = [
    "price_sensitivity",
    "shipping_cost",
    "shipping_speed",
    "product_fit",
    "trust_security",
    "returns_policy",
    "payment_options",
    "comparison",
    "timing_deferred",
    "other",
];

/// The `intent_trace.reason_code` of a cancel body, normalized (unknown codes are `other`, as the RFC says).
pub fn cancel_reason(body: Option<&serde_json::Value>) -> Option<String> {
    let code = body?.get("intent_trace")?.get("reason_code")?.as_str()?;
    Some(if REASON_CODES.contains(&code) { code } else { "other" }.to_owned())
}
