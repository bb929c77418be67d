//! Checkout sessions: the canonical model, its pure recomputation, and the use cases over PostgreSQL.
//!
//! Paying is split in the modules that own each part of the argument for "exactly once":
//! [`attempt`] (the durable payment attempt and its runner lease), [`complete`] (the saga),
//! [`settle`] (the one fenced transaction that records an outcome), [`reconcile`] (attempts nobody runs any
//! more), [`psp_events`] (the PSP's own reports) and [`stock`] (on-hand versus reserved units).

pub mod attempt;
pub mod complete;
pub mod compute;
pub mod model;
pub mod negotiation;
pub mod psp_events;
pub mod reconcile;
pub mod redemptions;
pub mod service;
pub mod settle;
pub mod stock;
