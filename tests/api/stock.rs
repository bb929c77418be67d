//! Stock that cannot lie, and the other guarantees around complete (see the module docs of `checkout::stock`).
//!
//! On hand (`variant.stock_quantity`, what a merchant's sync sets) and reserved (`variant.stock_reserved`, held by
//! sessions being paid for) are kept apart: reserve at complete, release when the payment proves not charged, sell
//! when it charged, restock when the order is canceled. Each test reads the rows themselves, not only the answers.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{API_VERSION, TestApp, agent_post, eventually, spawn_app, spawn_app_with},
    lifecycle::{HEADLAMP_LIMIT_2, TEE, count, create, error, message, payment, session},
};

/// (on hand, reserved) of a variant.
pub async fn stock_row(app: &TestApp, variant: &str) -> (Option<i32>, i32) {
    sqlx::query_as("select stock_quantity, stock_reserved from variant where variant_id = $1")
        .bind(variant)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// What the merchant's inventory sync does: sets the units on hand through the admin attributes API.
async fn sync_stock(app: &TestApp, variant: &str, on_hand: i32) {
    let record = json!({"variant_id": variant, "stock_quantity": on_hand});
    let r = app
        .admin(Method::POST, "/admin/catalog/attributes")
        .body(record.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

/// The stored status of a session (the column; the JSON state is checked where it matters).
async fn stored_status(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("select status from checkout_session where checkout_session_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// The states of a session's payment attempts, oldest first.
async fn attempts(app: &TestApp, id: &str) -> Vec<String> {
    sqlx::query_scalar("select state from payment_attempt where checkout_session_id = $1 order by attempt_number")
        .bind(id)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

async fn orders_of(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("select count(*) from merchant_order where checkout_session_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

fn complete_path(id: &str) -> String {
    format!("/checkout_sessions/{id}/complete")
}

fn total(body: &Value) -> i64 {
    body["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "total")
        .map(|t| t["amount"].as_i64().unwrap())
        .unwrap()
}

#[tokio::test]
async fn a_stock_sync_while_a_session_is_being_paid_keeps_its_reservation() {
    let app = spawn_app().await;
    assert_eq!(stock_row(&app, TEE).await, (Some(60), 0));
    let created = create(&app, json!([{"id": TEE, "quantity": 2}])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    // The simulator commits the charge, then holds its answer: the session stays `complete_in_progress`.
    let paying = tokio::spawn(app.acp_post(&complete_path(&id), &payment("spt_sim_hold")).send());
    let held = eventually(Duration::from_secs(5), || async {
        count(&app, "simulator_charge").await == 1
    })
    .await;
    assert!(held, "the simulator recorded the held charge");
    assert_eq!(stored_status(&app, &id).await, "complete_in_progress");
    assert_eq!(stock_row(&app, TEE).await, (Some(60), 2), "reserved at complete");

    // The merchant's sync says 10 are on hand now. It sets on hand, and leaves the reservation alone.
    sync_stock(&app, TEE, 10).await;
    assert_eq!(stock_row(&app, TEE).await, (Some(10), 2));
    // Another buyer can have only what is not reserved.
    let other = create(&app, json!([{"id": TEE, "quantity": 9}])).await;
    let m = message(&other, "code", "out_of_stock");
    assert!(m["content"].as_str().unwrap().contains("Only 8"), "{m}");

    let released = app
        .admin(Method::POST, "/admin/simulator/release")
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), StatusCode::OK);
    let completed = session(paying.await.unwrap().unwrap(), StatusCode::OK).await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(orders_of(&app, &id).await, 1);
    assert_eq!(attempts(&app, &id).await, ["succeeded"]);
    assert_eq!(
        stock_row(&app, TEE).await,
        (Some(8), 0),
        "sold from what the sync set: 10 − 2, nothing left reserved"
    );
}

#[tokio::test]
async fn a_release_gives_the_reservation_back_and_never_creates_units() {
    let app = spawn_app().await;
    // A declined payment and one that waits for 3-D Secure both release what they reserved.
    for (token, on_hand, reached) in [
        ("spt_sim_decline", 4, "ready_for_payment"),
        ("spt_sim_3ds", 6, "authentication_required"),
    ] {
        let created = create(&app, json!([{"id": TEE, "quantity": 3}])).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let charges_before = count(&app, "simulator_charge").await;
        // Hold the attempt between its reservation and its PSP answer: the simulator cannot record a charge while
        // this transaction locks its ledger.
        let mut ledger = app.db.begin().await.unwrap();
        sqlx::query("lock table simulator_charge in exclusive mode")
            .execute(&mut *ledger)
            .await
            .unwrap();
        let paying = tokio::spawn(app.acp_post(&complete_path(&id), &payment(token)).send());
        let reserved = eventually(Duration::from_secs(5), || async {
            stock_row(&app, TEE).await.1 == 3 && stored_status(&app, &id).await == "complete_in_progress"
        })
        .await;
        assert!(reserved, "{token}: the attempt reserved 3 units");

        // During the attempt the merchant's sync lowers on hand.
        sync_stock(&app, TEE, on_hand).await;
        assert_eq!(stock_row(&app, TEE).await, (Some(on_hand), 3), "{token}");
        ledger.rollback().await.unwrap();

        let answered = session(paying.await.unwrap().unwrap(), StatusCode::OK).await;
        assert_eq!(answered["status"], reached, "{token}");
        assert_eq!(count(&app, "simulator_charge").await, charges_before + 1);
        assert_eq!(orders_of(&app, &id).await, 0);
        let state = attempts(&app, &id).await;
        assert!(
            state == ["declined"] || state == ["requires_action"],
            "{token}: {state:?}"
        );
        // Released, not restocked: on hand is exactly what the sync set (not sync + 3), reserved is back to 0.
        assert_eq!(stock_row(&app, TEE).await, (Some(on_hand), 0), "{token}");
    }
}

#[tokio::test]
async fn canceling_an_order_before_shipping_returns_its_units_exactly_once() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE, "quantity": 3}])).await;
    let id = created["id"].as_str().unwrap();
    let done = session(
        app.acp_post(&complete_path(id), &payment("spt_sim_ok"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let order_id = done["order"]["id"].as_str().unwrap().to_owned();
    assert_eq!(stock_row(&app, TEE).await, (Some(57), 0), "sold");

    let cancel = |key: &'static str| {
        app.admin(Method::POST, &format!("/admin/orders/{order_id}/cancel"))
            .header("Idempotency-Key", key)
            .json(&json!({}))
            .send()
    };
    let r = cancel("cancel-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let canceled: Value = r.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(
        stock_row(&app, TEE).await,
        (Some(60), 0),
        "the 3 units are back on hand"
    );

    for key in ["cancel-1", "cancel-2"] {
        let r = cancel(key).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{key}");
        assert_eq!(
            stock_row(&app, TEE).await,
            (Some(60), 0),
            "{key}: a repeated cancel restocks nothing more"
        );
    }
    let status: String = sqlx::query_scalar("select status from merchant_order where order_id = $1")
        .bind(&order_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "canceled");
    assert_eq!(count(&app, "simulator_refund").await, 1, "refunded once");
}

#[tokio::test]
async fn duplicate_item_ids_are_merged_before_the_per_order_limit_applies() {
    let app = spawn_app().await;
    let duplicated = json!([{"id": HEADLAMP_LIMIT_2, "quantity": 2}, {"id": HEADLAMP_LIMIT_2, "quantity": 1}]);
    let assert_merged = |s: &Value| {
        let lines = s["line_items"].as_array().unwrap();
        assert_eq!(lines.len(), 1, "one line, not two: {s:#}");
        assert_eq!(lines[0]["item"]["id"], HEADLAMP_LIMIT_2);
        assert_eq!(lines[0]["quantity"], 3);
        let m = message(s, "code", "quantity_exceeded");
        assert_eq!(m["param"], "$.line_items[0].quantity");
        assert!(m["content"].as_str().unwrap().contains("At most 2"), "{m}");
        assert_eq!(s["status"], "not_ready_for_payment");
    };
    let stored_items = |id: String| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, Value>("select state->'items' from checkout_session where checkout_session_id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };

    // On create.
    let created = create(&app, duplicated.clone()).await;
    assert_merged(&created);
    let created_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        stored_items(created_id.clone()).await,
        json!([{"item_id": HEADLAMP_LIMIT_2, "quantity": 3}])
    );

    // On update of a session that was fine with one.
    let single = create(&app, json!([{"id": HEADLAMP_LIMIT_2, "quantity": 1}])).await;
    assert_eq!(single["status"], "ready_for_payment");
    let updated_id = single["id"].as_str().unwrap().to_owned();
    let updated = session(
        app.acp_post(
            &format!("/checkout_sessions/{updated_id}"),
            &json!({"line_items": duplicated}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_merged(&updated);
    assert_eq!(
        stored_items(updated_id.clone()).await,
        json!([{"item_id": HEADLAMP_LIMIT_2, "quantity": 3}])
    );

    // Complete refuses both, and nothing is reserved or charged.
    for id in [&created_id, &updated_id] {
        let r = app
            .acp_post(&complete_path(id), &payment("spt_sim_ok"))
            .send()
            .await
            .unwrap();
        error(
            r,
            StatusCode::BAD_REQUEST,
            "quantity_exceeded",
            Some("$.line_items[0].quantity"),
        )
        .await;
        assert_eq!(stored_status(&app, id).await, "not_ready_for_payment");
        assert!(attempts(&app, id).await.is_empty());
    }
    assert_eq!(count(&app, "simulator_charge").await, 0);
    assert_eq!(count(&app, "merchant_order").await, 0);
    assert_eq!(stock_row(&app, HEADLAMP_LIMIT_2).await, (Some(25), 0));
}

/// Moves a session's expiry into the past, in the column and in the stored state alike.
async fn expire_in_db(app: &TestApp, id: &str) {
    let moved = sqlx::query(
        "update checkout_session set expires_at = now() - interval '1 minute',
                state = jsonb_set(state::jsonb, '{expires_at}', to_jsonb(now() - interval '1 minute'))
         where checkout_session_id = $1",
    )
    .bind(id)
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(moved.rows_affected(), 1);
}

/// The stored row, as it is: (status column, state, updated_at column).
async fn stored_row(app: &TestApp, id: &str) -> (String, Value, chrono::DateTime<chrono::Utc>) {
    sqlx::query_as("select status, state, updated_at from checkout_session where checkout_session_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn get_shows_a_session_past_its_expiry_as_expired_without_writing_and_the_sweeper_persists_it() {
    // No sweep during this part: only GET could write.
    let app = spawn_app_with(&[("expiry_sweep_interval_ms", "3600000")]).await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    expire_in_db(&app, &id).await;
    let before = stored_row(&app, &id).await;
    assert_eq!(before.0, "ready_for_payment");

    for _ in 0..2 {
        let shown = session(
            app.acp_get(&format!("/checkout_sessions/{id}")).send().await.unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(shown["status"], "expired");
        assert_eq!(message(&shown, "code", "expired")["type"], "error");
    }
    let after = stored_row(&app, &id).await;
    assert_eq!(
        after, before,
        "GET wrote nothing: status, state and updated_at are unchanged"
    );
    assert_eq!(after.1["status"], "ready_for_payment");

    // With a sweeper running, the expiry is persisted (column and state).
    let swept_app = spawn_app_with(&[("expiry_sweep_interval_ms", "100")]).await;
    let created = create(&swept_app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    expire_in_db(&swept_app, &id).await;
    let persisted = eventually(Duration::from_secs(2), || async {
        let (status, state, _) = stored_row(&swept_app, &id).await;
        status == "expired" && state["status"] == "expired"
    })
    .await;
    assert!(
        persisted,
        "the sweeper saved the expiry: {:?}",
        stored_row(&swept_app, &id).await
    );
}

/// The demo product line holding `variant`, with that variant's price set to `amount`.
fn repriced_product(variant: &str, amount: i64) -> String {
    let mut product: Value = include_str!("../../config/demo-catalog.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|p| p["variants"].as_array().unwrap().iter().any(|v| v["id"] == variant))
        .expect("the variant is in the demo catalog");
    for v in product["variants"].as_array_mut().unwrap() {
        if v["id"] == variant {
            v["price"]["amount"] = json!(amount);
        }
    }
    product.to_string()
}

#[tokio::test]
async fn a_price_change_before_complete_is_shown_and_stored_without_charging() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    assert_eq!(total(&created), 3000, "25.00 + 5.00 standard shipping");
    let id = created["id"].as_str().unwrap().to_owned();
    let r = app
        .admin(Method::POST, "/admin/catalog/import")
        .body(repriced_product(TEE, 2700))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let base = format!("http://{}", app.addr);
    let key = "complete-after-price-change";
    let first = agent_post(&base, &complete_path(&id), key, &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first = first.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&first).unwrap();
    crate::official::assert_valid_session(API_VERSION, &answer);
    assert_eq!(answer["status"], "ready_for_payment");
    let warning = message(&answer, "code", "price_change");
    assert_eq!(warning["type"], "warning");
    assert_eq!(total(&answer), 3200, "the new total, shown before any charge");
    assert_eq!(count(&app, "simulator_charge").await, 0, "nothing charged");
    assert!(attempts(&app, &id).await.is_empty(), "no payment attempt started");
    assert_eq!(stock_row(&app, TEE).await, (Some(60), 0), "nothing reserved");

    // The same key replays that answer byte for byte; the session shows the same total.
    let replay = agent_post(&base, &complete_path(&id), key, &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.bytes().await.unwrap(), first, "byte-identical replay");
    assert_eq!(count(&app, "simulator_charge").await, 0, "the replay charged nothing");
    let shown = session(
        app.acp_get(&format!("/checkout_sessions/{id}")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["totals"], answer["totals"], "stored with the answer");
    assert_eq!(stored_status(&app, &id).await, "ready_for_payment");

    // Completing again (a new request) charges the total that was shown.
    let paid = session(
        app.acp_post(&complete_path(&id), &payment("spt_sim_ok"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(paid["status"], "completed");
    let charged: i64 = sqlx::query_scalar("select amount from simulator_charge where checkout_session_id = $1")
        .bind(&id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(charged, 3200);
}

#[tokio::test]
async fn a_deadlock_during_complete_answers_503_with_retry_after_and_writes_nothing() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE}])).await;
    let id = created["id"].as_str().unwrap().to_owned();

    // Complete locks the session, then the variant rows. This transaction takes them in the opposite order, and
    // waits long before checking for deadlocks itself, so PostgreSQL aborts the server's transaction (40P01).
    let mut other = app.db.begin().await.unwrap();
    sqlx::query("set local deadlock_timeout = '30s'")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query("select 1 from variant where variant_id = $1 for update")
        .bind(TEE)
        .execute(&mut *other)
        .await
        .unwrap();
    let base = format!("http://{}", app.addr);
    let key = "complete-deadlock";
    let paying = tokio::spawn(agent_post(&base, &complete_path(&id), key, &payment("spt_sim_ok")).send());
    let waiting = eventually(Duration::from_secs(5), || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock' and query ilike '%from variant%for update%'
               and pid <> pg_backend_pid()",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        n == 1
    })
    .await;
    assert!(
        waiting,
        "the server holds the session row and waits for the variant row"
    );
    sqlx::query("select 1 from checkout_session where checkout_session_id = $1 for update")
        .bind(&id)
        .execute(&mut *other)
        .await
        .expect("the server's transaction is the deadlock victim, so ours gets the session row");

    let r = paying.await.unwrap().unwrap();
    let retry_after = r.headers().get("retry-after").cloned();
    let e = error(r, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", None).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("conflicted with a concurrent one"),
        "the deadlock's own answer: {e}"
    );
    assert!(retry_after.is_some(), "503 carries Retry-After");
    other.rollback().await.unwrap();

    assert_eq!(stored_status(&app, &id).await, "ready_for_payment");
    assert!(attempts(&app, &id).await.is_empty());
    assert_eq!(count(&app, "simulator_charge").await, 0);
    assert_eq!(stock_row(&app, TEE).await, (Some(60), 0));
    // Nothing was kept for the key: the same request now succeeds.
    let retried = session(
        agent_post(&base, &complete_path(&id), key, &payment("spt_sim_ok"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(retried["status"], "completed");
    assert_eq!(stock_row(&app, TEE).await, (Some(59), 0));
}

#[tokio::test]
async fn deadlocks_and_serialization_failures_map_to_503_and_other_database_errors_to_500() {
    use acp_merchant::error::{ApiError, ErrorType};
    use axum::response::IntoResponse;

    let app = spawn_app().await;
    let mut conn = app.db.acquire().await.unwrap();
    for (sqlstate, status) in [
        ("40P01", StatusCode::SERVICE_UNAVAILABLE),
        ("40001", StatusCode::SERVICE_UNAVAILABLE),
        ("23505", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let e = sqlx::query(sqlx::AssertSqlSafe(format!(
            "do $$ begin raise exception 'provoked' using errcode = '{sqlstate}'; end $$"
        )))
        .execute(&mut *conn)
        .await
        .unwrap_err();
        assert_eq!(e.as_database_error().and_then(|d| d.code()).as_deref(), Some(sqlstate));
        let api = ApiError::from(e);
        assert_eq!(api.status.as_u16(), status.as_u16(), "{sqlstate}");
        let response = api.clone().into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(api.error_type, ErrorType::ServiceUnavailable);
            assert!(
                response.headers().contains_key("retry-after"),
                "{sqlstate}: 503 with Retry-After"
            );
        } else {
            assert!(!response.headers().contains_key("retry-after"), "{sqlstate}");
        }
    }
}
