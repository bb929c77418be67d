//! ACP merchant checkout server.
//!
//! A guided tour of the modules, from the outside in:
//! - [`config`]: layered settings (defaults → file → `ACP_*` env), validated once at start-up.
//! - [`telemetry`]: JSON or pretty logs; request spans carry the request id and nothing sensitive.
//! - [`startup`]: binds the listener, runs the HTTP server and background workers, shuts down gracefully.
//! - [`http`]: routes and request-level layers; [`error`]: the ACP error object every failure becomes;
//!   [`input_limits`]: hostile input refused at the edge.
//! - [`signatures`]: agents' request signatures (Ed25519, ES256, HMAC-SHA256 over the RFC 8785 body).
//! - [`db`]: the pool, embedded migrations and readiness.
//! - [`localdb`]: private PostgreSQL clusters for the demo and the tests.
//! - [`tls`]: native HTTPS (TLS 1.3, certificate reload); [`rate_limit`]: token buckets per agent and address.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod checkout;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod html;
pub mod http;
pub mod idempotency;
pub mod input_limits;
pub mod jsonpath;
pub mod localdb;
pub mod markdown;
pub mod orders;
pub mod pricing;
pub mod protocol;
pub mod psp;
pub mod secrets;
pub mod signatures;
pub mod startup;
pub mod telemetry;
pub mod webhooks;
// Issue 12: native TLS and rate limits.
pub mod rate_limit;
pub mod tls;
// Funnel events, analytics and CPA (issue 13).
pub mod analytics;
// Issue 13: the buyer's order page.
pub mod order_page;
// Issue 13: Prometheus metrics and OpenTelemetry traces.
pub mod observability;
// The merchant dashboard (issue 13).
pub mod dashboard;
