//! Private PostgreSQL clusters on this machine, for the demo command and the test suite.
//!
//! The logic lives in `scripts/pg-local` (embedded here so the binary works from any directory): it installs
//! Debian's `postgresql` when missing, runs `initdb` as the `postgres` user when we are root, binds 127.0.0.1 on a
//! free port and locks against concurrent callers.

use std::process::Command;

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

const PG_LOCAL: &str = include_str!("../scripts/pg-local");

#[derive(Debug, thiserror::Error)]
pub enum LocalDbError {
    #[error("could not run bash for pg-local: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("pg-local {command} failed: {stderr}")]
    Script { command: String, stderr: String },
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
}

fn run(command: &str, cluster: &str) -> Result<String, LocalDbError> {
    let output = Command::new("bash")
        .arg("-c")
        .arg(PG_LOCAL)
        .arg("pg-local")
        .arg(command)
        .arg(cluster)
        .output()?;
    if !output.status.success() {
        return Err(LocalDbError::Script {
            command: format!("{command} {cluster}"),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Ensures cluster `name` exists and runs; returns the URL of its `postgres` maintenance database.
pub fn cluster_url(name: &str) -> Result<String, LocalDbError> {
    run("url", name)
}

pub fn stop_cluster(name: &str) -> Result<(), LocalDbError> {
    run("stop", name).map(drop)
}

pub fn start_cluster(name: &str) -> Result<(), LocalDbError> {
    run("start", name).map(drop)
}

/// Returns `admin_url` with its database replaced by `database`.
pub fn with_database(admin_url: &str, database: &str) -> String {
    match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => format!("{admin_url}/{database}"),
    }
}

/// Creates `database` on the cluster behind `admin_url` unless it exists. `database` must be a plain
/// identifier (it is interpolated: CREATE DATABASE takes no bind parameters).
pub async fn ensure_database(admin_url: &str, database: &str) -> Result<(), LocalDbError> {
    assert!(
        database
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "database names are plain identifiers"
    );
    let options: PgConnectOptions = admin_url.parse()?;
    let mut conn = PgConnection::connect_with(&options).await?;
    let exists: bool = sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
        .bind(database)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("create database {database}")))
            .execute(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            // Someone else created it between our check and our create.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}
