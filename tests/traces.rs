//! Traces (issue 13): with an in-memory OpenTelemetry exporter behind the real subscriber set-up, one checkout
//! request is one trace whose root is the request span (carrying the request id) with database and PSP child
//! spans, on the simulator and on the fake Stripe. Its own test binary: the tracing subscriber is process-wide.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::{sync::OnceLock, time::Duration};

use acp_merchant::{config::LogFormat, observability::traces, telemetry};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::fake_stripe::FakeStripe;

use helpers::{AGENT_KEY, TestApp, spawn_app_with};

const VERSION: &str = "2026-04-17";
const STRIPE_SECRET: &str = "sk_test_fake_0123456789";

/// The exporter every span of this binary ends up in (installed once, before any app starts).
fn exporter() -> &'static InMemorySpanExporter {
    static INSTALLED: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    let (exporter, _provider) = INSTALLED.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(traces::sampler(1.0))
            .with_resource(traces::resource("acp-merchant-test"))
            .build();
        let layer = traces::layer(&provider, "acp-merchant-test");
        telemetry::init_with_layer(LogFormat::Json, "acp_merchant=debug,info", Some(layer));
        (exporter, provider)
    });
    exporter
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

async fn post(app: &TestApp, path: &str, request_id: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(AGENT_KEY)
        .header("API-Version", VERSION)
        .header("Request-Id", request_id)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(body)
        .send()
        .await
        .unwrap()
}

fn checkout_body() -> Value {
    json!({
        "currency": "usd",
        "line_items": [{"id": "var_trail_tee_m_blue"}],
        "fulfillment_details": {"name": "Jane Buyer", "email": "jane@example.com",
            "address": {"name": "Jane Buyer", "line_one": "1 Main St", "city": "Springfield", "state": "IL",
                        "country": "US", "postal_code": "62701"}},
    })
}

fn payment(token: &str) -> Value {
    json!({"payment_data": {"handler_id": "card_tokenized",
                            "instrument": {"type": "card", "credential": {"type": "spt", "token": token}}}})
}

/// The root `request` span carrying `request_id`, once it has ended (the span closes as the response leaves).
async fn request_span(request_id: &str) -> SpanData {
    for _ in 0..100 {
        let spans = exporter().get_finished_spans().unwrap();
        if let Some(span) = spans
            .into_iter()
            .find(|s| s.name == "request" && attribute(s, "request_id").as_deref() == Some(request_id))
        {
            return span;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no request span with request_id {request_id}");
}

fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

/// Whether `span` descends from `root` through spans of the same trace.
fn descends_from(span: &SpanData, root: SpanId, trace: &[SpanData]) -> bool {
    let mut parent = span.parent_span_id;
    for _ in 0..trace.len() {
        if parent == root {
            return true;
        }
        match trace.iter().find(|s| s.span_context.span_id() == parent) {
            Some(p) => parent = p.parent_span_id,
            None => return false,
        }
    }
    false
}

/// Creates a session, completes it with `token`, and checks the complete request's trace.
async fn complete_is_one_trace(app: &TestApp, psp: &str, token: &str) {
    let create_id = format!("req_create_{}", uuid::Uuid::new_v4().simple());
    let created = post(app, "/checkout_sessions", &create_id, &checkout_body()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let session: Value = created.json().await.unwrap();
    let path = format!("/checkout_sessions/{}/complete", session["id"].as_str().unwrap());
    let complete_id = format!("req_complete_{}", uuid::Uuid::new_v4().simple());
    let completed = post(app, &path, &complete_id, &payment(token)).await;
    assert_eq!(completed.status(), StatusCode::OK);
    let body: Value = completed.json().await.unwrap();
    assert_eq!(body["status"], "completed", "{body}");

    let root = request_span(&complete_id).await;
    let create_root = request_span(&create_id).await;
    let trace_id = root.span_context.trace_id();
    assert_ne!(
        create_root.span_context.trace_id(),
        trace_id,
        "each request is its own trace"
    );
    assert_eq!(
        root.parent_span_id,
        SpanId::INVALID,
        "the request span is the trace's root"
    );
    assert_eq!(
        attribute(&root, "route").as_deref(),
        Some("/checkout_sessions/{id}/complete")
    );
    let trace = spans_of(trace_id);
    let roots: Vec<&SpanData> = trace.iter().filter(|s| s.parent_span_id == SpanId::INVALID).collect();
    assert_eq!(roots.len(), 1, "one root in the trace: {:?}", names(&trace));
    let root_id = root.span_context.span_id();
    let db: Vec<&SpanData> = trace.iter().filter(|s| s.name.starts_with("db.")).collect();
    assert!(!db.is_empty(), "database spans: {:?}", names(&trace));
    assert!(db.iter().all(|s| descends_from(s, root_id, &trace)));
    assert!(
        db.iter()
            .all(|s| attribute(s, "db.system").as_deref() == Some("postgresql"))
    );
    let charge = trace
        .iter()
        .find(|s| s.name == "psp.charge")
        .unwrap_or_else(|| panic!("no psp.charge span: {:?}", names(&trace)));
    assert!(descends_from(charge, root_id, &trace));
    assert_eq!(attribute(charge, "psp").as_deref(), Some(psp));
    assert_eq!(attribute(charge, "outcome").as_deref(), Some("succeeded"));
    // The request id on every span of the request, not only on its root.
    for span in &trace {
        assert_eq!(
            attribute(span, "request_id").as_deref(),
            Some(complete_id.as_str()),
            "{}",
            span.name
        );
    }
    // Nothing of the buyer or the payment credential on any span.
    for span in &trace {
        for kv in &span.attributes {
            let value = kv.value.as_str();
            assert!(!value.contains("spt_"), "a payment token on span {}: {kv:?}", span.name);
            assert!(
                !value.contains("jane@example.com"),
                "an email on span {}: {kv:?}",
                span.name
            );
        }
    }
}

fn names(trace: &[SpanData]) -> Vec<String> {
    trace.iter().map(|s| s.name.to_string()).collect()
}

#[tokio::test]
async fn a_complete_on_the_simulator_is_one_trace_with_database_and_psp_spans() {
    exporter();
    let app = spawn_app_with(&[]).await;
    complete_is_one_trace(&app, "simulator", "spt_sim_ok").await;
}

#[tokio::test]
async fn a_complete_on_stripe_is_one_trace_with_database_and_psp_spans() {
    exporter();
    let fake = FakeStripe::start(STRIPE_SECRET).await;
    let base = fake.base_url();
    let app = spawn_app_with(&[
        ("psp", "stripe"),
        ("stripe_secret_key", STRIPE_SECRET),
        ("stripe_api_base", base.as_str()),
        ("stripe_timeout_ms", "1000"),
        ("stripe_retry_backoff_ms", "20"),
    ])
    .await;
    let token = format!("spt_ok_{}", uuid::Uuid::new_v4().simple());
    complete_is_one_trace(&app, "stripe", &token).await;
}

/// The real exporter: spans leave as OTLP/HTTP protobuf through our reqwest client to the configured endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_with_otlp_over_http_protobuf() {
    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use std::sync::{Arc, Mutex};

    let received: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let seen = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push((content_type, body.len()));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let settings = traces::OtelSettings {
        enabled: true,
        endpoint: format!("http://{addr}/v1/traces").parse().unwrap(),
        service_name: "acp-merchant-export-test".into(),
        sample_ratio: 1.0,
        export_timeout: Duration::from_secs(2),
    };
    let provider = traces::provider(&settings).expect("exporter builds");
    provider.tracer("export-test").in_span("exported", |_| {});
    // The batch processor exports from its own thread and blocks the caller while it does.
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = provider.force_flush();
        let _ = provider.shutdown();
        flushed
    })
    .await
    .unwrap();
    assert!(flushed.is_ok(), "{flushed:?}");
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one export request: {got:?}");
    assert_eq!(got[0].0, "application/x-protobuf");
    assert!(got[0].1 > 0, "a non-empty protobuf body");
}
