//! Connections kept between single-statement reads, outside sqlx's pool.
//!
//! sqlx pings every connection it takes back (a Sync and its ReadyForQuery, on a task of its own), because a
//! connection dropped in the middle of a statement may be left mid-protocol. For a GET that is one statement,
//! the ping doubled the round trips: the issue-14 profile put the ping's send alone at 10.6 % of the server's CPU.
//! A read that finished (with a row, without one, or with a database error that is not about the connection)
//! leaves the connection clean, so [`KeptConnection::keep`] puts it back here without a ping. Anything else (a
//! cancelled request, an I/O or protocol error) drops the guard, and sqlx's own release path checks the
//! connection as before.
//!
//! The pool is the read pool of its own (`ACP_DB_READ_CONNECTIONS`), so a kept connection never makes a
//! transaction wait. At most `capacity` connections wait here; one that waited longer than `max_idle` goes back
//! through sqlx (pinged) rather than being trusted after a silence, which [`release_stale`] (run every
//! [`UPKEEP_EVERY`]) also does when no read comes.
//!
//! [`release_stale`]: KeptConnections::release_stale

use std::{
    ops::{Deref, DerefMut},
    sync::Mutex,
    time::{Duration, Instant},
};

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};

/// How often the server runs [`KeptConnections::release_stale`].
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

pub struct KeptConnections {
    pool: PgPool,
    idle: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
    capacity: usize,
    max_idle: Duration,
    /// Wakes one caller waiting in `acquire` when a connection is kept.
    kept: tokio::sync::Notify,
}

impl KeptConnections {
    /// `capacity` 0 keeps nothing (every read goes through sqlx's pool).
    pub fn new(pool: PgPool, capacity: usize, max_idle: Duration) -> Self {
        Self {
            pool,
            idle: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            max_idle,
            kept: tokio::sync::Notify::new(),
        }
    }

    /// The connection used last (warmest), or one from the pool. A caller waiting on the pool also wakes when a
    /// connection is kept here, since a kept connection never goes back to the pool's own waiters.
    pub async fn acquire(&self) -> Result<KeptConnection<'_>, sqlx::Error> {
        loop {
            // Registered before the look, so a connection kept in between still wakes this caller.
            let kept = self.kept.notified();
            tokio::pin!(kept);
            kept.as_mut().enable();
            if let Some(conn) = self.take_fresh() {
                return Ok(KeptConnection { conn, home: self });
            }
            tokio::select! {
                conn = self.pool.acquire() => return Ok(KeptConnection { conn: conn?, home: self }),
                () = kept => {}
            }
        }
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

    /// Hands every waiting connection back, then closes the pool (which waits for every connection).
    pub async fn close(&self) {
        self.release_all();
        self.pool.close().await;
    }

    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn take_fresh(&self) -> Option<PoolConnection<Postgres>> {
        let mut idle = self.lock();
        let stale = self.drain_stale(&mut idle);
        let fresh = idle.pop().map(|(conn, _)| conn);
        // Stale ones are dropped outside the lock: each drop spawns sqlx's ping-and-return.
        drop(idle);
        drop(stale);
        fresh
    }

    /// The list is in the order connections came back, oldest first.
    fn drain_stale(&self, idle: &mut Vec<(PoolConnection<Postgres>, Instant)>) -> Vec<PoolConnection<Postgres>> {
        let now = Instant::now();
        let split = idle
            .iter()
            .position(|(_, since)| now.duration_since(*since) <= self.max_idle)
            .unwrap_or(idle.len());
        idle.drain(..split).map(|(conn, _)| conn).collect()
    }

    fn put_back(&self, conn: PoolConnection<Postgres>) {
        let mut idle = self.lock();
        if idle.len() < self.capacity {
            idle.push((conn, Instant::now()));
            drop(idle);
            self.kept.notify_one();
            return;
        }
        drop(idle);
        drop(conn);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PoolConnection<Postgres>, Instant)>> {
        // A panic while holding this lock cannot leave the list half-changed (push, pop, drain): keep using it.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A connection out of [`KeptConnections`]. Dropped, it returns to sqlx's pool the checked way.
pub struct KeptConnection<'a> {
    conn: PoolConnection<Postgres>,
    home: &'a KeptConnections,
}

impl KeptConnection<'_> {
    /// Puts the connection back without a ping. Call it only after the statement finished: `outcome` is its
    /// result, and an error that may concern the connection itself sends it back through sqlx instead.
    pub fn keep_after(self, outcome: Result<(), &sqlx::Error>) {
        let KeptConnection { conn, home } = self;
        match outcome {
            Ok(()) => home.put_back(conn),
            Err(e) if connection_is_sound_after(e) => home.put_back(conn),
            Err(_) => drop(conn),
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
        &self.conn
    }
}

impl DerefMut for KeptConnection<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
