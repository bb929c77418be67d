//! Issue 14, round trips: create, update and cancel are one transaction each (idempotency claim included), a GET
//! is one statement, counted by PostgreSQL itself (`pg_stat_database.xact_commit`); and the idempotency
//! semantics hold under the one-transaction claim.

use std::time::Duration;

use acp_merchant::idempotency::{Scope, fingerprint, scope_lock_id};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::{
    helpers::{TestApp, admin_url, spawn_app, spawn_app_with},
    lifecycle::{TEE, address, count, create_body, error, session},
};

/// Every background worker idle for the test's length, so the only transactions are the requests'; and one
/// pooled connection, so every request runs on the connection whose statements the warm-up prepared.
const COUNTED: &[(&str, &str)] = &[
    ("db_max_connections", "1"),
    ("webhook_worker_enabled", "false"),
    ("expiry_sweep_interval_ms", "3600000"),
    ("idempotency_sweep_interval_ms", "3600000"),
    ("reconcile_interval_ms", "3600000"),
    // The pricing rules' fallback poll (issue 14, where the rules cache has it; an unknown key is ignored).
    ("rules_poll_ms", "3600000"),
];

/// Reads the test database's committed-transaction count from the cluster's maintenance database, so the
/// counting connection's own transactions are never counted.
struct CommitCounter {
    conn: PgConnection,
    oid: u32,
}

impl CommitCounter {
    /// Closes `app.db` (the test's own pool on the app's database) and the server's pooled connections, so the
    /// server's next requests run on one fresh connection, whose statements the caller then warms up.
    async fn new(app: &TestApp) -> Self {
        let oid: sqlx::postgres::types::Oid =
            sqlx::query_scalar("select oid from pg_database where datname = current_database()")
                .fetch_one(&app.db)
                .await
                .unwrap();
        app.db.close().await;
        let pool = &app.state.db;
        all_returned(app).await;
        while pool.num_idle() > 0 {
            pool.acquire().await.unwrap().close().await.unwrap();
        }
        let conn = PgConnection::connect(admin_url()).await.unwrap();
        Self { conn, oid: oid.0 }
    }

    /// The count once every transaction so far is in it, and how many transactions that cost. A backend reports
    /// its counts at most once a second while it lives, unless told to flush: each of the server's pooled
    /// connections is told to, in one simple-protocol statement (one transaction) that also reads a catalog
    /// table, since a backend with no table statistics pending skips the flush, transaction counts included;
    /// the flush runs before the statement's answer is sent.
    async fn settled(&mut self, app: &TestApp) -> (i64, i64) {
        all_returned(app).await;
        let pool = &app.state.db;
        let mut held = Vec::new();
        while pool.num_idle() > 0 {
            held.push(pool.acquire().await.unwrap());
        }
        for conn in &mut held {
            flush_stats(conn).await;
        }
        // The read pool's connections that GETs keep between reads.
        let mut kept = Vec::new();
        for _ in 0..app.state.kept.waiting() {
            kept.push(app.state.kept.acquire().await.unwrap());
        }
        for conn in &mut kept {
            flush_stats(conn).await;
        }
        let flushes = held.len() + kept.len();
        for conn in kept {
            conn.keep_after(Ok(()));
        }
        sqlx::query("select pg_stat_clear_snapshot()")
            .execute(&mut self.conn)
            .await
            .unwrap();
        let count = sqlx::query_scalar("select pg_stat_get_db_xact_commit($1::oid)")
            .bind(i64::from(self.oid))
            .fetch_one(&mut self.conn)
            .await
            .unwrap();
        (count, flushes as i64)
    }

    /// How many transactions `request` committed in the app's database.
    async fn during<F: std::future::Future<Output = T>, T>(&mut self, app: &TestApp, request: F) -> (T, i64) {
        let (before, _) = self.settled(app).await;
        let answer = request.await;
        let (after, flushes) = self.settled(app).await;
        (answer, after - before - flushes)
    }
}

async fn flush_stats(conn: &mut sqlx::PgConnection) {
    sqlx::raw_sql("select pg_stat_force_next_flush() from pg_namespace limit 1")
        .execute(conn)
        .await
        .unwrap();
}

/// Waits (bounded) until every connection the server's pool opened is back in it.
async fn all_returned(app: &TestApp) {
    let pool = &app.state.db;
    for _ in 0..200 {
        if pool.num_idle() == pool.size() as usize {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server kept a pooled connection busy");
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.unwrap()
}

#[tokio::test]
async fn create_update_and_cancel_commit_one_transaction_each_and_a_get_one_statement() {
    let app = spawn_app_with(COUNTED).await;
    let mut counter = CommitCounter::new(&app).await;
    // The first run of each statement on the (fresh) connection also prepares it: warm them up once.
    flow(&app, &mut counter).await;
    let commits = flow(&app, &mut counter).await;
    assert_eq!(commits, [1, 1, 1, 1, 1], "create, update, cancel, refused cancel, GET");
}

/// Create, update, cancel, a refused (stored) cancel and a GET, with the transactions each committed.
async fn flow(app: &TestApp, counter: &mut CommitCounter) -> [i64; 5] {
    let (created, create) = counter
        .during(
            app,
            send(app.acp_post("/checkout_sessions", &create_body(json!([{"id": TEE}])))),
        )
        .await;
    let created = session(created, StatusCode::CREATED).await;
    let path = format!("/checkout_sessions/{}", created["id"].as_str().unwrap());

    let body = json!({"fulfillment_details": {"name": "Jane Buyer", "address": address("CA")}});
    let (updated, update) = counter.during(app, send(app.acp_post(&path, &body))).await;
    session(updated, StatusCode::OK).await;

    let cancel_path = format!("{path}/cancel");
    let (canceled, cancel) = counter.during(app, send(app.acp_post(&cancel_path, &json!({})))).await;
    assert_eq!(session(canceled, StatusCode::OK).await["status"], "canceled");

    // A stored 4xx: the refusal and its record commit together.
    let (refused, refused_cancel) = counter.during(app, send(app.acp_post(&cancel_path, &json!({})))).await;
    error(refused, StatusCode::METHOD_NOT_ALLOWED, "invalid_state", None).await;

    // One statement commits its implicit transaction; a BEGIN/SELECT/COMMIT would count one too, so the point is
    // that nothing else runs (authenticating the environment agent reads nothing).
    let (fetched, get) = counter.during(app, send(app.acp_get(&path))).await;
    assert_eq!(session(fetched, StatusCode::OK).await["id"], created["id"]);
    [create, update, cancel, refused_cancel, get]
}

fn create_scope(key: &str) -> Scope {
    Scope {
        agent_id: "agent_default".into(),
        method: "POST".into(),
        path: "/checkout_sessions".into(),
        key: key.into(),
    }
}

async fn keyed_create(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    send(app.acp_post_keyed("/checkout_sessions", key, body)).await
}

async fn records(app: &TestApp, key: &str) -> i64 {
    sqlx::query_scalar("select count(*) from idempotency_record where idempotency_key = $1")
        .bind(key)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_duplicate_while_the_key_is_locked_is_refused_at_once_then_replayed() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}]));
    // Hold the key's lock as a running request would.
    let mut holder = app.db.acquire().await.unwrap();
    sqlx::query("select pg_advisory_lock($1)")
        .bind(scope_lock_id(&create_scope("k-locked")))
        .execute(&mut *holder)
        .await
        .unwrap();
    let refused = keyed_create(&app, "k-locked", &body).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    error(refused, StatusCode::CONFLICT, "idempotency_in_flight", None).await;
    assert_eq!(count(&app, "checkout_session").await, 0);
    assert_eq!(records(&app, "k-locked").await, 0, "a refusal stores nothing");
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(scope_lock_id(&create_scope("k-locked")))
        .execute(&mut *holder)
        .await
        .unwrap();

    let first = keyed_create(&app, "k-locked", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.bytes().await.unwrap();
    let again = keyed_create(&app, "k-locked", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.bytes().await.unwrap(), first_body, "byte-identical replay");
    assert_eq!(count(&app, "checkout_session").await, 1);
}

#[tokio::test]
async fn concurrent_identical_creates_make_one_session() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}]));
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..8 {
        racing.spawn(app.acp_post_keyed("/checkout_sessions", "k-race", &body).send());
    }
    let mut ids = Vec::new();
    while let Some(answer) = racing.join_next().await {
        let answer = answer.unwrap().unwrap();
        match answer.status() {
            StatusCode::CREATED => {
                let created: Value = answer.json().await.unwrap();
                ids.push(created["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                error(answer, StatusCode::CONFLICT, "idempotency_in_flight", None).await;
            }
            other => panic!("unexpected {other}: {:?}", answer.text().await),
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        1,
        "every 201 (original or replay) names the same session: {ids:?}"
    );
    assert_eq!(count(&app, "checkout_session").await, 1, "never two sessions");
    let replay = keyed_create(&app, "k-race", &body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(session(replay, StatusCode::CREATED).await["id"], ids[0].as_str());
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_conflict() {
    let app = spawn_app().await;
    let first = keyed_create(&app, "k-body", &create_body(json!([{"id": TEE}]))).await;
    session(first, StatusCode::CREATED).await;
    let other = keyed_create(&app, "k-body", &create_body(json!([{"id": TEE, "quantity": 2}]))).await;
    error(other, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_conflict", None).await;
    assert_eq!(count(&app, "checkout_session").await, 1);
}

/// A record the committed-claim path left in flight keeps answering 409 while its lease lasts; once the lease is
/// over (its holder died before committing anything) the request runs.
#[tokio::test]
async fn an_in_flight_record_of_the_committed_claim_path_is_respected() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}]));
    sqlx::query(
        "insert into idempotency_record (agent_id, method, path, idempotency_key, fingerprint, state, holder,
                                         lease_until, expires_at)
         values ('agent_default', 'POST', '/checkout_sessions', 'k-old', $1, 'in_flight', gen_random_uuid(),
                 now() + interval '30 seconds', now() + interval '1 day')",
    )
    .bind(fingerprint(&serde_json::to_vec(&body).unwrap()))
    .execute(&app.db)
    .await
    .unwrap();
    let refused = keyed_create(&app, "k-old", &body).await;
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "the lease left: {retry_after}");
    error(refused, StatusCode::CONFLICT, "idempotency_in_flight", None).await;

    sqlx::query("update idempotency_record set lease_until = now() where idempotency_key = 'k-old'")
        .execute(&app.db)
        .await
        .unwrap();
    session(keyed_create(&app, "k-old", &body).await, StatusCode::CREATED).await;
    let state: String = sqlx::query_scalar("select state from idempotency_record where idempotency_key = 'k-old'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(state, "finished");
    assert_eq!(count(&app, "checkout_session").await, 1);
}

#[tokio::test]
async fn a_server_error_rolls_everything_back_and_leaves_the_key_free() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE}]));
    // A fault in the middle of the business work: the session insert fails after the claim.
    sqlx::raw_sql(
        "create function refuse_sessions() returns trigger language plpgsql as
             $$ begin raise exception 'injected fault'; end $$;
         create trigger refuse_sessions before insert or update on checkout_session
             for each row execute function refuse_sessions();",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let failed = keyed_create(&app, "k-5xx", &body).await;
    assert_eq!(
        failed.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "{:?}",
        failed.text().await
    );
    assert_eq!(records(&app, "k-5xx").await, 0, "a 5xx stores nothing");
    assert_eq!(count(&app, "funnel_event").await, 0, "the funnel event rolled back too");

    sqlx::raw_sql("drop trigger refuse_sessions on checkout_session")
        .execute(&app.db)
        .await
        .unwrap();
    let retried = keyed_create(&app, "k-5xx", &body).await;
    assert!(
        retried.headers().get("idempotent-replayed").is_none(),
        "the retry runs fresh"
    );
    session(retried, StatusCode::CREATED).await;
    assert_eq!(records(&app, "k-5xx").await, 1);
    assert_eq!(count(&app, "checkout_session").await, 1);
}

/// The claim reads the record with the snapshot its statement started with: a duplicate that committed just
/// before the lock was granted is invisible to it. The answer's insert then finds the key taken, and the request
/// is undone and answered 409 (its retry replays the duplicate's answer). Here a trigger plays the duplicate,
/// writing the key's record in the middle of the business work.
#[tokio::test]
async fn a_record_that_appears_after_the_claim_undoes_the_request() {
    let app = spawn_app().await;
    sqlx::raw_sql(
        "create function play_the_duplicate() returns trigger language plpgsql as $$ begin
             insert into idempotency_record (agent_id, method, path, idempotency_key, fingerprint, state, holder,
                                             lease_until, expires_at, response_status)
             values ('agent_default', 'POST', '/checkout_sessions', 'k-late', '\\x00', 'finished',
                     gen_random_uuid(), now(), now() + interval '1 day', 201);
             return new;
         end $$;
         create trigger play_the_duplicate before insert on checkout_session
             for each row execute function play_the_duplicate();",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let undone = keyed_create(&app, "k-late", &create_body(json!([{"id": TEE}]))).await;
    assert_eq!(undone.headers()["retry-after"], "1");
    error(undone, StatusCode::CONFLICT, "idempotency_in_flight", None).await;
    assert_eq!(
        count(&app, "checkout_session").await,
        0,
        "the request's work was rolled back"
    );
    assert_eq!(count(&app, "funnel_event").await, 0);
}

/// The documents every checkout request writes and reads whole are `json` (kept as text, validated), not `jsonb`
/// (parsed into a binary form on every write and printed back on every read), and a stored session still reads
/// back as the API shows it.
#[tokio::test]
async fn checkout_documents_are_stored_as_json_text() {
    let app = spawn_app().await;
    let types: Vec<(String, String)> = sqlx::query_as(
        "select table_name::text || '.' || column_name::text, data_type::text from information_schema.columns
          where (table_name, column_name) in
                (('checkout_session', 'state'), ('merchant_order', 'data'), ('webhook_event', 'payload'))
          order by 1",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let json = |column: &str| (column.to_owned(), "json".to_owned());
    assert_eq!(
        types,
        [
            json("checkout_session.state"),
            json("merchant_order.data"),
            json("webhook_event.payload")
        ]
    );

    let created = session(
        send(app.acp_post("/checkout_sessions", &create_body(json!([{"id": TEE}])))).await,
        StatusCode::CREATED,
    )
    .await;
    let stored: Value = sqlx::query_scalar("select state::jsonb from checkout_session where checkout_session_id = $1")
        .bind(created["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored["id"], created["id"]);
    let path = format!("/checkout_sessions/{}", created["id"].as_str().unwrap());
    assert_eq!(session(send(app.acp_get(&path)).await, StatusCode::OK).await, created);
}
