//! Pricing rules in PostgreSQL: one validated bundle, versioned, cached per process and refreshed on change.

use std::sync::{Arc, PoisonError, RwLock};

use sqlx::{PgConnection, types::Json};

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
    if let Some((param, message)) = rules.sales_policy.problem() {
        return Err(invalid(param, message));
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

/// The bundle a process prices with and the stored version it came from (`None`: nothing stored, the
/// configuration's fallback applies).
#[derive(Clone)]
struct Snapshot {
    version: Option<i64>,
    rules: Arc<Rules>,
}

/// The process's copy of the pricing rules. Create and update price with it without reading anything: it is
/// loaded once, then replaced when this process stores a bundle ([`RulesCache::install`]) and when PostgreSQL
/// notifies a change or the fallback poll sees a new version (the listener in [`super::listener`]). Complete
/// confirms the version inside its own transaction ([`RulesCache::confirm`]) so it never charges under stale rules.
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

    /// The rules in force: the cached bundle, read from the database only before the first load.
    pub async fn current(&self, conn: &mut PgConnection) -> Result<Arc<Rules>, sqlx::Error> {
        if let Some(cached) = self.cached() {
            return Ok(cached.rules);
        }
        Ok(self.reload(conn).await?.rules)
    }

    /// The cached version (`None`: not loaded yet, or nothing stored).
    pub fn version(&self) -> Option<i64> {
        self.cached().and_then(|s| s.version)
    }

    /// The rules stored at `version` (what the caller's transaction just read): the cached bundle when it is that
    /// version, else the stored bundle reloaded through `conn` (in the caller's transaction, so it matches).
    pub async fn confirm(&self, conn: &mut PgConnection, version: Option<i64>) -> Result<Arc<Rules>, sqlx::Error> {
        match self.cached() {
            Some(cached) if cached.version == version => Ok(cached.rules),
            _ => Ok(self.reload(conn).await?.rules),
        }
    }

    /// Reloads the stored bundle if its version differs from the cached one; returns whether it did.
    pub async fn refresh(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        let stored: Option<i64> = sqlx::query_scalar("select version from pricing_rules where singleton")
            .fetch_optional(&mut *conn)
            .await?;
        if self.cached().is_some_and(|c| c.version == stored) {
            return Ok(false);
        }
        self.reload(conn).await?;
        Ok(true)
    }

    /// Takes a bundle this process just stored at `version` (after its transaction committed).
    pub fn install(&self, version: i64, rules: Rules) {
        self.replace(Snapshot {
            version: Some(version),
            rules: Arc::new(rules),
        });
    }

    /// Loads the stored bundle (or the fallback when none is stored) and caches it.
    async fn reload(&self, conn: &mut PgConnection) -> Result<Snapshot, sqlx::Error> {
        let fresh = match load(conn).await? {
            Some((version, rules)) => Snapshot {
                version: Some(version),
                rules: Arc::new(rules),
            },
            None => Snapshot {
                version: None,
                rules: self.fallback.clone(),
            },
        };
        self.replace(fresh.clone());
        Ok(fresh)
    }

    fn cached(&self) -> Option<Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Versions only move forward: a slow reload never replaces a newer bundle installed meanwhile.
    fn replace(&self, fresh: Snapshot) {
        let mut slot = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_none_or(|current| current.version <= fresh.version) {
            *slot = Some(fresh);
        }
    }
}
