//! Logging: JSON lines for machines, pretty text for people at a terminal.
//!
//! Nothing here redacts after the fact: request logging records only the request id, method, matched route,
//! status and latency, never headers, query strings or bodies, so bearer tokens, payment tokens, emails, phone
//! numbers and addresses have no path into the logs. Code that logs domain data must log identifiers, not values.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;
use crate::observability::traces::{self, OtelLayer, OtelSettings};

/// Installs the global subscriber. Safe to call more than once (later calls are ignored).
pub fn init(format: LogFormat, level: &str) {
    init_with_layer(format, level, None);
}

/// Like [`init`], exporting spans to OpenTelemetry when `otel.enabled`. The returned provider must be shut down
/// at exit so the last batch of spans is sent. An exporter that cannot be built is logged and tracing stays off:
/// traces are never a reason not to serve.
pub fn init_with_traces(format: LogFormat, level: &str, otel: &OtelSettings) -> Option<SdkTracerProvider> {
    let provider = if otel.enabled {
        traces::provider(otel).map_err(|e| e.to_string())
    } else {
        Err(String::new())
    };
    match provider {
        Ok(provider) => {
            init_with_layer(format, level, Some(traces::layer(&provider, &otel.service_name)));
            tracing::info!(endpoint = %otel.endpoint, "exporting traces with OTLP");
            Some(provider)
        }
        Err(reason) => {
            init_with_layer(format, level, None);
            if !reason.is_empty() {
                tracing::error!(error = %reason, "traces are off: the OTLP exporter could not be built");
            }
            None
        }
    }
}

/// Installs the global subscriber with an optional extra layer (the OpenTelemetry one, or a test's).
pub fn init_with_layer(format: LogFormat, level: &str, extra: Option<OtelLayer>) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(extra).with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    // The whole span stack, not just the innermost: a line logged inside a database or PSP span
                    // still carries the request span and its request id.
                    .with_span_list(true)
                    .with_target(false),
            )
            .try_init()
    } else {
        registry.with(fmt::layer().with_target(false)).try_init()
    };
    // A second init (tests spawning several apps in one process) keeps the first subscriber.
    drop(result);
}
