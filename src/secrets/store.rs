//! The columns that hold secrets, and the two whole-table passes over them: sealing rows still in clear (a
//! start-up step right after the migrations, since SQL cannot know the key) and re-sealing under the active key
//! (`acp-merchant secrets rotate`). Each pass is one transaction: it applies entirely or not at all.

use sqlx::{PgConnection, PgPool};

use super::{Keyring, SecretsError};

/// Context (associated data) of `agent.webhook_secret`.
pub const AGENT_WEBHOOK_SECRET: &str = "agent.webhook_secret";
/// Context (associated data) of `agent_webhook_secret.secret` (secrets rotated through the admin API).
pub const ROTATED_WEBHOOK_SECRET: &str = "agent_webhook_secret.secret";
/// Context (associated data) of `agent_request_signature.hmac_secret` (agents' HMAC request-signing secrets).
pub const REQUEST_SIGNATURE_HMAC_SECRET: &str = "agent_request_signature.hmac_secret";
/// Context (associated data) of `merchant_endpoint.secret` (merchant webhook endpoints' `whsec_` secrets).
pub const MERCHANT_ENDPOINT_SECRET: &str = "merchant_endpoint.secret";

/// A column holding secrets, in a table keyed by the text column `key`. The context is `<table>.<column>`.
struct Place {
    table: &'static str,
    key: &'static str,
    column: &'static str,
    context: &'static str,
}

/// Every secret column. Agent API keys are not here: only their SHA-256 is stored (`agent.api_key_sha256`).
const PLACES: &[Place] = &[
    Place {
        table: "agent",
        key: "agent_id",
        column: "webhook_secret",
        context: AGENT_WEBHOOK_SECRET,
    },
    Place {
        table: "agent_webhook_secret",
        key: "agent_id",
        column: "secret",
        context: ROTATED_WEBHOOK_SECRET,
    },
    Place {
        table: "agent_request_signature",
        key: "agent_id",
        column: "hmac_secret",
        context: REQUEST_SIGNATURE_HMAC_SECRET,
    },
    Place {
        table: "merchant_endpoint",
        key: "endpoint_id",
        column: "secret",
        context: MERCHANT_ENDPOINT_SECRET,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{context} of {agent_id}: {source}")]
    Secret {
        context: &'static str,
        agent_id: String,
        #[source]
        source: SecretsError,
    },
}

/// What a pass changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Rows that were in clear and are now sealed.
    pub sealed_from_clear: u64,
    /// Rows that were sealed with an older key and now are sealed with the active one.
    pub rotated: u64,
}

/// Seals every secret still stored in clear; rows already sealed are left alone (idempotent).
pub async fn seal_clear_rows(pool: &PgPool, keyring: &Keyring) -> Result<Resealed, StoreError> {
    let mut tx = pool.begin().await?;
    let mut done = Resealed::default();
    for place in PLACES {
        for (agent_id, stored) in rows(&mut tx, place).await? {
            if !Keyring::is_sealed(&stored) {
                write(&mut tx, place, &agent_id, &keyring.seal(place.context, &stored)).await?;
                done.sealed_from_clear += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(done)
}

/// Re-seals every secret with the active key (clear rows get sealed too). A row sealed with a key that is no
/// longer configured fails the whole pass, naming the key id.
pub async fn rotate(pool: &PgPool, keyring: &Keyring) -> Result<Resealed, StoreError> {
    let mut tx = pool.begin().await?;
    let mut done = Resealed::default();
    for place in PLACES {
        for (agent_id, stored) in rows(&mut tx, place).await? {
            let Some(key_id) = Keyring::sealed_key_id(&stored) else {
                write(&mut tx, place, &agent_id, &keyring.seal(place.context, &stored)).await?;
                done.sealed_from_clear += 1;
                continue;
            };
            if key_id == keyring.active_key_id() {
                continue;
            }
            let clear = keyring
                .open(place.context, &stored)
                .map_err(|source| StoreError::Secret {
                    context: place.context,
                    agent_id: agent_id.clone(),
                    source,
                })?;
            write(&mut tx, place, &agent_id, &keyring.seal(place.context, clear.expose())).await?;
            done.rotated += 1;
        }
    }
    tx.commit().await?;
    Ok(done)
}

/// Every non-null value of `place`, locked until the transaction ends.
async fn rows(conn: &mut PgConnection, place: &Place) -> Result<Vec<(String, String)>, sqlx::Error> {
    let sql = format!(
        "select {key}, {column} from {table} where {column} is not null order by {key} for update",
        key = place.key,
        column = place.column,
        table = place.table
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(conn).await
}

async fn write(conn: &mut PgConnection, place: &Place, agent_id: &str, sealed: &str) -> Result<(), sqlx::Error> {
    let sql = format!(
        "update {table} set {column} = $2 where {key} = $1",
        key = place.key,
        column = place.column,
        table = place.table
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agent_id)
        .bind(sealed)
        .execute(conn)
        .await?;
    Ok(())
}
