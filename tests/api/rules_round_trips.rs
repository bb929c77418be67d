//! Issue 14, round trips of complete: the pricing rules are cached per process and follow changes through
//! LISTEN/NOTIFY (with a fallback poll), complete confirms their version before charging, only the limited
//! promotions a cart can use are locked (per-promotion counters), and usage limits hold under concurrent completes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::{
    helpers::{TestApp, eventually, spawn_app_with},
    lifecycle::{TEE, payment, session},
};

/// A bundle whose automatic promotion takes `amount` (> 0) off every order, and two limited codes of 100.
fn rules(amount: i64) -> Value {
    json!({
        "currency": "usd",
        "shipping": [{"id": "shipping_standard", "title": "Standard Shipping", "countries": ["US"],
                      "bands": [{"min_subtotal": 0, "amount": 499}], "min_business_days": 3, "max_business_days": 5}],
        "promotions": [
            {"id": "auto_off", "name": "Automatic", "kind": {"type": "fixed", "amount": amount},
             "target": {"type": "order"}},
            {"id": "code_a", "name": "Code A", "code": "CODEA", "kind": {"type": "fixed", "amount": 100},
             "target": {"type": "order"}, "max_redemptions": 2},
            {"id": "code_b", "name": "Code B", "code": "CODEB", "kind": {"type": "fixed", "amount": 100},
             "target": {"type": "order"}, "max_redemptions": 5}
        ]
    })
}

fn checkout_body(codes: &[&str], email: &str) -> Value {
    checkout_of(TEE, codes, email)
}

fn checkout_of(item: &str, codes: &[&str], email: &str) -> Value {
    json!({"currency": "usd", "line_items": [{"id": item}], "buyer": {"email": email},
           "fulfillment_details": {"address": {"name": "Jane Buyer", "line_one": "1 Market St",
                                               "city": "San Francisco", "state": "CA", "country": "US",
                                               "postal_code": "94131"}},
           "discounts": {"codes": codes}})
}

fn discount(session: &Value) -> i64 {
    session["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "items_discount")
        .map_or(0, |t| t["amount"].as_i64().unwrap())
}

async fn put_rules(app: &TestApp, bundle: &Value) {
    let response = app
        .admin(reqwest::Method::PUT, "/admin/pricing/rules")
        .json(bundle)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn create(app: &TestApp, body: &Value) -> Value {
    session(
        app.acp_post("/checkout_sessions", body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await
}

/// The discount a new session gets now (automatic promotion only).
async fn quoted_discount(app: &TestApp) -> i64 {
    discount(&create(app, &checkout_body(&[], "q@example.com")).await)
}

/// Writes a bundle straight into the table, as another process (or the `rules import` command) would.
async fn write_rules_behind_the_api(app: &TestApp, bundle: &Value) {
    sqlx::query("update pricing_rules set rules = $1, version = version + 1 where singleton")
        .bind(bundle)
        .execute(&app.db)
        .await
        .unwrap();
}

async fn connect(app: &TestApp) -> PgConnection {
    let options = app.db.connect_options();
    PgConnection::connect_with(&options).await.unwrap()
}

#[tokio::test]
async fn create_and_update_price_with_the_cached_rules_without_reading_the_rules_table() {
    let app = spawn_app_with(&[("rules_poll_ms", "3600000")]).await;
    put_rules(&app, &rules(300)).await;
    assert_eq!(quoted_discount(&app).await, 300);
    put_rules(&app, &rules(700)).await;

    // Nobody can read pricing_rules while this lock is held: a create or update that read it would hang.
    let mut blocker = connect(&app).await;
    sqlx::query("begin").execute(&mut blocker).await.unwrap();
    sqlx::query("lock table pricing_rules in access exclusive mode")
        .execute(&mut blocker)
        .await
        .unwrap();
    let created = tokio::time::timeout(
        Duration::from_secs(5),
        create(&app, &checkout_body(&[], "c@example.com")),
    )
    .await
    .expect("create never touches pricing_rules");
    assert_eq!(
        discount(&created),
        700,
        "the admin change applies to the very next create"
    );
    let path = format!("/checkout_sessions/{}", created["id"].as_str().unwrap());
    let update = app.acp_post(&path, &json!({"discounts": {"codes": ["CODEB"]}}));
    let updated = tokio::time::timeout(Duration::from_secs(5), async {
        session(update.send().await.unwrap(), StatusCode::OK).await
    })
    .await
    .expect("update never touches pricing_rules");
    assert_eq!(discount(&updated), 800, "the code is priced with the cached rules too");
    sqlx::query("rollback").execute(&mut blocker).await.unwrap();
}

#[tokio::test]
async fn a_change_written_by_another_process_is_notified_to_the_cache() {
    // The poll would take an hour: only the notification can bring the change.
    let app = spawn_app_with(&[("rules_poll_ms", "3600000")]).await;
    put_rules(&app, &rules(300)).await;
    assert_eq!(quoted_discount(&app).await, 300);
    write_rules_behind_the_api(&app, &rules(450)).await;
    assert!(
        eventually(Duration::from_secs(2), || async { quoted_discount(&app).await == 450 }).await,
        "the NOTIFY of the trigger reloads the cached rules"
    );
}

#[tokio::test]
async fn a_change_whose_notification_is_lost_is_picked_up_by_the_poll() {
    let app = spawn_app_with(&[("rules_poll_ms", "100")]).await;
    put_rules(&app, &rules(300)).await;
    assert_eq!(quoted_discount(&app).await, 300);
    sqlx::query("alter table pricing_rules disable trigger pricing_rules_changed")
        .execute(&app.db)
        .await
        .unwrap();
    write_rules_behind_the_api(&app, &rules(550)).await;
    assert!(
        eventually(Duration::from_secs(2), || async { quoted_discount(&app).await == 550 }).await,
        "without any notification, the poll of the version reloads the rules"
    );
}

#[tokio::test]
async fn complete_reprices_under_rules_changed_behind_a_stale_cache_and_charges_nothing() {
    let app = spawn_app_with(&[("rules_poll_ms", "3600000")]).await;
    put_rules(&app, &rules(300)).await;
    let quoted = create(&app, &checkout_body(&[], "s@example.com")).await;
    assert_eq!(discount(&quoted), 300);
    // Neither notified nor polled: the process's cache is stale.
    sqlx::query("alter table pricing_rules disable trigger pricing_rules_changed")
        .execute(&app.db)
        .await
        .unwrap();
    write_rules_behind_the_api(&app, &rules(900)).await;
    assert_eq!(quoted_discount(&app).await, 300, "the cache still has the old bundle");

    let path = format!("/checkout_sessions/{}/complete", quoted["id"].as_str().unwrap());
    let answered = session(
        app.acp_post(&path, &payment("spt_sim_ok")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        answered["status"], "ready_for_payment",
        "the new total is shown, not charged"
    );
    assert_eq!(discount(&answered), 900, "complete priced with the stored version");
    assert!(
        answered["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["code"] == "price_change")
    );
    let charges: i64 = sqlx::query_scalar("select count(*) from simulator_charge")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(charges, 0);
    assert_eq!(
        quoted_discount(&app).await,
        900,
        "complete's reload refreshed the cache"
    );
}

#[tokio::test]
async fn concurrent_completes_never_redeem_a_limited_promotion_beyond_its_limit() {
    let app = spawn_app_with(&[]).await;
    put_rules(&app, &rules(10)).await;
    // One item each: the sessions share no stock row, so only the promotion's counter orders their completes.
    let items: Vec<String> = sqlx::query_scalar(
        "select variant_id from variant
         where currency = 'usd' and price_amount >= 200 and available and requires_shipping
           and (stock_quantity is null or stock_quantity > 0)
         order by variant_id limit 6",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(items.len(), 6, "the demo catalog has six buyable items");
    let mut sessions = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let s = create(&app, &checkout_of(item, &["CODEA"], &format!("buyer{i}@example.com"))).await;
        assert_eq!(
            discount(&s),
            110,
            "every session was quoted the code (and the automatic 10)"
        );
        sessions.push(s);
    }
    let pending: Vec<_> = sessions
        .iter()
        .map(|s| {
            let path = format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap());
            tokio::spawn(app.acp_post(&path, &payment("spt_sim_ok")).send())
        })
        .collect();
    let mut completed_with_code = 0;
    for call in pending {
        let answered = session(call.await.unwrap().unwrap(), StatusCode::OK).await;
        match answered["status"].as_str().unwrap() {
            "completed" => {
                assert_eq!(discount(&answered), 110, "a completed order kept the quoted discount");
                completed_with_code += 1;
            }
            "ready_for_payment" => assert_eq!(discount(&answered), 10, "the others see the code used up"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(completed_with_code, 2, "max_redemptions = 2");
    let (redeemed, used): (i64, i64) = sqlx::query_as(
        "select (select count(*) from promotion_redemption where promotion_id = 'code_a'),
                (select used from promotion_usage where promotion_id = 'code_a')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((redeemed, used), (2, 2), "the counter mirrors the redemptions");
}

#[tokio::test]
async fn a_complete_waits_only_for_the_promotions_its_cart_can_use() {
    let app = spawn_app_with(&[]).await;
    put_rules(&app, &rules(10)).await;
    let with_a = create(&app, &checkout_body(&["CODEA"], "a@example.com")).await;
    // Another transaction holds code B's counter (as a complete using it would until it commits).
    let mut holder = connect(&app).await;
    sqlx::query("begin").execute(&mut holder).await.unwrap();
    let held: i64 = sqlx::query_scalar("select used from promotion_usage where promotion_id = 'code_b' for update")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(held, 0);

    let path = format!("/checkout_sessions/{}/complete", with_a["id"].as_str().unwrap());
    let paid = tokio::time::timeout(Duration::from_secs(5), async {
        session(
            app.acp_post(&path, &payment("spt_sim_ok")).send().await.unwrap(),
            StatusCode::OK,
        )
        .await
    })
    .await
    .expect("a cart with code A does not wait for code B");
    assert_eq!(paid["status"], "completed");
    assert_eq!(discount(&paid), 110);

    // A cart with code B does wait for the holder: the counter row is the lock.
    let with_b = create(&app, &checkout_body(&["CODEB"], "b@example.com")).await;
    let path = format!("/checkout_sessions/{}/complete", with_b["id"].as_str().unwrap());
    let waiting = tokio::spawn(app.acp_post(&path, &payment("spt_sim_ok")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "code B's complete waits for its counter");
    sqlx::query("rollback").execute(&mut holder).await.unwrap();
    let paid_b = session(waiting.await.unwrap().unwrap(), StatusCode::OK).await;
    assert_eq!(paid_b["status"], "completed");
    let used: Vec<i64> = sqlx::query_scalar(
        "select used from promotion_usage where promotion_id in ('code_a', 'code_b') order by promotion_id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(used, vec![1, 1]);
}

#[tokio::test]
async fn a_declined_payment_gives_the_counter_back_and_new_limits_count_past_redemptions() {
    let app = spawn_app_with(&[]).await;
    put_rules(&app, &rules(10)).await;
    let s = create(&app, &checkout_body(&["CODEB"], "d@example.com")).await;
    let path = format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap());
    let declined = session(
        app.acp_post(&path, &payment("spt_sim_decline")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(declined["status"], "ready_for_payment");
    let used = || async {
        sqlx::query_scalar::<_, Option<i64>>("select used from promotion_usage where promotion_id = $1")
            .bind("code_b")
            .fetch_optional(&app.db)
            .await
            .unwrap()
            .flatten()
    };
    assert_eq!(used().await, Some(0), "the reservation was counted back");
    let paid = session(
        app.acp_post(&path, &payment("spt_sim_ok")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(paid["status"], "completed");
    assert_eq!(used().await, Some(1));

    // The automatic promotion was unlimited (no counter) and has been redeemed once; limiting it now starts its
    // counter from the redemptions already recorded.
    let auto_counter: Option<i64> =
        sqlx::query_scalar("select used from promotion_usage where promotion_id = 'auto_off'")
            .fetch_optional(&app.db)
            .await
            .unwrap();
    assert_eq!(auto_counter, None);
    let mut limited = rules(10);
    limited["promotions"][0]["max_redemptions"] = json!(1);
    put_rules(&app, &limited).await;
    let auto_counter: i64 = sqlx::query_scalar("select used from promotion_usage where promotion_id = 'auto_off'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(auto_counter, 1, "backfilled from promotion_redemption");
    assert_eq!(
        quoted_discount(&app).await,
        0,
        "its only use is taken: a new cart does not get it"
    );
}

/// Statements the app sends PostgreSQL, counted by a TCP proxy between them: each Execute message (the extended
/// protocol, one per statement whether or not it was prepared before) and each simple Query (`BEGIN`, `COMMIT`).
/// Pings and prepares carry neither, so the count does not depend on which pooled connection ran what.
struct StatementCounter {
    addr: std::net::SocketAddr,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl StatementCounter {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, counted.clone()));
            }
        });
        Self { addr, count }
    }

    fn now(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies the server's bytes back untouched and the client's message by message, counting Execute and Query.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    });
    // The startup message has no type byte: a length, then the rest.
    let Ok(length) = from_client.read_u32().await else {
        return;
    };
    let mut startup = vec![0; length as usize - 4];
    if from_client.read_exact(&mut startup).await.is_err() {
        return;
    }
    let _ = to_server.write_u32(length).await;
    let _ = to_server.write_all(&startup).await;
    loop {
        let Ok(kind) = from_client.read_u8().await else { return };
        let Ok(length) = from_client.read_u32().await else {
            return;
        };
        let mut body = vec![0; length as usize - 4];
        if from_client.read_exact(&mut body).await.is_err() {
            return;
        }
        if kind == b'E' || kind == b'Q' {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let mut message = Vec::with_capacity(body.len() + 5);
        message.push(kind);
        message.extend_from_slice(&length.to_be_bytes());
        message.extend_from_slice(&body);
        if to_server.write_all(&message).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn completes_statement_count_does_not_grow_with_items_and_discounts() {
    let database = crate::helpers::TestDb::migrated().await;
    let mut url = reqwest::Url::parse(&database.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let counter = StatementCounter::start(upstream).await;
    url.set_port(Some(counter.addr.port())).unwrap();
    url.query_pairs_mut().append_pair("sslmode", "disable");
    // Nothing in the background talks to the database while complete runs.
    let quiet = [
        ("webhook_worker_enabled", "false"),
        ("reconcile_interval_ms", "3600000"),
        ("expiry_sweep_interval_ms", "3600000"),
        ("idempotency_sweep_interval_ms", "3600000"),
        ("rules_poll_ms", "3600000"),
        // No lease renewal while the PSP call runs (its timing would decide the count).
        ("idempotency_lease_ms", "8000000"),
        ("idempotency_heartbeat_ms", "3600000"),
    ];
    let settings = crate::helpers::test_settings(url.as_str(), &quiet);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = acp_merchant::startup::Application::build(settings, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped());
    // Limits no cart here reaches (reaching one costs a statement of its own).
    let mut generous_rules = rules(10);
    generous_rules["promotions"][1]["max_redemptions"] = json!(100);
    let client = crate::helpers::http_client();
    let admin = client
        .put(format!("{base}/admin/pricing/rules"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&generous_rules)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    let items: Vec<String> = sqlx::query_scalar(
        "select variant_id from variant
         where currency = 'usd' and price_amount >= 200 and available and requires_shipping
           and (stock_quantity is null or stock_quantity > 0)
         order by variant_id limit 4",
    )
    .fetch_all(&database.pool().await)
    .await
    .unwrap();
    let post =
        |path: &str, body: &Value| crate::helpers::agent_post(&base, path, &uuid::Uuid::new_v4().to_string(), body);
    let mut statements = Vec::new();
    // A warm-up first: the counter rows of the limited promotions are created on their first use.
    let carts = [
        (&items[..1], vec!["CODEA", "CODEB"]),
        (&items[..1], vec![]),
        (&items[..1], vec!["CODEA"]),
        (&items[..], vec!["CODEA", "CODEB"]),
    ];
    for (lines, codes) in carts {
        let mut body = checkout_of(&lines[0], &codes, "count@example.com");
        body["line_items"] = lines.iter().map(|id| json!({"id": id})).collect();
        let created = session(
            post("/checkout_sessions", &body).send().await.unwrap(),
            StatusCode::CREATED,
        )
        .await;
        let path = format!("/checkout_sessions/{}/complete", created["id"].as_str().unwrap());
        let before = counter.now();
        let paid = session(
            post(&path, &payment("spt_sim_ok")).send().await.unwrap(),
            StatusCode::OK,
        )
        .await;
        let during = counter.now() - before;
        assert_eq!(paid["status"], "completed");
        let discounts: i64 =
            sqlx::query_scalar("select count(*) from promotion_redemption where checkout_session_id = $1")
                .bind(paid["id"].as_str())
                .fetch_one(&database.pool().await)
                .await
                .unwrap();
        statements.push((lines.len(), discounts, during));
    }
    shutdown.cancel();
    eprintln!("complete's statements (items, discounts, statements): {statements:?}");
    let (unlimited, small, large) = (statements[1], statements[2], statements[3]);
    assert!(large.0 > small.0 && large.1 > small.1, "{statements:?}");
    assert_eq!(
        small.2, large.2,
        "(items, discounts, statements) of each complete: {statements:?}"
    );
    // A cart that can use no limited promotion locks no counter: the variants' lock reads the rules' version, so
    // it costs one statement less.
    assert_eq!(
        unlimited.2 + 1,
        small.2,
        "(items, discounts, statements) of each complete: {statements:?}"
    );
}
