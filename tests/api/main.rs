//! One integration-test binary (it links once): each module covers one area of the service.

mod admin;
mod bad_input;
mod cli;
mod conformance;
mod demo;
mod health;
mod helpers;
mod idempotency;
mod lifecycle;
mod logging;
mod official;
mod own_openapi;
mod pricing;
mod readiness;
mod shutdown;
mod stripe;
mod webhooks;
