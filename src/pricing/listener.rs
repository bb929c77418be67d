//! Keeps a process's [`RulesCache`] current: `LISTEN acp_pricing_rules` (the trigger on `pricing_rules` notifies
//! every change) reloads the bundle at once; a poll of the stored version every `ACP_RULES_POLL_MS` catches a
//! notification lost while the listener's connection was down. The listener holds one connection of its own (a
//! private one-connection pool), so it never takes one from the request pool.

use std::time::Duration;

use sqlx::{
    PgPool,
    postgres::{PgListener, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;

use super::store::RulesCache;

/// The channel the `pricing_rules_changed` trigger notifies.
pub const CHANNEL: &str = "acp_pricing_rules";

/// Runs the listener and the fallback poll until `stop` fires.
pub async fn run(cache: RulesCache, pool: PgPool, poll: Duration, stop: CancellationToken) {
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with((*pool.connect_options()).clone());
    tokio::join!(
        listen(cache.clone(), listener_pool.clone(), pool.clone(), poll, stop.clone()),
        poll_versions(cache, pool, poll, stop),
    );
    listener_pool.close().await;
}

/// Reloads the rules (through `pool`) on every notification received on `listener_pool`'s connection; reconnects
/// (and reloads, since notifications may have been missed) after a lost connection, waiting `retry` between
/// failed attempts.
async fn listen(cache: RulesCache, listener_pool: PgPool, pool: PgPool, retry: Duration, stop: CancellationToken) {
    loop {
        let stopped = tokio::select! {
            () = stop.cancelled() => true,
            result = listen_once(&cache, &listener_pool, &pool) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "pricing rules listener lost; reconnecting");
                }
                false
            }
        };
        if stopped {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// Subscribes, catches up, then reloads on each notification; returns only when the connection fails in a way
/// sqlx does not recover from itself.
async fn listen_once(cache: &RulesCache, listener_pool: &PgPool, pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(listener_pool).await?;
    listener.listen(CHANNEL).await?;
    // Changes made before the subscription took effect were not notified to us.
    cache.refresh(&mut *pool.acquire().await?).await?;
    loop {
        // `None`: the connection was lost and re-established (subscribed again); what changed meanwhile was not
        // notified, so the version is checked just the same.
        if listener.try_recv().await?.is_some() {
            // A burst of changes needs one reload: drop what is already buffered.
            while listener.next_buffered().is_some() {}
        }
        if cache.refresh(&mut *pool.acquire().await?).await? {
            tracing::info!(version = cache.version(), "pricing rules reloaded (notified)");
        }
    }
}

/// Compares the stored version with the cached one every `every`, reloading when they differ.
async fn poll_versions(cache: RulesCache, pool: PgPool, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let refreshed = async { cache.refresh(&mut *pool.acquire().await?).await }.await;
        match refreshed {
            Ok(true) => tracing::info!(version = cache.version(), "pricing rules reloaded (poll)"),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "pricing rules poll failed"),
        }
    }
}
