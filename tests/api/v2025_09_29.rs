//! ACP 2025-09-29 agents: the whole checkout in that version's shapes, its request deviations (whole-unit
//! quantities, an optional Idempotency-Key, a cancel without body), business messages and errors in its
//! vocabulary, a 3-D Secure card it cannot authenticate, the official examples of the version, and where our
//! `openapi/2025-09-29.json` departs from the official requests. Every session and error received is validated
//! against both the official 2025-09-29 JSON Schema and our document (`own_openapi.rs` checks the document).

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use test_support::{fake_stripe::FakeStripe, webhook_receiver::WebhookReceiver};

use crate::{
    helpers::{AGENT_KEY, TestApp, eventually, spawn_app, spawn_app_with},
    lifecycle::{HEADLAMP_LIMIT_2, MAP_PACK, TEE, address, count, payment, stock},
    official::{assert_valid, examples},
    shared::{intent_posts, official_webhook_schema, post_raw, receiver_validator, total},
    stripe::{SECRET, stripe_app, token},
    v2025_12_12::{with, without},
};

const VERSION: &str = "2025-09-29";

fn assert_matches_our_doc(def: &str, value: &Value) {
    crate::own_openapi::assert_matches_doc(VERSION, def, value);
}

/// A request as a 2025-09-29 agent sends it: bearer key, `API-Version`, and on POST a fresh `Idempotency-Key`.
fn agent(app: &TestApp, method: Method, path: &str) -> RequestBuilder {
    app.acp_as(method, path, AGENT_KEY, VERSION)
}

fn post(app: &TestApp, path: &str, body: &Value) -> RequestBuilder {
    agent(app, Method::POST, path).json(body)
}

/// The same POST without any `Idempotency-Key` (optional in this version).
fn post_without_key(app: &TestApp, path: &str, body: &Value) -> RequestBuilder {
    app.client
        .post(app.url(path))
        .bearer_auth(AGENT_KEY)
        .header("API-Version", VERSION)
        .json(body)
}

/// A session body, checked against the official 2025-09-29 schema and ours.
async fn session(response: Response, expected: StatusCode) -> Value {
    crate::lifecycle::session_in(VERSION, response, expected).await
}

/// An error body, checked against both schemas and the expected code and param (`Some(None)`: no param).
async fn error(response: Response, status: StatusCode, code: &str, param: Option<Option<&str>>) -> Value {
    let actual = response.status();
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(actual, status, "unexpected status; body: {body:#}");
    assert_valid(VERSION, "Error", &body);
    assert_matches_our_doc("Error", &body);
    assert_eq!(body["code"], code, "{body:#}");
    match param {
        Some(Some(param)) => assert_eq!(body["param"], param, "{body:#}"),
        Some(None) => assert!(body.get("param").is_none(), "{body:#}"),
        None => {}
    }
    body
}

fn create_body(items: Value) -> Value {
    json!({"items": items, "fulfillment_address": address("US")})
}

fn pay(token: &str) -> Value {
    json!({"payment_data": {"token": token, "provider": "stripe"}})
}

async fn create(app: &TestApp, items: Value) -> Value {
    session(
        post(app, "/checkout_sessions", &create_body(items))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await
}

fn message<'a>(session: &'a Value, code: &str) -> &'a Value {
    session["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["code"] == code))
        .unwrap_or_else(|| panic!("no {code} message: {session:#}"))
}

async fn charges(app: &TestApp, status: &str) -> i64 {
    sqlx::query_scalar("select count(*) from simulator_charge where status = $1")
        .bind(status)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_whole_checkout_in_2025_09_29_shapes() {
    let app = spawn_app().await;
    let stock_before = stock(&app, TEE).await.unwrap();

    let created = create(&app, json!([{"id": TEE, "quantity": 2}])).await;
    assert_eq!(created["status"], "ready_for_payment", "{created:#}");
    assert_eq!(
        created["currency"], "usd",
        "taken from the items' prices: this version sends none"
    );
    assert_eq!(
        created["payment_provider"],
        json!({"provider": "stripe", "supported_payment_methods": ["card"]})
    );
    assert_eq!(
        created["line_items"][0],
        json!({"id": "li_1", "item": {"id": TEE, "quantity": 2}, "base_amount": 5000, "discount": 0,
               "subtotal": 5000, "tax": 0, "total": 5000})
    );
    assert_eq!(created["fulfillment_option_id"], "ship_standard");
    let standard = &created["fulfillment_options"][0];
    assert_eq!(
        (
            &standard["type"],
            &standard["subtotal"],
            &standard["tax"],
            &standard["total"]
        ),
        (&json!("shipping"), &json!(500), &json!(0), &json!(500))
    );
    assert_eq!(created["fulfillment_address"], address("US"));
    assert_eq!(
        created["links"],
        json!([{"type": "terms_of_use", "url": "https://shop.example.com/legal/terms"},
               {"type": "seller_shop_policies", "url": "https://shop.example.com/legal/returns"}])
    );
    for newer in ["protocol", "capabilities", "fulfillment_details", "created_at", "buyer"] {
        assert!(created.get(newer).is_none(), "{newer} is not a field of this version");
    }
    let id = created["id"].as_str().unwrap();

    let updated = session(
        post(
            &app,
            &format!("/checkout_sessions/{id}"),
            &json!({"fulfillment_option_id": "ship_express"}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["fulfillment_option_id"], "ship_express");
    assert_eq!(total(&updated, "fulfillment"), 1500);
    assert_eq!(total(&updated, "total"), 6500);

    let got = session(
        agent(&app, Method::GET, &format!("/checkout_sessions/{id}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(got, updated);

    let mut body = pay("spt_sim_ok");
    body["payment_data"]["billing_address"] = address("US");
    body["buyer"] = json!({"first_name": "Jane", "last_name": "Buyer", "email": "jane@example.com"});
    let completed = session(
        post(&app, &format!("/checkout_sessions/{id}/complete"), &body)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["order"]["checkout_session_id"], id);
    assert!(
        completed["order"]["permalink_url"]
            .as_str()
            .unwrap()
            .starts_with("http")
    );
    assert_eq!(completed["buyer"], body["buyer"]);
    assert_eq!(stock(&app, TEE).await.unwrap(), stock_before - 2);

    // The order webhook is rendered in the version of the complete call: the legacy EventDataOrder.
    let payload: Value = sqlx::query_scalar("select payload from webhook_event where order_id = $1")
        .bind(completed["order"]["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        payload,
        json!({"type": "order_create", "data": {"type": "order", "checkout_session_id": id,
               "permalink_url": completed["order"]["permalink_url"], "status": "confirmed", "refunds": []}})
    );
    if let Some(webhook) = official_webhook_schema(VERSION) {
        let errors: Vec<String> = webhook.iter_errors(&payload).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}

#[tokio::test]
async fn fractional_and_zero_quantities_are_refused_with_a_clear_400() {
    let app = spawn_app().await;
    for quantity in [json!(2.5), json!(0.5), json!(0), json!(100_000)] {
        let r = post(
            &app,
            "/checkout_sessions",
            &create_body(json!([{"id": TEE, "quantity": quantity}])),
        )
        .send()
        .await
        .unwrap();
        let e = error(r, StatusCode::BAD_REQUEST, "invalid", Some(Some("$.items[0].quantity"))).await;
        let text = e["message"].as_str().unwrap();
        assert!(
            text.contains("whole number of units") && text.contains("fractional"),
            "{quantity}: {text}"
        );
    }
    // The official schema requires a quantity in this version.
    let r = post(&app, "/checkout_sessions", &create_body(json!([{"id": TEE}])))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "missing", Some(Some("$.items[0].quantity"))).await;
    assert_eq!(count(&app, "checkout_session").await, 0);

    // Whole numbers written as decimals are whole numbers.
    let created = create(&app, json!([{"id": TEE, "quantity": 2.0}])).await;
    assert_eq!(created["line_items"][0]["item"]["quantity"], 2);
    let id = created["id"].as_str().unwrap();
    let r = post(
        &app,
        &format!("/checkout_sessions/{id}"),
        &json!({"items": [{"id": TEE, "quantity": 1.5}]}),
    )
    .send()
    .await
    .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid", Some(Some("$.items[0].quantity"))).await;
}

#[tokio::test]
async fn the_idempotency_key_is_optional_and_honoured_when_sent() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE, "quantity": 1}]));
    for _ in 0..2 {
        let r = post_without_key(&app, "/checkout_sessions", &body)
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("idempotency-key").is_none());
        session(r, StatusCode::CREATED).await;
    }
    assert_eq!(count(&app, "checkout_session").await, 2, "no key: two requests");

    let keyed = |body: &Value| {
        app.client
            .post(app.url("/checkout_sessions"))
            .bearer_auth(AGENT_KEY)
            .header("API-Version", VERSION)
            .header("Idempotency-Key", "k-2025")
            .json(body)
    };
    let first = session(keyed(&body).send().await.unwrap(), StatusCode::CREATED).await;
    let again = keyed(&body).send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(session(again, StatusCode::CREATED).await, first);

    let other = create_body(json!([{"id": TEE, "quantity": 3}]));
    let e = error(
        keyed(&other).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_conflict",
        Some(None),
    )
    .await;
    assert_eq!(e["type"], "request_not_idempotent", "this version's idempotency type");
}

#[tokio::test]
async fn cancel_takes_no_body_and_ignores_any_object() {
    let app = spawn_app().await;
    for body in [
        None,
        Some(json!({})),
        Some(json!({"intent_trace": {"reason_code": "price_sensitivity"}})),
    ] {
        let created = create(&app, json!([{"id": TEE, "quantity": 1}])).await;
        let path = format!("/checkout_sessions/{}/cancel", created["id"].as_str().unwrap());
        let request = match &body {
            Some(body) => post(&app, &path, body),
            None => agent(&app, Method::POST, &path),
        };
        let canceled = session(request.send().await.unwrap(), StatusCode::OK).await;
        assert_eq!(canceled["status"], "canceled", "{body:?}");
        let r = agent(&app, Method::POST, &path).send().await.unwrap();
        error(r, StatusCode::METHOD_NOT_ALLOWED, "invalid_state", None).await;
    }
    let created = create(&app, json!([{"id": TEE, "quantity": 1}])).await;
    let path = format!("/checkout_sessions/{}/cancel", created["id"].as_str().unwrap());
    for not_an_object in [json!([1]), json!("cancel"), json!(null), json!(7)] {
        let r = post(&app, &path, &not_an_object).send().await.unwrap();
        error(r, StatusCode::BAD_REQUEST, "invalid", Some(Some("$"))).await;
    }
    let still = session(
        agent(&app, Method::GET, &path.replace("/cancel", ""))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(still["status"], "ready_for_payment", "a refused cancel changes nothing");
}

#[tokio::test]
async fn business_messages_and_errors_speak_2025_09_29() {
    let app = spawn_app().await;
    let r = post(
        &app,
        "/checkout_sessions",
        &create_body(json!([{"id": TEE, "quantity": 1}, {"id": "var_nope", "quantity": 1}])),
    )
    .send()
    .await
    .unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid_item_id",
        Some(Some("$.items[1].id")),
    )
    .await;

    // Codes this version lacks are `invalid`, with params into this version's session.
    let limited = create(&app, json!([{"id": HEADLAMP_LIMIT_2, "quantity": 3}])).await;
    assert_eq!(limited["status"], "not_ready_for_payment");
    let m = &limited["messages"][0];
    assert_eq!(
        (&m["code"], &m["param"]),
        (&json!("invalid"), &json!("$.line_items[0].item.quantity"))
    );
    let id = limited["id"].as_str().unwrap();
    // Complete names the canonical problem (Error codes are implementation-defined) at this version's field.
    let r = post(&app, &format!("/checkout_sessions/{id}/complete"), &pay("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "quantity_exceeded",
        Some(Some("$.items[0].quantity")),
    )
    .await;

    let unknown_option = session(
        post(
            &app,
            &format!("/checkout_sessions/{id}"),
            &json!({"items": [{"id": HEADLAMP_LIMIT_2, "quantity": 2}], "fulfillment_option_id": "teleport"}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    let m = message(&unknown_option, "invalid");
    assert_eq!(m["param"], "$.fulfillment_option_id");
    assert_eq!(
        unknown_option["fulfillment_option_id"], "ship_standard",
        "the default applies meanwhile"
    );

    let mut abroad = create_body(json!([{"id": TEE, "quantity": 1}]));
    abroad["fulfillment_address"] = address("FR");
    let abroad = session(
        post(&app, "/checkout_sessions", &abroad).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let m = &abroad["messages"][0];
    assert_eq!(
        (&m["code"], &m["param"]),
        (&json!("invalid"), &json!("$.fulfillment_address.country"))
    );

    // An address that is not this version's (or not an ISO code) is refused at its field.
    let mut lowercase = create_body(json!([{"id": TEE, "quantity": 1}]));
    lowercase["fulfillment_address"]["country"] = json!("us");
    let r = post(&app, "/checkout_sessions", &lowercase).send().await.unwrap();
    let e = error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some(Some("$.fulfillment_address.country")),
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("ISO 3166-1"), "{e:#}");

    // This version's Buyer needs names: a buyer without them is refused where it is missing.
    let mut nameless = create_body(json!([{"id": TEE, "quantity": 1}]));
    nameless["buyer"] = json!({"email": "jane@example.com"});
    let r = post(&app, "/checkout_sessions", &nameless).send().await.unwrap();
    error(r, StatusCode::BAD_REQUEST, "missing", Some(Some("$.buyer.first_name"))).await;

    // Complete before an address is known names this version's field.
    let addressless = session(
        post(
            &app,
            "/checkout_sessions",
            &json!({"items": [{"id": TEE, "quantity": 1}]}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(addressless["status"], "not_ready_for_payment");
    let path = format!("/checkout_sessions/{}/complete", addressless["id"].as_str().unwrap());
    let r = post(&app, &path, &pay("spt_sim_ok")).send().await.unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "missing",
        Some(Some("$.fulfillment_address")),
    )
    .await;

    // A digital-only cart selects its digital delivery.
    let digital = session(
        post(
            &app,
            "/checkout_sessions",
            &json!({"items": [{"id": MAP_PACK, "quantity": 1}]}),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(digital["status"], "ready_for_payment");
    assert_eq!(digital["fulfillment_option_id"], "digital_delivery");
}

#[tokio::test]
async fn a_session_of_a_newer_version_reads_in_2025_09_29_shapes() {
    let app = spawn_app().await;
    let mut body = crate::lifecycle::create_body(json!([{"id": TEE, "quantity": 1}]));
    body["buyer"] = json!({"email": "jane@example.com"});
    let newer = crate::lifecycle::session(
        app.acp_post("/checkout_sessions", &body).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let id = newer["id"].as_str().unwrap();
    let old = session(
        agent(&app, Method::GET, &format!("/checkout_sessions/{id}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(old.get("buyer").is_none(), "no names, so no buyer in this version");
    assert_eq!(old["fulfillment_address"], address("US"));
    assert_eq!(old["status"], "ready_for_payment");

    // A 2025-09-29 agent can pay for it.
    let completed = session(
        post(&app, &format!("/checkout_sessions/{id}/complete"), &pay("spt_sim_ok"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(completed["status"], "completed");
}

#[tokio::test]
async fn a_payment_under_way_shows_in_progress() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE, "quantity": 1}])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let paying = tokio::spawn(post(&app, &format!("/checkout_sessions/{id}/complete"), &pay("spt_sim_hold")).send());
    let held = crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
        count(&app, "simulator_charge").await == 1
    })
    .await;
    assert!(held, "the simulator recorded the held charge");
    let during = session(
        agent(&app, Method::GET, &format!("/checkout_sessions/{id}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(during["status"], "in_progress");
    let r = post(&app, &format!("/checkout_sessions/{id}/complete"), &pay("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    let e = error(r, StatusCode::CONFLICT, "idempotency_in_flight", None).await;
    assert_eq!(e["type"], "request_not_idempotent");

    app.admin(Method::POST, "/admin/simulator/release")
        .send()
        .await
        .unwrap();
    let completed = session(paying.await.unwrap().unwrap(), StatusCode::OK).await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(charges(&app, "succeeded").await, 1);
}

/// The session a 3-D Secure card leaves: schema-valid, `not_ready_for_payment`, and saying what to do.
fn assert_told_about_3ds(body: &Value) {
    assert_eq!(body["status"], "not_ready_for_payment", "{body:#}");
    let m = message(body, "requires_3ds");
    assert_eq!(m["type"], "error");
    let text = m["content"].as_str().unwrap();
    assert!(
        text.contains("3-D Secure") && text.contains("nothing was charged") && text.contains("another payment method"),
        "{text}"
    );
    assert!(body.get("authentication_metadata").is_none());
}

#[tokio::test]
async fn a_3ds_card_gets_a_clear_answer_and_is_never_charged_twice() {
    let app = spawn_app().await;
    let stock_before = stock(&app, TEE).await.unwrap();
    let created = create(&app, json!([{"id": TEE, "quantity": 1}])).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/checkout_sessions/{id}/complete");
    let keyed = || {
        app.client
            .post(app.url(&path))
            .bearer_auth(AGENT_KEY)
            .header("API-Version", VERSION)
            .header("Idempotency-Key", "complete-1")
            .json(&pay("spt_sim_3ds"))
    };

    let answer = session(keyed().send().await.unwrap(), StatusCode::OK).await;
    assert_told_about_3ds(&answer);

    // Every way an agent of this version can try again charges nothing and says the same.
    let replay = keyed().send().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(session(replay, StatusCode::OK).await, answer);
    for retry in [
        post(&app, &path, &pay("spt_sim_3ds")),
        post(&app, &path, &pay("spt_sim_ok")),
        post_without_key(&app, &path, &pay("spt_sim_3ds")),
        post_without_key(&app, &path, &pay("spt_sim_ok")),
    ] {
        let e = error(
            retry.send().await.unwrap(),
            StatusCode::BAD_REQUEST,
            "requires_3ds",
            Some(None),
        )
        .await;
        assert_eq!(e["type"], "invalid_request");
        assert!(e["message"].as_str().unwrap().contains("cannot carry"), "{e:#}");
    }
    let read = session(
        agent(&app, Method::GET, &format!("/checkout_sessions/{id}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_told_about_3ds(&read);
    assert_eq!(
        count(&app, "simulator_charge").await,
        1,
        "one payment, waiting for 3-D Secure"
    );
    assert_eq!(charges(&app, "requires_action").await, 1);
    assert_eq!(charges(&app, "succeeded").await, 0);
    assert_eq!(count(&app, "merchant_order").await, 0);
    assert_eq!(stock(&app, TEE).await.unwrap(), stock_before, "nothing sold");

    // What the message offers: a newer version that can carry the result completes it, exactly once.
    let mut authenticated = payment("spt_sim_3ds");
    authenticated["authentication_result"] = json!({"outcome": "authenticated", "outcome_details": {
        "three_ds_cryptogram": "AAIBBYNoEwAAACcKhAJkdQAAAAA=", "electronic_commerce_indicator": "05",
        "transaction_id": "f38e6948-5388-41a6-bca4-b49723c19437", "version": "2.2.0"}});
    let completed = crate::lifecycle::session(
        app.acp_post(&path, &authenticated).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(completed["status"], "completed");
    let shown = session(
        agent(&app, Method::GET, &format!("/checkout_sessions/{id}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["status"], "completed");
    assert!(shown["messages"].as_array().unwrap().is_empty(), "{shown:#}");
    let again = post(&app, &path, &pay("spt_sim_ok")).send().await.unwrap();
    error(again, StatusCode::BAD_REQUEST, "invalid_state", None).await;
    assert_eq!(charges(&app, "succeeded").await, 1, "charged once");
    assert_eq!(
        charges(&app, "requires_action").await,
        0,
        "the waiting payment was not left open"
    );
    assert_eq!(count(&app, "merchant_order").await, 1);
    let charged: i64 =
        sqlx::query_scalar("select sum(amount)::bigint from simulator_charge where status = 'succeeded'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(charged, total(&shown, "total"));
}

#[tokio::test]
async fn a_3ds_card_then_cancel_leaves_no_payment_behind() {
    let app = spawn_app().await;
    let created = create(&app, json!([{"id": TEE, "quantity": 1}])).await;
    let id = created["id"].as_str().unwrap();
    // Several completes at once without keys (optional in this version): one payment at most.
    let path = format!("/checkout_sessions/{id}/complete");
    let attempts: Vec<_> = (0..4)
        .map(|_| tokio::spawn(post_without_key(&app, &path, &pay("spt_sim_3ds")).send()))
        .collect();
    let mut told = 0;
    for attempt in attempts {
        let r = attempt.await.unwrap().unwrap();
        match r.status() {
            StatusCode::OK => {
                assert_told_about_3ds(&session(r, StatusCode::OK).await);
                told += 1;
            }
            StatusCode::BAD_REQUEST => {
                error(r, StatusCode::BAD_REQUEST, "requires_3ds", Some(None)).await;
            }
            StatusCode::CONFLICT => {
                let e = error(r, StatusCode::CONFLICT, "idempotency_in_flight", None).await;
                assert_eq!(e["type"], "request_not_idempotent");
            }
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    assert_eq!(told, 1, "exactly one call started the payment");
    assert_eq!(count(&app, "simulator_charge").await, 1);

    let canceled = session(
        agent(&app, Method::POST, &format!("/checkout_sessions/{id}/cancel"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(
        charges(&app, "voided").await,
        1,
        "the waiting payment was canceled at the PSP"
    );
    assert_eq!(charges(&app, "succeeded").await, 0);
    let r = post(&app, &path, &pay("spt_sim_ok")).send().await.unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid_state", None).await;
    assert_eq!(charges(&app, "succeeded").await, 0, "never charged");
}

/// The examples' placeholder ids replaced with ids this server knows.
fn substitute(value: &Value) -> Value {
    let text = value
        .to_string()
        .replace("\"item_123\"", &format!("\"{TEE}\""))
        .replace("fulfillment_option_456", "ship_express")
        .replace("\"spt_123\"", "\"spt_sim_ok\"");
    serde_json::from_str(&text).unwrap()
}

fn keys(value: &Value) -> Vec<&String> {
    let mut keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn official_2025_09_29_examples_are_answered_as_documented() {
    let Some(file) = examples(VERSION, "examples.agentic_checkout.json") else {
        return; // official.rs said so loudly
    };
    let app = spawn_app().await;

    // The example buys 2.5 units: this store sells whole units and says so.
    let mut create = substitute(&file["create_checkout_session_request"]);
    assert_eq!(create["items"][0]["quantity"], 2.5);
    let r = post(&app, "/checkout_sessions", &create).send().await.unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid", Some(Some("$.items[0].quantity"))).await;

    create["items"][0]["quantity"] = json!(2);
    let created = session(
        post(&app, "/checkout_sessions", &create).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let documented = &file["create_checkout_session_response"];
    assert_eq!(created["status"], documented["status"]);
    assert_eq!(
        keys(&created),
        keys(documented),
        "the same fields as the documented response"
    );
    assert_eq!(keys(&created["line_items"][0]), keys(&documented["line_items"][0]));
    assert_eq!(
        keys(&created["fulfillment_options"][0]),
        keys(&documented["fulfillment_options"][0])
    );
    assert_eq!(created["fulfillment_address"], create["fulfillment_address"]);
    let id = created["id"].as_str().unwrap();

    let update = substitute(&file["update_checkout_session_request"]);
    let updated = session(
        post(&app, &format!("/checkout_sessions/{id}"), &update)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["fulfillment_option_id"], "ship_express");
    assert_eq!(updated["status"], file["update_checkout_session_response"]["status"]);

    let complete = substitute(&file["complete_checkout_session_request"]);
    let completed = session(
        post(&app, &format!("/checkout_sessions/{id}/complete"), &complete)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let documented = &file["complete_checkout_session_response"];
    assert_eq!(completed["status"], documented["status"]);
    assert_eq!(completed["buyer"], documented["buyer"]);
    assert!(completed["order"]["id"].is_string());

    // The delegate-payment examples are requests to the PSP's vault, which this server does not host.
    println!(
        "\n{VERSION} example requests:\n| example | status | code or session status |\n|---|---|---|\n\
         | create_checkout_session_request (quantity 2.5, violates our whole-unit rule) | 400 | invalid at $.items[0].quantity |\n\
         | create_checkout_session_request (quantity 2) | 201 | {} |\n\
         | update_checkout_session_request | 200 | {} |\n\
         | complete_checkout_session_request | 200 | {} |\n\
         | examples.delegate_payment.json | not sent | PSP vault API, not a merchant endpoint |",
        created["status"].as_str().unwrap(),
        updated["status"].as_str().unwrap(),
        completed["status"].as_str().unwrap()
    );
}

#[test]
fn our_request_schemas_agree_with_the_official_ones_except_where_documented() {
    let Some(official) = crate::official::schemas(VERSION) else {
        return;
    };
    let create = crate::own_openapi::validator(VERSION, "CheckoutSessionCreateRequest");
    let complete = crate::own_openapi::validator(VERSION, "CheckoutSessionCompleteRequest");
    let official_body = |def: &str, body: &Value| official.validate(def, body).is_ok();
    let cases = [
        json!({"items": [{"id": "a", "quantity": 1}]}),
        json!({"items": [{"id": "a", "quantity": 3}], "fulfillment_address": address("US"),
               "buyer": {"first_name": "J", "last_name": "B", "email": "j@b.example"}}),
        json!({"items": []}),
        json!({"items": [{"id": "a"}]}),
        json!({"buyer": {"first_name": "J", "last_name": "B", "email": "j@b.example"}}),
        json!({"items": [{"id": "a", "quantity": 1}], "buyer": {"email": "j@b.example"}}),
    ];
    for body in cases {
        assert_eq!(
            create.is_valid(&body),
            official_body("CheckoutSessionCreateRequest", &body),
            "{body}"
        );
    }
    // The one deliberate difference: fractions.
    let fraction = json!({"items": [{"id": "a", "quantity": 2.5}]});
    assert!(official_body("CheckoutSessionCreateRequest", &fraction));
    assert!(!create.is_valid(&fraction));
    for body in [
        pay("spt_1"),
        json!({"payment_data": {"token": "spt_1"}}),
        json!({"payment_data": {"token": "spt_1", "provider": "adyen"}}),
        json!({}),
    ] {
        assert_eq!(
            complete.is_valid(&body),
            official_body("CheckoutSessionCompleteRequest", &body),
            "{body}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The rest of the conformance suite for this version: the fake Stripe, webhooks, illegal transitions, expiry, the
// error table and the bad-input matrix.

async fn create_id(app: &TestApp) -> String {
    create(app, json!([{"id": TEE, "quantity": 1}])).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn completes_on_the_fake_stripe_and_a_3ds_card_is_never_charged() {
    let fake = FakeStripe::start(SECRET).await;
    let app = stripe_app(&fake, &[]).await;
    let id = create_id(&app).await;
    let spt = token("ok");
    let r = post(&app, &format!("/checkout_sessions/{id}/complete"), &pay(&spt))
        .send()
        .await
        .unwrap();
    let completed = session(r, StatusCode::OK).await;
    assert_eq!(completed["status"], "completed");
    let posts = intent_posts(&fake);
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].params["payment_method_data[shared_payment_granted_token]"],
        spt
    );
    assert_eq!(posts[0].params["amount"], total(&completed, "total").to_string());
    assert_eq!(posts[0].params["currency"], "usd");

    // A card that needs 3-D Secure: this version cannot carry the result, so the buyer is told and the
    // PaymentIntent waiting for authentication is canceled when the session is.
    let id = create_id(&app).await;
    let path = format!("/checkout_sessions/{id}/complete");
    let spt = token("3ds");
    let r = post(&app, &path, &pay(&spt)).send().await.unwrap();
    assert_told_about_3ds(&session(r, StatusCode::OK).await);
    let r = post(&app, &path, &pay(&spt)).send().await.unwrap();
    error(r, StatusCode::BAD_REQUEST, "requires_3ds", Some(None)).await;
    assert_eq!(intent_posts(&fake).len(), 2, "the retry sent Stripe nothing");
    let r = agent(&app, Method::POST, &format!("/checkout_sessions/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(session(r, StatusCode::OK).await["status"], "canceled");
    let statuses: Vec<String> = fake
        .payment_intents()
        .into_iter()
        .map(|pi| pi["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["succeeded", "canceled"]);
    assert_eq!(count(&app, "merchant_order").await, 1);

    // A decline is a message on a session that can still be paid.
    let id = create_id(&app).await;
    let r = post(
        &app,
        &format!("/checkout_sessions/{id}/complete"),
        &pay(&token("declined")),
    )
    .send()
    .await
    .unwrap();
    let declined = session(r, StatusCode::OK).await;
    assert_eq!(declined["status"], "ready_for_payment");
    assert_eq!(message(&declined, "payment_declined")["type"], "error");
}

#[tokio::test]
async fn order_webhooks_are_signed_legacy_bodies_after_complete_ship_and_refund() {
    const WEBHOOK_SECRET: &str = "whsec_test_secret_0123456789";
    let validator = receiver_validator(official_webhook_schema(VERSION));
    let receiver = WebhookReceiver::start(WEBHOOK_SECRET, validator).await;
    let url = receiver.base_url();
    let app = spawn_app_with(&[
        ("agent_webhook_url", url.as_str()),
        ("agent_webhook_secret", WEBHOOK_SECRET),
        ("webhook_poll_interval_ms", "25"),
        ("webhook_retry_schedule_ms", "100,150,200"),
    ])
    .await;
    let id = create_id(&app).await;
    let r = post(&app, &format!("/checkout_sessions/{id}/complete"), &pay("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    let order_id = session(r, StatusCode::OK).await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delivered = |n: usize| {
        receiver.wait_until(Duration::from_secs(5), move |d| {
            d.iter().filter(|d| d.answered == 200).count() >= n
        })
    };
    assert!(delivered(1).await, "order_create delivered");
    for (path, key, body) in [
        (
            "ship",
            "ship-1",
            json!({"carrier": "USPS", "tracking_number": "9400100000000000000000"}),
        ),
        ("refund", "refund-1", json!({"amount": 700, "reason": "damaged"})),
    ] {
        let r = app
            .admin(Method::POST, &format!("/admin/orders/{order_id}/{path}"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    assert!(delivered(3).await, "three events delivered");
    let events = receiver.accepted_unique();
    assert_eq!(events.len(), 3);
    for d in &events {
        assert!(d.signature_valid, "bad signature");
        assert!(
            d.signature_header
                .as_deref()
                .is_some_and(|s| s.starts_with("t=") && s.contains(",v1=")),
            "{:?}",
            d.signature_header
        );
        assert_eq!(d.schema_error, None, "{}", d.body);
        assert_eq!(d.body["data"]["checkout_session_id"], id.as_str());
        assert!(d.body["data"].get("id").is_none(), "the legacy body has no order id");
    }
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|d| {
            (
                d.body["type"].as_str().unwrap(),
                d.body["data"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("order_create", "confirmed"),
            ("order_update", "shipped"),
            ("order_update", "shipped")
        ]
    );
    assert_eq!(
        events[2].body["data"]["refunds"],
        json!([{"type": "original_payment", "amount": 700}])
    );
}

/// GET shows `status`; update and complete are 400 `invalid_state`; cancel is 405; nothing is written.
async fn assert_terminal(app: &TestApp, id: &str, status: &str) {
    let path = format!("/checkout_sessions/{id}");
    let got = session(agent(app, Method::GET, &path).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(got["status"], status);
    let before = rows(app).await;
    for body in [
        json!({"items": [{"id": TEE, "quantity": 2}]}),
        json!({"fulfillment_option_id": "ship_express"}),
        json!({"fulfillment_address": address("US")}),
    ] {
        let r = post(app, &path, &body).send().await.unwrap();
        error(r, StatusCode::BAD_REQUEST, "invalid_state", None).await;
    }
    let r = post(app, &format!("{path}/complete"), &pay("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid_state", None).await;
    let r = agent(app, Method::POST, &format!("{path}/cancel"))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::METHOD_NOT_ALLOWED, "invalid_state", None).await;
    assert_eq!(rows(app).await, before, "a refused transition wrote rows");
    let again = session(agent(app, Method::GET, &path).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(again, got, "a refused transition changed nothing");
}

async fn rows(app: &TestApp) -> (i64, i64, i64, i64) {
    (
        count(app, "checkout_session").await,
        count(app, "payment_attempt").await,
        count(app, "merchant_order").await,
        count(app, "simulator_charge").await,
    )
}

#[tokio::test]
async fn every_illegal_transition_is_refused() {
    let app = spawn_app().await;
    let done = create_id(&app).await;
    let r = post(&app, &format!("/checkout_sessions/{done}/complete"), &pay("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::OK).await;
    assert_terminal(&app, &done, "completed").await;
    assert_eq!(charges(&app, "succeeded").await, 1, "no second charge");

    let gone = create_id(&app).await;
    let r = agent(&app, Method::POST, &format!("/checkout_sessions/{gone}/cancel"))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::OK).await;
    assert_terminal(&app, &gone, "canceled").await;

    // Not ready: no address yet.
    let r = post(
        &app,
        "/checkout_sessions",
        &json!({"items": [{"id": TEE, "quantity": 1}]}),
    )
    .send()
    .await
    .unwrap();
    let unready = session(r, StatusCode::CREATED).await;
    assert_eq!(unready["status"], "not_ready_for_payment");
    let id = unready["id"].as_str().unwrap();
    let r = post(&app, &format!("/checkout_sessions/{id}/complete"), &pay("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "missing",
        Some(Some("$.fulfillment_address")),
    )
    .await;
    // An option the session does not offer is a business problem: a message at this version's field, and the
    // session still cannot be paid.
    let r = post(
        &app,
        &format!("/checkout_sessions/{id}"),
        &json!({"fulfillment_option_id": "teleport"}),
    )
    .send()
    .await
    .unwrap();
    let told = session(r, StatusCode::OK).await;
    assert_eq!(message(&told, "invalid")["param"], "$.fulfillment_option_id");
    assert_eq!(told["status"], "not_ready_for_payment");
    assert_eq!(count(&app, "simulator_charge").await, 1);

    let r = agent(&app, Method::GET, "/checkout_sessions/cs_missing")
        .send()
        .await
        .unwrap();
    error(r, StatusCode::NOT_FOUND, "not_found", None).await;
    for (path, body) in [
        ("/checkout_sessions/cs_missing", json!({})),
        ("/checkout_sessions/cs_missing/complete", pay("spt_sim_ok")),
        ("/checkout_sessions/cs_missing/cancel", json!({})),
    ] {
        let r = post(&app, path, &body).send().await.unwrap();
        error(r, StatusCode::NOT_FOUND, "not_found", None).await;
    }
}

#[tokio::test]
async fn an_expired_session_reads_canceled_and_refuses_every_change() {
    let app = spawn_app_with(&[("session_ttl_secs", "1"), ("expiry_sweep_interval_ms", "200")]).await;
    let id = create_id(&app).await;
    let swept = eventually(Duration::from_secs(2), || async {
        let status: String = sqlx::query_scalar("select status from checkout_session where checkout_session_id = $1")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
        status == "expired"
    })
    .await;
    assert!(swept, "the sweeper marks the session expired");
    let read = session(
        agent(&app, Method::GET, &format!("/checkout_sessions/{id}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["status"], "canceled");
    let said = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["content"] == "This checkout session has expired.")
        .unwrap_or_else(|| panic!("no expiry message: {read:#}"));
    assert_eq!(said["type"], "error");
    assert_eq!(said["code"], "invalid", "`expired` is not a code of this version");
    assert_terminal(&app, &id, "canceled").await;
}

#[tokio::test]
async fn the_error_table_in_2025_09_29() {
    let app = spawn_app().await;
    let body = create_body(json!([{"id": TEE, "quantity": 1}]));
    let r = app
        .client
        .post(app.url("/checkout_sessions"))
        .header("API-Version", VERSION)
        .json(&body)
        .send()
        .await
        .unwrap();
    error(r, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    let r = app
        .acp_as(Method::POST, "/checkout_sessions", "not-the-key", VERSION)
        .json(&body)
        .send()
        .await
        .unwrap();
    error(r, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    let r = app
        .client
        .post(app.url("/checkout_sessions"))
        .bearer_auth(AGENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    // Without a version the answer cannot be in this version's shapes (and carries `supported_versions`,
    // which this version's Error does not define: README, ACP versions).
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let missing: Value = r.json().await.unwrap();
    assert_eq!(missing["code"], "missing_api_version");
    assert_eq!(missing["type"], "invalid_request");
    let r = app
        .acp_as(Method::GET, "/checkout_sessions/cs_x", AGENT_KEY, "2025-01-01")
        .send()
        .await
        .unwrap();
    let unsupported: Value = r.json().await.unwrap();
    assert_eq!(unsupported["code"], "unsupported_api_version");
    assert_eq!(
        unsupported["supported_versions"],
        json!(["2026-04-17", "2026-01-30", "2026-01-16", "2025-12-12", "2025-09-29"]),
        "newest first"
    );
    let r = post_raw(&app, VERSION, "/checkout_sessions", "application/json", "{\"items\": [")
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid_json", None).await;
    let r = post_raw(&app, VERSION, "/checkout_sessions", "text/plain", &body.to_string())
        .send()
        .await
        .unwrap();
    error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None).await;
    let r = post(
        &app,
        "/checkout_sessions",
        &create_body(json!([{"id": TEE, "quantity": 1}, {"id": "item_nope", "quantity": 1}])),
    )
    .send()
    .await
    .unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid_item_id",
        Some(Some("$.items[1].id")),
    )
    .await;
    let r = post_without_key(&app, "/checkout_sessions", &body)
        .header("Idempotency-Key", "")
        .send()
        .await
        .unwrap();
    error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some(Some("$.headers['Idempotency-Key']")),
    )
    .await;
    assert_eq!(count(&app, "checkout_session").await, 0, "no refusal wrote a session");
}

/// A refusal: 400 with `code` and `param`, a message, never a 5xx, and no row written.
async fn refused(app: &TestApp, path: &str, body: &str, code: &str, param: &str) {
    let before = rows(app).await;
    let r = post_raw(app, VERSION, path, "application/json", body)
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_server_error(), "{path} {body}: a 5xx");
    let e = error(r, StatusCode::BAD_REQUEST, code, Some(Some(param))).await;
    assert!(!e["message"].as_str().unwrap_or_default().is_empty());
    assert_eq!(rows(app).await, before, "{path} {body}: a refused request wrote rows");
}

#[tokio::test]
async fn create_refuses_what_its_schema_forbids() {
    let app = spawn_app().await;
    let mut good = create_body(json!([{"id": TEE, "quantity": 1}]));
    good["buyer"] = json!({"first_name": "Jane", "last_name": "Buyer", "email": "jane@example.com"});
    let g = || good.clone();
    let cases: Vec<(String, &str, &str)> = vec![
        (with(g(), "/buyer", json!(["someone"])), "invalid", "$.buyer"),
        (
            with(g(), "/items", json!({"id": TEE, "quantity": 1})),
            "invalid",
            "$.items",
        ),
        (
            with(g(), "/fulfillment_address", json!("home")),
            "invalid",
            "$.fulfillment_address",
        ),
        (
            with(g(), "/fulfillment_address", json!([])),
            "invalid",
            "$.fulfillment_address",
        ),
        (
            with(g(), "/items/0/quantity", json!("1")),
            "invalid",
            "$.items[0].quantity",
        ),
        (with(g(), "/items/0/id", json!(7)), "invalid", "$.items[0].id"),
        (with(g(), "/buyer/email", json!({"a": 1})), "invalid", "$.buyer.email"),
        (without(g(), "", "items"), "missing", "$.items"),
        (without(g(), "/items/0", "id"), "missing", "$.items[0].id"),
        (without(g(), "/buyer", "email"), "missing", "$.buyer.email"),
        (
            without(g(), "/fulfillment_address", "city"),
            "missing",
            "$.fulfillment_address.city",
        ),
        (with(g(), "/items", json!([])), "invalid", "$.items"),
        (
            with(g(), "/items/0/quantity", json!(-1)),
            "invalid",
            "$.items[0].quantity",
        ),
        (
            with(g(), "/items/0/quantity", json!(100_000)),
            "invalid",
            "$.items[0].quantity",
        ),
        (with(g(), "/items/0/id", json!("")), "invalid", "$.items[0].id"),
        (
            with(g(), "/items/0/id", json!("v".repeat(300))),
            "invalid",
            "$.items[0].id",
        ),
        (
            with(g(), "/fulfillment_address/country", json!("usa")),
            "invalid",
            "$.fulfillment_address.country",
        ),
        (
            with(g(), "/fulfillment_address/line_one", json!("l".repeat(300))),
            "invalid",
            "$.fulfillment_address.line_one",
        ),
        (
            with(g(), "/buyer/phone_number", json!("1".repeat(65))),
            "invalid",
            "$.buyer.phone_number",
        ),
        ("null".into(), "invalid", "$"),
        ("[]".into(), "invalid", "$"),
        ("42".into(), "invalid", "$"),
    ];
    for (body, code, param) in &cases {
        refused(&app, "/checkout_sessions", body, code, param).await;
    }
    // Tolerated: unknown fields, ignored and never echoed.
    let mut tolerated = g();
    tolerated["capabilities"] = json!({"from": "a later version"});
    tolerated["items"][0]["note"] = json!("gift");
    let made = session(
        post(&app, "/checkout_sessions", &tolerated).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert!(made.get("capabilities").is_none());
    assert!(made["line_items"][0]["item"].get("note").is_none());
}

#[tokio::test]
async fn update_complete_and_cancel_refuse_what_their_schemas_forbid() {
    let app = spawn_app().await;
    let id = create_id(&app).await;
    let update = format!("/checkout_sessions/{id}");
    let complete = format!("/checkout_sessions/{id}/complete");
    let cancel = format!("/checkout_sessions/{id}/cancel");
    let p = || pay("spt_sim_ok");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (&update, json!({"buyer": []}).to_string(), "invalid", "$.buyer"),
        (&update, json!({"items": {"id": TEE}}).to_string(), "invalid", "$.items"),
        (&update, json!({"items": []}).to_string(), "invalid", "$.items"),
        (
            &update,
            json!({"items": [{"id": TEE, "quantity": 0}]}).to_string(),
            "invalid",
            "$.items[0].quantity",
        ),
        (
            &update,
            json!({"items": [{"id": TEE}]}).to_string(),
            "missing",
            "$.items[0].quantity",
        ),
        (
            &update,
            json!({"fulfillment_option_id": 7}).to_string(),
            "invalid",
            "$.fulfillment_option_id",
        ),
        (
            &update,
            json!({"fulfillment_option_id": ["ship_express"]}).to_string(),
            "invalid",
            "$.fulfillment_option_id",
        ),
        (
            &update,
            json!({"fulfillment_address": {"name": "J"}}).to_string(),
            "missing",
            "$.fulfillment_address.line_one",
        ),
        (
            &update,
            json!({"fulfillment_address": 5}).to_string(),
            "invalid",
            "$.fulfillment_address",
        ),
        (&update, "[]".into(), "invalid", "$"),
        (&update, "null".into(), "invalid", "$"),
        (&complete, json!({}).to_string(), "missing", "$.payment_data"),
        (
            &complete,
            json!({"payment_data": []}).to_string(),
            "invalid",
            "$.payment_data",
        ),
        (
            &complete,
            without(p(), "/payment_data", "token"),
            "missing",
            "$.payment_data.token",
        ),
        (
            &complete,
            without(p(), "/payment_data", "provider"),
            "missing",
            "$.payment_data.provider",
        ),
        (
            &complete,
            with(p(), "/payment_data/provider", json!("adyen")),
            "invalid",
            "$.payment_data.provider",
        ),
        (
            &complete,
            with(p(), "/payment_data/token", json!("")),
            "invalid",
            "$.payment_data.token",
        ),
        (
            &complete,
            with(p(), "/payment_data/token", json!("t".repeat(600))),
            "invalid",
            "$.payment_data.token",
        ),
        (
            &complete,
            with(p(), "/payment_data/token", json!(42)),
            "invalid",
            "$.payment_data.token",
        ),
        (
            &complete,
            with(p(), "/payment_data/billing_address", json!("home")),
            "invalid",
            "$.payment_data.billing_address",
        ),
        (
            &complete,
            with(p(), "/buyer", json!({"email": "j@b.example"})),
            "missing",
            "$.buyer.first_name",
        ),
        (&complete, "42".into(), "invalid", "$"),
        (&cancel, "null".into(), "invalid", "$"),
        (&cancel, "[]".into(), "invalid", "$"),
        (&cancel, "42".into(), "invalid", "$"),
    ];
    for (path, body, code, param) in &cases {
        refused(&app, path, body, code, param).await;
    }
    let after = session(agent(&app, Method::GET, &update).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(
        after["status"], "ready_for_payment",
        "nothing refused touched the session"
    );
    // An explicit null clears the address in an update.
    let cleared = session(
        post(&app, &update, &json!({"fulfillment_address": null}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(cleared.get("fulfillment_address").is_none(), "{cleared:#}");
    assert_eq!(cleared["status"], "not_ready_for_payment");
}
