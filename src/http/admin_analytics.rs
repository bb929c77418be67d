//! Admin analytics (issue 13): the cohort funnel with CPA, channel costs, the raw events export and the channel
//! an agent's sessions are attributed to. Computation lives in [`crate::analytics`]; this maps HTTP in and out.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{RawQuery, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{
    AppState,
    admin::Admin,
    extract::{ENV_AGENT_ID, parse_value, read_required_json},
    idempotent,
    limits::ResourceId,
};
use crate::{
    analytics::{
        self, AnalyticsError, FunnelQuery,
        costs::{self, NewCost},
        export,
    },
    error::ApiError,
};

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/analytics/funnel", get(funnel))
        .route("/admin/analytics/events", get(events))
        .route("/admin/analytics/costs", post(record_cost))
        .route("/admin/agents/{id}/channel", put(put_channel))
        // Admin POSTs need an Idempotency-Key, as everywhere in the admin API.
        .layer(middleware::from_fn_with_state(state.clone(), idempotent::admin_layer))
}

impl From<AnalyticsError> for ApiError {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::Invalid { param, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", message).with_param(param)
            }
            AnalyticsError::Db(e) => e.into(),
        }
    }
}

fn params(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", message).with_param(param)
}

fn timestamp(params: &HashMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| bad(name, format!("`{name}` must be an RFC 3339 timestamp")))
        })
        .transpose()
}

fn required_timestamp(params: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, ApiError> {
    timestamp(params, name)?.ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "missing", format!("`{name}` is required")).with_param(name)
    })
}

fn funnel_query(raw: Option<String>) -> Result<FunnelQuery, ApiError> {
    let params = params(raw);
    let text = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    Ok(FunnelQuery {
        from: required_timestamp(&params, "from")?,
        to: required_timestamp(&params, "to")?,
        agent: text("agent"),
        channel: text("channel"),
        currency: text("currency").map(|c| c.to_ascii_lowercase()),
    })
}

async fn funnel(State(state): State<AppState>, _: Admin, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = funnel_query(raw)?;
    let funnel = analytics::funnel(&state.db, &query).await?;
    Ok(Json(funnel).into_response())
}

/// JSONL by default, CSV when the client accepts `text/csv`; the next page's cursor in `X-Next-Cursor` and a
/// `Link: <…>; rel="next"` header (absent on the last page).
async fn events(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(raw);
    let limit = params
        .get("limit")
        .map(|l| l.parse::<i64>().map_err(|_| bad("limit", "`limit` must be an integer")))
        .transpose()?;
    let page = export::Page {
        from: timestamp(&params, "from")?,
        to: timestamp(&params, "to")?,
        cursor: params.get("cursor").cloned(),
        limit,
    };
    let result = export::page(&state.db, &page).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    let (content_type, body) = if wants_csv {
        ("text/csv; charset=utf-8", export::csv(&result.events))
    } else {
        ("application/x-ndjson", export::jsonl(&result.events))
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(cursor) = result.next_cursor {
        let link = next_link(&params, &cursor);
        let response_headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&cursor) {
            response_headers.insert("x-next-cursor", value);
        }
        if let Ok(value) = HeaderValue::from_str(&link) {
            response_headers.insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// The next page's relative URL: the same query with the new cursor.
fn next_link(params: &HashMap<String, String>, cursor: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut names: Vec<&String> = params.keys().filter(|k| k.as_str() != "cursor").collect();
    names.sort();
    for name in names {
        query.append_pair(name, &params[name]);
    }
    query.append_pair("cursor", cursor);
    format!("</admin/analytics/events?{}>; rel=\"next\"", query.finish())
}

async fn record_cost(State(state): State<AppState>, _: Admin, request: Request) -> Result<Response, ApiError> {
    let body = read_required_json(request, state.settings.max_body_bytes).await?;
    let cost: NewCost = parse_value(body)?;
    let stored = costs::record(&state.db, &cost).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": stored.id, "channel": stored.channel, "from": stored.from, "to": stored.to,
            "amount": stored.amount, "currency": stored.currency,
        })),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelIn {
    channel_id: String,
}

fn valid_channel(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Sets the channel the agent's future events are attributed to (earlier events keep theirs).
async fn put_channel(
    State(state): State<AppState>,
    _: Admin,
    ResourceId(id): ResourceId,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_required_json(request, state.settings.max_body_bytes).await?;
    let ChannelIn { channel_id } = parse_value(body)?;
    if !valid_channel(&channel_id) {
        return Err(bad(
            "$.channel_id",
            "channel_id must be 1 to 64 letters, digits, '-', '_', '.' or ':'",
        ));
    }
    let known = id == ENV_AGENT_ID
        || sqlx::query_scalar::<_, bool>("select exists (select 1 from agent where agent_id = $1)")
            .bind(&id)
            .fetch_one(&state.db)
            .await?;
    if !known {
        return Err(ApiError::not_found("Agent not found"));
    }
    sqlx::query(
        "insert into agent_channel (agent_id, channel_id) values ($1, $2)
         on conflict (agent_id) do update set channel_id = excluded.channel_id, updated_at = now()",
    )
    .bind(&id)
    .bind(&channel_id)
    .execute(&state.db)
    .await?;
    Ok(Json(json!({"agent_id": id, "channel_id": channel_id})).into_response())
}
