//! Pricing rules in PostgreSQL: one validated bundle, versioned, cached per process.

use std::sync::Arc;

use sqlx::{PgConnection, types::Json};
use tokio::sync::RwLock;

use super::{Rules, currency, rules::PromotionKind};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A rule is wrong; `param` is its JSONPath inside the bundle.
    #[error("{param}: {message}")]
    Invalid { param: String, message: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

fn invalid(param: String, message: impl Into<String>) -> RulesError {
    RulesError::Invalid {
        param,
        message: message.into(),
    }
}

/// Refuses bundles that could price wrongly: negative or absurd rates and amounts, unknown currencies, empty
/// zones, inverted windows, and exclusive automatic promotions whose validity windows overlap (which one applies
/// would depend on their order).
pub fn validate(rules: &Rules) -> Result<(), RulesError> {
    if let Some(code) = &rules.currency
        && currency::exponent(code).is_none()
    {
        return Err(invalid("$.currency".into(), format!("unknown currency `{code}`")));
    }
    for (i, t) in rules.taxes.iter().enumerate() {
        if t.rate.is_sign_negative() || t.rate > rust_decimal::Decimal::ONE {
            return Err(invalid(
                format!("$.taxes[{i}].rate"),
                "a tax rate is a fraction between 0 and 1",
            ));
        }
        if t.country.len() != 2 {
            return Err(invalid(format!("$.taxes[{i}].country"), "an ISO 3166-1 alpha-2 code"));
        }
    }
    for (i, m) in rules.shipping.iter().enumerate() {
        if m.countries.is_empty() {
            return Err(invalid(
                format!("$.shipping[{i}].countries"),
                "a method must serve at least one country",
            ));
        }
        if m.bands.iter().any(|b| b.amount < 0 || b.min_subtotal < 0) || m.per_kg < 0 {
            return Err(invalid(
                format!("$.shipping[{i}].bands"),
                "amounts must not be negative",
            ));
        }
        if m.min_business_days > m.max_business_days {
            return Err(invalid(
                format!("$.shipping[{i}].min_business_days"),
                "must not exceed max_business_days",
            ));
        }
    }
    for (i, p) in rules.promotions.iter().enumerate() {
        match &p.kind {
            PromotionKind::Percent { rate } if rate.is_sign_negative() || *rate > rust_decimal::Decimal::ONE => {
                return Err(invalid(
                    format!("$.promotions[{i}].kind.rate"),
                    "a percentage is a fraction between 0 and 1",
                ));
            }
            PromotionKind::Fixed { amount } if *amount <= 0 => {
                return Err(invalid(format!("$.promotions[{i}].kind.amount"), "must be positive"));
            }
            _ => {}
        }
        if let (Some(start), Some(end)) = (p.starts_at, p.ends_at)
            && start >= end
        {
            return Err(invalid(format!("$.promotions[{i}].ends_at"), "must be after starts_at"));
        }
    }
    let exclusive: Vec<(usize, &super::rules::Promotion)> = rules
        .promotions
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.stackable && p.code.is_none())
        .collect();
    for (a, (_, first)) in exclusive.iter().enumerate() {
        for (j, second) in exclusive.iter().skip(a + 1) {
            let starts_before_end =
                |x: &super::rules::Promotion, y: &super::rules::Promotion| match (x.starts_at, y.ends_at) {
                    (Some(s), Some(e)) => s < e,
                    _ => true,
                };
            if starts_before_end(first, second) && starts_before_end(second, first) {
                return Err(invalid(
                    format!("$.promotions[{j}]"),
                    format!(
                        "exclusive automatic promotions `{}` and `{}` overlap",
                        first.id, second.id
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Stores a validated bundle and bumps the version.
pub async fn save(conn: &mut PgConnection, rules: &Rules) -> Result<i64, RulesError> {
    validate(rules)?;
    let version: i64 = sqlx::query_scalar(
        "insert into pricing_rules (singleton, rules) values (true, $1)
         on conflict (singleton) do update set rules = excluded.rules, version = pricing_rules.version + 1,
                                               updated_at = now()
         returning version",
    )
    .bind(Json(rules))
    .fetch_one(conn)
    .await?;
    Ok(version)
}

/// The stored bundle and its version, if any.
pub async fn load(conn: &mut PgConnection) -> Result<Option<(i64, Rules)>, sqlx::Error> {
    let row: Option<(i64, Json<Rules>)> = sqlx::query_as("select version, rules from pricing_rules where singleton")
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|(v, Json(r))| (v, r)))
}

/// A loaded bundle and the version it was loaded at.
type Snapshot = (i64, Arc<Rules>);

/// The process's snapshot: checked against the stored version before each use (one indexed read), reloaded only
/// when it changed. Without a stored bundle, `fallback` (built from configuration) applies.
#[derive(Clone)]
pub struct RulesCache {
    fallback: Arc<Rules>,
    snapshot: Arc<RwLock<Option<Snapshot>>>,
}

impl RulesCache {
    pub fn new(fallback: Rules) -> Self {
        Self {
            fallback: Arc::new(fallback),
            snapshot: Arc::new(RwLock::new(None)),
        }
    }

    /// The bundle that applies while none is stored.
    pub fn fallback(&self) -> &Rules {
        &self.fallback
    }

    pub async fn current(&self, conn: &mut PgConnection) -> Result<Arc<Rules>, sqlx::Error> {
        let stored: Option<i64> = sqlx::query_scalar("select version from pricing_rules where singleton")
            .fetch_optional(&mut *conn)
            .await?;
        let Some(version) = stored else {
            return Ok(self.fallback.clone());
        };
        if let Some((cached, rules)) = self.snapshot.read().await.as_ref()
            && *cached == version
        {
            return Ok(rules.clone());
        }
        let fresh = load(conn).await?.map(|(v, r)| (v, Arc::new(r)));
        let rules = fresh.as_ref().map_or_else(|| self.fallback.clone(), |(_, r)| r.clone());
        *self.snapshot.write().await = fresh;
        Ok(rules)
    }
}
