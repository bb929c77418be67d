//! Per-agent signature settings in PostgreSQL (`agent_request_signature`). Every read and write of the HMAC
//! secret column goes through [`seal_signing_secret`] / [`open_signing_secret`].

use sqlx::PgPool;

use super::{AgentSignature, Algorithm, Covers, KeyError, Mode, VerifyKey};
use crate::config::{Secret, Settings};
use crate::secrets::store::REQUEST_SIGNATURE_HMAC_SECRET;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A stored row no longer parses (edited by hand, or a secret that cannot be opened).
    #[error("stored signature settings for an agent are unusable: {0}")]
    Corrupt(String),
}

/// How the HMAC secret is written to the database: sealed with the secrets keyring, bound to its column.
pub fn seal_signing_secret(settings: &Settings, secret: &Secret) -> Result<String, StoreError> {
    Ok(settings
        .secrets_keys
        .seal(REQUEST_SIGNATURE_HMAC_SECRET, secret.expose()))
}

/// The inverse of [`seal_signing_secret`].
pub fn open_signing_secret(settings: &Settings, stored: &str) -> Result<Secret, StoreError> {
    settings
        .secrets_keys
        .open(REQUEST_SIGNATURE_HMAC_SECRET, stored)
        .map_err(|e| StoreError::Corrupt(format!("the HMAC secret does not open: {e}")))
}

#[derive(sqlx::FromRow)]
struct Row {
    mode: String,
    algorithm: Option<String>,
    covers: String,
    public_key: Option<String>,
    hmac_secret: Option<String>,
}

/// An agent row joined with its policy row, absent when it has none.
#[derive(sqlx::FromRow)]
struct AgentRow {
    agent_id: String,
    mode: Option<String>,
    algorithm: Option<String>,
    covers: Option<String>,
    public_key: Option<String>,
    hmac_secret: Option<String>,
}

/// The enabled agent whose API key has `key_digest` (SHA-256), with its policy (`off` when it has none): one
/// statement, since the signature layer needs both for every checkout request.
pub async fn authenticate(
    db: &PgPool,
    settings: &Settings,
    key_digest: &[u8],
) -> Result<Option<(String, AgentSignature)>, StoreError> {
    let row: Option<AgentRow> = sqlx::query_as(
        "select a.agent_id, s.mode, s.algorithm, s.covers, s.public_key, s.hmac_secret
         from agent a left join agent_request_signature s using (agent_id)
         where a.api_key_sha256 = $1 and a.disabled_at is null",
    )
    .bind(key_digest)
    .fetch_optional(db)
    .await?;
    let Some(AgentRow {
        agent_id,
        mode,
        algorithm,
        covers,
        public_key,
        hmac_secret,
    }) = row
    else {
        return Ok(None);
    };
    let policy = match (mode, covers) {
        (Some(mode), Some(covers)) => from_row(
            settings,
            Row {
                mode,
                algorithm,
                covers,
                public_key,
                hmac_secret,
            },
        )?,
        _ => AgentSignature::default(),
    };
    Ok(Some((agent_id, policy)))
}

fn from_row(settings: &Settings, row: Row) -> Result<AgentSignature, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_owned());
    let mode = Mode::parse(&row.mode).ok_or_else(|| corrupt("mode"))?;
    let covers = Covers::parse(&row.covers).ok_or_else(|| corrupt("covers"))?;
    let key = match row.algorithm.as_deref().map(Algorithm::parse) {
        None => None,
        Some(None) => return Err(corrupt("algorithm")),
        Some(Some(Algorithm::HmacSha256)) => {
            let sealed = row.hmac_secret.ok_or_else(|| corrupt("hmac_secret"))?;
            Some(VerifyKey::Hmac(open_signing_secret(settings, &sealed)?))
        }
        Some(Some(algorithm)) => {
            let text = row.public_key.ok_or_else(|| corrupt("public_key"))?;
            Some(VerifyKey::parse(algorithm, &text).map_err(|KeyError(e)| StoreError::Corrupt(e))?)
        }
    };
    if mode != Mode::Off && key.is_none() {
        return Err(corrupt("algorithm"));
    }
    Ok(AgentSignature { mode, covers, key })
}

/// What the admin route stores: the key text as given (public keys are not secret and are kept verbatim).
pub struct NewPolicy<'a> {
    pub mode: Mode,
    pub covers: Covers,
    pub algorithm: Option<Algorithm>,
    pub public_key: Option<&'a str>,
    pub hmac_secret: Option<&'a Secret>,
}

/// Creates or replaces an agent's policy.
pub async fn save(db: &PgPool, settings: &Settings, agent_id: &str, policy: &NewPolicy<'_>) -> Result<(), StoreError> {
    let sealed = policy
        .hmac_secret
        .map(|s| seal_signing_secret(settings, s))
        .transpose()?;
    sqlx::query(
        "insert into agent_request_signature (agent_id, mode, algorithm, covers, public_key, hmac_secret)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (agent_id) do update set mode = excluded.mode, algorithm = excluded.algorithm,
             covers = excluded.covers, public_key = excluded.public_key, hmac_secret = excluded.hmac_secret,
             updated_at = now()",
    )
    .bind(agent_id)
    .bind(policy.mode.as_str())
    .bind(policy.algorithm.map(Algorithm::as_str))
    .bind(policy.covers.as_str())
    .bind(policy.public_key)
    .bind(sealed)
    .execute(db)
    .await?;
    Ok(())
}
