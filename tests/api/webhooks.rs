//! Signed order webhooks from the outbox, checked by the fake agent receiver (test-support), which verifies every
//! signature and validates every body against the official 2026-04-17 webhook schema.

use std::{sync::Arc, time::Duration};

use acp_merchant::webhooks::client::{ClientPolicy, DeliveryError, WebhookClient};
use reqwest::{StatusCode, Url, header::HeaderMap};
use serde_json::{Value, json};
use test_support::webhook_receiver::{Behaviour, Delivery, Validator, WebhookReceiver};

use crate::{
    helpers::{AGENT_KEY, API_VERSION, BIN, ChildServer, TestApp, TestDb, agent_post, spawn_app_with},
    lifecycle::{TEE, count, create, create_body, payment, session},
    official::spec_dir,
};

const SECRET: &str = "whsec_test_secret_0123456789";

/// Where the two official OpenAPI documents are registered, so the webhook document's relative `$ref` to
/// `./openapi.agentic_checkout.yaml#/components/schemas/Order` resolves to the checkout document.
const OPENAPI_BASE: &str = "https://acp.test/spec/2026-04-17/openapi/";

/// `WebhookEvent` of the official 2026-04-17 webhook OpenAPI (`{type, data: EventDataOrder}`, where
/// `EventDataOrder` is the checkout OpenAPI's `Order` plus required type, checkout_session_id, permalink_url and
/// status), compiled from the official files themselves. None when the spec folder is unavailable.
fn official_webhook_schema() -> Option<Arc<jsonschema::Validator>> {
    static VALIDATOR: std::sync::OnceLock<Option<Arc<jsonschema::Validator>>> = std::sync::OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let dir = spec_dir()?.join("spec/2026-04-17/openapi");
            let load = |name: &str| -> Value {
                let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
            };
            let documents = ["openapi.agentic_checkout_webhook.yaml", "openapi.agentic_checkout.yaml"]
                .map(|name| (format!("{OPENAPI_BASE}{name}"), load(name)));
            let registry = jsonschema::Registry::new()
                .draft(jsonschema::Draft::Draft202012)
                .extend(documents)
                .and_then(|builder| builder.prepare())
                .expect("official OpenAPI documents register");
            let root = json!({"$ref": format!("{OPENAPI_BASE}openapi.agentic_checkout_webhook.yaml#/components/schemas/WebhookEvent")});
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .with_registry(&registry)
                .build(&root)
                .expect("WebhookEvent compiles");
            Some(Arc::new(validator))
        })
        .clone()
}

fn official_validator() -> Validator {
    crate::shared::receiver_validator(official_webhook_schema())
}

#[test]
fn the_official_webhook_schema_is_really_enforced() {
    let Some(schema) = official_webhook_schema() else {
        return;
    };
    let order = json!({"type": "order", "id": "ord_1", "checkout_session_id": "cs_1",
                       "permalink_url": "https://shop.example.com/orders/ord_1", "status": "confirmed"});
    assert!(schema.is_valid(&json!({"type": "order_create", "data": order})));
    assert!(
        !schema.is_valid(&json!({"type": "order_create", "data": order, "extra": 1})),
        "no extra fields"
    );
    let mut no_status = order.clone();
    no_status.as_object_mut().unwrap().remove("status");
    assert!(
        !schema.is_valid(&json!({"type": "order_update", "data": no_status})),
        "EventDataOrder needs status"
    );
    let mut bad_line = order.clone();
    bad_line["line_items"] = json!([{"id": "li_1"}]);
    assert!(
        !schema.is_valid(&json!({"type": "order_update", "data": bad_line})),
        "Order's own rules apply"
    );
}

async fn receiver() -> WebhookReceiver {
    WebhookReceiver::start(SECRET, official_validator()).await
}

fn webhook_settings(receiver: &WebhookReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("agent_webhook_url", receiver.base_url()),
        ("agent_webhook_secret", SECRET.to_owned()),
        ("webhook_poll_interval_ms", "25".to_owned()),
        ("webhook_retry_schedule_ms", "100,150,200".to_owned()),
        ("webhook_timeout_ms", "2000".to_owned()),
    ]
}

async fn app_for(receiver: &WebhookReceiver, extra: &[(&'static str, &'static str)]) -> TestApp {
    let owned = webhook_settings(receiver);
    let mut pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.extend_from_slice(extra);
    spawn_app_with(&pairs).await
}

/// Creates and completes a checkout; returns the order id.
pub async fn buy(app: &TestApp) -> String {
    let s = create(app, json!([{"id": TEE}])).await;
    let path = format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap());
    let done = session(
        app.acp_post(&path, &payment("spt_sim_ok")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    done["order"]["id"].as_str().unwrap().to_owned()
}

fn admin(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
    app.admin(reqwest::Method::POST, path)
        .header("Idempotency-Key", key)
        .json(body)
}

fn accepted_for(receiver: &WebhookReceiver, order_id: &str) -> Vec<Delivery> {
    receiver
        .accepted_unique()
        .into_iter()
        .filter(|d| d.body["data"]["id"] == order_id)
        .collect()
}

fn assert_clean(deliveries: &[Delivery]) {
    for d in deliveries {
        assert!(d.signature_valid, "bad signature on {:?}", d.webhook_id);
        assert_eq!(d.schema_error, None, "{}", d.body);
        assert_eq!(d.path, "/agentic_checkout/webhooks/order_events");
        assert!(d.webhook_id.is_some() && d.request_id.is_some() && d.timestamp_header.is_some());
    }
}

#[tokio::test]
async fn complete_ship_and_refund_each_send_one_signed_valid_event() {
    let receiver = receiver().await;
    let app = app_for(&receiver, &[]).await;
    let order_id = buy(&app).await;
    assert!(
        receiver
            .wait_until(Duration::from_secs(5), |d| d.iter().any(|d| d.answered == 200))
            .await
    );
    let created = accepted_for(&receiver, &order_id);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].body["type"], "order_create");
    assert_eq!(created[0].body["data"]["status"], "confirmed");

    let shipped = admin(&app, &format!("/admin/orders/{order_id}/ship"), "ship-1",
        &json!({"carrier": "USPS", "tracking_number": "9400100000000000000000", "tracking_url": "https://tools.usps.com/t/9400"}))
        .send().await.unwrap();
    assert_eq!(shipped.status(), StatusCode::OK);
    // The same operation again (same key): replayed, no second fulfillment, no second event.
    let again = admin(&app, &format!("/admin/orders/{order_id}/ship"), "ship-1",
        &json!({"carrier": "USPS", "tracking_number": "9400100000000000000000", "tracking_url": "https://tools.usps.com/t/9400"}))
        .send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");

    let refunded = admin(
        &app,
        &format!("/admin/orders/{order_id}/refund"),
        "refund-1",
        &json!({"amount": 700, "reason": "damaged"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(refunded.status(), StatusCode::OK);
    let refunded: Value = refunded.json().await.unwrap();
    assert_eq!(refunded["adjustments"][0]["type"], "refund");

    assert!(
        receiver
            .wait_until(Duration::from_secs(5), |_| accepted_for(&receiver, &order_id).len()
                == 3)
            .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = accepted_for(&receiver, &order_id);
    assert_eq!(all.len(), 3, "create, ship update, refund update — nothing more");
    assert_clean(&all);
    let ship = &all[1].body;
    assert_eq!(ship["type"], "order_update");
    assert_eq!(ship["data"]["fulfillments"][0]["carrier"], "USPS");
    assert_eq!(
        ship["data"]["fulfillments"][0]["tracking_number"],
        "9400100000000000000000"
    );
    assert_eq!(ship["data"]["status"], "shipped");
    let refund = &all[2].body;
    assert_eq!(refund["data"]["adjustments"][0]["type"], "refund");
    assert_eq!(refund["data"]["adjustments"][0]["amount"], 700);
    let refunded_total = refund["data"]["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "amount_refunded")
        .unwrap()["amount"]
        .clone();
    assert_eq!(refunded_total, 700);
    assert_eq!(count(&app, "simulator_refund").await, 1, "one PSP refund");
}

#[tokio::test]
async fn a_receiver_failing_for_a_while_gets_every_event_in_order_once() {
    let receiver = receiver().await;
    receiver.set_behaviour(Behaviour::FailTimes { status: 500, times: 4 });
    let app = app_for(&receiver, &[]).await;
    let order_id = buy(&app).await;
    for (key, path, body) in [
        ("s1", "ship", json!({"carrier": "UPS", "tracking_number": "1Z1"})),
        ("d1", "deliver", json!({})),
        ("r1", "refund", json!({"amount": 100})),
    ] {
        let r = admin(&app, &format!("/admin/orders/{order_id}/{path}"), key, &body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    assert!(
        receiver
            .wait_until(Duration::from_secs(8), |_| accepted_for(&receiver, &order_id).len()
                == 4)
            .await
    );
    let accepted = accepted_for(&receiver, &order_id);
    let kinds: Vec<&str> = accepted.iter().map(|d| d.body["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["order_create", "order_update", "order_update", "order_update"]);
    let statuses: Vec<&str> = accepted
        .iter()
        .map(|d| d.body["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["confirmed", "shipped", "completed", "completed"],
        "in order per order"
    );
    assert_clean(&accepted);
    let total_accepted = receiver.deliveries().iter().filter(|d| d.answered == 200).count();
    assert_eq!(total_accepted, 4, "each event accepted once");
    let failures = receiver.deliveries().iter().filter(|d| d.answered == 500).count();
    assert_eq!(failures, 4);
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed() {
    let receiver = receiver().await;
    receiver.set_behaviour(Behaviour::Always {
        status: 400,
        retry_after: None,
    });
    let app = app_for(&receiver, &[]).await;
    let order_id = buy(&app).await;
    let dead = crate::helpers::eventually(Duration::from_secs(5), || async {
        count(&app, "webhook_event where status = 'dead'").await == 1
    })
    .await;
    assert!(dead, "a 400 fails permanently after 3 tries");
    let list: Value = app
        .admin(reqwest::Method::GET, "/admin/webhooks/deliveries?status=dead")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["deliveries"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["deliveries"][0]["order_id"], order_id.as_str());
    let shown: Value = app
        .admin(reqwest::Method::GET, &format!("/admin/webhooks/deliveries/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(shown["attempts"][0]["response_status"], 400);

    receiver.set_behaviour(Behaviour::Accept);
    let r = admin(&app, "/admin/webhooks/deliveries/replay-dead", "replay-1", &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        receiver
            .wait_until(Duration::from_secs(5), |_| accepted_for(&receiver, &order_id).len()
                == 1)
            .await
    );
}

#[tokio::test]
async fn a_rotated_secret_signs_the_next_deliveries() {
    let receiver = receiver().await;
    let app = app_for(&receiver, &[]).await;
    let first = buy(&app).await;
    assert!(
        receiver
            .wait_until(Duration::from_secs(5), |_| accepted_for(&receiver, &first).len() == 1)
            .await
    );
    let rotated = "whsec_rotated_abcdefghijklmnop";
    let r = admin(&app, "/admin/webhooks/secret", "rotate-1", &json!({"secret": rotated}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    receiver.set_secret(rotated);
    let second = buy(&app).await;
    assert!(
        receiver
            .wait_until(Duration::from_secs(5), |_| accepted_for(&receiver, &second).len() == 1)
            .await
    );
    assert!(accepted_for(&receiver, &second)[0].signature_valid);
}

#[tokio::test]
async fn redirects_are_refused_and_not_followed() {
    let receiver = receiver().await;
    let elsewhere = WebhookReceiver::start(SECRET, official_validator()).await;
    receiver.set_behaviour(Behaviour::Redirect {
        location: elsewhere.url(),
    });
    let app = app_for(&receiver, &[]).await;
    buy(&app).await;
    assert!(receiver.wait_until(Duration::from_secs(5), |d| d.len() >= 2).await);
    assert!(elsewhere.deliveries().is_empty(), "the redirect was followed");
    let error: Option<String> = sqlx::query_scalar("select last_error from webhook_event")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        error.unwrap_or_default().contains("redirect"),
        "the attempt records the refusal"
    );
    assert_eq!(count(&app, "webhook_event where status = 'delivered'").await, 0);
}

#[tokio::test]
async fn a_huge_response_body_is_capped() {
    let receiver = receiver().await;
    receiver.set_behaviour(Behaviour::HugeBody {
        bytes: 64 * 1024 * 1024,
    });
    let app = app_for(&receiver, &[("webhook_max_response_bytes", "1024")]).await;
    buy(&app).await;
    let delivered = crate::helpers::eventually(Duration::from_secs(5), || async {
        count(&app, "webhook_event where status = 'delivered'").await == 1
    })
    .await;
    assert!(
        delivered,
        "a 2xx with an endless body still counts, without reading it all"
    );
    let ms: i32 = sqlx::query_scalar("select duration_ms from webhook_attempt")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(ms < 2000, "the worker did not read 64 MiB ({ms} ms)");
}

#[tokio::test]
async fn production_refuses_urls_resolving_to_private_addresses() {
    let strict = ClientPolicy {
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        max_response_bytes: 1024,
        allow_insecure: false,
        allowed_networks: Vec::new(),
    };
    // `localhost` passes no literal-IP check: only resolving it shows it is loopback.
    for url in [
        "https://localhost:9/hooks",
        "https://127.0.0.1:9/hooks",
        "https://[::1]:9/hooks",
        "http://example.com/hooks",
    ] {
        let result = WebhookClient::new(strict.clone())
            .unwrap()
            .post(&Url::parse(url).unwrap(), HeaderMap::new(), b"{}".to_vec())
            .await;
        assert!(matches!(result, Err(DeliveryError::Refused(_))), "{url}: {result:?}");
    }
    // The same address is allowed where the operator allows it (development, tests).
    let receiver = receiver().await;
    let lax = ClientPolicy {
        allow_insecure: true,
        allowed_networks: Vec::new(),
        ..strict
    };
    let answer = WebhookClient::new(lax)
        .unwrap()
        .post(&Url::parse(&receiver.url()).unwrap(), HeaderMap::new(), b"{}".to_vec())
        .await;
    assert!(answer.is_ok());
}

#[tokio::test]
async fn in_production_an_agent_webhook_on_a_private_host_is_dead_lettered() {
    let receiver = receiver().await;
    // Production settings; the agent row's URL bypasses the admin API's own check, as an old row might.
    let app = spawn_app_with(&[
        ("env", "production"),
        ("allow_simulator_in_production", "true"),
        ("secrets_keys", crate::helpers::PROD_SECRETS_KEYS),
        ("analytics_salt", crate::helpers::PROD_ANALYTICS_SALT),
        ("order_page_key", crate::helpers::PROD_ORDER_PAGE_KEY),
        ("webhook_poll_interval_ms", "25"),
        ("webhook_retry_schedule_ms", "100"),
    ])
    .await;
    let key = "prod_agent_key_0123456789abcdef";
    sqlx::query(
        "insert into agent (agent_id, name, api_key_sha256, webhook_url, webhook_secret)
         values ('agent_private', 'Private', sha256($1::bytea), $2, $3)",
    )
    .bind(key.as_bytes())
    .bind(format!(
        "https://localhost:{}/hooks",
        Url::parse(&receiver.base_url()).unwrap().port().unwrap()
    ))
    .bind(
        app.state
            .keyring
            .seal(acp_merchant::secrets::store::AGENT_WEBHOOK_SECRET, SECRET),
    )
    .execute(&app.db)
    .await
    .unwrap();
    let s = session(
        app.acp_as(reqwest::Method::POST, "/checkout_sessions", key, API_VERSION)
            .json(&create_body(json!([{"id": TEE}])))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let path = format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap());
    let r = app
        .acp_as(reqwest::Method::POST, &path, key, API_VERSION)
        .json(&payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::OK).await;
    let dead = crate::helpers::eventually(Duration::from_secs(5), || async {
        count(&app, "webhook_event where status = 'dead'").await == 1
    })
    .await;
    assert!(dead);
    let error: Option<String> = sqlx::query_scalar("select last_error from webhook_event")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        error.unwrap_or_default().contains("private"),
        "refused by the SSRF guard"
    );
    assert!(receiver.deliveries().is_empty(), "nothing reached the private address");
}

fn child_env(db: &TestDb, receiver: &WebhookReceiver, worker: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("ACP_ENV", "development".to_owned()),
        ("ACP_PSP", "simulator".to_owned()),
        ("DATABASE_URL", db.url.clone()),
        ("ACP_AGENT_API_KEY", AGENT_KEY.to_owned()),
        ("ACP_MIGRATE_ON_START", "false".to_owned()),
        ("ACP_WEBHOOK_WORKER_ENABLED", worker.to_string()),
    ];
    for (k, v) in webhook_settings(receiver) {
        env.push((Box::leak(format!("ACP_{}", k.to_ascii_uppercase()).into_boxed_str()), v));
    }
    env
}

async fn start(args: &[&str], env: &[(&'static str, String)]) -> ChildServer {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ChildServer::start(args, &pairs).await
}

pub async fn child_buy(server: &ChildServer) -> String {
    let post =
        |path: String, body: Value| agent_post(&server.url(""), &path, &uuid::Uuid::new_v4().to_string(), &body).send();
    let s: Value = post("/checkout_sessions".into(), create_body(json!([{"id": TEE}])))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let done: Value = post(
        format!("/checkout_sessions/{}/complete", s["id"].as_str().unwrap()),
        payment("spt_sim_ok"),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    done["order"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn nothing_is_lost_or_duplicated_across_a_kill_during_backoff() {
    let receiver = receiver().await;
    receiver.set_behaviour(Behaviour::FailTimes { status: 503, times: 2 });
    let db = TestDb::migrated().await;
    let mut env = child_env(&db, &receiver, true);
    // Long enough backoff that the kill lands while the event waits for its next attempt.
    env.retain(|(k, _)| *k != "ACP_WEBHOOK_RETRY_SCHEDULE_MS");
    env.push(("ACP_WEBHOOK_RETRY_SCHEDULE_MS", "600".to_owned()));
    let mut server = start(&["serve"], &env).await;
    let order_id = child_buy(&server).await;
    assert!(receiver.wait_until(Duration::from_secs(5), |d| !d.is_empty()).await);
    server.signal("KILL");
    server.wait(Duration::from_secs(5)).await;

    let mut restarted = start(&["serve"], &env).await;
    assert!(
        receiver
            .wait_until(Duration::from_secs(8), |_| accepted_for(&receiver, &order_id).len()
                == 1)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted: Vec<Delivery> = receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.answered == 200)
        .collect();
    assert_eq!(accepted.len(), 1, "delivered once");
    assert_clean(&accepted);
    restarted.signal("TERM");
    restarted.wait(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn two_worker_processes_never_deliver_an_event_twice() {
    let receiver = receiver().await;
    let db = TestDb::migrated().await;
    // The API process writes events only; two `acp-merchant worker` processes deliver them.
    let api = start(&["serve"], &child_env(&db, &receiver, false)).await;
    let worker_env = child_env(&db, &receiver, true);
    let spawn_worker = || {
        let mut cmd = crate::helpers::binary(&["worker"], &[]);
        for (k, v) in &worker_env {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.spawn().expect("spawn worker")
    };
    let (mut w1, mut w2) = (spawn_worker(), spawn_worker());
    let mut orders = Vec::new();
    for _ in 0..8 {
        orders.push(child_buy(&api).await);
    }
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |_| receiver.accepted_unique().len() == 8)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = receiver.deliveries().into_iter().filter(|d| d.answered == 200).count();
    assert_eq!(accepted, 8, "each event delivered exactly once by the two workers");
    for order in &orders {
        assert_eq!(accepted_for(&receiver, order).len(), 1);
    }
    let _ = (w1.start_kill(), w2.start_kill());
    let _ = (w1.wait().await, w2.wait().await);
    let _ = BIN;
}

#[tokio::test]
async fn the_verify_command_agrees_with_the_signer() {
    let body = br#"{"type":"order_create","data":{"id":"ord_1"}}"#;
    let dir = std::env::temp_dir().join(format!("acp-verify-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body.json");
    std::fs::write(&file, body).unwrap();
    let header = acp_merchant::webhooks::signer::sign("whsec_rotated_0123456789", 1_763_900_000, body);
    assert_eq!(
        header,
        test_support::webhook_receiver::sign("whsec_rotated_0123456789", 1_763_900_000, body)
    );
    let run = |secret: &str| {
        std::process::Command::new(BIN)
            .args([
                "webhook",
                "verify",
                "--secret",
                secret,
                "--signature",
                &header,
                "--body",
            ])
            .arg(&file)
            .args(["--now", "1763900000"])
            .output()
            .unwrap()
    };
    let ok = run("whsec_rotated_0123456789");
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "valid");
    let bad = run("whsec_wrong");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match"));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn cancel_refunds_an_unshipped_order_and_full_refunds_are_bounded() {
    let receiver = receiver().await;
    let app = app_for(&receiver, &[]).await;

    let unshipped = buy(&app).await;
    let r = admin(
        &app,
        &format!("/admin/orders/{unshipped}/cancel"),
        "cancel-1",
        &json!({}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let canceled: Value = r.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert!(
        canceled["line_items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "removed")
    );
    let total = crate::shared::total(&canceled, "total");
    assert_eq!(
        canceled["adjustments"][0]["amount"], total,
        "everything paid is refunded"
    );
    let again = admin(
        &app,
        &format!("/admin/orders/{unshipped}/cancel"),
        "cancel-2",
        &json!({}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        count(&app, "simulator_refund").await,
        1,
        "a second cancel refunds nothing more"
    );

    let shipped = buy(&app).await;
    admin(
        &app,
        &format!("/admin/orders/{shipped}/ship"),
        "ship-x",
        &json!({"carrier": "UPS", "tracking_number": "1Z9"}),
    )
    .send()
    .await
    .unwrap();
    let r = admin(&app, &format!("/admin/orders/{shipped}/cancel"), "cancel-3", &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a shipped order is refunded, not canceled"
    );
    let r = admin(&app, &format!("/admin/orders/{shipped}/refund"), "full-1", &json!({}))
        .send()
        .await
        .unwrap();
    let full: Value = r.json().await.unwrap();
    let refunded = full["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "amount_refunded")
        .unwrap()["amount"]
        .clone();
    let total = full["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "total")
        .unwrap()["amount"]
        .clone();
    assert_eq!(refunded, total);
    let r = admin(
        &app,
        &format!("/admin/orders/{shipped}/refund"),
        "full-2",
        &json!({"amount": 1}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "nothing is left to refund");
    let r = app
        .admin(reqwest::Method::POST, &format!("/admin/orders/{shipped}/refund"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "admin operations need an Idempotency-Key"
    );

    for order in [&unshipped, &shipped] {
        let last = order.to_string();
        assert!(
            receiver
                .wait_until(Duration::from_secs(5), |_| {
                    accepted_for(&receiver, &last)
                        .last()
                        .is_some_and(|d| d.body["data"]["adjustments"].as_array().is_some_and(|a| !a.is_empty()))
                })
                .await,
            "the agent hears about {order}'s refund"
        );
    }
    let list: Value = app
        .admin(reqwest::Method::GET, "/admin/orders?status=canceled")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
}
