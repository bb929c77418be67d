//! The webhook worker that keeps up (issue 14): leased batch claims, delivery with no transaction open, bounded
//! concurrency, per-order ordering and at-least-once delivery across a worker that died holding claims.
//!
//! The receiver here is this file's own: it counts requests in flight and can hold each one until the test lets
//! it go, which the shared fake receiver does not do.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use acp_merchant::{
    config::Settings,
    http::extract::ENV_AGENT_ID,
    webhooks::{
        queue,
        signer::{self, TOLERANCE_SECS},
        worker::{self, WorkerConfig},
    },
};
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde_json::Value;
use sqlx::{Connection, PgPool};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app_with};

const SECRET: &str = "whsec_throughput_0123456789";

/// One request as the receiver answered it, in the order the answers were decided.
#[derive(Debug, Clone)]
struct Got {
    webhook_id: String,
    body: Value,
    signature_valid: bool,
    status: u16,
    arrived: Instant,
}

#[derive(Default)]
struct Inner {
    log: Mutex<Vec<Got>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    hold_ms: AtomicU64,
    /// Answer 503 to every n-th request (0: never).
    fail_every: AtomicU64,
    seen: AtomicU64,
    /// When set, each request announces itself here and waits until the test answers the oneshot.
    gate: Mutex<Option<mpsc::UnboundedSender<oneshot::Sender<()>>>>,
}

#[derive(Clone)]
struct Receiver {
    inner: Arc<Inner>,
    url: String,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let inner = Arc::new(Inner::default());
        let url = format!("http://{}", listener.local_addr().expect("receiver address"));
        let app = axum::Router::new().fallback(receive).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { inner, url }
    }

    fn hold_each_for(&self, ms: u64) {
        self.inner.hold_ms.store(ms, Ordering::SeqCst);
    }

    fn fail_every(&self, n: u64) {
        self.inner.fail_every.store(n, Ordering::SeqCst);
    }

    /// From now on every request waits for the test: it arrives on the returned channel as a go-ahead sender.
    fn gate(&self) -> mpsc::UnboundedReceiver<oneshot::Sender<()>> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.inner.gate.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    fn log(&self) -> Vec<Got> {
        self.inner.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::SeqCst)
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let arrived = Instant::now();
    let now_in_flight = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inner.peak.fetch_max(now_in_flight, Ordering::SeqCst);
    let gate = inner.gate.lock().unwrap_or_else(PoisonError::into_inner).clone();
    if let Some(gate) = gate {
        let (go, wait) = oneshot::channel();
        if gate.send(go).is_ok() {
            let _ = wait.await;
        }
    }
    let hold = inner.hold_ms.load(Ordering::SeqCst);
    if hold > 0 {
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let unix_now = chrono::Utc::now().timestamp().max(0) as u64;
    let signature_valid =
        signer::verify(SECRET, &header("merchant-signature"), &body, unix_now, TOLERANCE_SECS).is_ok();
    let n = inner.seen.fetch_add(1, Ordering::SeqCst) + 1;
    let fail_every = inner.fail_every.load(Ordering::SeqCst);
    let status = match (signature_valid, fail_every) {
        (false, _) => StatusCode::UNAUTHORIZED,
        (true, every) if every > 0 && n % every == 0 => StatusCode::SERVICE_UNAVAILABLE,
        (true, _) => StatusCode::OK,
    };
    inner.log.lock().unwrap_or_else(PoisonError::into_inner).push(Got {
        webhook_id: header("webhook-id"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_valid,
        status: status.as_u16(),
        arrived,
    });
    inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    status
}

/// Settings pointing the environment agent at `receiver`, other background work kept out of the way.
fn settings_for(receiver: &Receiver, extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("agent_webhook_url", receiver.url.clone()),
        ("agent_webhook_secret", SECRET.to_owned()),
        ("webhook_poll_interval_ms", "25".to_owned()),
        ("webhook_retry_schedule_ms", "50,100".to_owned()),
        ("webhook_timeout_ms", "5000".to_owned()),
        ("expiry_sweep_interval_ms", "600000".to_owned()),
        ("idempotency_sweep_interval_ms", "600000".to_owned()),
        ("reconcile_interval_ms", "600000".to_owned()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    pairs
}

async fn app_for(receiver: &Receiver, extra: &[(&'static str, &'static str)]) -> TestApp {
    let owned = settings_for(receiver, extra);
    let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app_with(&pairs).await
}

/// Queues `steps` events for each of `orders` orders in one statement (as the outbox would, one per order change),
/// in step order within each order. Returns nothing: the tests read the ids back from the table.
async fn queue_events(db: &PgPool, prefix: &str, orders: i32, steps: i32) {
    sqlx::query(
        "insert into webhook_event (event_id, order_id, stream, agent_id, event_type, payload)
         select gen_random_uuid(), $1 || o, $1 || o, $2, case when s = 1 then 'order_create' else 'order_update' end,
                jsonb_build_object('type', case when s = 1 then 'order_create' else 'order_update' end,
                                   'data', jsonb_build_object('id', $1 || o, 'step', s))
         from generate_series(1, $3) o, generate_series(1, $4) s
         order by o, s",
    )
    .bind(prefix)
    .bind(ENV_AGENT_ID)
    .bind(orders)
    .bind(steps)
    .execute(db)
    .await
    .expect("queue events");
}

async fn count(db: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar("select count(*) from webhook_event where status = $1")
        .bind(status)
        .fetch_one(db)
        .await
        .expect("count events")
}

async fn all_delivered(db: &PgPool, total: i64, within: Duration) -> bool {
    eventually(within, || async { count(db, "delivered").await == total }).await
}

/// The ids of each order's events, in sequence order.
async fn events_by_order(db: &PgPool) -> HashMap<String, Vec<String>> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as("select order_id, event_id from webhook_event order by sequence")
        .fetch_all(db)
        .await
        .expect("read events");
    let mut by_order: HashMap<String, Vec<String>> = HashMap::new();
    for (order, event) in rows {
        by_order.entry(order).or_default().push(event.to_string());
    }
    by_order
}

/// Backends of this test's database, from the server (application_name `acp-merchant`), inside a transaction
/// that began at least `older_than_ms` ago or sitting idle in one.
async fn open_transactions(db: &PgPool, older_than_ms: i32) -> Vec<(i32, String)> {
    sqlx::query_as(
        "select pid, coalesce(state, '') from pg_stat_activity
         where datname = current_database() and application_name = 'acp-merchant' and pid <> pg_backend_pid()
           and (state like 'idle in transaction%' or xact_start < now() - $1 * interval '1 millisecond')",
    )
    .bind(older_than_ms)
    .fetch_all(db)
    .await
    .expect("read pg_stat_activity")
}

#[tokio::test]
async fn no_transaction_is_open_while_a_webhook_is_in_flight() {
    let receiver = Receiver::start().await;
    let mut arrivals = receiver.gate();
    // Polling once a second keeps the worker's own (short) claim statements rare during the probe.
    let app = app_for(&receiver, &[("webhook_poll_interval_ms", "1000")]).await;
    queue_events(&app.db, "ord_tx_", 1, 1).await;
    let go = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("the webhook arrives")
        .expect("gate open");

    // A transaction opened by a connection that says it is the server, to show the probe sees one.
    let url = app
        .state
        .settings
        .database_url
        .as_ref()
        .expect("database url")
        .expose()
        .to_owned();
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("database url parses");
    let mut control = sqlx::PgConnection::connect_with(&options.application_name("acp-merchant"))
        .await
        .expect("control connection");
    let mut control_tx = control.begin().await.expect("begin");
    let control_pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut *control_tx)
        .await
        .expect("pid");

    // The request is held; any transaction spanning it is by now older than 300 ms. A statement that merely runs
    // long on a busy machine is gone at the next look; a transaction spanning the call is in every look.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut looks = Vec::new();
    for _ in 0..3 {
        let open = open_transactions(&app.db, 300).await;
        let only_control = open.iter().map(|(pid, _)| *pid).collect::<Vec<_>>() == vec![control_pid];
        looks.push(open);
        if only_control {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = looks.last().expect("looked");
    assert_eq!(
        last.iter().map(|(pid, _)| *pid).collect::<Vec<_>>(),
        vec![control_pid],
        "only the control transaction is open while the webhook is in flight: {looks:?}"
    );
    assert_eq!(receiver.log().len(), 0, "the request was still held during the probe");
    control_tx.rollback().await.expect("rollback");

    go.send(()).expect("release the request");
    assert!(all_delivered(&app.db, 1, Duration::from_secs(10)).await);
    let log = receiver.log();
    assert!(
        log.len() == 1 && log[0].signature_valid && log[0].status == 200,
        "{log:?}"
    );
}

#[tokio::test]
async fn a_thousand_order_burst_is_delivered_with_each_orders_events_in_sequence() {
    const ORDERS: i32 = 1000;
    const STEPS: i32 = 3;
    let receiver = Receiver::start().await;
    // Every 7th answer is a 503: retries are part of the burst.
    receiver.fail_every(7);
    let app = app_for(&receiver, &[]).await;
    queue_events(&app.db, "ord_burst_", ORDERS, STEPS).await;
    let total = i64::from(ORDERS * STEPS);
    assert!(
        all_delivered(&app.db, total, Duration::from_secs(120)).await,
        "{} of {total} delivered",
        count(&app.db, "delivered").await
    );

    let log = receiver.log();
    assert!(log.iter().all(|g| g.signature_valid), "every request is signed");
    let expected = events_by_order(&app.db).await;
    assert_eq!(expected.len(), ORDERS as usize);
    let mut per_order: HashMap<String, Vec<&Got>> = HashMap::new();
    for got in &log {
        let order = got.body["data"]["id"].as_str().expect("order id in body").to_owned();
        per_order.entry(order).or_default().push(got);
    }
    for (order, events) in &expected {
        let received = per_order.get(order).map(Vec::as_slice).unwrap_or_default();
        assert_in_sequence(order, events, received);
    }
    let retried = log.iter().filter(|g| g.status == 503).count();
    assert!(retried > 0, "the burst met failures and retried them");
}

/// Each of `events` (in sequence) reached the receiver with a 200, under its own id, and nothing of a later event
/// arrived before the earlier one's 200; failed tries (503) come again with the same id.
fn assert_in_sequence(order: &str, events: &[String], received: &[&Got]) {
    let mut position = 0;
    for (step, event) in events.iter().enumerate() {
        let accepted = received[position..]
            .iter()
            .position(|g| g.webhook_id == *event && g.status == 200)
            .unwrap_or_else(|| panic!("{order}: event {step} never accepted in order: {received:?}"));
        let before = &received[position..position + accepted];
        assert!(
            before.iter().all(|g| g.webhook_id == *event && g.status != 200),
            "{order}: only failed tries of event {step} come before its 200: {received:?}"
        );
        assert_eq!(received[position + accepted].body["data"]["step"], step + 1);
        position += accepted + 1;
        // Repeats of an accepted event (at-least-once) may follow; nothing of an earlier one does.
        while received.get(position).is_some_and(|g| g.webhook_id == *event) {
            position += 1;
        }
    }
    assert_eq!(
        position,
        received.len(),
        "{order}: nothing unexpected after the last event"
    );
}

#[tokio::test]
async fn a_worker_that_died_holding_claims_has_them_redelivered_with_the_same_ids_after_its_lease() {
    let receiver = Receiver::start().await;
    let app = app_for(&receiver, &[("webhook_worker_enabled", "false")]).await;
    // Three orders with one event, one with two.
    queue_events(&app.db, "ord_single_", 3, 1).await;
    queue_events(&app.db, "ord_pair_", 1, 2).await;

    // A worker claims what is due, then dies: it never renews, records or releases.
    let lease = Duration::from_millis(1200);
    let claimed_at = Instant::now();
    let claimed = queue::claim(&app.db, Uuid::new_v4(), 64, lease).await.expect("claim");
    let claimed_ids: Vec<String> = claimed.iter().map(|c| c.event_id.to_string()).collect();
    assert_eq!(
        claimed.len(),
        4,
        "one event per order: the pair's second waits for its first"
    );
    assert_eq!(count(&app.db, "delivering").await, 4);

    let stop = CancellationToken::new();
    let config = WorkerConfig::from_settings(&app.state.settings, ENV_AGENT_ID).expect("worker config");
    let survivor = tokio::spawn(worker::run(app.db.clone(), config, stop.clone()));
    assert!(all_delivered(&app.db, 5, Duration::from_secs(15)).await);
    stop.cancel();
    survivor.await.expect("worker stops");

    let log = receiver.log();
    for id in &claimed_ids {
        let got: Vec<&Got> = log.iter().filter(|g| g.webhook_id == *id).collect();
        assert!(!got.is_empty(), "{id} redelivered under the same Webhook-Id");
        assert!(
            got.iter().all(|g| g.arrived >= claimed_at + lease),
            "{id} waited for the dead worker's lease to end"
        );
    }
    let pair = &events_by_order(&app.db).await["ord_pair_1"];
    let first_of = |id: &String| log.iter().position(|g| g.webhook_id == *id).expect("delivered");
    assert!(first_of(&pair[0]) < first_of(&pair[1]), "the pair stays in order");
    let holders: i64 = sqlx::query_scalar("select count(*) from webhook_event where holder is not null")
        .fetch_one(&app.db)
        .await
        .expect("holders");
    assert_eq!(holders, 0, "no claim is left behind");
}

#[tokio::test]
async fn leases_are_renewed_while_a_long_batch_waits_for_its_destination() {
    let receiver = Receiver::start().await;
    receiver.hold_each_for(250);
    // One at a time, 8 × 250 ms: the batch outlives its 1.2 s lease unless it is renewed.
    let app = app_for(
        &receiver,
        &[
            ("webhook_per_destination", "1"),
            ("webhook_lease_ms", "1200"),
            ("webhook_timeout_ms", "1000"),
        ],
    )
    .await;
    queue_events(&app.db, "ord_long_", 8, 1).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&app.db, "delivering").await == 8
        })
        .await
    );
    // A second worker polls all along: a lapsed claim would be taken over and sent again, beside the first.
    let stop = CancellationToken::new();
    let config = WorkerConfig::from_settings(&app.state.settings, ENV_AGENT_ID).expect("worker config");
    let second = tokio::spawn(worker::run(app.db.clone(), config, stop.clone()));
    assert!(all_delivered(&app.db, 8, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    second.await.expect("second worker stops");
    let log = receiver.log();
    assert_eq!(
        log.len(),
        8,
        "each event sent once: no claim lapsed and was taken over: {log:?}"
    );
    assert_eq!(receiver.peak(), 1, "only the first worker delivered");
    let attempts: i64 = sqlx::query_scalar("select count(*) from webhook_attempt")
        .fetch_one(&app.db)
        .await
        .expect("attempts");
    assert_eq!(attempts, 8);
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_record_over_the_new_holder() {
    let app = spawn_app_with(&[("webhook_worker_enabled", "false")]).await;
    queue_events(&app.db, "ord_lost_", 1, 1).await;
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    let first = queue::claim(&app.db, old, 8, Duration::from_millis(1))
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = queue::claim(&app.db, new, 8, Duration::from_secs(60))
        .await
        .expect("claim again");
    assert_eq!(second.len(), 1, "the ended lease made the event due again");
    assert_eq!(second[0].event_id, first[0].event_id, "same event, same Webhook-Id");
    let attempt = queue::AttemptRecord {
        url: "http://127.0.0.1:9/".into(),
        response_status: Some(200),
        error: None,
        duration_ms: 1,
        last_error: None,
    };
    let stale = queue::record(&app.db, first[0].event_id, old, queue::NextState::Delivered, &attempt).await;
    assert!(!stale.expect("record"), "the old holder's outcome is refused");
    assert_eq!(count(&app.db, "delivering").await, 1, "still the new holder's");
    let kept = queue::record(&app.db, first[0].event_id, new, queue::NextState::Delivered, &attempt).await;
    assert!(kept.expect("record"), "the holder's outcome is kept");
    assert_eq!(count(&app.db, "delivered").await, 1);
}

#[tokio::test]
async fn a_destination_never_sees_more_than_its_bound_of_requests_at_once() {
    let receiver = Receiver::start().await;
    receiver.hold_each_for(60);
    let app = app_for(
        &receiver,
        &[("webhook_per_destination", "3"), ("webhook_concurrency", "32")],
    )
    .await;
    queue_events(&app.db, "ord_bound_", 24, 1).await;
    assert!(all_delivered(&app.db, 24, Duration::from_secs(20)).await);
    assert_eq!(
        receiver.peak(),
        3,
        "deliveries run concurrently, never more than 3 at this destination"
    );
}

#[tokio::test]
async fn the_worker_never_has_more_than_its_total_bound_in_flight() {
    let receiver = Receiver::start().await;
    receiver.hold_each_for(60);
    let app = app_for(
        &receiver,
        &[("webhook_per_destination", "8"), ("webhook_concurrency", "2")],
    )
    .await;
    queue_events(&app.db, "ord_total_", 12, 1).await;
    assert!(all_delivered(&app.db, 12, Duration::from_secs(20)).await);
    assert_eq!(
        receiver.peak(),
        2,
        "the total bound holds below the per-destination one"
    );
}

#[tokio::test]
async fn stopping_lets_the_attempt_under_way_finish_and_releases_the_claims_not_attempted() {
    let receiver = Receiver::start().await;
    let mut arrivals = receiver.gate();
    let app = app_for(&receiver, &[("webhook_per_destination", "1")]).await;
    queue_events(&app.db, "ord_stop_", 5, 1).await;
    let go = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("the first webhook arrives")
        .expect("gate open");
    assert_eq!(
        count(&app.db, "delivering").await,
        5,
        "the batch is claimed, one attempt under way"
    );

    app.state.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    go.send(()).expect("let the attempt under way finish");
    let settled = eventually(Duration::from_secs(10), || async {
        count(&app.db, "delivered").await == 1 && count(&app.db, "pending").await == 4
    })
    .await;
    assert!(settled, "one delivered, four released");
    let holders: i64 = sqlx::query_scalar("select count(*) from webhook_event where holder is not null")
        .fetch_one(&app.db)
        .await
        .expect("holders");
    assert_eq!(holders, 0);
    assert_eq!(receiver.log().len(), 1, "no new attempt started after the stop");
}

#[test]
fn a_lease_no_longer_than_the_webhook_timeout_is_refused() {
    let base = [
        ("env", "development"),
        ("psp", "simulator"),
        ("webhook_timeout_ms", "10000"),
    ];
    let refused = Settings::from_pairs(&[base.as_slice(), &[("webhook_lease_ms", "10000")]].concat())
        .expect_err("a lease as long as the timeout");
    assert_eq!(refused.setting, "ACP_WEBHOOK_LEASE_MS");
    assert!(
        refused.problem.contains("ACP_WEBHOOK_TIMEOUT_MS"),
        "{}",
        refused.problem
    );
    let accepted = Settings::from_pairs(&[base.as_slice(), &[("webhook_lease_ms", "10001")]].concat())
        .expect("a lease longer than the timeout");
    assert_eq!(accepted.webhook_delivery.lease, Duration::from_millis(10001));
    for key in ["webhook_batch_size", "webhook_concurrency", "webhook_per_destination"] {
        let zero = Settings::from_pairs(&[base.as_slice(), &[(key, "0")]].concat()).expect_err("zero refused");
        assert_eq!(zero.setting, format!("ACP_{}", key.to_ascii_uppercase()));
    }
}

#[tokio::test]
async fn a_completed_orders_webhook_goes_out_at_once_not_at_the_next_poll() {
    let receiver = Receiver::start().await;
    // A poll far longer than the test: only the settlement's wake-up can bring the event out in time.
    let app = app_for(&receiver, &[("webhook_poll_interval_ms", "60000")]).await;
    // The worker's first claim, at start-up, finds nothing; it is asleep in its poll from then on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let order_id = crate::webhooks::buy(&app).await;
    let delivered = crate::helpers::eventually(Duration::from_secs(5), || async {
        receiver
            .log()
            .iter()
            .any(|got| got.signature_valid && got.body["data"]["id"] == order_id.as_str())
    })
    .await;
    assert!(
        delivered,
        "the order's webhook waited for the 60 s poll: {:?}",
        receiver.log()
    );
}
