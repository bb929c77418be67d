//! Orders: created by a completed checkout, then shipped, delivered, refunded or canceled by the merchant. Every
//! change is saved with an `order_update` event in the same transaction.

pub mod model;
pub mod service;

use sqlx::{PgConnection, types::Json};

use model::Order;

#[tracing::instrument(name = "db.order.insert", skip_all, fields(db.system = "postgresql", request_id = crate::observability::current_request_id()))]
pub async fn insert(conn: &mut PgConnection, order: &Order) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into merchant_order (order_id, checkout_session_id, agent_id, status, currency, total_amount,
                                     psp_charge_id, data)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&order.id)
    .bind(&order.checkout_session_id)
    .bind(&order.agent_id)
    .bind(order.status())
    .bind(&order.currency)
    .bind(order.total())
    .bind(&order.charge_id)
    .bind(crate::db::JsonText(order))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn save(conn: &mut PgConnection, order: &Order) -> Result<(), sqlx::Error> {
    sqlx::query("update merchant_order set status = $2, data = $3, updated_at = now() where order_id = $1")
        .bind(&order.id)
        .bind(order.status())
        .bind(crate::db::JsonText(order))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn load(conn: &mut PgConnection, order_id: &str, lock: bool) -> Result<Option<Order>, sqlx::Error> {
    let sql = if lock {
        "select data from merchant_order where order_id = $1 for update"
    } else {
        "select data from merchant_order where order_id = $1"
    };
    let row: Option<Json<Order>> = sqlx::query_scalar(sql).bind(order_id).fetch_optional(conn).await?;
    Ok(row.map(|Json(o)| o))
}
