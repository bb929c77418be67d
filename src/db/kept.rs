//! Connections kept between single-statement reads, outside sqlx's pool.
//!
//! sqlx pings every connection it takes back (a Sync and its ReadyForQuery, on a task of its own), because a
//! connection dropped in the middle of a statement may be left mid-protocol. For a GET that is one statement,
//! the ping doubled the round trips: the issue-14 profile put the ping's send alone at 10.6 % of the server's CPU.
//! A read that finished (with a row, without one, or with a database error that is not about the connection)
//! leaves the connection clean, so [`KeptConnection::keep_after`] puts it back here without a ping. Anything
//! else (a cancelled request, an I/O or protocol error) drops the guard, and sqlx's own release path checks the
//! connection as before.
//!
//! The pool is the read pool of its own (`ACP_DB_READ_CONNECTIONS`), so a kept connection never makes a
//! transaction wait. Every connection taken from it holds one of `slots` (the pool's size) until it goes back to
//! sqlx, kept ones included: a caller takes a kept connection, or a free slot and then a connection from sqlx
//! (which then never waits for capacity), or waits for whichever comes first. One that waited longer than
//! `max_idle` goes back through sqlx (pinged) rather than being trusted after a silence, which
//! [`release_stale`] (run every second by [`upkeep`]) also does when no read comes.
//!
//! [`release_stale`]: KeptConnections::release_stale
//! [`upkeep`]: KeptConnections::upkeep

use std::{
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How often [`KeptConnections::upkeep`] hands stale connections back.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// How long the server trusts a kept connection without a ping.
pub const MAX_IDLE: Duration = Duration::from_secs(5);

/// A connection with the slot it holds.
struct Held {
    conn: PoolConnection<Postgres>,
    _slot: OwnedSemaphorePermit,
}

pub struct KeptConnections {
    pool: PgPool,
    idle: Mutex<Vec<(Held, Instant)>>,
    slots: Arc<Semaphore>,
    max_idle: Duration,
    /// Wakes one caller waiting in `acquire` when a connection is kept.
    kept: Notify,
}

impl KeptConnections {
    /// As many slots as `pool` has connections.
    pub fn new(pool: PgPool, max_idle: Duration) -> Self {
        let size = usize::try_from(pool.options().get_max_connections()).unwrap_or(usize::MAX);
        Self {
            pool,
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Arc::new(Semaphore::new(size)),
            max_idle,
            kept: Notify::new(),
        }
    }

    /// The connection kept last (warmest), or a new one from the pool, within the pool's acquire timeout.
    pub async fn acquire(&self) -> Result<KeptConnection<'_>, sqlx::Error> {
        // The usual case under load needs no timer.
        if let Some(held) = self.take_fresh() {
            return Ok(KeptConnection { held, home: self });
        }
        let timeout = self.pool.options().get_acquire_timeout();
        let held = tokio::time::timeout(timeout, self.kept_or_slot())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(KeptConnection { held, home: self })
    }

    async fn kept_or_slot(&self) -> Result<Held, sqlx::Error> {
        loop {
            // Registered before the look, so a connection kept in between still wakes this caller.
            let kept = self.kept.notified();
            tokio::pin!(kept);
            kept.as_mut().enable();
            if let Some(held) = self.take_fresh() {
                return Ok(held);
            }
            tokio::select! {
                slot = self.slots.clone().acquire_owned() => {
                    let slot = slot.map_err(|_| sqlx::Error::PoolClosed)?;
                    return self.open(slot).await;
                }
                () = kept => {}
            }
        }
    }

    /// A connection from sqlx for a slot: never a wait for capacity, since every connection out holds a slot.
    async fn open(&self, slot: OwnedSemaphorePermit) -> Result<Held, sqlx::Error> {
        let conn = self.pool.acquire().await?;
        Ok(Held { conn, _slot: slot })
    }

    /// Hands every waiting connection back to the pool.
    pub fn release_all(&self) {
        let drained: Vec<_> = self.lock().drain(..).collect();
        drop(drained);
    }

    /// Hands back the connections that waited past `max_idle`, so a pause in reads returns them to the pool (and
    /// to sqlx's idle timeout) rather than holding them forever.
    pub fn release_stale(&self) {
        let stale = self.drain_stale(&mut self.lock());
        drop(stale);
    }

    /// Runs [`release_stale`](Self::release_stale) every second until `stop` fires, so a pause in reads never
    /// leaves connections outside the pool.
    pub async fn upkeep(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(UPKEEP_EVERY) => self.release_stale(),
            }
        }
    }

    /// Hands every waiting connection back, then closes the pool (which waits for every connection).
    pub async fn close(&self) {
        self.slots.close();
        self.release_all();
        self.pool.close().await;
    }

    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn take_fresh(&self) -> Option<Held> {
        let mut idle = self.lock();
        let stale = self.drain_stale(&mut idle);
        let fresh = idle.pop().map(|(held, _)| held);
        // Stale ones are dropped outside the lock: each drop spawns sqlx's ping-and-return.
        drop(idle);
        drop(stale);
        fresh
    }

    /// The list is in the order connections came back, oldest first.
    fn drain_stale(&self, idle: &mut Vec<(Held, Instant)>) -> Vec<Held> {
        let now = Instant::now();
        let split = idle
            .iter()
            .position(|(_, since)| now.duration_since(*since) <= self.max_idle)
            .unwrap_or(idle.len());
        idle.drain(..split).map(|(held, _)| held).collect()
    }

    fn put_back(&self, held: Held) {
        if self.slots.is_closed() {
            // Closing: the pool waits for this one.
            drop(held);
            return;
        }
        self.lock().push((held, Instant::now()));
        self.kept.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Held, Instant)>> {
        // A panic while holding this lock cannot leave the list half-changed (push, pop, drain): keep using it.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A connection out of [`KeptConnections`]. Dropped, it returns to sqlx's pool the checked way.
pub struct KeptConnection<'a> {
    held: Held,
    home: &'a KeptConnections,
}

impl KeptConnection<'_> {
    /// Puts the connection back without a ping. Call it only after the statement finished: `outcome` is its
    /// result, and an error that may concern the connection itself sends it back through sqlx instead.
    pub fn keep_after(self, outcome: Result<(), &sqlx::Error>) {
        let KeptConnection { held, home } = self;
        match outcome {
            Ok(()) => home.put_back(held),
            Err(e) if connection_is_sound_after(e) => home.put_back(held),
            Err(_) => drop(held),
        }
    }
}

/// Errors PostgreSQL reported in a complete exchange (the connection is ready for the next statement), or that
/// arose decoding a row already read. Everything else (I/O, protocol, TLS, timeouts) may have left the connection
/// mid-message.
fn connection_is_sound_after(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Database(_)
            | sqlx::Error::RowNotFound
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
    )
}

impl Deref for KeptConnection<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.held.conn
    }
}

impl DerefMut for KeptConnection<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.held.conn
    }
}
