//! Merchant webhook endpoints (issue 15): the merchant's own systems (store, order management, warehouse, support
//! desk) registered through the admin API, each receiving the event types it subscribed to from the same outbox
//! as the agents' order webhooks (same retries, dead letters and replay), signed the Standard Webhooks way
//! ([`super::standard`]).
//!
//! Events are queued in the transaction of the change they describe, one row per subscribed endpoint. The
//! payload is this project's own documented shape, versioned by `version` (README, "Connecting your store").

use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    checkout::model::Session,
    orders::model::Order,
    secrets::{Keyring, store::MERCHANT_ENDPOINT_SECRET},
};

/// The event types a merchant endpoint can subscribe to.
pub const EVENT_TYPES: [&str; 4] = ["order.created", "order.updated", "order.refunded", "checkout.abandoned"];

/// The payload shape's version: raised when a field changes meaning or goes away (new fields do not raise it).
pub const PAYLOAD_VERSION: u32 = 1;

/// Where every order sold through this server comes from, in the merchant's reports.
const SOURCE: &str = "chat_to_checkout";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Endpoint {
    #[sqlx(rename = "endpoint_id")]
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, url, event_types, enabled, created_at, updated_at";

/// A new endpoint: its secret is sealed before it is stored.
pub async fn create(
    pool: &PgPool,
    keyring: &Keyring,
    url: &str,
    event_types: &[String],
    secret: &str,
) -> Result<Endpoint, sqlx::Error> {
    let id = format!("mwe_{}", Uuid::now_v7().simple());
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into merchant_endpoint (endpoint_id, url, secret, event_types) values ($1, $2, $3, $4)
         returning {ENDPOINT_COLUMNS}"
    )))
    .bind(&id)
    .bind(url)
    .bind(keyring.seal(MERCHANT_ENDPOINT_SECRET, secret))
    .bind(event_types)
    .fetch_one(pool)
    .await
}

pub async fn list(pool: &PgPool) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {ENDPOINT_COLUMNS} from merchant_endpoint order by created_at, endpoint_id"
    )))
    .fetch_all(pool)
    .await
}

/// Changes what is given; `None` when there is no such endpoint.
pub async fn update(
    pool: &PgPool,
    id: &str,
    url: Option<&str>,
    event_types: Option<&[String]>,
    enabled: Option<bool>,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update merchant_endpoint set url = coalesce($2, url), event_types = coalesce($3, event_types),
                enabled = coalesce($4, enabled), updated_at = now()
         where endpoint_id = $1 returning {ENDPOINT_COLUMNS}"
    )))
    .bind(id)
    .bind(url)
    .bind(event_types)
    .bind(enabled)
    .fetch_optional(pool)
    .await
}

/// Replaces an endpoint's secret; false when there is no such endpoint.
pub async fn rotate(pool: &PgPool, keyring: &Keyring, id: &str, secret: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update merchant_endpoint set secret = $2, updated_at = now() where endpoint_id = $1")
        .bind(id)
        .bind(keyring.seal(MERCHANT_ENDPOINT_SECRET, secret))
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The enabled endpoints subscribed to `event_type`.
async fn subscribers(conn: &mut PgConnection, event_type: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select endpoint_id from merchant_endpoint where enabled and $1 = any(event_types) order by endpoint_id",
    )
    .bind(event_type)
    .fetch_all(conn)
    .await
}

/// Queues `event_type` (`order.created`, `order.updated`, `order.refunded`) for `order` to every subscribed
/// endpoint, in the caller's transaction.
pub async fn enqueue_order(conn: &mut PgConnection, order: &Order, event_type: &str) -> Result<(), sqlx::Error> {
    let endpoints = subscribers(conn, event_type).await?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let session: Option<sqlx::types::Json<Session>> =
        sqlx::query_scalar("select state from checkout_session where checkout_session_id = $1")
            .bind(&order.checkout_session_id)
            .fetch_optional(&mut *conn)
            .await?;
    let channel = channel_of(conn, &order.agent_id).await?;
    let data = json!({
        "order": order_data(order, session.as_ref().map(|s| &s.0)),
        "agent_id": order.agent_id,
        "channel_id": channel,
        "source": SOURCE,
    });
    insert(conn, &endpoints, event_type, &order.id, &order.agent_id, data).await
}

/// Queues `checkout.abandoned` for a session that was canceled or expired, in the caller's transaction.
pub async fn enqueue_abandoned(
    conn: &mut PgConnection,
    session: &Session,
    cancel_reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    let endpoints = subscribers(conn, "checkout.abandoned").await?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let channel = channel_of(conn, &session.agent_id).await?;
    let lines: Vec<Value> = session
        .computed
        .lines
        .iter()
        .map(|l| {
            json!({"item_id": l.item_id, "product_id": l.product_id, "title": l.name,
                        "quantity": l.quantity, "unit_amount": l.unit_amount})
        })
        .collect();
    let data = json!({
        "checkout_session": {
            "id": session.id,
            "status": session.status.as_str(),
            "reason": session.status.as_str(),
            "cancel_reason": cancel_reason,
            "currency": session.currency,
            "lines": lines,
            "totals": crate::protocol::v2026_04_17::totals(&session.computed.totals),
            "buyer": buyer(session),
            "created_at": session.created_at,
            "updated_at": session.updated_at,
        },
        "agent_id": session.agent_id,
        "channel_id": channel,
        "source": SOURCE,
    });
    insert(
        conn,
        &endpoints,
        "checkout.abandoned",
        &session.id,
        &session.agent_id,
        data,
    )
    .await
}

async fn channel_of(conn: &mut PgConnection, agent_id: &str) -> Result<String, sqlx::Error> {
    let channel: Option<String> = sqlx::query_scalar("select channel_id from agent_channel where agent_id = $1")
        .bind(agent_id)
        .fetch_optional(conn)
        .await?;
    Ok(channel.unwrap_or_else(|| agent_id.to_owned()))
}

/// One event row per endpoint; `subject` is the order (or, for `checkout.abandoned`, the session) the stream of
/// each endpoint is kept in order for.
async fn insert(
    conn: &mut PgConnection,
    endpoints: &[String],
    event_type: &str,
    subject: &str,
    agent_id: &str,
    data: Value,
) -> Result<(), sqlx::Error> {
    let timestamp = Utc::now();
    for endpoint in endpoints {
        let payload = json!({"type": event_type, "timestamp": timestamp, "version": PAYLOAD_VERSION, "data": data});
        sqlx::query(
            "insert into webhook_event (event_id, order_id, stream, agent_id, endpoint_id, event_type, payload)
             values ($1, $2, $3 || '/' || $2, $4, $3, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(subject)
        .bind(endpoint)
        .bind(agent_id)
        .bind(event_type)
        .bind(crate::db::JsonText(payload))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn buyer(session: &Session) -> Value {
    let details = session.fulfillment_details.as_ref();
    let email = crate::checkout::service::buyer_email(session);
    let name = session
        .buyer
        .as_ref()
        .and_then(|b| {
            b.full_name.clone().or_else(|| match (&b.first_name, &b.last_name) {
                (Some(f), Some(l)) => Some(format!("{f} {l}")),
                (f, l) => f.clone().or_else(|| l.clone()),
            })
        })
        .or_else(|| details.and_then(|d| d.name.clone()));
    let phone = session
        .buyer
        .as_ref()
        .and_then(|b| b.phone_number.clone())
        .or_else(|| details.and_then(|d| d.phone_number.clone()));
    json!({"email": email, "name": name, "phone_number": phone})
}

/// The order as the merchant's systems receive it.
fn order_data(order: &Order, session: Option<&Session>) -> Value {
    let lines: Vec<Value> = order
        .lines
        .iter()
        .map(|l| {
            json!({"id": l.id, "item_id": l.item_id, "product_id": l.product_id, "title": l.title,
                   "unit_price": l.unit_price, "quantity": {"ordered": l.ordered, "current": l.current,
                   "fulfilled": l.fulfilled}, "status": l.status()})
        })
        .collect();
    json!({
        "id": order.id,
        "checkout_session_id": order.checkout_session_id,
        "status": order.status(),
        "currency": order.currency,
        "lines": lines,
        "totals": crate::protocol::v2026_04_17::totals(&order.totals),
        "amount_refunded": order.amount_refunded(),
        "buyer": session.map(buyer),
        "shipping_address": session.and_then(|s| s.fulfillment_details.as_ref()).and_then(|d| d.address.as_ref()),
        "fulfillments": order.fulfillments.iter().map(|f| json!({
            "id": f.id, "type": f.kind, "status": f.status, "carrier": f.carrier,
            "tracking_number": f.tracking_number, "tracking_url": f.tracking_url,
        })).collect::<Vec<_>>(),
        "refunds": order.adjustments.iter().filter(|a| a.kind == "refund").map(|a| json!({
            "id": a.id, "amount": a.amount, "status": a.status, "reason": a.reason, "occurred_at": a.occurred_at,
        })).collect::<Vec<_>>(),
        "payment": {"reference": order.charge_id, "status": order.payment.status,
                    "amount_captured": order.payment.amount_captured},
        "permalink_url": order.permalink_url,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    })
}
