//! Writing events: always in the caller's transaction, next to the order change they describe.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{orders::model::Order, protocol};

/// Queues `event_type` (`order_create` / `order_update`) carrying the full order, rendered now, in the order's
/// ACP version. Returns the event id (sent as `Webhook-Id`).
pub async fn enqueue(conn: &mut PgConnection, order: &Order, event_type: &str) -> Result<Uuid, sqlx::Error> {
    let event_id = Uuid::now_v7();
    let payload = protocol::webhook_body(event_type, order);
    sqlx::query(
        "insert into webhook_event (event_id, order_id, agent_id, event_type, payload) values ($1, $2, $3, $4, $5)",
    )
    .bind(event_id)
    .bind(&order.id)
    .bind(&order.agent_id)
    .bind(event_type)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(event_id)
}
