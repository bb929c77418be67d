//! Issue 14: session GETs run on the read pool's kept connections, which go back without sqlx's release ping
//! (a round trip per request); anything that may have left a connection mid-protocol goes back the checked way.

use std::time::Duration;

use acp_merchant::db::kept::KeptConnections;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::{
    helpers::{spawn_app, spawn_app_with},
    lifecycle::{TEE, create_body, session},
};

async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// A pool of `size` on the test app's database, with a short acquire timeout so a starved caller fails fast.
async fn pool_of(app: &crate::helpers::TestApp, size: u32) -> PgPool {
    let options = (*app.db.connect_options()).clone();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(1))
        .connect_with(options)
        .await
        .unwrap()
}

/// A test app, a pool of two on its database, and a keeper over that pool.
async fn kept_over_two(max_idle: Duration) -> (crate::helpers::TestApp, PgPool, KeptConnections) {
    let app = spawn_app().await;
    let pool = pool_of(&app, 2).await;
    let kept = KeptConnections::new(pool.clone(), max_idle);
    (app, pool, kept)
}

/// Waits (bounded) until `pool` holds `idle` idle connections: sqlx returns a connection on a task of its own.
async fn idle_in(pool: &PgPool, idle: usize) {
    for _ in 0..200 {
        if pool.num_idle() == idle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool has {} idle connections, expected {idle}", pool.num_idle());
}

#[tokio::test]
async fn a_get_keeps_its_connection_out_of_the_pool_and_reuses_it() {
    let app = spawn_app().await;
    let created = app
        .acp_post("/checkout_sessions", &create_body(json!([{"id": TEE}])))
        .send()
        .await
        .unwrap();
    let created = session(created, StatusCode::CREATED).await;
    let path = format!("/checkout_sessions/{}", created["id"].as_str().unwrap());

    for _ in 0..3 {
        let fetched = app.acp_get(&path).send().await.unwrap();
        assert_eq!(session(fetched, StatusCode::OK).await["id"], created["id"]);
    }
    // Sequential GETs share one connection, and it waits in the keeper, not in sqlx's pool (whose release would
    // have pinged it).
    assert_eq!(app.state.kept.waiting(), 1);

    // A session that is not there is a complete exchange too: the connection is kept.
    let missing = app.acp_get("/checkout_sessions/cs_missing").send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.state.kept.waiting(), 1);
}

#[tokio::test]
async fn a_kept_connection_is_the_same_backend_and_is_not_returned_to_the_pool() {
    let (_app, pool, kept) = kept_over_two(Duration::from_secs(60)).await;
    let mut conn = kept.acquire().await.unwrap();
    let first = backend_pid(&mut conn).await;
    conn.keep_after(Ok(()));
    assert_eq!(kept.waiting(), 1);
    assert_eq!(pool.num_idle(), 0, "kept, so not back in sqlx's pool");

    let mut again = kept.acquire().await.unwrap();
    assert_eq!(backend_pid(&mut again).await, first);
    assert_eq!(kept.waiting(), 0);
    again.keep_after(Ok(()));
}

#[tokio::test]
async fn a_database_error_keeps_the_connection_and_it_still_works() {
    let (_app, _pool, kept) = kept_over_two(Duration::from_secs(60)).await;
    let mut conn = kept.acquire().await.unwrap();
    let failed = sqlx::query_scalar::<_, i32>("select 1 / 0").fetch_one(&mut *conn).await;
    let error = failed.expect_err("division by zero");
    assert!(matches!(error, sqlx::Error::Database(_)));
    conn.keep_after(Err(&error));
    assert_eq!(kept.waiting(), 1);

    let mut again = kept.acquire().await.unwrap();
    let one: i32 = sqlx::query_scalar("select 1").fetch_one(&mut *again).await.unwrap();
    assert_eq!(one, 1);
    again.keep_after(Ok(()));
}

#[tokio::test]
async fn a_connection_error_or_a_dropped_guard_goes_back_the_checked_way() {
    let (_app, pool, kept) = kept_over_two(Duration::from_secs(60)).await;

    let conn = kept.acquire().await.unwrap();
    let io = sqlx::Error::Io(std::io::Error::other("reset"));
    conn.keep_after(Err(&io));
    assert_eq!(kept.waiting(), 0);
    // sqlx pinged it (still sound here) and took it back.
    idle_in(&pool, 1).await;

    // A request cancelled mid-statement drops its guard without keeping it.
    let conn = kept.acquire().await.unwrap();
    drop(conn);
    assert_eq!(kept.waiting(), 0);
    idle_in(&pool, 1).await;
}

#[tokio::test]
async fn connections_stale_past_max_idle_go_back_to_the_pool() {
    let (_app, pool, kept) = kept_over_two(Duration::from_millis(100)).await;
    let first = kept.acquire().await.unwrap();
    let second = kept.acquire().await.unwrap();
    first.keep_after(Ok(()));
    second.keep_after(Ok(()));
    assert_eq!(kept.waiting(), 2);
    assert_eq!(pool.num_idle(), 0);

    // Past max_idle, the upkeep hands them back (through sqlx's checked release).
    tokio::time::sleep(Duration::from_millis(150)).await;
    kept.release_stale();
    assert_eq!(kept.waiting(), 0);
    idle_in(&pool, 2).await;
    // And the slots came back with them: both connections can be taken again.
    let again = (kept.acquire().await.unwrap(), kept.acquire().await.unwrap());
    drop(again);
}

#[tokio::test]
async fn closing_hands_the_kept_connections_back_first() {
    let (_app, pool, kept) = kept_over_two(Duration::from_secs(60)).await;
    let conn = kept.acquire().await.unwrap();
    conn.keep_after(Ok(()));
    tokio::time::timeout(Duration::from_secs(2), kept.close())
        .await
        .expect("the pool closes although a connection was kept");
    assert!(pool.is_closed());
}

#[tokio::test]
async fn callers_waiting_for_a_connection_get_the_ones_kept_meanwhile() {
    let (_app, pool, kept) = kept_over_two(Duration::from_secs(60)).await;
    // Two connections for sixteen callers: most wait while finished reads keep theirs. Each waiter must be
    // handed a kept connection (or a freed slot) rather than sit out the acquire timeout, and no connection is
    // opened beyond the pool's two.
    let kept = std::sync::Arc::new(kept);
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut backends = std::collections::HashSet::new();
                for _ in 0..20 {
                    let mut conn = kept.acquire().await?;
                    backends.insert(backend_pid(&mut conn).await);
                    conn.keep_after(Ok(()));
                }
                Ok::<_, sqlx::Error>(backends)
            })
        })
        .collect();
    let mut backends = std::collections::HashSet::new();
    for caller in callers {
        backends.extend(caller.await.unwrap().expect("every read got a connection"));
    }
    assert!((1..=2).contains(&backends.len()), "{} backends", backends.len());
    assert!(pool.size() <= 2);
}

#[tokio::test]
async fn a_read_pool_of_one_serves_sequential_gets() {
    let app = spawn_app_with(&[("db_read_connections", "1")]).await;
    for _ in 0..3 {
        let missing = app.acp_get("/checkout_sessions/cs_missing").send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(app.state.kept.waiting(), 1);
}
