//! PostgreSQL access: the pool, the embedded migrations, and the readiness probe.
//!
//! The pool connects lazily so the server starts while the database is briefly unavailable; a background
//! migrator retries until it succeeds, and `/readyz` reports not-ready until the schema is current.

pub mod kept;

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::{MigrateError, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// Migrations are compiled into the binary: the container image carries no SQL files.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not set")]
    MissingUrl,
    #[error("invalid DATABASE_URL")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] MigrateError),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
}

/// Builds the request pool without connecting: connection errors surface per query and through `/readyz`.
pub fn lazy_pool(settings: &Settings) -> Result<PgPool, DbError> {
    pool_of_size(settings, settings.db_max_connections)
}

/// The background pool (webhook worker, sweepers, reconciler), built the same way. Kept apart from the request
/// pool: under load hundreds of requests queue for a request connection, and a webhook record or a sweep queued
/// behind them would wait as long (the benchmark saw order webhooks lag by seconds that way).
pub fn lazy_background_pool(settings: &Settings) -> Result<PgPool, DbError> {
    pool_of_size(settings, settings.db_background_connections)
}

/// The read pool: session GETs, one statement each, on connections [`kept::KeptConnections`] keeps between
/// reads. Apart from the request pool, so a kept connection never makes a transaction wait.
pub fn lazy_read_pool(settings: &Settings) -> Result<PgPool, DbError> {
    pool_of_size(settings, settings.db_read_connections)
}

/// A value written to a `json` column (PostgreSQL keeps its text as sent). The large documents every checkout
/// request writes and reads (a session's state, an order, a webhook payload) were `jsonb`, which PostgreSQL parses
/// into its binary form on every write and prints back to text on every read; nothing queries inside them, so
/// `json` saves the database that work (issue 14). sqlx's own `Json` always declares `jsonb`.
pub struct JsonText<T>(pub T);

impl<T> sqlx::Type<sqlx::Postgres> for JsonText<T> {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        // The `json` type's fixed OID.
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(114))
    }
}

impl<T: serde::Serialize> sqlx::Encode<'_, sqlx::Postgres> for JsonText<T> {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        serde_json::to_writer(&mut **buf, &self.0)?;
        Ok(sqlx::encode::IsNull::No)
    }
}

fn pool_of_size(settings: &Settings, size: u32) -> Result<PgPool, DbError> {
    let url = settings.database_url.as_ref().ok_or(DbError::MissingUrl)?;
    let options: PgConnectOptions = url.expose().parse().map_err(DbError::InvalidUrl)?;
    let options = options.application_name("acp-merchant");
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        // No ping before every acquire (a round trip per request): a broken connection fails its query, which
        // answers 503 and is dropped by the pool.
        .test_before_acquire(false)
        // sqlx opens connections inside `acquire`, so this bounds connecting as well as waiting for a free slot.
        .acquire_timeout(settings.db_acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(options))
}

/// Applies pending migrations once.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Retries [`migrate`] until it succeeds or `stop` fires. A database that is down at start-up is expected
/// (containers start in any order); a migration that fails on a reachable database is logged loudly and retried,
/// and the process stays not-ready meanwhile.
pub async fn migrate_until_done(pool: PgPool, retry_every: Duration, stop: CancellationToken) {
    loop {
        match migrate(&pool).await {
            Ok(()) => {
                tracing::info!("database migrations are current");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "migrations not applied yet; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry_every) => {}
        }
    }
}

/// Why the service is not ready, for the `/readyz` body.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("database unreachable")]
    Unreachable,
    #[error("database migrations pending")]
    MigrationsPending,
}

/// Ready = the database answers and every embedded migration is applied successfully.
pub async fn check_ready(pool: &PgPool, timeout: Duration) -> Result<(), NotReady> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let query =
        sqlx::query_scalar::<_, Option<i64>>("select max(version) from _sqlx_migrations where success").fetch_one(pool);
    match tokio::time::timeout(timeout, query).await {
        Ok(Ok(Some(applied))) if applied >= latest => Ok(()),
        Ok(Ok(_)) => Err(NotReady::MigrationsPending),
        // An undefined table means the schema was never migrated: reachable but not ready.
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("42P01") => Err(NotReady::MigrationsPending),
        Ok(Err(_)) | Err(_) => Err(NotReady::Unreachable),
    }
}
