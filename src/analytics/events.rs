//! Funnel events, each written by the transaction that makes the change it describes (one insert, no extra
//! read: the agent's channel is looked up inside the insert). Once-per-session kinds are guarded by a unique
//! index, so a second path to the same state writes nothing.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

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
        let buyer_hash = buyer_email(session).map(|e| self.buyer_hash(e));
        sqlx::query(
            "insert into funnel_event (occurred_at, checkout_session_id, kind, agent_id, channel_id, source,
                                       buyer_hash, currency, amount, reason, attrs)
             values ($1, $2, $3, $4, coalesce((select channel_id from agent_channel where agent_id = $4), $4), $5,
                     $6, $7, $8, $9, coalesce($10, '{}'))
             on conflict do nothing",
        )
        .bind(at)
        .bind(&session.id)
        .bind(kind.as_str())
        .bind(&session.agent_id)
        .bind(super::SOURCE)
        .bind(buyer_hash)
        .bind(&session.currency)
        .bind(detail.amount)
        .bind(detail.reason)
        .bind(detail.attrs.map(sqlx::types::Json))
        .execute(conn)
        .await?;
        Ok(())
    }
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
