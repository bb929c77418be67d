//! The merchant's admin API (bearer `ACP_ADMIN_TOKEN`): catalog import/export and merchant-only attributes.

use axum::{
    Json, Router,
    body::{Bytes, to_bytes},
    extract::{FromRequestParts, Request, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;

use super::{
    AppState,
    extract::{parse_value, read_json, read_required_json, secrets_equal},
};
use crate::{
    catalog::{self, CatalogError},
    error::ApiError,
    secrets::store::AGENT_WEBHOOK_SECRET,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/catalog/import", post(import))
        .route("/admin/catalog/attributes", post(attributes))
        .route("/admin/catalog/export", get(export))
        .route("/admin/catalog/quality", get(quality))
        .route("/admin/inventory/ledger", get(ledger))
        .route("/admin/simulator/release", post(release_simulator))
        .route("/admin/agents", get(list_agents).post(create_agent))
        .route("/admin/pricing/rules", get(get_rules).put(put_rules))
        .route("/admin/pricing/rules/settings", axum::routing::put(put_rule_settings))
        .route("/admin/pricing/rules/{collection}", get(list_rule_items))
        .route(
            "/admin/pricing/rules/{collection}/{key}",
            axum::routing::put(put_rule_item).delete(delete_rule_item),
        )
        .route("/admin/agents/{id}", axum::routing::delete(disable_agent))
        .route(
            "/admin/agents/{id}/webhook-version",
            axum::routing::put(put_webhook_version),
        )
}

/// Proof that the caller holds the admin token. With no token configured the admin API is closed.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = super::extract::bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        match &state.settings.admin_token {
            Some(token) if secrets_equal(presented, token.expose()) => Ok(Admin),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Line { line, param, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("line {line}: {message}")).with_param(param)
            }
            CatalogError::Db(e) => e.into(),
            CatalogError::UnknownVariant(id) => ApiError::not_found(format!("Variant {id} not found")),
            CatalogError::Invalid { param, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", message).with_param(param)
            }
            CatalogError::Stored { product_id, message } => {
                tracing::error!(product_id = %product_id, error = %message, "a stored product cannot be read");
                ApiError::internal()
            }
        }
    }
}

async fn body_text(request: Request, limit: usize) -> Result<String, ApiError> {
    let bytes: Bytes = to_bytes(request.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "The import body is too large",
        )
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "The body must be UTF-8 JSON lines"))
}

/// Import files are bigger than agent requests: allow 64× the agent body limit.
fn import_limit(state: &AppState) -> usize {
    state.settings.max_body_bytes.saturating_mul(64)
}

async fn import(State(state): State<AppState>, _: Admin, request: Request) -> Result<Response, ApiError> {
    let text = body_text(request, import_limit(&state)).await?;
    let products = catalog::parse_products(&text)?;
    let count = catalog::upsert_products(&state.db, &products).await?;
    Ok(Json(json!({"imported": count})).into_response())
}

async fn attributes(State(state): State<AppState>, _: Admin, request: Request) -> Result<Response, ApiError> {
    let text = body_text(request, import_limit(&state)).await?;
    let records = catalog::parse_attributes(&text)?;
    let count = catalog::apply_attributes(&state.db, &records).await?;
    Ok(Json(json!({"updated": count})).into_response())
}

async fn export(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let body = catalog::export_jsonl(&state.db).await?;
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], body).into_response())
}

/// The feed quality report of the stored catalog (README, "Feed quality").
async fn quality(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let products = catalog::stored_products(&state.db).await?;
    Ok(Json(catalog::quality::check_products(&products)).into_response())
}

#[derive(serde::Deserialize)]
struct LedgerQuery {
    variant_id: Option<String>,
    /// Movements after this id (the last `id` of the previous page).
    after: Option<i64>,
    limit: Option<i64>,
}

/// The inventory ledger, oldest first: every change of on-hand or reserved units with its reason (sale, reserve,
/// release, cancel, return, sync, manual). For one variant, also what its movements add up to and what the
/// variant holds now, which are the same for a tracked variant.
async fn ledger(
    State(state): State<AppState>,
    _: Admin,
    axum::extract::Query(q): axum::extract::Query<LedgerQuery>,
) -> Result<Response, ApiError> {
    type Row = (i64, String, i32, i32, String, chrono::DateTime<chrono::Utc>);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows: Vec<Row> = sqlx::query_as(
        "select movement_id, variant_id, on_hand_delta, reserved_delta, reason, occurred_at from inventory_movement
         where ($1::text is null or variant_id = $1) and movement_id > $2 order by movement_id limit $3",
    )
    .bind(&q.variant_id)
    .bind(q.after.unwrap_or(0))
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let movements: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(id, variant, on_hand, reserved, reason, at)| {
            json!({"id": id, "variant_id": variant, "on_hand_delta": on_hand, "reserved_delta": reserved,
                   "reason": reason, "occurred_at": at})
        })
        .collect();
    let mut body = json!({"movements": movements});
    if let Some(variant) = &q.variant_id {
        let sums: (Option<i64>, Option<i64>, Option<i32>, Option<i32>) = sqlx::query_as(
            "select (select sum(on_hand_delta) from inventory_movement where variant_id = $1),
                    (select sum(reserved_delta) from inventory_movement where variant_id = $1),
                    v.stock_quantity, v.stock_reserved
             from (select 1) one left join variant v on v.variant_id = $1",
        )
        .bind(variant)
        .fetch_one(&state.db)
        .await?;
        body["balance"] = json!({"on_hand": sums.0.unwrap_or(0), "reserved": sums.1.unwrap_or(0),
                                 "stock_quantity": sums.2, "stock_reserved": sums.3});
    }
    Ok(Json(body).into_response())
}

/// Lets every simulator charge held by the `spt_sim_hold` token answer (development and tests).
async fn release_simulator(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let simulator = state
        .simulator
        .as_ref()
        .ok_or_else(|| ApiError::not_found("The payment simulator is not the configured PSP"))?;
    simulator.release_held();
    Ok(Json(json!({"released": true})).into_response())
}

#[derive(serde::Deserialize)]
struct AgentIn {
    name: String,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    webhook_secret: Option<String>,
}

pub(super) fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", message).with_param(param)
}

/// Webhook URLs follow the same rule as ACP_AGENT_WEBHOOK_URL: https and not an internal host in production,
/// unless ACP_ALLOW_INSECURE_WEBHOOK_URLS says otherwise.
/// A webhook destination the admin registers, at `param` of the body: https (http too outside production or with
/// `ACP_ALLOW_INSECURE_WEBHOOK_URLS`), and no loopback, private or link-local host unless its literal address is in
/// `allowed` (merchant endpoints' networks; none for agents). Names are checked again, resolved, at every delivery.
pub(super) fn check_webhook_url(
    state: &AppState,
    raw: &str,
    param: &str,
    allowed: &[ipnet::IpNet],
) -> Result<(), ApiError> {
    let field = param.trim_start_matches("$.");
    let url = url::Url::parse(raw).map_err(|_| bad(param, format!("{field} is not a URL")))?;
    let relaxed = !state.settings.is_production() || state.settings.allow_insecure_webhook_urls;
    let scheme_ok = url.scheme() == "https" || (relaxed && url.scheme() == "http");
    if !scheme_ok || url.host().is_none() {
        return Err(bad(param, format!("{field} must be an https URL")));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    };
    let listed = literal.is_some_and(|ip| allowed.iter().any(|n| n.contains(&ip)));
    if !relaxed && !listed && crate::config::host_is_internal(&url) {
        return Err(bad(
            param,
            format!("{field} must not point at a loopback, private or link-local host outside the allowed networks"),
        ));
    }
    Ok(())
}

/// Registers an agent and returns its API key, the only time the key is ever shown (only its SHA-256 is kept).
async fn create_agent(State(state): State<AppState>, _: Admin, request: Request) -> Result<Response, ApiError> {
    let body = read_required_json(request, state.settings.max_body_bytes).await?;
    let input: AgentIn = parse_value(body)?;
    let name = input.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(bad("$.name", "name must be 1 to 200 characters"));
    }
    if let Some(url) = &input.webhook_url {
        check_webhook_url(&state, url, "$.webhook_url", &[])?;
    }
    let agent_id = format!("agent_{}", uuid::Uuid::now_v7().simple());
    let api_key = format!(
        "acp_ak_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let digest = <sha2::Sha256 as sha2::Digest>::digest(api_key.as_bytes()).to_vec();
    sqlx::query(
        "insert into agent (agent_id, name, api_key_sha256, webhook_url, webhook_secret) values ($1, $2, $3, $4, $5)",
    )
    .bind(&agent_id)
    .bind(name)
    .bind(digest)
    .bind(&input.webhook_url)
    .bind(
        input
            .webhook_secret
            .as_deref()
            .map(|secret| state.keyring.seal(AGENT_WEBHOOK_SECRET, secret)),
    )
    .execute(&state.db)
    .await?;
    tracing::info!(%agent_id, "agent registered");
    let body = json!({"agent_id": agent_id, "name": name, "webhook_url": input.webhook_url, "api_key": api_key});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(sqlx::FromRow, serde::Serialize)]
struct AgentOut {
    agent_id: String,
    name: String,
    webhook_url: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    disabled_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn list_agents(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let agents: Vec<AgentOut> = sqlx::query_as(
        "select agent_id, name, webhook_url, created_at, disabled_at from agent order by created_at, agent_id",
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(json!({"agents": agents})).into_response())
}

/// Disables an agent: its key stops working at once; its sessions and orders stay.
async fn disable_agent(
    State(state): State<AppState>,
    _: Admin,
    super::limits::ResourceId(id): super::limits::ResourceId,
) -> Result<Response, ApiError> {
    let updated = sqlx::query("update agent set disabled_at = coalesce(disabled_at, now()) where agent_id = $1")
        .bind(&id)
        .execute(&state.db)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("No such agent"));
    }
    Ok(Json(json!({"agent_id": id, "disabled": true})).into_response())
}

#[derive(serde::Deserialize)]
struct WebhookVersionIn {
    /// An ACP version, or `null` to go back to the complete call's version.
    api_version: Option<String>,
}

/// Chooses the ACP version an agent's order webhooks are rendered in (any agent id, the environment's
/// `agent_default` included).
async fn put_webhook_version(
    State(state): State<AppState>,
    _: Admin,
    super::limits::ResourceId(id): super::limits::ResourceId,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_required_json(request, state.settings.max_body_bytes).await?;
    let WebhookVersionIn { api_version } = parse_value(body)?;
    if let Some(v) = &api_version
        && crate::protocol::adapter(v).is_none()
    {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("Unknown ACP version '{v}'"))
                .with_param("$.api_version"),
        );
    }
    let mut conn = state.db.acquire().await?;
    crate::webhooks::outbox::set_agent_version(&mut conn, &id, api_version.as_deref()).await?;
    Ok(Json(json!({"agent_id": id, "webhook_api_version": api_version})).into_response())
}

/// The rules in force: the stored bundle and its version, or the configuration defaults (version 0).
async fn get_rules(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let stored = crate::pricing::store::load(&mut *state.db.acquire().await?).await?;
    let (version, rules) = match stored {
        Some((version, rules)) => (version, rules),
        None => (0, state.checkout.rules.fallback().clone()),
    };
    Ok(Json(json!({"version": version, "rules": rules})).into_response())
}

/// Replaces the whole bundle after validation; every server process picks it up on its next pricing.
async fn put_rules(State(state): State<AppState>, _: Admin, request: Request) -> Result<Response, ApiError> {
    let body = read_json(request, state.settings.max_body_bytes)
        .await?
        .ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "missing", "A JSON rules bundle is required").with_param("$")
        })?;
    let rules: crate::pricing::Rules = parse_value(body)?;
    let version = crate::pricing::store::save(&mut *state.db.acquire().await?, &rules).await?;
    // This process prices with the new bundle at once; the others hear of it through LISTEN/NOTIFY.
    state.checkout.rules.install(version, rules);
    tracing::info!(version, "pricing rules replaced");
    Ok(Json(json!({"version": version})).into_response())
}

impl From<crate::pricing::store::RulesError> for ApiError {
    fn from(e: crate::pricing::store::RulesError) -> Self {
        match e {
            crate::pricing::store::RulesError::Invalid { param, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", message).with_param(param)
            }
            crate::pricing::store::RulesError::Db(e) => e.into(),
        }
    }
}

/// The rule collections and the field that names an item in each.
fn collection_key(collection: &str) -> Result<&'static str, ApiError> {
    match collection {
        "taxes" => Ok("name"),
        "shipping" | "promotions" => Ok("id"),
        _ => Err(ApiError::not_found(
            "Rule collections are taxes, shipping and promotions",
        )),
    }
}

/// Applies `change` to the rules in force (stored, or the configuration defaults), validates the result and
/// stores it as a new version — all under a lock on the stored bundle, so concurrent edits do not lose each other.
async fn modify_rules(
    state: &AppState,
    change: impl FnOnce(&mut serde_json::Value) -> Result<(), ApiError>,
) -> Result<i64, ApiError> {
    let mut tx = state.db.begin().await?;
    let stored: Option<sqlx::types::Json<crate::pricing::Rules>> =
        sqlx::query_scalar("select rules from pricing_rules where singleton for update")
            .fetch_optional(&mut *tx)
            .await?;
    let current = stored.map_or_else(|| state.checkout.rules.fallback().clone(), |sqlx::types::Json(r)| r);
    let mut value = serde_json::to_value(current).map_err(|_| ApiError::internal())?;
    change(&mut value)?;
    let rules: crate::pricing::Rules = parse_value(value)?;
    let version = crate::pricing::store::save(&mut tx, &rules).await?;
    tx.commit().await?;
    state.checkout.rules.install(version, rules);
    tracing::info!(version, "pricing rules changed");
    Ok(version)
}

async fn list_rule_items(
    State(state): State<AppState>,
    _: Admin,
    axum::extract::Path(collection): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    collection_key(&collection)?;
    let stored = crate::pricing::store::load(&mut *state.db.acquire().await?).await?;
    let rules = stored.map_or_else(|| state.checkout.rules.fallback().clone(), |(_, r)| r);
    let value = serde_json::to_value(rules).map_err(|_| ApiError::internal())?;
    Ok(Json(json!({ collection.as_str(): value[collection.as_str()] })).into_response())
}

/// Creates or replaces one rule; the key in the path must match the rule's own.
async fn put_rule_item(
    State(state): State<AppState>,
    _: Admin,
    axum::extract::Path((collection, key)): axum::extract::Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let key_field = collection_key(&collection)?;
    let item = read_json(request, state.settings.max_body_bytes)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "missing", "A JSON rule is required").with_param("$"))?;
    if item[key_field] != json!(key) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{key_field} must equal the key in the path"),
        )
        .with_param(format!("$.{key_field}")));
    }
    let version = modify_rules(&state, |rules| {
        let items = rules[collection.as_str()]
            .as_array_mut()
            .ok_or_else(ApiError::internal)?;
        match items.iter_mut().find(|i| i[key_field] == json!(key)) {
            Some(existing) => *existing = item,
            None => items.push(item),
        }
        Ok(())
    })
    .await?;
    Ok(Json(json!({"version": version})).into_response())
}

async fn delete_rule_item(
    State(state): State<AppState>,
    _: Admin,
    axum::extract::Path((collection, key)): axum::extract::Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key_field = collection_key(&collection)?;
    let version = modify_rules(&state, |rules| {
        let items = rules[collection.as_str()]
            .as_array_mut()
            .ok_or_else(ApiError::internal)?;
        let before = items.len();
        items.retain(|i| i[key_field] != json!(key));
        if items.len() == before {
            return Err(ApiError::not_found(format!("No {collection} rule `{key}`")));
        }
        Ok(())
    })
    .await?;
    Ok(Json(json!({"version": version})).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSettings {
    #[serde(default)]
    currency: Option<String>,
    tax_inclusive: bool,
    rounding: crate::pricing::rules::Rounding,
    rounding_level: crate::pricing::rules::RoundingLevel,
}

/// Sets the merchant-wide tax settings (currency, inclusive prices, rounding mode and level).
async fn put_rule_settings(State(state): State<AppState>, _: Admin, request: Request) -> Result<Response, ApiError> {
    let body = read_required_json(request, state.settings.max_body_bytes).await?;
    let settings: RuleSettings = parse_value(body)?;
    let version = modify_rules(&state, |rules| {
        rules["currency"] = json!(settings.currency);
        rules["tax_inclusive"] = json!(settings.tax_inclusive);
        rules["rounding"] = serde_json::to_value(settings.rounding).map_err(|_| ApiError::internal())?;
        rules["rounding_level"] = serde_json::to_value(settings.rounding_level).map_err(|_| ApiError::internal())?;
        Ok(())
    })
    .await?;
    Ok(Json(json!({"version": version})).into_response())
}
