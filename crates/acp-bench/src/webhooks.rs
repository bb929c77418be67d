//! The agent's webhook receiver: answers every POST 200 at once and records when each order's first event
//! arrived. Signatures are not verified (the test suite does that); the point here is delivery and lag.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode};
use serde::Serialize;

use crate::{error::BenchError, stats::Samples};

#[derive(Default)]
pub struct Arrivals {
    first: Mutex<HashMap<String, Instant>>,
    posts: AtomicU64,
    without_order: AtomicU64,
}

impl Arrivals {
    fn record(&self, body: &[u8]) {
        self.posts.fetch_add(1, Ordering::Relaxed);
        match order_of(body) {
            Some(order) => {
                let now = Instant::now();
                let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
                first.entry(order).or_insert(now);
            }
            None => {
                self.without_order.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn arrival(&self, order: &str) -> Option<Instant> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(order)
            .copied()
    }

    pub fn posts(&self) -> u64 {
        self.posts.load(Ordering::Relaxed)
    }
}

/// The order an event is about: `data.id` (2026-04-17 on: the full Order), or `data.order_id` (older bodies).
fn order_of(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = &json["data"];
    data["id"]
        .as_str()
        .or_else(|| data["order_id"].as_str())
        .map(str::to_owned)
}

/// Starts the receiver on 127.0.0.1:0; returns its URL (any path is accepted) and the arrivals it records.
pub async fn start() -> Result<(String, Arc<Arrivals>), BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(BenchError::io("webhook receiver: cannot bind"))?;
    let addr = listener
        .local_addr()
        .map_err(BenchError::io("webhook receiver: no address"))?;
    let arrivals = Arc::new(Arrivals::default());
    let app = Router::new().fallback(receive).with_state(arrivals.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((
        format!("http://{addr}/agentic_checkout/webhooks/order_events"),
        arrivals,
    ))
}

async fn receive(State(arrivals): State<Arc<Arrivals>>, body: Bytes) -> (StatusCode, &'static str) {
    arrivals.record(&body);
    (StatusCode::OK, r#"{"received":true}"#)
}

/// Deliveries measured against the orders the agents saw completed.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookFigures {
    pub completed_orders: usize,
    /// Completed orders whose event arrived.
    pub delivered: usize,
    /// Completed orders still without an event.
    pub backlog: usize,
    /// Arrival − the moment the complete response was received (0 when the event came first).
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// Every POST received, duplicates and other events included.
    pub posts: u64,
}

pub fn figures(completed: &HashMap<String, Instant>, arrivals: &Arrivals) -> WebhookFigures {
    let mut lags = Samples::default();
    for (order, done) in completed {
        if let Some(at) = arrivals.arrival(order) {
            lags.push(at.saturating_duration_since(*done));
        }
    }
    let summary = lags.summary(Duration::ZERO);
    WebhookFigures {
        completed_orders: completed.len(),
        delivered: lags.len(),
        backlog: completed.len() - lags.len(),
        lag_p50_ms: summary.p50_ms,
        lag_p99_ms: summary.p99_ms,
        lag_max_ms: summary.max_ms,
        posts: arrivals.posts(),
    }
}

/// Waits (polling every 100 ms) until every completed order has its event or `within` passes.
pub async fn drain(completed: &HashMap<String, Instant>, arrivals: &Arrivals, within: Duration) -> WebhookFigures {
    let deadline = Instant::now() + within;
    loop {
        let now = figures(completed, arrivals);
        if now.backlog == 0 || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_matched_to_orders_and_lag_is_measured_from_completion() {
        let arrivals = Arrivals::default();
        let done = Instant::now();
        let completed: HashMap<String, Instant> = [("ord_1".to_owned(), done), ("ord_2".to_owned(), done)]
            .into_iter()
            .collect();
        arrivals.record(br#"{"type":"order_create","data":{"id":"ord_1","status":"confirmed"}}"#);
        arrivals.record(br#"{"type":"order_create","data":{"id":"ord_1"}}"#);
        arrivals.record(b"not json");
        let f = figures(&completed, &arrivals);
        assert_eq!(f.completed_orders, 2);
        assert_eq!(f.delivered, 1);
        assert_eq!(f.backlog, 1);
        assert_eq!(f.posts, 3);
    }

    #[test]
    fn legacy_bodies_name_the_order_in_order_id() {
        assert_eq!(
            order_of(br#"{"type":"order_created","data":{"order_id":"ord_9"}}"#),
            Some("ord_9".to_owned())
        );
    }
}
