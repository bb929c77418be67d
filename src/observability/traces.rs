//! OpenTelemetry traces: the `tracing` spans (one per request, with children for database work and PSP calls)
//! exported with OTLP over HTTP/protobuf. The export goes through this project's own reqwest client (rustls),
//! so tracing brings no second HTTP or TLS stack.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use reqwest::Url;
use tracing_subscriber::{Layer, Registry};

/// `ACP_OTEL_*`.
#[derive(Debug, Clone)]
pub struct OtelSettings {
    pub enabled: bool,
    /// The collector's OTLP/HTTP traces URL (for example `http://collector:4318/v1/traces`).
    pub endpoint: Url,
    pub service_name: String,
    /// Share of new traces kept; a request whose caller sampled it (a `traceparent`) keeps the caller's choice.
    pub sample_ratio: f64,
    pub export_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(String),
    #[error("OpenTelemetry export needs a running Tokio runtime")]
    NoRuntime,
}

/// The layer that turns `tracing` spans into OpenTelemetry spans, for the subscriber in `telemetry`.
pub type OtelLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// A tracer provider exporting in batches to the configured collector.
pub fn provider(settings: &OtelSettings) -> Result<SdkTracerProvider, TraceError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TraceError::NoRuntime)?;
    let client = reqwest::Client::builder()
        .timeout(settings.export_timeout)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpHttpClient { client, runtime })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.endpoint.as_str())
        .with_timeout(settings.export_timeout)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(settings.sample_ratio))
        .with_resource(resource(&settings.service_name))
        .build())
}

pub fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

pub fn resource(service_name: &str) -> Resource {
    Resource::builder().with_service_name(service_name.to_owned()).build()
}

/// The `tracing` layer feeding `provider`'s tracer.
pub fn layer(provider: &SdkTracerProvider, service_name: &str) -> OtelLayer {
    let tracer = provider.tracer(service_name.to_owned());
    Box::new(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// The OTLP exporter's HTTP client: our reqwest client, driven on the Tokio runtime (the SDK's batch processor
/// exports from its own thread, where reqwest could not run by itself).
#[derive(Debug)]
struct OtlpHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

/// Collector answers are tiny; anything bigger is not read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let (status, body) = self
            .runtime
            .spawn(async move {
                let response = client.execute(request).await?;
                let status = response.status();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, body))
            })
            .await??;
        let body = body.slice(..body.len().min(MAX_RESPONSE_BYTES));
        Ok(Response::builder().status(status).body(body)?)
    }
}
