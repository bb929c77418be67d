//! Where an event goes and how it is signed: the one place the worker learns a destination, so another kind
//! (merchant endpoints, issue 15) plugs in beside the agent's without touching the delivery loop.
//!
//! One query serves a whole batch: the agent rows and rotated secrets of every agent in it.

use std::{collections::HashMap, sync::Arc};

use reqwest::Url;
use sqlx::PgPool;

use crate::{
    config::Secret,
    secrets::{
        Keyring, SecretsError,
        store::{AGENT_WEBHOOK_SECRET, MERCHANT_ENDPOINT_SECRET, ROTATED_WEBHOOK_SECRET},
    },
};

const CANONICAL_PATH: &str = "/agentic_checkout/webhooks/order_events";

/// How a delivery is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningScheme {
    /// `Merchant-Signature: t=…,v1=…` (ACP 2026-04-17; see [`super::signer`]), to an agent.
    MerchantSignature,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` (see [`super::standard`]), to a merchant endpoint.
    StandardWebhooks,
}

/// A resolved destination. A secret that does not open is kept as its error: the attempt is recorded as a
/// (retried) failure, as the operator may yet configure the key it was sealed with.
pub struct Destination {
    pub url: Url,
    pub secret: Result<Secret, SecretsError>,
    pub scheme: SigningScheme,
}

impl Destination {
    /// Deliveries to one host and port share a concurrency bound.
    pub fn host_key(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port_or_known_default().unwrap_or_default();
        format!("{host}:{port}")
    }
}

/// The agents' webhook targets: the environment agent's from configuration, the others' from their rows; a rotated
/// secret (admin API) wins over both.
#[derive(Clone)]
pub struct AgentTargets {
    pub env_agent_id: String,
    pub env_url: Option<Url>,
    pub env_secret: Option<Secret>,
    /// Opens the signing secrets stored (sealed) in the database.
    pub keyring: Keyring,
}

type AgentRow = (String, Option<String>, Option<String>, Option<String>);

impl AgentTargets {
    /// The destinations of `agent_ids`, in one query; agents with no URL or no secret are absent.
    pub async fn lookup(
        &self,
        pool: &PgPool,
        agent_ids: &[String],
    ) -> Result<HashMap<String, Arc<Destination>>, sqlx::Error> {
        let rows: Vec<AgentRow> = sqlx::query_as(
            "select ids.agent_id, a.webhook_url, a.webhook_secret, r.secret
             from unnest($1::text[]) as ids (agent_id)
             left join agent a on a.agent_id = ids.agent_id
             left join agent_webhook_secret r on r.agent_id = ids.agent_id",
        )
        .bind(agent_ids)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let agent_id = row.0.clone();
                self.destination(row).map(|d| (agent_id, Arc::new(d)))
            })
            .collect())
    }

    fn destination(&self, (agent_id, row_url, row_secret, rotated): AgentRow) -> Option<Destination> {
        let rotated = rotated.map(|stored| self.keyring.open(ROTATED_WEBHOOK_SECRET, &stored));
        let (url, secret) = if agent_id == self.env_agent_id {
            (self.env_url.clone(), self.env_secret.clone().map(Ok))
        } else {
            let secret = row_secret.map(|stored| self.keyring.open(AGENT_WEBHOOK_SECRET, &stored));
            (row_url.and_then(|u| Url::parse(&u).ok()), secret)
        };
        Some(Destination {
            url: endpoint(url?),
            secret: rotated.or(secret)?,
            scheme: SigningScheme::MerchantSignature,
        })
    }
}

/// The merchant's endpoints of a batch, in one query: enabled ones with their secret opened, disabled ones as
/// `None` (their events fail as refused, to be replayed once the endpoint is enabled again).
pub async fn merchant_endpoints(
    pool: &PgPool,
    keyring: &Keyring,
    endpoint_ids: &[String],
) -> Result<HashMap<String, Option<Arc<Destination>>>, sqlx::Error> {
    let rows: Vec<(String, String, String, bool)> =
        sqlx::query_as("select endpoint_id, url, secret, enabled from merchant_endpoint where endpoint_id = any($1)")
            .bind(endpoint_ids)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, url, secret, enabled)| {
            let destination = Url::parse(&url).ok().filter(|_| enabled).map(|url| {
                Arc::new(Destination {
                    url,
                    secret: keyring.open(MERCHANT_ENDPOINT_SECRET, &secret),
                    scheme: SigningScheme::StandardWebhooks,
                })
            });
            (id, destination)
        })
        .collect())
}

/// A configured base URL gets the ACP webhook path; a full endpoint URL is used as it is.
fn endpoint(url: Url) -> Url {
    if url.path().ends_with("order_events") {
        return url;
    }
    let joined = format!("{}{CANONICAL_PATH}", url.as_str().trim_end_matches('/'));
    Url::parse(&joined).unwrap_or(url)
}
