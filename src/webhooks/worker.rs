//! The delivery worker: claims a batch, delivers it concurrently outside any transaction, records each outcome.
//!
//! 1. **Claim** ([`queue::claim`], one statement): up to `ACP_WEBHOOK_BATCH_SIZE` due events, in sequence order,
//!    become `delivering` under this worker's `holder` id with a lease of `ACP_WEBHOOK_LEASE_MS`. Per-order
//!    ordering: only the earliest undelivered event of an order is eligible, and never while an earlier event of
//!    the same order is being delivered. `SKIP LOCKED` keeps concurrent claims (any number of workers, in one or
//!    many processes) apart.
//! 2. **Deliver**, with no transaction open: each event waits for a slot of its destination (host and port, at most
//!    `ACP_WEBHOOK_PER_DESTINATION` in flight) and then a slot of the worker (`ACP_WEBHOOK_CONCURRENCY` in total) —
//!    in that order, so a busy destination never holds worker slots other destinations could use. Each attempt
//!    signs the exact bytes it sends (re-signed on every attempt, the same `Webhook-Id` every time).
//! 3. **Record** ([`queue::record`], one statement per event): the attempt row and the event's next state, only if
//!    this worker still holds the lease. Each event is recorded as soon as its attempt ends, so the next event of
//!    its order becomes due without waiting for the rest of the batch.
//!
//! **Leases.** While it holds claims the worker renews those it has a delivery task for every third of the lease
//! (one statement for all), so a batch queued behind a slow destination keeps its claims however long it waits.
//! The lease is also longer than the client timeout (checked at start-up), so an attempt under way keeps its event
//! even when one renewal is late; and if a lapsed claim comes back to the same worker, the delivery already under
//! way is not started twice. A worker that dies (crash, SIGKILL) stops renewing: when its leases end the events are
//! due again and another worker delivers them with the same `Webhook-Id` (at-least-once). A crash between the
//! receiver's 200 and the record has the same effect.
//!
//! **Round trips** per batch of n events: 1 claim + 1 destination lookup ([`AgentTargets::lookup`], all agents of
//! the batch at once; one more, [`destination::merchant_endpoints`], when the batch holds merchant endpoints'
//! events) + n records, plus one renewal per third of a lease while claims are held. (The previous worker
//! took 6 or 7 per event — begin, claim, one or two target reads, attempt insert, update, commit — and held the
//! transaction open across the HTTP call.) The worker claims again as soon as half the batch is done, or after each
//! finished delivery when the last claim did not fill the batch (a short queue: latency matters more than round
//! trips), and otherwise sleeps `ACP_WEBHOOK_POLL_INTERVAL_MS` — unless this process commits an order first: its
//! [`super::Wakeup`] wakes the worker, which gathers `ACP_WEBHOOK_WAKE_GATHER_MS` of further commits and claims
//! them together. Under a steady stream of orders that replaces one burst of claims, records and POSTs per poll
//! interval (and webhook lag of up to a whole interval: the benchmark's p99 went from 1 s to under 0.1 s) with
//! small, even batches.
//!
//! **Stopping.** When `stop` fires the worker claims nothing more, and no attempt that has not started starts;
//! attempts under way get three quarters of `ACP_SHUTDOWN_TIMEOUT_MS` to finish and be recorded (the rest of the
//! shutdown time is left for the release); then every event it still holds is released (`pending`, due now).
//!
//! **Retries**: the configured schedule (default 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then hourly) with ±20 %
//! jitter, `Retry-After` honoured (never shorter than the schedule, at most an hour), until the event is older
//! than the maximum age (24 h); 4xx answers other than 408 and 429 fail permanently after 3 tries; then the event
//! is dead-lettered (replayable through the admin API).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::Utc;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use sqlx::PgPool;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    client::{Answer, ClientPolicy, DeliveryError, WebhookClient},
    destination::{self, AgentTargets, Destination, SigningScheme},
    queue::{self, AttemptRecord, Claimed, NextState},
    signer, standard,
};
use crate::config::Settings;

/// The worker's knobs, from configuration.
#[derive(Clone)]
pub struct WorkerConfig {
    pub poll_interval: Duration,
    /// Woken by this process's commits of new events; then gathers `wake_gather` before it claims.
    pub wakeup: super::Wakeup,
    pub wake_gather: Duration,
    pub schedule: Vec<Duration>,
    pub max_age: Duration,
    /// One HTTP client for every delivery to an agent.
    pub client: WebhookClient,
    /// One for every delivery to a merchant endpoint: it may also reach the allow-listed private networks.
    pub merchant_client: WebhookClient,
    /// Where the agents' events go.
    pub targets: AgentTargets,
    /// Events claimed per round.
    pub batch_size: u32,
    /// Attempts in flight, in total and per destination.
    pub concurrency: u32,
    pub per_destination: u32,
    pub lease: Duration,
    /// How long attempts under way may take to finish once the worker is told to stop.
    pub drain: Duration,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("batch_size", &self.batch_size)
            .field("concurrency", &self.concurrency)
            .field("per_destination", &self.per_destination)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

const PERMANENT_CLIENT_ERROR_TRIES: i32 = 3;
/// At most this many destinations keep an idle concurrency gate; idle gates beyond it are dropped.
const IDLE_GATES_KEPT: usize = 1024;

impl WorkerConfig {
    /// Fails only when the HTTP client cannot be built (no usable TLS configuration).
    pub fn from_settings(settings: &Settings, env_agent_id: &str) -> Result<Self, DeliveryError> {
        let policy = ClientPolicy {
            connect_timeout: settings.webhook_connect_timeout,
            timeout: settings.webhook_timeout,
            max_response_bytes: settings.webhook_max_response_bytes,
            allow_insecure: !settings.is_production() || settings.allow_insecure_webhook_urls,
            allowed_networks: Vec::new(),
        };
        let merchant_client = WebhookClient::new(ClientPolicy {
            allowed_networks: settings.merchant_webhook_allowed_cidrs.clone(),
            ..policy.clone()
        })?;
        let client = WebhookClient::new(policy)?;
        let delivery = &settings.webhook_delivery;
        Ok(Self {
            poll_interval: settings.webhook_poll_interval,
            wakeup: super::Wakeup::default(),
            wake_gather: settings.webhook_wake_gather,
            schedule: settings.webhook_retry_schedule.clone(),
            max_age: settings.webhook_max_age,
            client,
            merchant_client,
            targets: AgentTargets {
                env_agent_id: env_agent_id.to_owned(),
                env_url: settings.agent_webhook_url.clone(),
                env_secret: settings.agent_webhook_secret.clone(),
                keyring: settings.secrets_keys.clone(),
            },
            batch_size: delivery.batch_size,
            concurrency: delivery.concurrency,
            per_destination: delivery.per_destination,
            lease: delivery.lease,
            drain: settings.shutdown_timeout.mul_f64(0.75),
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

/// Runs until `stop` fires, then drains and releases what it still holds (see the module docs).
pub async fn run(pool: PgPool, config: WorkerConfig, stop: CancellationToken) {
    let worker = Arc::new(Worker::new(pool, config));
    tracing::info!(holder = %worker.holder, "webhook delivery worker started");
    let mut deliveries = JoinSet::new();
    let every = worker.config.lease / 3;
    let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut short_queue = true;
    while !stop.is_cancelled() {
        let room = worker.config.batch_size.saturating_sub(held(&deliveries));
        if room > 0 && (short_queue || room.saturating_mul(2) >= worker.config.batch_size) {
            match worker.claim_and_start(room, &mut deliveries, &stop).await {
                Ok(claimed) => short_queue = claimed < room,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook claim failed");
                    short_queue = true;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {
                while deliveries.try_join_next().is_some() {}
            }
            _ = renewals.tick(), if !deliveries.is_empty() => worker.renew().await,
            () = tokio::time::sleep(worker.config.poll_interval), if short_queue || deliveries.is_empty() => {}
            () = worker.config.wakeup.woken(), if short_queue || deliveries.is_empty() => {
                // The commits right behind this one are claimed with it.
                tokio::time::sleep(worker.config.wake_gather).await;
            }
        }
    }
    worker.stop(deliveries).await;
}

fn held(deliveries: &JoinSet<()>) -> u32 {
    u32::try_from(deliveries.len()).unwrap_or(u32::MAX)
}

struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    /// This run's claims; a new id per start, so a restarted process never mistakes old claims for its own.
    holder: Uuid,
    total: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Events this worker has a delivery task for. A claim that lapsed (a renewal failed) and came back to this
    /// same worker is not delivered twice at once.
    in_hand: Mutex<HashSet<Uuid>>,
}

/// Removes an event from the worker's hand when its delivery task ends, however it ends (aborted included).
struct InHand {
    worker: Arc<Worker>,
    event_id: Uuid,
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.worker.hand().remove(&self.event_id);
    }
}

impl Worker {
    fn new(pool: PgPool, config: WorkerConfig) -> Self {
        Self {
            total: Arc::new(Semaphore::new(config.concurrency as usize)),
            pool,
            config,
            holder: Uuid::new_v4(),
            per_destination: Mutex::new(HashMap::new()),
            in_hand: Mutex::new(HashSet::new()),
        }
    }

    fn hand(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.in_hand.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims up to `limit` events and starts a delivery task for each; returns how many it claimed.
    async fn claim_and_start(
        self: &Arc<Self>,
        limit: u32,
        deliveries: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) -> Result<u32, sqlx::Error> {
        let claimed = queue::claim(&self.pool, self.holder, limit, self.config.lease).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let destinations = match self.destinations(&claimed).await {
            Ok(found) => found,
            Err(e) => {
                // Handed back at once (else they would wait for their lease); the next round tries again.
                let ids: Vec<Uuid> = claimed.iter().map(|c| c.event_id).collect();
                queue::release(&self.pool, self.holder, Some(&ids)).await?;
                return Err(e);
            }
        };
        let count = u32::try_from(claimed.len()).unwrap_or(u32::MAX);
        for event in claimed {
            if !self.hand().insert(event.event_id) {
                continue;
            }
            let held = InHand {
                worker: self.clone(),
                event_id: event.event_id,
            };
            let destination = destinations.of(&event);
            deliveries.spawn(self.clone().deliver(event, destination, stop.clone(), held));
        }
        Ok(count)
    }

    /// Where each event of a batch goes: one query for the agents, one for the merchant endpoints (when any).
    async fn destinations(&self, claimed: &[Claimed]) -> Result<BatchDestinations, sqlx::Error> {
        let ids = |merchant: bool| {
            let mut ids: Vec<String> = claimed
                .iter()
                .filter(|c| c.endpoint_id.is_some() == merchant)
                .map(|c| c.endpoint_id.clone().unwrap_or_else(|| c.agent_id.clone()))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let (agents, endpoints) = (ids(false), ids(true));
        let agents = if agents.is_empty() {
            HashMap::new()
        } else {
            self.config.targets.lookup(&self.pool, &agents).await?
        };
        let endpoints = if endpoints.is_empty() {
            HashMap::new()
        } else {
            destination::merchant_endpoints(&self.pool, &self.config.targets.keyring, &endpoints).await?
        };
        Ok(BatchDestinations { agents, endpoints })
    }

    /// One attempt for `event`, then its record. Returns without an attempt if the worker stops before a slot
    /// frees up (the claim is released with the others).
    async fn deliver(
        self: Arc<Self>,
        event: Claimed,
        destination: Option<Arc<Destination>>,
        stop: CancellationToken,
        _held: InHand,
    ) {
        let attempt = match destination.as_deref() {
            None if event.endpoint_id.is_some() => Attempt::failed(DeliveryError::Refused(
                "the merchant endpoint is disabled or has no valid URL".into(),
            )),
            None => Attempt::failed(DeliveryError::Refused(
                "the agent has no webhook URL or secret configured".into(),
            )),
            Some(Destination { secret: Err(e), .. }) => Attempt::failed(DeliveryError::Transport(format!(
                "the signing secret does not open: {e}"
            ))),
            Some(d @ Destination { secret: Ok(secret), .. }) => {
                let Some(_slots) = self.slots_for(d, &stop).await else {
                    return;
                };
                let client = match d.scheme {
                    SigningScheme::MerchantSignature => &self.config.client,
                    SigningScheme::StandardWebhooks => &self.config.merchant_client,
                };
                attempt(client, d, secret.expose(), event.event_id, &event.payload).await
            }
        };
        let url = destination.as_ref().map_or_else(String::new, |d| d.url.to_string());
        self.finish(&event, url, attempt).await;
    }

    /// A slot of the destination, then one of the worker; none once the worker stops.
    async fn slots_for(
        &self,
        destination: &Destination,
        stop: &CancellationToken,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let gate = self.gate(destination.host_key());
        let acquire = async {
            let own = gate.acquire_owned().await.ok()?;
            let total = self.total.clone().acquire_owned().await.ok()?;
            Some((own, total))
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => None,
            slots = acquire => slots,
        }
    }

    fn gate(&self, host: String) -> Arc<Semaphore> {
        let mut gates = self.per_destination.lock().unwrap_or_else(PoisonError::into_inner);
        if gates.len() > IDLE_GATES_KEPT {
            gates.retain(|_, gate| Arc::strong_count(gate) > 1);
        }
        gates
            .entry(host)
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_destination as usize)))
            .clone()
    }

    async fn finish(&self, event: &Claimed, url: String, attempt: Attempt) {
        let age = (Utc::now() - event.created_at).to_std().unwrap_or_default();
        let next = next_state(
            &attempt.result,
            event.attempts + 1,
            event.client_error_attempts,
            age,
            &self.config,
        );
        let record = attempt.record(url, next);
        let kept = queue::record(&self.pool, event.event_id, self.holder, next, &record).await;
        let outcome = match kept {
            Ok(true) => label(next),
            Ok(false) => "lease_lost",
            Err(e) => {
                tracing::warn!(event_id = %event.event_id, error = %e, "could not record a webhook attempt; redelivered when the lease ends");
                "unrecorded"
            }
        };
        let elapsed = Duration::from_millis(u64::try_from(attempt.duration_ms).unwrap_or(0));
        crate::observability::metrics::record_webhook_delivery(outcome, elapsed);
        tracing::info!(
            event_id = %event.event_id, order_id = %event.order_id, event_type = %event.event_type,
            attempt = event.attempts + 1, outcome, status = attempt.result.as_ref().ok().map(|a| a.status),
            duration_ms = attempt.duration_ms, "webhook delivery attempt"
        );
    }

    async fn renew(&self) {
        let held: Vec<Uuid> = self.hand().iter().copied().collect();
        if let Err(e) = queue::renew(&self.pool, self.holder, &held, self.config.lease).await {
            tracing::warn!(error = %e, "could not renew webhook leases");
        }
    }

    /// Lets attempts under way finish within the drain time, cuts off the rest, and releases what is still held.
    async fn stop(&self, mut deliveries: JoinSet<()>) {
        let drained = tokio::time::timeout(self.config.drain, async {
            while deliveries.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("webhook deliveries still under way at the end of the drain time were cut off");
            deliveries.shutdown().await;
        }
        match queue::release(&self.pool, self.holder, None).await {
            Ok(released) => tracing::info!(released, "webhook delivery worker stopped"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release webhook claims; they are due when their lease ends")
            }
        }
    }
}

struct Attempt {
    result: Result<Answer, DeliveryError>,
    duration_ms: i32,
}

impl Attempt {
    fn failed(error: DeliveryError) -> Self {
        Self {
            result: Err(error),
            duration_ms: 0,
        }
    }

    fn record(&self, url: String, next: NextState) -> AttemptRecord {
        let (response_status, error) = match &self.result {
            Ok(a) => (Some(i32::from(a.status)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let last_error = match (&self.result, next) {
            (_, NextState::Delivered) => None,
            (Ok(a), _) => Some(format!("HTTP {}", a.status)),
            (Err(e), _) => Some(e.to_string()),
        };
        AttemptRecord {
            url,
            response_status,
            error,
            duration_ms: self.duration_ms,
            last_error,
        }
    }
}

/// The destinations of one claimed batch.
struct BatchDestinations {
    agents: HashMap<String, Arc<Destination>>,
    /// `None`: the endpoint is disabled or its URL does not parse.
    endpoints: HashMap<String, Option<Arc<Destination>>>,
}

impl BatchDestinations {
    fn of(&self, event: &Claimed) -> Option<Arc<Destination>> {
        match &event.endpoint_id {
            Some(endpoint) => self.endpoints.get(endpoint).cloned().flatten(),
            None => self.agents.get(&event.agent_id).cloned(),
        }
    }
}

async fn attempt(
    client: &WebhookClient,
    destination: &Destination,
    secret: &str,
    event_id: Uuid,
    payload: &Value,
) -> Attempt {
    let body = serde_json::to_vec(payload).unwrap_or_default();
    let now = Utc::now();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let unix = now.timestamp().max(0) as u64;
    let signed: Vec<(&str, String)> = match destination.scheme {
        SigningScheme::MerchantSignature => vec![
            ("merchant-signature", signer::sign(secret, unix, &body)),
            ("webhook-id", event_id.to_string()),
            ("request-id", format!("req_{}", Uuid::now_v7().simple())),
            ("timestamp", now.to_rfc3339()),
        ],
        SigningScheme::StandardWebhooks => {
            let Ok(key) = standard::key(secret) else {
                return Attempt::failed(DeliveryError::Transport(
                    "the endpoint's stored secret is not a whsec_ secret".into(),
                ));
            };
            let id = event_id.to_string();
            vec![
                ("webhook-signature", standard::sign(&key, &id, unix, &body)),
                ("webhook-id", id),
                ("webhook-timestamp", unix.to_string()),
            ]
        }
    };
    for (name, value) in signed {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    let started = std::time::Instant::now();
    let result = client.post(&destination.url, headers, body).await;
    Attempt {
        result,
        duration_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
    }
}

fn next_state(
    result: &Result<Answer, DeliveryError>,
    attempts: i32,
    client_errors: i32,
    age: Duration,
    config: &WorkerConfig,
) -> NextState {
    let (client_error, retry_after) = match result {
        Ok(a) if (200..300).contains(&a.status) => return NextState::Delivered,
        Ok(a) => {
            let permanent_kind = (400..500).contains(&a.status) && a.status != 408 && a.status != 429;
            (permanent_kind, a.retry_after)
        }
        Err(e) if e.is_permanent() => return NextState::Dead,
        Err(_) => (false, None),
    };
    if client_error && client_errors + 1 >= PERMANENT_CLIENT_ERROR_TRIES {
        return NextState::Dead;
    }
    let after = config.next_delay(attempts, retry_after);
    if age + after > config.max_age {
        return NextState::Dead;
    }
    NextState::Retry { after, client_error }
}

fn label(next: NextState) -> &'static str {
    match next {
        NextState::Delivered => "delivered",
        NextState::Retry { .. } => "retry",
        NextState::Dead => "dead",
    }
}
