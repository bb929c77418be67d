//! Signed order webhooks to the agent, from a durable outbox.

pub mod client;
pub mod destination;
pub mod merchant;
pub mod outbox;
pub mod queue;
pub mod signer;
pub mod standard;
pub mod worker;
