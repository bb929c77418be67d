//! `GET /.well-known/acp.json`: the 2026-04-17 `DiscoveryResponse` (DIGEST §3.18, `rfcs/rfc.discovery.md`).
//! Public and unauthenticated, so it says only what any agent may know before a session: the served versions,
//! the API base URL, the services, extensions, interventions, currencies and locales. Never a merchant id, a
//! payment handler or PSP, buyer data or a key (DIGEST §15 item 93). Cacheable for an hour, with an `ETag` so a
//! revalidation costs a 304; the per-address rate limit applies (there is no agent to limit).

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::error::ApiError;

pub const PATH: &str = "/.well-known/acp.json";

/// How long agents may cache the document (the RFC asks for an hour or more).
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The extension this server implements, with the URLs the official examples give it.
const DISCOUNT_EXTENSION_SPEC: &str = "https://agenticcommerce.dev/specs/discount";
const DISCOUNT_EXTENSION_SCHEMA: &str = "https://agenticcommerce.dev/schemas/discount.json";

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(PATH, get(discovery))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::rate_limit::by_address,
        ))
}

async fn discovery(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let currencies = catalog_currencies(&state.db).await?;
    let body = document(&state, currencies).to_string();
    let etag = entity_tag(&body);
    let mut response = if if_none_match_hits(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    Ok(response)
}

/// The currencies the catalog prices in (lowercase ISO 4217), which are the ones a session can use.
async fn catalog_currencies(db: &sqlx::PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select distinct lower(currency) from variant where currency ~ '^[A-Za-z]{3}$' order by 1")
        .fetch_all(db)
        .await
}

/// The document; `currencies` come from the catalog.
pub fn document(state: &AppState, currencies: Vec<String>) -> Value {
    let settings = &state.settings;
    // The pattern of `supported_versions` is a date: `unreleased`, even when served, cannot be listed.
    let mut versions: Vec<&str> = state
        .protocol
        .versions()
        .into_iter()
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    versions.sort_unstable();
    let mut protocol = json!({
        "name": "acp",
        "version": versions.last().copied().unwrap_or_default(),
        "supported_versions": versions,
    });
    if let Some(url) = &settings.discovery.documentation_url {
        protocol["documentation_url"] = json!(url.as_str());
    }
    let mut capabilities = json!({
        // `orders`: this server sends the order webhooks of the orders RFC; it hosts no cart or delegate-payment API.
        "services": ["checkout", "orders"],
        "extensions": [{"name": "discount", "spec": DISCOUNT_EXTENSION_SPEC, "schema": DISCOUNT_EXTENSION_SCHEMA}],
        "intervention_types": state.wire.seller_interventions,
    });
    if !currencies.is_empty() {
        capabilities["supported_currencies"] = json!(currencies);
    }
    if !settings.discovery.supported_locales.is_empty() {
        capabilities["supported_locales"] = json!(settings.discovery.supported_locales);
    }
    json!({
        "protocol": protocol,
        "api_base_url": settings.public_base_url.as_str().trim_end_matches('/'),
        "transports": ["rest"],
        "capabilities": capabilities,
    })
}

/// A strong validator: the SHA-256 of the body (the document changes only with configuration or the catalog).
fn entity_tag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `If-None-Match` names the current tag (weak comparison, as RFC 9110 §13.1.2 asks for GET) or is `*`.
fn if_none_match_hits(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let tag = entity_tag("{}");
        assert!(if_none_match_hits(&headers(&tag), &tag));
        assert!(if_none_match_hits(&headers(&format!("W/{tag}")), &tag));
        assert!(if_none_match_hits(&headers(&format!("\"x\", {tag}")), &tag));
        assert!(if_none_match_hits(&headers("*"), &tag));
        assert!(!if_none_match_hits(&headers("\"other\""), &tag));
        assert!(!if_none_match_hits(&HeaderMap::new(), &tag));
    }

    #[test]
    fn the_tag_follows_the_body() {
        assert_eq!(entity_tag("a"), entity_tag("a"));
        assert_ne!(entity_tag("a"), entity_tag("b"));
    }
}
