//! The delivery worker: claims one due event at a time with `FOR UPDATE SKIP LOCKED` (so several workers, in one
//! or many processes, never deliver the same event at once), skips events whose order still has an earlier
//! pending event (per-order ordering), signs the exact bytes it sends (re-signed on every attempt), and records
//! the attempt and the event's next state in the same transaction. A crash mid-delivery rolls the claim back:
//! the event is delivered again later with the same `Webhook-Id` (at-least-once).
//!
//! Retries: the configured schedule (default 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then hourly) with ±20 %
//! jitter, `Retry-After` honoured (never shorter than the schedule, at most an hour), until the event is older
//! than the maximum age (24 h); 4xx answers other than 408 and 429 fail permanently after 3 tries; then the event
//! is dead-lettered (replayable through the admin API).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{
    Url,
    header::{CONTENT_TYPE, HeaderMap, HeaderValue},
};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    client::{Answer, ClientPolicy, DeliveryError, WebhookClient},
    signer,
};
use crate::{
    config::{Secret, Settings},
    secrets::{
        Keyring, SecretsError,
        store::{AGENT_WEBHOOK_SECRET, ROTATED_WEBHOOK_SECRET},
    },
};

/// The worker's knobs, from configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub poll_interval: Duration,
    pub schedule: Vec<Duration>,
    pub max_age: Duration,
    /// One HTTP client for every delivery.
    pub client: WebhookClient,
    /// The environment's agent webhook target.
    pub env_agent_id: String,
    pub env_url: Option<Url>,
    pub env_secret: Option<Secret>,
    /// Opens the signing secrets stored in the database.
    pub keyring: Keyring,
}

const PERMANENT_CLIENT_ERROR_TRIES: i32 = 3;
const CANONICAL_PATH: &str = "/agentic_checkout/webhooks/order_events";

impl WorkerConfig {
    /// Fails only when the HTTP client cannot be built (no usable TLS configuration).
    pub fn from_settings(settings: &Settings, env_agent_id: &str) -> Result<Self, DeliveryError> {
        let client = WebhookClient::new(ClientPolicy {
            connect_timeout: settings.webhook_connect_timeout,
            timeout: settings.webhook_timeout,
            max_response_bytes: settings.webhook_max_response_bytes,
            allow_insecure: !settings.is_production() || settings.allow_insecure_webhook_urls,
        })?;
        Ok(Self {
            poll_interval: settings.webhook_poll_interval,
            schedule: settings.webhook_retry_schedule.clone(),
            max_age: settings.webhook_max_age,
            client,
            env_agent_id: env_agent_id.to_owned(),
            env_url: settings.agent_webhook_url.clone(),
            env_secret: settings.agent_webhook_secret.clone(),
            keyring: settings.secrets_keys.clone(),
        })
    }

    /// Delay before attempt `attempts + 1`, with ±20 % jitter; `Retry-After` can lengthen it up to an hour.
    fn next_delay(&self, attempts: i32, retry_after: Option<Duration>) -> Duration {
        let index = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
        let base = self
            .schedule
            .get(index)
            .or(self.schedule.last())
            .copied()
            .unwrap_or(Duration::from_secs(3600));
        let jitter = 0.8 + 0.4 * (f64::from(Uuid::new_v4().as_bytes()[0]) / 255.0);
        let delay = base.mul_f64(jitter);
        match retry_after {
            Some(asked) => delay.max(asked.min(Duration::from_secs(3600))),
            None => delay,
        }
    }
}

/// Runs until `stop` fires: delivers due events, sleeping `poll_interval` when there is nothing to do.
pub async fn run(pool: PgPool, config: WorkerConfig, stop: CancellationToken) {
    tracing::info!("webhook delivery worker started");
    loop {
        if stop.is_cancelled() {
            return;
        }
        match deliver_one(&pool, &config).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "webhook delivery round failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

type DueEvent = (Uuid, String, String, String, Value, i32, i32, DateTime<Utc>);

/// Delivers the next due event, if any; returns whether there was one.
pub async fn deliver_one(pool: &PgPool, config: &WorkerConfig) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Option<DueEvent> = sqlx::query_as(
        "select e.event_id, e.order_id, e.agent_id, e.event_type, e.payload, e.attempts, e.client_error_attempts,
                e.created_at
         from webhook_event e
         where e.status = 'pending' and e.next_attempt_at <= now()
           and not exists (select 1 from webhook_event p
                           where p.order_id = e.order_id and p.sequence < e.sequence and p.status = 'pending')
         order by e.sequence
         limit 1
         for update skip locked",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((event_id, order_id, agent_id, event_type, payload, attempts, client_errors, created_at)) = due else {
        tx.commit().await?;
        return Ok(false);
    };
    let target = target_for(&mut tx, config, &agent_id).await?;
    let attempt = match &target {
        Some((url, Ok(secret))) => attempt(url, secret.expose(), event_id, &payload, config).await,
        // Retried: the operator may yet configure the key it was sealed with.
        Some((_, Err(e))) => Attempt {
            result: Err(DeliveryError::Transport(format!(
                "the signing secret does not open: {e}"
            ))),
            duration_ms: 0,
        },
        None => Attempt {
            result: Err(DeliveryError::Refused(
                "the agent has no webhook URL or secret configured".into(),
            )),
            duration_ms: 0,
        },
    };
    let url = target.as_ref().map_or_else(String::new, |(u, _)| u.to_string());
    record(&mut tx, event_id, &url, &attempt).await?;
    let age = (Utc::now() - created_at).to_std().unwrap_or_default();
    let next = Outcome::of(&attempt.result, attempts + 1, client_errors, age, config);
    apply(&mut tx, event_id, &next, &attempt).await?;
    tx.commit().await?;
    let elapsed = std::time::Duration::from_millis(u64::try_from(attempt.duration_ms).unwrap_or(0));
    crate::observability::metrics::record_webhook_delivery(next.label(), elapsed);
    tracing::info!(
        %event_id, %order_id, event_type, attempt = attempts + 1, outcome = next.label(),
        status = attempt.result.as_ref().ok().map(|a| a.status), duration_ms = attempt.duration_ms,
        "webhook delivery attempt"
    );
    Ok(true)
}

struct Attempt {
    result: Result<Answer, DeliveryError>,
    duration_ms: i32,
}

async fn attempt(url: &Url, secret: &str, event_id: Uuid, payload: &Value, config: &WorkerConfig) -> Attempt {
    let body = serde_json::to_vec(payload).unwrap_or_default();
    let now = Utc::now();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let signature = signer::sign(secret, now.timestamp().max(0) as u64, &body);
    for (name, value) in [
        ("merchant-signature", signature),
        ("webhook-id", event_id.to_string()),
        ("request-id", format!("req_{}", Uuid::now_v7().simple())),
        ("timestamp", now.to_rfc3339()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    let started = std::time::Instant::now();
    let result = config.client.post(url, headers, body).await;
    Attempt {
        result,
        duration_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
    }
}

type Target = (Url, Result<Secret, SecretsError>);

/// The URL and secret for `agent_id`: a rotated secret (admin API) wins over the agent row and the environment.
/// Secrets from the database are stored sealed and opened here.
async fn target_for(
    conn: &mut PgConnection,
    config: &WorkerConfig,
    agent_id: &str,
) -> Result<Option<Target>, sqlx::Error> {
    let rotated: Option<String> = sqlx::query_scalar("select secret from agent_webhook_secret where agent_id = $1")
        .bind(agent_id)
        .fetch_optional(&mut *conn)
        .await?;
    let rotated = rotated.map(|stored| config.keyring.open(ROTATED_WEBHOOK_SECRET, &stored));
    let (url, secret) = if agent_id == config.env_agent_id {
        (config.env_url.clone(), config.env_secret.clone().map(Ok))
    } else {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("select webhook_url, webhook_secret from agent where agent_id = $1")
                .bind(agent_id)
                .fetch_optional(&mut *conn)
                .await?;
        let (url, secret) = row.unwrap_or((None, None));
        let secret = secret.map(|stored| config.keyring.open(AGENT_WEBHOOK_SECRET, &stored));
        (url.and_then(|u| Url::parse(&u).ok()), secret)
    };
    Ok(match (url, rotated.or(secret)) {
        (Some(url), Some(secret)) => Some((endpoint(url), secret)),
        _ => None,
    })
}

/// A configured base URL gets the ACP webhook path; a full endpoint URL is used as it is.
fn endpoint(url: Url) -> Url {
    if url.path().ends_with("order_events") {
        return url;
    }
    let joined = format!("{}{CANONICAL_PATH}", url.as_str().trim_end_matches('/'));
    Url::parse(&joined).unwrap_or(url)
}

async fn record(conn: &mut PgConnection, event_id: Uuid, url: &str, attempt: &Attempt) -> Result<(), sqlx::Error> {
    let (status, error) = match &attempt.result {
        Ok(a) => (Some(i32::from(a.status)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    sqlx::query(
        "insert into webhook_attempt (event_id, url, response_status, error, duration_ms) values ($1, $2, $3, $4, $5)",
    )
    .bind(event_id)
    .bind(url)
    .bind(status)
    .bind(error)
    .bind(attempt.duration_ms)
    .execute(conn)
    .await?;
    Ok(())
}

enum Outcome {
    Delivered,
    Retry { after: Duration, client_error: bool },
    Dead,
}

impl Outcome {
    fn of(
        result: &Result<Answer, DeliveryError>,
        attempts: i32,
        client_errors: i32,
        age: Duration,
        config: &WorkerConfig,
    ) -> Self {
        let (client_error, retry_after) = match result {
            Ok(a) if (200..300).contains(&a.status) => return Self::Delivered,
            Ok(a) => {
                let permanent_kind = (400..500).contains(&a.status) && a.status != 408 && a.status != 429;
                (permanent_kind, a.retry_after)
            }
            Err(e) if e.is_permanent() => return Self::Dead,
            Err(_) => (false, None),
        };
        if client_error && client_errors + 1 >= PERMANENT_CLIENT_ERROR_TRIES {
            return Self::Dead;
        }
        let after = config.next_delay(attempts, retry_after);
        if age + after > config.max_age {
            return Self::Dead;
        }
        Self::Retry { after, client_error }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry { .. } => "retry",
            Self::Dead => "dead",
        }
    }
}

async fn apply(
    conn: &mut PgConnection,
    event_id: Uuid,
    outcome: &Outcome,
    attempt: &Attempt,
) -> Result<(), sqlx::Error> {
    let error = match &attempt.result {
        Ok(a) => format!("HTTP {}", a.status),
        Err(e) => e.to_string(),
    };
    match outcome {
        Outcome::Delivered => {
            sqlx::query(
                "update webhook_event set status = 'delivered', attempts = attempts + 1, delivered_at = now(),
                        last_error = null where event_id = $1",
            )
            .bind(event_id)
            .execute(conn)
            .await?;
        }
        Outcome::Retry { after, client_error } => {
            sqlx::query(
                "update webhook_event set attempts = attempts + 1,
                        client_error_attempts = client_error_attempts + $2,
                        next_attempt_at = now() + $3 * interval '1 millisecond', last_error = $4
                 where event_id = $1",
            )
            .bind(event_id)
            .bind(i32::from(*client_error))
            .bind(after.as_millis() as f64)
            .bind(error)
            .execute(conn)
            .await?;
        }
        Outcome::Dead => {
            sqlx::query(
                "update webhook_event set status = 'dead', attempts = attempts + 1, last_error = $2 where event_id = $1",
            )
            .bind(event_id)
            .bind(error)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}
