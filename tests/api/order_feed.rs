//! The order feed for polling integrations (issue 15): `GET /admin/orders/changes` lists order versions in commit
//! order, never passing a transaction still open and never skipping a row committed late.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, spawn_app},
    webhooks::buy,
};

/// (position, order id, version) of one feed entry.
type Entry = (i64, String, i64);

/// One page after `cursor`: its entries and the next cursor.
async fn page(app: &TestApp, cursor: &str, limit: u32) -> (Vec<Entry>, String, bool) {
    let r = app
        .admin(
            Method::GET,
            &format!("/admin/orders/changes?cursor={cursor}&limit={limit}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let entries = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["order"]["id"], c["order_id"], "each version carries its order");
            assert_eq!(c["order"]["status"], c["status"]);
            (
                c["position"].as_i64().unwrap(),
                c["order_id"].as_str().unwrap().to_owned(),
                c["version"].as_i64().unwrap(),
            )
        })
        .collect();
    (
        entries,
        body["next_cursor"].as_str().unwrap().to_owned(),
        body["has_more"].as_bool().unwrap(),
    )
}

/// Everything after `cursor`, page by page; returns the entries and the final cursor.
async fn walk(app: &TestApp, mut cursor: String) -> (Vec<Entry>, String) {
    let mut all = Vec::new();
    loop {
        let (entries, next, more) = page(app, &cursor, 2).await;
        all.extend(entries);
        cursor = next;
        if !more {
            return (all, cursor);
        }
    }
}

fn versions(entries: &[Entry]) -> Vec<(String, i64)> {
    entries
        .iter()
        .map(|(_, order, version)| (order.clone(), *version))
        .collect()
}

#[tokio::test]
async fn a_transaction_that_commits_after_a_later_one_comes_after_it_and_is_not_skipped() {
    let app = spawn_app().await;
    let a = buy(&app).await;
    let b = buy(&app).await;
    let (first, cursor) = walk(&app, String::new()).await;
    assert_eq!(versions(&first), [(a.clone(), 1), (b.clone(), 1)]);

    // T1 changes order A first and stays open.
    let mut t1 = app.db.begin().await.unwrap();
    sqlx::query("update merchant_order set updated_at = now() where order_id = $1")
        .bind(&a)
        .execute(&mut *t1)
        .await
        .unwrap();
    // T2 ships order B and commits while T1 is open.
    let r = app
        .admin(Method::POST, &format!("/admin/orders/{b}/ship"))
        .header("Idempotency-Key", "feed-ship-b")
        .json(&json!({"carrier": "UPS", "tracking_number": "1Z999"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let (while_open, cursor_open) = walk(&app, cursor.clone()).await;
    assert_eq!(
        versions(&while_open),
        [(b.clone(), 2)],
        "T1 is not visible, and nothing waits behind it"
    );

    t1.commit().await.unwrap();
    let (after, _) = walk(&app, cursor_open).await;
    assert_eq!(
        versions(&after),
        [(a.clone(), 2)],
        "T1's version is not skipped by the cursor past T2"
    );

    // The whole walk again: every version once, T2's before T1's (commit order), positions increasing.
    let (again, _) = walk(&app, String::new()).await;
    assert_eq!(versions(&again), [(a.clone(), 1), (b.clone(), 1), (b, 2), (a, 2)]);
    assert!(again.windows(2).all(|w| w[0].0 < w[1].0));
}

#[tokio::test]
async fn concurrent_writers_never_make_a_walk_skip_or_repeat_a_version() {
    let app = spawn_app().await;
    let orders = [buy(&app).await, buy(&app).await, buy(&app).await];
    const WRITERS: usize = 4;
    const CHANGES: usize = 20;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, orders) = (app.db.clone(), orders.clone());
            tokio::spawn(async move {
                for i in 0..CHANGES {
                    let mut tx = db.begin().await.unwrap();
                    sqlx::query("update merchant_order set updated_at = now() where order_id = $1")
                        .bind(&orders[(w + i) % orders.len()])
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    // Some transactions stay open while others commit around them.
                    tokio::time::sleep(Duration::from_millis(((w * 7 + i * 3) % 5) as u64)).await;
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    let mut seen: Vec<Entry> = Vec::new();
    let mut cursor = String::new();
    while !writers.iter().all(|w| w.is_finished()) {
        let (entries, next) = walk(&app, cursor).await;
        seen.extend(entries);
        cursor = next;
    }
    for w in writers {
        w.await.unwrap();
    }
    let (rest, _) = walk(&app, cursor).await;
    seen.extend(rest);

    assert_eq!(
        seen.len(),
        orders.len() + WRITERS * CHANGES,
        "every committed version, once"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions only grow along the walk"
    );
    let unique: BTreeSet<(String, i64)> = versions(&seen).into_iter().collect();
    assert_eq!(unique.len(), seen.len(), "no version twice");
    let mut per_order: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, order, version) in &seen {
        per_order.entry(order.clone()).or_default().push(*version);
    }
    for (order, versions) in per_order {
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected, "{order}: versions in commit order, none missing");
    }
}

#[tokio::test]
async fn the_feed_pages_and_refuses_a_bad_cursor_or_limit() {
    let app = spawn_app().await;
    let a = buy(&app).await;
    let b = buy(&app).await;
    let (one, cursor, more) = page(&app, "", 1).await;
    assert_eq!(versions(&one), [(a, 1)]);
    assert!(more);
    let (two, last, more) = page(&app, &cursor, 1).await;
    assert_eq!(versions(&two), [(b, 1)]);
    assert!(!more);
    let (none, same, more) = page(&app, &last, 10).await;
    assert!(none.is_empty() && !more);
    assert_eq!(same, last, "nothing new keeps the cursor");

    for (query, param) in [
        ("cursor=abc", "$.cursor"),
        ("cursor=-1", "$.cursor"),
        ("limit=0", "$.limit"),
        ("limit=1001", "$.limit"),
    ] {
        let r = app
            .admin(Method::GET, &format!("/admin/orders/changes?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["param"], param, "{query}");
    }
    let r = app.client.get(app.url("/admin/orders/changes")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
