//! Admin API for orders and webhook deliveries. Order operations are idempotent (`Idempotency-Key` required) and
//! each emits an `order_update` webhook with the full order.

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    admin::Admin,
    extract::{AcpJson, AcpJsonOrDefault},
    idempotent::{self, MaybeIdempotency},
    limits::ResourceId,
};
use crate::{
    error::ApiError,
    orders::{
        self,
        service::{self as ops, OrderError, ShipInput},
    },
    protocol::v2026_04_17::render_order,
};

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/orders", get(list_orders))
        .route("/admin/orders/changes", get(order_changes))
        .route("/admin/orders/{id}", get(get_order))
        .route("/admin/orders/{id}/ship", post(ship))
        .route("/admin/orders/{id}/deliver", post(deliver))
        .route("/admin/orders/{id}/refund", post(refund))
        .route("/admin/orders/{id}/cancel", post(cancel))
        .route("/admin/webhooks/deliveries", get(list_deliveries))
        .route("/admin/webhooks/deliveries/replay-dead", post(replay_dead))
        .route("/admin/webhooks/deliveries/{id}", get(show_delivery))
        .route("/admin/webhooks/deliveries/{id}/replay", post(replay_one))
        .route("/admin/webhooks/secret", post(rotate_secret))
        .layer(middleware::from_fn_with_state(state.clone(), idempotent::admin_layer))
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::NotFound => ApiError::not_found("Order not found"),
            OrderError::Invalid { param, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", message).with_param(param)
            }
            OrderError::NotCapturable(message) => {
                ApiError::new(StatusCode::CONFLICT, "payment_not_capturable", message)
            }
            OrderError::Psp(e @ crate::psp::PspError::Rejected { .. }) => {
                ApiError::new(StatusCode::BAD_REQUEST, "psp_refused", e.to_string())
            }
            OrderError::Psp(crate::psp::PspError::Storage(e)) => e.into(),
            OrderError::Psp(e) => {
                tracing::warn!(error = %e, "payment provider unavailable for an order operation");
                ApiError::unavailable("The payment provider is unavailable; retry later").with_retry_after(2)
            }
            OrderError::Db(e) => e.into(),
        }
    }
}

async fn op_key(idem: &MaybeIdempotency) -> String {
    match &idem.0 {
        Some(i) => i.key().await,
        None => uuid::Uuid::new_v4().to_string(),
    }
}

/// The ACP order, plus (merchant-only, never sent to agents) how it was paid.
fn order_json(order: &orders::model::Order) -> Response {
    let mut body = render_order(order);
    body["payment"] = json!(order.payment);
    Json(body).into_response()
}

#[derive(Deserialize)]
struct OrderFilter {
    status: Option<String>,
    limit: Option<i64>,
    /// The buyer's email (matched through the funnel's salted buyer hash, the only form it is kept in per order).
    email: Option<String>,
    /// The order id (`ord_…`).
    order: Option<String>,
    /// The PSP payment reference (a Stripe PaymentIntent id).
    payment_intent: Option<String>,
    /// Placed at or after (RFC 3339).
    from: Option<String>,
    /// Placed before (RFC 3339).
    to: Option<String>,
}

fn instant(value: Option<&str>, param: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        format!("{param} must be an RFC 3339 time"),
                    )
                    .with_param(format!("$.{param}"))
                })
        })
        .transpose()
}

async fn list_orders(
    State(state): State<AppState>,
    _: Admin,
    Query(f): Query<OrderFilter>,
) -> Result<Response, ApiError> {
    // The attribution tags (issue 13) come from the order's `completed` funnel event.
    type Row = (
        String,
        String,
        String,
        i64,
        String,
        chrono::DateTime<chrono::Utc>,
        String,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select o.order_id, o.checkout_session_id, o.status, o.total_amount, o.currency, o.created_at, o.agent_id,
                e.channel_id
         from merchant_order o
         left join funnel_event e on e.checkout_session_id = o.checkout_session_id and e.kind = 'completed'
         where ($1::text is null or o.status = $1)
           and ($3::text is null or e.buyer_hash = $3)
           and ($4::text is null or o.order_id = $4)
           and ($5::text is null or o.psp_charge_id = $5)
           and ($6::timestamptz is null or o.created_at >= $6)
           and ($7::timestamptz is null or o.created_at < $7)
         order by o.created_at desc limit $2",
    )
    .bind(&f.status)
    .bind(f.limit.unwrap_or(100).clamp(1, 1000))
    .bind(f.email.as_deref().map(|e| state.checkout.funnel.buyer_hash(e)))
    .bind(&f.order)
    .bind(&f.payment_intent)
    .bind(instant(f.from.as_deref(), "from")?)
    .bind(instant(f.to.as_deref(), "to")?)
    .fetch_all(&state.db)
    .await?;
    let orders: Vec<Value> = rows
        .into_iter()
        .map(|(id, session, status, total, currency, created, agent, channel)| {
            let tags = crate::analytics::order_tags(&agent, channel.as_deref());
            json!({"id": id, "checkout_session_id": session, "status": status, "total": total,
                   "currency": currency, "created_at": created, "tags": tags})
        })
        .collect();
    Ok(Json(json!({"orders": orders})).into_response())
}

#[derive(Deserialize)]
struct ChangesQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// Largest page of the order feed.
const MAX_CHANGES: i64 = 1000;

/// The order feed for polling integrations: order versions after `cursor` in commit order (the migration
/// `order_changes` explains why a position never appears before an earlier one). `next_cursor` is the last
/// position returned, or the cursor given when there is nothing new.
async fn order_changes(
    State(state): State<AppState>,
    _: Admin,
    Query(q): Query<ChangesQuery>,
) -> Result<Response, ApiError> {
    let cursor = match q.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c.parse::<i64>().ok().filter(|c| *c >= 0).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "cursor must be a next_cursor this feed returned",
            )
            .with_param("$.cursor")
        })?,
    };
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_CHANGES).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("limit must be 1 to {MAX_CHANGES}"),
                )
                .with_param("$.limit")
            })?,
    };
    type Row = (
        i64,
        String,
        i32,
        String,
        chrono::DateTime<chrono::Utc>,
        sqlx::types::Json<orders::model::Order>,
    );
    // One more than asked tells whether another page follows.
    let mut rows: Vec<Row> = sqlx::query_as(
        "select position, order_id, version, status, changed_at, data from order_change
         where position > $1 order by position limit $2",
    )
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = rows.last().map_or(cursor, |r| r.0);
    let changes: Vec<Value> = rows
        .into_iter()
        .map(|(position, order_id, version, status, changed_at, order)| {
            json!({"position": position, "order_id": order_id, "version": version, "status": status,
                   "changed_at": changed_at, "order": render_order(&order.0)})
        })
        .collect();
    Ok(Json(json!({"changes": changes, "next_cursor": next_cursor.to_string(), "has_more": has_more})).into_response())
}

async fn get_order(State(state): State<AppState>, _: Admin, ResourceId(id): ResourceId) -> Result<Response, ApiError> {
    let order = orders::load(&mut *state.db.acquire().await?, &id, false)
        .await?
        .ok_or(OrderError::NotFound)?;
    let channel: Option<String> =
        sqlx::query_scalar("select channel_id from funnel_event where checkout_session_id = $1 and kind = 'completed'")
            .bind(&order.checkout_session_id)
            .fetch_optional(&state.db)
            .await?;
    let mut response = render_order(&order);
    response["payment"] = json!(order.payment);
    response["tags"] = crate::analytics::order_tags(&order.agent_id, channel.as_deref());
    response["timeline"] = json!(timeline(&state.db, &order.checkout_session_id).await?);
    Ok(Json(response).into_response())
}

/// What the buyer's agent saw and did in the session, in time order, for support: the funnel events (created and
/// each update with the status and messages shown, ready for payment, 3-D Secure, declines, completion, a cancel
/// with its intent-trace reason, expiry) and the payment attempts with their outcomes.
async fn timeline(db: &sqlx::PgPool, session_id: &str) -> Result<Vec<Value>, sqlx::Error> {
    type Event = (
        chrono::DateTime<chrono::Utc>,
        String,
        Option<String>,
        Option<i64>,
        Value,
    );
    let events: Vec<Event> = sqlx::query_as(
        "select occurred_at, kind, reason, amount, attrs from funnel_event
         where checkout_session_id = $1 order by occurred_at, funnel_event_id",
    )
    .bind(session_id)
    .fetch_all(db)
    .await?;
    type AttemptRow = (
        i32,
        String,
        i64,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "select attempt_number, state, amount, outcome_detail, created_at, resolved_at from payment_attempt
         where checkout_session_id = $1 order by attempt_number",
    )
    .bind(session_id)
    .fetch_all(db)
    .await?;
    let mut entries: Vec<(chrono::DateTime<chrono::Utc>, Value)> = events
        .into_iter()
        .map(|(at, kind, reason, amount, attrs)| {
            let mut entry = json!({"at": at, "event": kind});
            for (key, value) in [("reason", json!(reason)), ("amount", json!(amount))] {
                if !value.is_null() {
                    entry[key] = value;
                }
            }
            if let Value::Object(attrs) = attrs {
                for (key, value) in attrs {
                    entry[key] = value;
                }
            }
            (at, entry)
        })
        .chain(
            attempts
                .into_iter()
                .map(|(number, state, amount, outcome, at, resolved)| {
                    let entry = json!({"at": at, "event": "payment_attempt", "attempt": number, "state": state,
                               "amount": amount, "outcome": outcome, "resolved_at": resolved});
                    (at, entry)
                }),
        )
        .collect();
    // Stable: events of the same instant keep their order.
    entries.sort_by_key(|(at, _)| *at);
    Ok(entries.into_iter().map(|(_, entry)| entry).collect())
}

#[derive(Deserialize)]
struct LineIn {
    id: String,
    quantity: u32,
}

#[derive(Deserialize)]
struct ShipIn {
    carrier: String,
    tracking_number: String,
    #[serde(default)]
    tracking_url: Option<String>,
    #[serde(default)]
    line_items: Option<Vec<LineIn>>,
}

async fn ship(
    State(state): State<AppState>,
    _: Admin,
    idem: MaybeIdempotency,
    ResourceId(id): ResourceId,
    AcpJson(body): AcpJson<ShipIn>,
) -> Result<Response, ApiError> {
    let input = ShipInput {
        carrier: body.carrier,
        tracking_number: body.tracking_number,
        tracking_url: body.tracking_url,
        line_items: body
            .line_items
            .map(|l| l.into_iter().map(|l| (l.id, l.quantity)).collect()),
    };
    let order = ops::ship(&state.db, &state.checkout.psp, &id, input, &op_key(&idem).await).await?;
    Ok(order_json(&order))
}

#[derive(Deserialize, Default)]
struct DeliverIn {
    #[serde(default)]
    fulfillment_id: Option<String>,
}

async fn deliver(
    State(state): State<AppState>,
    _: Admin,
    ResourceId(id): ResourceId,
    AcpJsonOrDefault(body): AcpJsonOrDefault<DeliverIn>,
) -> Result<Response, ApiError> {
    let order = ops::deliver(&state.db, &id, body.fulfillment_id.as_deref()).await?;
    Ok(order_json(&order))
}

#[derive(Deserialize, Default)]
struct RefundIn {
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

async fn refund(
    State(state): State<AppState>,
    _: Admin,
    idem: MaybeIdempotency,
    ResourceId(id): ResourceId,
    AcpJsonOrDefault(body): AcpJsonOrDefault<RefundIn>,
) -> Result<Response, ApiError> {
    let order = ops::refund(
        &state.db,
        &state.checkout.psp,
        &id,
        body.amount,
        body.reason,
        &op_key(&idem).await,
    )
    .await?;
    Ok(order_json(&order))
}

async fn cancel(
    State(state): State<AppState>,
    _: Admin,
    idem: MaybeIdempotency,
    ResourceId(id): ResourceId,
) -> Result<Response, ApiError> {
    let order = ops::cancel(&state.db, &state.checkout.psp, &id, &op_key(&idem).await).await?;
    Ok(order_json(&order))
}

#[derive(Deserialize)]
struct DeliveryFilter {
    status: Option<String>,
    order_id: Option<String>,
    limit: Option<i64>,
}

type EventRow = (
    uuid::Uuid,
    String,
    String,
    String,
    String,
    i32,
    Option<String>,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
);

fn event_json(r: EventRow) -> Value {
    json!({"id": r.0, "order_id": r.1, "agent_id": r.2, "type": r.3, "status": r.4, "attempts": r.5,
           "last_error": r.6, "created_at": r.7, "delivered_at": r.8})
}

type AttemptRow = (chrono::DateTime<chrono::Utc>, String, Option<i32>, Option<String>, i32);

const EVENT_COLUMNS: &str =
    "event_id, order_id, agent_id, event_type, status, attempts, last_error, created_at, delivered_at";

async fn list_deliveries(
    State(state): State<AppState>,
    _: Admin,
    Query(f): Query<DeliveryFilter>,
) -> Result<Response, ApiError> {
    let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {EVENT_COLUMNS} from webhook_event
         where ($1::text is null or status = $1) and ($2::text is null or order_id = $2)
         order by sequence desc limit $3"
    )))
    .bind(&f.status)
    .bind(&f.order_id)
    .bind(f.limit.unwrap_or(100).clamp(1, 1000))
    .fetch_all(&state.db)
    .await?;
    Ok(Json(json!({"deliveries": rows.into_iter().map(event_json).collect::<Vec<_>>()})).into_response())
}

fn parse_event_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("No such delivery"))
}

async fn show_delivery(
    State(state): State<AppState>,
    _: Admin,
    ResourceId(id): ResourceId,
) -> Result<Response, ApiError> {
    let id = parse_event_id(&id)?;
    let row: Option<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {EVENT_COLUMNS} from webhook_event where event_id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.db)
    .await?;
    let row = row.ok_or_else(|| ApiError::not_found("No such delivery"))?;
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "select attempted_at, url, response_status, error, duration_ms from webhook_attempt
         where event_id = $1 order by webhook_attempt_id",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    let mut body = event_json(row);
    body["attempts"] = attempts
        .into_iter()
        .map(|(at, url, status, error, ms)| json!({"attempted_at": at, "url": url, "response_status": status, "error": error, "duration_ms": ms}))
        .collect();
    Ok(Json(body).into_response())
}

async fn replay_one(State(state): State<AppState>, _: Admin, ResourceId(id): ResourceId) -> Result<Response, ApiError> {
    let id = parse_event_id(&id)?;
    let updated = sqlx::query(
        "update webhook_event set status = 'pending', next_attempt_at = now(), client_error_attempts = 0,
                holder = null, lease_until = null
         where event_id = $1 and status = 'dead'",
    )
    .bind(id)
    .execute(&state.db)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "Only dead deliveries can be replayed",
        ));
    }
    Ok(Json(json!({"replayed": 1})).into_response())
}

async fn replay_dead(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let updated = sqlx::query(
        "update webhook_event set status = 'pending', next_attempt_at = now(), client_error_attempts = 0,
                holder = null, lease_until = null
         where status = 'dead'",
    )
    .execute(&state.db)
    .await?;
    Ok(Json(json!({"replayed": updated.rows_affected()})).into_response())
}

#[derive(Deserialize)]
struct SecretIn {
    #[serde(default)]
    agent_id: Option<String>,
    secret: String,
}

/// Rotates an agent's signing secret; deliveries attempted from now on are signed with it.
async fn rotate_secret(
    State(state): State<AppState>,
    _: Admin,
    AcpJson(body): AcpJson<SecretIn>,
) -> Result<Response, ApiError> {
    if body.secret.len() < 16 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "The secret must be at least 16 characters",
        )
        .with_param("$.secret"));
    }
    let agent_id = body.agent_id.unwrap_or_else(|| super::extract::ENV_AGENT_ID.to_owned());
    sqlx::query(
        "insert into agent_webhook_secret (agent_id, secret) values ($1, $2)
         on conflict (agent_id) do update set secret = excluded.secret, rotated_at = now()",
    )
    .bind(&agent_id)
    .bind(
        state
            .keyring
            .seal(crate::secrets::store::ROTATED_WEBHOOK_SECRET, &body.secret),
    )
    .execute(&state.db)
    .await?;
    tracing::info!(%agent_id, "webhook signing secret rotated");
    Ok(Json(json!({"agent_id": agent_id, "rotated": true})).into_response())
}
