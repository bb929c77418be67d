//! `GET /orders/{order_id}?t={token}`: the buyer's order page. No authentication besides the token. A wrong or
//! missing token answers exactly what an unknown order answers (same status, headers and body), and the token is
//! checked before the database is asked, so neither the answer nor its timing tells whether an order exists.

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::Response,
    routing::get,
};

use super::AppState;
use crate::{error::ApiError, order_page::page};

pub fn router() -> Router<AppState> {
    Router::new().route("/orders/{order_id}", get(order_page))
}

async fn order_page(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let links = &state.checkout.order_links;
    let authorized = token(query.as_deref()).is_some_and(|t| links.token_matches(&order_id, &t));
    if !authorized {
        return Ok(html(StatusCode::NOT_FOUND, page::not_found()));
    }
    let mut conn = state.db.acquire().await?;
    match crate::orders::load(&mut conn, &order_id, false).await? {
        Some(order) => {
            let body = page::render(&order, &state.settings.order_page, &state.settings.policy_links);
            Ok(html(StatusCode::OK, body))
        }
        None => Ok(html(StatusCode::NOT_FOUND, page::not_found())),
    }
}

/// The `t` parameter of the query string (the first one, when repeated).
fn token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "t")
        .map(|(_, value)| value.into_owned())
}

fn html(status: StatusCode, body: String) -> Response {
    crate::html::response(status, body, &page::content_security_policy())
}
