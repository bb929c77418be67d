//! One integration-test binary (it links once): each module covers one area of the service.

mod admin;
// Funnel events, analytics API, CPA, events export and order tags (issue 13).
mod analytics;
mod bad_input;
mod cli;
mod conformance;
mod demo;
mod discovery;
mod feed_quality;
mod health;
mod helpers;
mod hostile_input;
mod idempotency;
mod inventory_ledger;
mod lifecycle;
mod logging;
mod merchant_webhooks;
mod metrics;
mod negotiation;
mod official;
mod order_feed;
mod own_openapi;
mod payment_faults;
mod pricing;
mod rate_limits;
mod readiness;
mod sales_policy;
mod secrets_at_rest;
mod shared;
mod shutdown;
mod signatures;
mod stock;
mod stripe;
mod support_view;
mod tls;
mod unreleased;
mod v2025_09_29;
mod v2025_12_12;
mod v2026_01_16;
mod v2026_01_30;
mod v2026_04_17;
mod variant_sync;
mod versions;
mod webhooks;
// Issue 13: the buyer's order page, headless Chromium, the compose deployment.
mod browser;
mod compose;
mod order_page;
// Issue 13: the merchant dashboard.
mod dashboard;
// Issue 14: round trips of complete (rules cache, promotion counters, usage limits under concurrency).
mod rules_round_trips;
// Issue 14: one transaction per create, update and cancel; one statement per GET.
mod round_trips;
// Issue 14: GETs on kept read connections (no release ping).
mod kept_connections;
// Issue 14: the webhook worker that keeps up.
mod webhook_throughput;
