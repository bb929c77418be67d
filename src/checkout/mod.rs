//! Checkout sessions: the canonical model, its pure recomputation, and the use cases over PostgreSQL.

pub mod compute;
pub mod model;
pub mod service;
