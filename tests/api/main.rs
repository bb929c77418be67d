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
mod payment_faults;
mod pricing;
mod readiness;
mod shutdown;
mod stock;
mod stripe;
mod unreleased;
mod v2025_09_29;
mod v2025_12_12;
mod v2026_01_16;
mod v2026_01_30;
mod v2026_04_17;
mod versions;
mod webhooks;
