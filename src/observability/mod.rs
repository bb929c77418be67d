//! What operators watch: Prometheus metrics ([`metrics`]) and OpenTelemetry traces ([`traces`]).
//!
//! Both are shaped so that no label or span field can carry a secret, a token, an email or a phone number:
//! labels are route templates, methods, status codes, API versions and fixed outcome names; span fields are
//! identifiers only.

pub mod metrics;
pub mod traces;
