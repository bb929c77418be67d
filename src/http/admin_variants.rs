//! Catalog and stock sync (issue 15, [`crate::catalog::sync`]): `PATCH /admin/variants/{id}` and
//! `POST /admin/variants/bulk`, idempotent through the admin idempotency layer (an `Idempotency-Key` is required
//! on both), each one transaction.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{patch, post},
};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, admin::Admin, extract::AcpJson, idempotent, limits::ResourceId};
use crate::{
    catalog::{
        CatalogError,
        sync::{self, VariantChange},
    },
    error::ApiError,
};

/// Most changes one bulk request may carry.
const MAX_BULK: usize = 1000;

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/variants/{id}", patch(change_one))
        .route("/admin/variants/bulk", post(change_many))
        .layer(middleware::from_fn_with_state(state.clone(), idempotent::admin_layer))
}

async fn change_one(
    State(state): State<AppState>,
    _: Admin,
    ResourceId(id): ResourceId,
    AcpJson(change): AcpJson<VariantChange>,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    let changed = sync::apply(&mut tx, &id, &change, "$").await?;
    tx.commit().await?;
    Ok(Json(changed).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkIn {
    changes: Vec<BulkChange>,
}

/// One change of a bulk request: a variant id beside the fields of [`VariantChange`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkChange {
    variant_id: String,
    #[serde(default)]
    price: Option<crate::catalog::feed::Price>,
    #[serde(default)]
    available: Option<bool>,
    #[serde(default)]
    stock: Option<sync::StockChange>,
}

/// All the changes or none: the first refused one names its place (`$.changes[i]…`) and nothing is kept.
async fn change_many(
    State(state): State<AppState>,
    _: Admin,
    AcpJson(body): AcpJson<BulkIn>,
) -> Result<Response, ApiError> {
    if body.changes.is_empty() || body.changes.len() > MAX_BULK {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("changes must hold 1 to {MAX_BULK} changes"),
        )
        .with_param("$.changes"));
    }
    let mut tx = state.db.begin().await?;
    let mut changed = Vec::with_capacity(body.changes.len());
    for (i, c) in body.changes.into_iter().enumerate() {
        let at = format!("$.changes[{i}]");
        let change = VariantChange {
            price: c.price,
            available: c.available,
            stock: c.stock,
        };
        let state = sync::apply(&mut tx, &c.variant_id, &change, &at)
            .await
            .map_err(|e| match e {
                CatalogError::UnknownVariant(id) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("unknown variant {id}"))
                        .with_param(format!("{at}.variant_id"))
                }
                other => other.into(),
            })?;
        changed.push(state);
    }
    tx.commit().await?;
    Ok(Json(json!({"variants": changed})).into_response())
}
