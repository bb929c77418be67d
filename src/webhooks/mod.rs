//! Signed order webhooks to the agent, from a durable outbox.

pub mod client;
pub mod outbox;
pub mod signer;
pub mod worker;
