//! Rate limits on the checkout routes: a token bucket per source address (before authentication) and one per
//! agent (after it), with per-agent overrides stored in PostgreSQL. The buckets live in this process only, so N
//! processes together allow N times the configured rate (the README says how to size them).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use ipnet::IpNet;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{error::ApiError, http::AppState};

/// A sustained rate and the burst allowed on top of an idle bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    fn quota(self) -> Quota {
        Quota::per_second(self.per_sec).allow_burst(self.burst)
    }
}

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Per agent (the default for agents without an override).
    pub agent: Rate,
    /// Per source address.
    pub address: Rate,
    /// How often idle buckets are dropped and overrides re-read.
    pub sweep_interval: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// Comma-separated IP addresses or CIDR ranges; `Err` carries the first entry that is neither.
pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| entry.to_owned())
        })
        .collect()
}

/// A refused request: which bucket ran dry and when it holds a token again.
#[derive(Debug, thiserror::Error)]
#[error("rate limit of the {scope} exceeded")]
pub struct Limited {
    pub scope: &'static str,
    /// Whole seconds until a retry can succeed, at least 1.
    pub retry_after_secs: u64,
}

impl From<Limited> for ApiError {
    fn from(limited: Limited) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "Too many requests for this {}; retry after {} s",
                limited.scope, limited.retry_after_secs
            ),
        )
        .with_retry_after(limited.retry_after_secs)
        .transient()
    }
}

/// An agent's own bucket, with the rate it was built for (a refresh with the same rate keeps the bucket's state).
struct Override {
    rate: Rate,
    bucket: DefaultDirectRateLimiter,
}

/// The process's buckets.
pub struct RateLimits {
    settings: RateLimitSettings,
    agents: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    overrides: RwLock<HashMap<String, Arc<Override>>>,
}

impl RateLimits {
    pub fn new(settings: RateLimitSettings) -> Self {
        Self {
            agents: RateLimiter::keyed(settings.agent.quota()),
            addresses: RateLimiter::keyed(settings.address.quota()),
            overrides: RwLock::new(HashMap::new()),
            settings,
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Takes a token from the agent's bucket (its override's when it has one).
    pub fn check_agent(&self, agent_id: &str) -> Result<(), Limited> {
        if !self.settings.enabled {
            return Ok(());
        }
        let own = self.overrides.read().ok().and_then(|o| o.get(agent_id).cloned());
        let clock = governor::clock::DefaultClock::default();
        let outcome = match own {
            Some(own) => own.bucket.check().map_err(|later| later.wait_time_from(clock.now())),
            None => self
                .agents
                .check_key(&agent_id.to_owned())
                .map_err(|later| later.wait_time_from(clock.now())),
        };
        outcome.map_err(|wait| limited("agent", wait))
    }

    /// Takes a token from the bucket of the client address behind `peer`.
    pub fn check_address(&self, peer: IpAddr, headers: &HeaderMap) -> Result<(), Limited> {
        if !self.settings.enabled {
            return Ok(());
        }
        let client = client_address(peer, headers, &self.settings.trusted_proxies);
        let clock = governor::clock::DefaultClock::default();
        self.addresses
            .check_key(&client)
            .map_err(|later| limited("address", later.wait_time_from(clock.now())))
    }

    /// Replaces the override of one agent (`None`: back to the default rate).
    pub fn set_override(&self, agent_id: &str, rate: Option<Rate>) {
        if let Ok(mut overrides) = self.overrides.write() {
            match rate {
                Some(rate) => keep_or_replace(&mut overrides, agent_id, rate),
                None => {
                    overrides.remove(agent_id);
                }
            }
        }
    }

    /// Installs the full set of stored overrides (agents missing from it go back to the default).
    fn replace_overrides(&self, stored: Vec<(String, Rate)>) {
        if let Ok(mut overrides) = self.overrides.write() {
            overrides.retain(|agent, _| stored.iter().any(|(id, _)| id == agent));
            for (agent, rate) in stored {
                keep_or_replace(&mut overrides, &agent, rate);
            }
        }
    }

    /// Drops buckets that are full again (an idle key holds no information), so memory stays bounded by the
    /// keys active within one refill period.
    fn evict_idle(&self) {
        self.agents.retain_recent();
        self.addresses.retain_recent();
        self.agents.shrink_to_fit();
        self.addresses.shrink_to_fit();
    }

    /// How many address and agent buckets are held (for tests and diagnostics).
    pub fn tracked_keys(&self) -> usize {
        self.agents.len() + self.addresses.len()
    }
}

fn keep_or_replace(overrides: &mut HashMap<String, Arc<Override>>, agent_id: &str, rate: Rate) {
    if overrides.get(agent_id).is_some_and(|o| o.rate == rate) {
        return;
    }
    let bucket = RateLimiter::direct(rate.quota());
    overrides.insert(agent_id.to_owned(), Arc::new(Override { rate, bucket }));
}

fn limited(scope: &'static str, wait: Duration) -> Limited {
    Limited {
        scope,
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

/// The client behind `peer`: the peer itself unless it is a trusted proxy; then `X-Forwarded-For` read from the
/// right, skipping trusted proxies, up to the first address that is not one. An unreadable entry stops the walk
/// at the last address known (a client cannot choose its bucket by sending garbage).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Middleware: the per-address bucket, before authentication. Requests without a known peer (served other than
/// through the listener) are not limited.
pub async fn by_address(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && let Err(limited) = state.rate_limits.check_address(peer.ip(), request.headers())
    {
        tracing::info!(scope = limited.scope, "request rate limited");
        return ApiError::from(limited).into_response();
    }
    next.run(request).await
}

/// The stored overrides.
pub async fn load_overrides(pool: &PgPool) -> Result<Vec<(String, Rate)>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as("select agent_id, per_sec, burst from agent_rate_limit")
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(agent, per_sec, burst)| Some((agent, rate_from_row(per_sec, burst)?)))
        .collect())
}

fn rate_from_row(per_sec: i64, burst: i64) -> Option<Rate> {
    Some(Rate {
        per_sec: NonZeroU32::new(u32::try_from(per_sec).ok()?)?,
        burst: NonZeroU32::new(u32::try_from(burst).ok()?)?,
    })
}

/// Stores (or with `None` removes) an agent's override.
pub async fn store_override(pool: &PgPool, agent_id: &str, rate: Option<Rate>) -> Result<(), sqlx::Error> {
    match rate {
        Some(rate) => {
            sqlx::query(
                "insert into agent_rate_limit (agent_id, per_sec, burst) values ($1, $2, $3) \
                 on conflict (agent_id) do update set per_sec = excluded.per_sec, burst = excluded.burst, \
                 updated_at = now()",
            )
            .bind(agent_id)
            .bind(i64::from(rate.per_sec.get()))
            .bind(i64::from(rate.burst.get()))
            .execute(pool)
            .await?;
        }
        None => {
            sqlx::query("delete from agent_rate_limit where agent_id = $1")
                .bind(agent_id)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// Every sweep interval: drop idle buckets and re-read the overrides (another process may have changed them).
pub async fn maintain(limits: Arc<RateLimits>, pool: PgPool, stop: CancellationToken) {
    let every = limits.settings.sweep_interval;
    loop {
        match load_overrides(&pool).await {
            Ok(stored) => limits.replace_overrides(stored),
            Err(e) => tracing::warn!(error = %e, "could not read the agents' rate-limit overrides"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        limits.evict_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded_for: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", forwarded_for.parse().unwrap());
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies_right_to_left() {
        let trusted = parse_cidrs("10.0.0.0/8, 192.0.2.1").unwrap();
        let spoofed = headers("203.0.113.5");
        assert_eq!(
            client_address(ip("198.51.100.9"), &spoofed, &trusted),
            ip("198.51.100.9")
        );
        assert_eq!(client_address(ip("10.0.0.2"), &spoofed, &trusted), ip("203.0.113.5"));
        let chain = headers("1.1.1.1, 203.0.113.5, 192.0.2.1, 10.9.9.9:4431");
        assert_eq!(client_address(ip("10.0.0.2"), &chain, &trusted), ip("203.0.113.5"));
        // Garbage stops the walk at the last address known; only trusted hops: the leftmost one.
        assert_eq!(
            client_address(ip("10.0.0.2"), &headers("nonsense, 10.1.1.1"), &trusted),
            ip("10.1.1.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &headers("10.3.3.3, 10.1.1.1"), &trusted),
            ip("10.3.3.3")
        );
        // An IPv4 peer seen through an IPv6 socket is still the IPv4 proxy.
        assert_eq!(
            client_address(ip("::ffff:10.0.0.2"), &spoofed, &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(parse_cidrs("10.0.0.0/8, nope"), Err("nope".to_owned()));
    }

    #[test]
    fn idle_buckets_are_evicted() {
        let rate = Rate {
            per_sec: NonZeroU32::new(1000).unwrap(),
            burst: NonZeroU32::new(1).unwrap(),
        };
        let limits = RateLimits::new(RateLimitSettings {
            enabled: true,
            agent: rate,
            address: rate,
            sweep_interval: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
        });
        for n in 0..50u8 {
            limits
                .check_address(IpAddr::from([192, 0, 2, n]), &HeaderMap::new())
                .unwrap();
        }
        limits.check_agent("agent_a").unwrap();
        assert!(limits.check_agent("agent_a").is_err(), "burst of one");
        assert_eq!(limits.tracked_keys(), 51);
        // Every bucket refills within 1 ms; after that none holds information worth keeping.
        std::thread::sleep(Duration::from_millis(20));
        limits.evict_idle();
        assert_eq!(limits.tracked_keys(), 0);
    }
}
