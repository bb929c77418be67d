//! Writing events: always in the caller's transaction, next to the order change they describe.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{orders::model::Order, protocol};

/// Queues `event_type` (`order_create` / `order_update`) carrying the order, rendered now in the agent's chosen
/// webhook version (`agent_webhook_version`), or else in the version of the complete call that created the order.
/// Returns the event id (sent as `Webhook-Id`).
pub async fn enqueue(conn: &mut PgConnection, order: &Order, event_type: &str) -> Result<Uuid, sqlx::Error> {
    let event_id = Uuid::now_v7();
    let chosen: Option<String> =
        sqlx::query_scalar("select api_version from agent_webhook_version where agent_id = $1")
            .bind(&order.agent_id)
            .fetch_optional(&mut *conn)
            .await?;
    let version = chosen.as_deref().unwrap_or(&order.api_version);
    let payload = protocol::webhook_body(version, event_type, order);
    sqlx::query(
        "insert into webhook_event (event_id, order_id, stream, agent_id, event_type, payload)
         values ($1, $2, $2, $3, $4, $5)",
    )
    .bind(event_id)
    .bind(&order.id)
    .bind(&order.agent_id)
    .bind(event_type)
    .bind(crate::db::JsonText(payload))
    .execute(conn)
    .await?;
    Ok(event_id)
}

/// Sets (or with `None` clears) the version `agent_id`'s order webhooks are rendered in.
pub async fn set_agent_version(
    conn: &mut PgConnection,
    agent_id: &str,
    version: Option<&str>,
) -> Result<(), sqlx::Error> {
    match version {
        Some(version) => {
            sqlx::query(
                "insert into agent_webhook_version (agent_id, api_version) values ($1, $2)
                 on conflict (agent_id) do update set api_version = excluded.api_version, updated_at = now()",
            )
            .bind(agent_id)
            .bind(version)
            .execute(conn)
            .await?;
        }
        None => {
            sqlx::query("delete from agent_webhook_version where agent_id = $1")
                .bind(agent_id)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}
