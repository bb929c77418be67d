//! Fakes of the parties acp-merchant talks to, run on 127.0.0.1:0 inside tests and benchmarks.

pub mod fake_stripe;
pub mod webhook_receiver;
