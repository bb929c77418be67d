//! The merchant's catalog: feed Products (ACP feed format, imported and exported as JSONL), their purchasable
//! variants (a checkout item id is a variant id), and merchant-only attributes that the feed cannot carry.

pub mod feed;
pub mod quality;
pub mod sync;

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::markdown;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A line of an import file is invalid; `param` is a JSONPath inside that line's object.
    #[error("line {line}: {param}: {message}")]
    Line {
        line: usize,
        param: String,
        message: String,
    },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A change names a variant the catalog does not have.
    #[error("unknown variant {0}")]
    UnknownVariant(String),
    /// A change is wrong; `param` is its JSONPath in the request body.
    #[error("{param}: {message}")]
    Invalid { param: String, message: String },
    /// A stored product no longer reads as a feed Product (written by hand, or by an incompatible version).
    #[error("stored product {product_id} is not a feed Product: {message}")]
    Stored { product_id: String, message: String },
}

/// Merchant-only attributes of one variant (the `--attributes` file and the admin API). Absent fields keep their
/// current value; the documented defaults apply to variants never given attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attributes {
    pub variant_id: String,
    /// Units on hand; `null` means stock is not tracked (always purchasable while available).
    #[serde(
        default,
        deserialize_with = "crate::protocol::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub stock_quantity: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "crate::protocol::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_quantity_per_order: Option<Option<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_grams: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_shipping: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclosures: Option<Vec<Disclosure>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disclosure {
    pub content_type: ContentType,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Plain,
    Markdown,
}

const TAX_CATEGORIES: &[&str] = &["standard", "reduced", "zero", "exempt", "digital"];

/// Parses JSONL: one value per non-blank line, each checked by `check`.
fn parse_lines<T: for<'de> Deserialize<'de>>(
    text: &str,
    check: impl Fn(&T) -> Result<(), (String, String)>,
) -> Result<Vec<T>, CatalogError> {
    let mut out = Vec::new();
    for (line, raw) in numbered_lines(text) {
        let value = parse_line(raw, &check).map_err(|(param, message)| CatalogError::Line { line, param, message })?;
        out.push(value);
    }
    Ok(out)
}

/// The non-blank lines of a JSONL text, with their 1-based line numbers.
pub fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, raw)| !raw.trim().is_empty())
        .map(|(index, raw)| (index + 1, raw))
}

/// One JSONL line as a `T` that passes `check`, or the JSONPath inside the line of what is wrong and why.
pub fn parse_line<T: for<'de> Deserialize<'de>>(
    raw: &str,
    check: impl Fn(&T) -> Result<(), (String, String)>,
) -> Result<T, (String, String)> {
    // Parsed as JSON first so that what PostgreSQL cannot store (NUL) is refused at its place.
    let json: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| ("$".to_owned(), format!("not valid JSON: {e}")))?;
    crate::input_limits::check_json(&json).map_err(|r| (r.param, r.message))?;
    let value: T = serde_path_to_error::deserialize(json)
        .map_err(|e| (crate::jsonpath::from_serde_path(e.path()), e.inner().to_string()))?;
    check(&value)?;
    Ok(value)
}

pub fn parse_products(text: &str) -> Result<Vec<feed::Product>, CatalogError> {
    parse_lines(text, feed::check)
}

pub fn parse_attributes(text: &str) -> Result<Vec<Attributes>, CatalogError> {
    parse_lines(text, check_attributes)
}

fn check_attributes(a: &Attributes) -> Result<(), (String, String)> {
    if let Some(Some(0)) = a.max_quantity_per_order {
        return Err(("$.max_quantity_per_order".into(), "must be at least 1".into()));
    }
    if let Some(category) = &a.tax_category
        && !TAX_CATEGORIES.contains(&category.as_str())
    {
        return Err((
            "$.tax_category".into(),
            format!("must be one of {}", TAX_CATEGORIES.join(", ")),
        ));
    }
    for (i, d) in a.disclosures.iter().flatten().enumerate() {
        if d.content_type == ContentType::Markdown && markdown::contains_raw_html(&d.content) {
            return Err((
                format!("$.disclosures[{i}].content"),
                "markdown must not contain raw HTML".into(),
            ));
        }
    }
    Ok(())
}

/// Upserts products and their variants in one transaction. Variants dropped from a product's feed are removed;
/// merchant-only attributes of the variants that remain are kept.
pub async fn upsert_products(pool: &PgPool, products: &[feed::Product]) -> Result<usize, CatalogError> {
    let mut tx = pool.begin().await?;
    upsert_products_in(&mut tx, products).await?;
    tx.commit().await?;
    Ok(products.len())
}

/// The same in the caller's transaction.
pub async fn upsert_products_in(conn: &mut PgConnection, products: &[feed::Product]) -> Result<(), sqlx::Error> {
    for product in products {
        upsert_product(conn, product).await?;
    }
    Ok(())
}

async fn upsert_product(conn: &mut PgConnection, product: &feed::Product) -> Result<(), sqlx::Error> {
    let feed = serde_json::to_value(product).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "insert into product (product_id, feed) values ($1, $2)
         on conflict (product_id) do update set feed = excluded.feed, updated_at = now()",
    )
    .bind(&product.id)
    .bind(&feed)
    .execute(&mut *conn)
    .await?;
    let ids: Vec<&str> = product.variants.iter().map(|v| v.id.as_str()).collect();
    sqlx::query("delete from variant where product_id = $1 and variant_id <> all($2)")
        .bind(&product.id)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    for v in &product.variants {
        upsert_variant(conn, product, v).await?;
    }
    Ok(())
}

async fn upsert_variant(
    conn: &mut PgConnection,
    product: &feed::Product,
    v: &feed::Variant,
) -> Result<(), sqlx::Error> {
    let description = v
        .description
        .as_ref()
        .or(product.description.as_ref())
        .and_then(|d| d.plain.clone().or_else(|| d.markdown.clone()));
    let image = v
        .media
        .iter()
        .chain(product.media.iter())
        .flatten()
        .find(|m| m.kind == "image")
        .map(|m| m.url.clone());
    let available = v.availability.as_ref().and_then(|a| a.available).unwrap_or(true);
    let category = v.categories.as_ref().and_then(|c| c.first()).map(|c| c.value.clone());
    let status = v.availability.as_ref().and_then(|a| a.status.clone());
    sqlx::query(
        "insert into variant (variant_id, product_id, title, description, url, image_url, price_amount, currency,
                              available, availability_status, category)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (variant_id) do update set
             product_id = excluded.product_id, title = excluded.title, description = excluded.description,
             url = excluded.url, image_url = excluded.image_url, price_amount = excluded.price_amount,
             currency = excluded.currency, available = excluded.available,
             availability_status = excluded.availability_status, category = excluded.category, updated_at = now()",
    )
    .bind(&v.id)
    .bind(&product.id)
    .bind(&v.title)
    .bind(description)
    .bind(v.url.as_ref().or(product.url.as_ref()))
    .bind(image)
    .bind(v.price.as_ref().map(|p| p.amount as i64))
    .bind(v.price.as_ref().map(|p| p.currency.to_ascii_lowercase()))
    .bind(available)
    .bind(status)
    .bind(category)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies attribute records; every variant they name must exist. All or nothing.
pub async fn apply_attributes(pool: &PgPool, records: &[Attributes]) -> Result<usize, CatalogError> {
    let mut tx = pool.begin().await?;
    for (index, a) in records.iter().enumerate() {
        let disclosures = match &a.disclosures {
            Some(d) => Some(serde_json::to_value(d).map_err(|e| sqlx::Error::Encode(Box::new(e)))?),
            None => None,
        };
        let updated = sqlx::query(
            "update variant set
                 stock_quantity = case when $2 then $3 else stock_quantity end,
                 max_quantity_per_order = case when $4 then $5 else max_quantity_per_order end,
                 tax_category = coalesce($6, tax_category),
                 weight_grams = coalesce($7, weight_grams),
                 requires_shipping = coalesce($8, requires_shipping),
                 disclosures = coalesce($9, disclosures),
                 updated_at = now()
             where variant_id = $1",
        )
        .bind(&a.variant_id)
        .bind(a.stock_quantity.is_some())
        .bind(a.stock_quantity.flatten().map(|n| n as i32))
        .bind(a.max_quantity_per_order.is_some())
        .bind(a.max_quantity_per_order.flatten().map(|n| n as i32))
        .bind(&a.tax_category)
        .bind(a.weight_grams.map(|n| n as i32))
        .bind(a.requires_shipping)
        .bind(disclosures)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(CatalogError::Line {
                line: index + 1,
                param: "$.variant_id".into(),
                message: format!("unknown variant `{}`", a.variant_id),
            });
        }
    }
    tx.commit().await?;
    Ok(records.len())
}

/// Every product as a feed `Product`, one JSON line each, in id order.
pub async fn export_jsonl(pool: &PgPool) -> Result<String, CatalogError> {
    let rows: Vec<serde_json::Value> = sqlx::query_scalar("select feed from product order by product_id")
        .fetch_all(pool)
        .await?;
    let mut out = String::new();
    for feed in rows {
        out.push_str(&feed.to_string());
        out.push('\n');
    }
    Ok(out)
}

/// Every stored product as its feed Product, in id order.
pub async fn stored_products(pool: &PgPool) -> Result<Vec<feed::Product>, CatalogError> {
    let rows: Vec<(String, serde_json::Value)> =
        sqlx::query_as("select product_id, feed from product order by product_id")
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(product_id, feed)| {
            serde_json::from_value(feed).map_err(|e| CatalogError::Stored {
                product_id,
                message: e.to_string(),
            })
        })
        .collect()
}

/// What checkout needs to know about one variant.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VariantRow {
    pub variant_id: String,
    pub product_id: String,
    pub title: String,
    pub description: Option<String>,
    pub url: Option<String>,
    pub image_url: Option<String>,
    pub price_amount: Option<i64>,
    pub currency: Option<String>,
    pub available: bool,
    pub stock_quantity: Option<i32>,
    pub max_quantity_per_order: Option<i32>,
    pub tax_category: String,
    pub weight_grams: i32,
    pub requires_shipping: bool,
    pub disclosures: sqlx::types::Json<Vec<Disclosure>>,
    pub category: Option<String>,
}

/// `stock_quantity` here is what can still be promised: on hand minus what sessions being paid for reserved.
const VARIANT_COLUMNS: &str = "variant_id, product_id, title, description, url, image_url, price_amount, currency,
    available,
    case when stock_quantity is null then null else greatest(stock_quantity - stock_reserved, 0) end as stock_quantity,
    max_quantity_per_order, tax_category, weight_grams, requires_shipping, disclosures,
    category";

/// Loads the named variants (unknown ids are simply absent from the result).
pub async fn variants(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<VariantRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {VARIANT_COLUMNS} from variant where variant_id = any($1)"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Same, locking the rows (in id order, so concurrent completes cannot deadlock) until the transaction ends,
/// with the stored pricing rules' version read by the same statement (`None` when no row came back: nothing was
/// read then). Complete confirms its cached rules against that version without a round trip of its own.
pub async fn variants_for_update(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<(Vec<VariantRow>, Option<RulesVersion>), sqlx::Error> {
    let rows: Vec<LockedVariant> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {VARIANT_COLUMNS}, (select version from pricing_rules where singleton) as rules_version
         from variant where variant_id = any($1) order by variant_id for update"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let version = rows.first().map(|r| RulesVersion(r.rules_version));
    Ok((rows.into_iter().map(|r| r.variant).collect(), version))
}

/// The stored pricing rules' version as a statement read it (`None` inside: no rules stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RulesVersion(pub Option<i64>);

#[derive(sqlx::FromRow)]
struct LockedVariant {
    #[sqlx(flatten)]
    variant: VariantRow,
    rules_version: Option<i64>,
}
