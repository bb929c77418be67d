//! Signed order webhooks to the agent, from a durable outbox.

pub mod client;
pub mod destination;
pub mod merchant;
pub mod outbox;
pub mod queue;
pub mod signer;
pub mod standard;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

/// Tells this process's delivery worker that an event was just committed, so it claims it now instead of at its
/// next poll: a steady stream of orders is then delivered in small, even batches rather than in one burst per
/// poll interval. Only a hint: events queued by other processes (or by paths that do not wake) are found by the
/// poll, so a lost wake costs latency, never an event.
#[derive(Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    /// Call after the transaction that queued events has committed (before, the worker could not see them).
    pub fn wake(&self) {
        // A wake with no worker waiting is kept (one permit), so it is not lost while the worker is busy.
        self.0.notify_one();
    }

    /// Waits for the next [`Wakeup::wake`].
    pub async fn woken(&self) {
        self.0.notified().await;
    }
}
