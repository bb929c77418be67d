//! Logging: JSON lines for machines, pretty text for people at a terminal.
//!
//! Nothing here redacts after the fact: request logging records only the request id, method, matched route,
//! status and latency, never headers, query strings or bodies, so bearer tokens, payment tokens, emails, phone
//! numbers and addresses have no path into the logs. Code that logs domain data must log identifiers, not values.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls are ignored).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_target(false),
            )
            .try_init()
    } else {
        registry.with(fmt::layer().with_target(false)).try_init()
    };
    // A second init (tests spawning several apps in one process) keeps the first subscriber.
    drop(result);
}
