//! The fake Stripe's own tests: every behaviour the module docs promise, over real HTTP.

use super::*;

const KEY: &str = "sk_test_fake_0123456789abcdef";

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn call(stripe: &FakeStripe, method: Method, path: &str, key: Option<&str>, form: &[(&str, &str)]) -> Answer {
    let url = format!("{}{path}", stripe.base_url());
    let mut request = client()
        .request(method.clone(), url)
        .bearer_auth(KEY)
        .header("Stripe-Version", "2026-04-22.preview");
    if method == Method::POST {
        request = request.form(form);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.json().await.unwrap(),
    }
}

async fn post(stripe: &FakeStripe, path: &str, key: Option<&str>, form: &[(&str, &str)]) -> Answer {
    call(stripe, Method::POST, path, key, form).await
}

async fn get(stripe: &FakeStripe, path: &str) -> Answer {
    call(stripe, Method::GET, path, None, &[]).await
}

fn token(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Form for a confirmed charge with the current token parameter.
fn charge(amount: &str, token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("amount", amount.to_owned()),
        ("currency", "usd".to_owned()),
        ("confirm", "true".to_owned()),
        ("payment_method_data[shared_payment_granted_token]", token.to_owned()),
    ]
}

fn form<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn pay(stripe: &FakeStripe, key: &str, pairs: &[(&'static str, String)]) -> Answer {
    post(stripe, "/v1/payment_intents", Some(key), &form(pairs)).await
}

#[tokio::test]
async fn refuses_missing_and_wrong_keys_without_echoing_them() {
    let stripe = FakeStripe::start(KEY).await;
    let url = format!("{}/v1/payment_intents", stripe.base_url());

    let missing = client().post(&url).form(&[("amount", "100")]).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let wrong = "sk_test_this_is_not_the_right_key_9876";
    let refused = client()
        .post(&url)
        .bearer_auth(wrong)
        .form(&[("amount", "100")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Invalid API Key provided: sk_test_"), "{message}");
    assert!(message.ends_with("9876"), "{message}");
    assert!(!message.contains(wrong), "{message}");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let log = stripe.requests();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| !r.authorization_ok && r.status == 401));
    assert!(stripe.payment_intents().is_empty());
}

#[tokio::test]
async fn creates_and_confirms_with_metadata_and_retrieves() {
    let stripe = FakeStripe::start(KEY).await;
    let mut pairs = charge("2500", &token("spt_ok"));
    pairs.push(("metadata[checkout_session_id]", "cs_123".into()));
    pairs.push(("metadata[order_reference]", "ord 7/8".into()));
    let created = pay(&stripe, &key(), &pairs).await;
    assert_eq!(created.status, 200, "{}", created.body);
    let pi = &created.body;
    assert_eq!(pi["object"], "payment_intent");
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount"], 2500);
    assert_eq!(pi["amount_received"], 2500);
    assert_eq!(pi["amount_capturable"], 0);
    assert_eq!(pi["currency"], "usd");
    assert_eq!(pi["confirmation_method"], "automatic");
    assert_eq!(pi["livemode"], false);
    assert_eq!(pi["last_payment_error"], Value::Null);
    assert_eq!(pi["next_action"], Value::Null);
    assert_eq!(
        pi["metadata"],
        json!({"checkout_session_id": "cs_123", "order_reference": "ord 7/8"})
    );
    assert!(pi["id"].as_str().unwrap().starts_with("pi_"));
    assert!(pi["latest_charge"].as_str().unwrap().starts_with("ch_"));
    assert!(pi["payment_method"].as_str().unwrap().starts_with("pm_"));
    assert!(pi["created"].as_i64().unwrap() > 1_600_000_000);
    assert!(created.headers.contains_key("request-id"));
    assert!(!created.headers.contains_key("idempotent-replayed"));

    assert_eq!(stripe.payment_intents(), vec![pi.clone()]);
    let fetched = get(&stripe, &format!("/v1/payment_intents/{}", pi["id"].as_str().unwrap())).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(&fetched.body, pi);

    let missing = get(&stripe, "/v1/payment_intents/pi_nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["code"], "resource_missing");

    // The older top-level parameter works too.
    let legacy = post(
        &stripe,
        "/v1/payment_intents",
        Some(&key()),
        &[
            ("amount", "100"),
            ("currency", "eur"),
            ("confirm", "true"),
            ("shared_payment_granted_token", &token("spt_ok")),
        ],
    )
    .await;
    assert_eq!(legacy.body["status"], "succeeded", "{}", legacy.body);
}

#[tokio::test]
async fn validates_amount_and_currency_without_saving_the_failure() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let spt = token("spt_ok");
    let no_amount = post(&stripe, "/v1/payment_intents", Some(&k), &[("currency", "usd")]).await;
    assert_eq!(no_amount.status, 400);
    assert_eq!(no_amount.body["error"]["code"], "parameter_missing");
    assert_eq!(no_amount.body["error"]["param"], "amount");

    let bad = post(
        &stripe,
        "/v1/payment_intents",
        Some(&k),
        &[("amount", "12.5"), ("currency", "usd")],
    )
    .await;
    assert_eq!(bad.body["error"]["code"], "parameter_invalid_integer");
    assert_eq!(bad.body["error"]["param"], "amount");
    let negative = post(
        &stripe,
        "/v1/payment_intents",
        None,
        &[("amount", "-1"), ("currency", "usd")],
    )
    .await;
    assert_eq!(negative.body["error"]["code"], "parameter_invalid_integer");

    let no_currency = post(&stripe, "/v1/payment_intents", None, &[("amount", "100")]).await;
    assert_eq!(no_currency.body["error"]["code"], "parameter_missing");
    assert_eq!(no_currency.body["error"]["param"], "currency");
    let upper = post(
        &stripe,
        "/v1/payment_intents",
        None,
        &[("amount", "100"), ("currency", "USD")],
    )
    .await;
    assert_eq!(upper.status, 400);
    assert_eq!(upper.body["error"]["param"], "currency");

    let unknown = post(
        &stripe,
        "/v1/payment_intents",
        None,
        &[("amount", "100"), ("currency", "usd"), ("amout", "1")],
    )
    .await;
    assert_eq!(unknown.body["error"]["code"], "parameter_unknown");

    // Validation failures are not saved: the same key works once the parameters are right.
    let ok = pay(&stripe, &k, &charge("100", &spt)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn manual_capture_authorizes_then_captures() {
    let stripe = FakeStripe::start(KEY).await;
    let mut pairs = charge("5000", &token("spt_ok"));
    pairs.push(("capture_method", "manual".into()));
    let authorized = pay(&stripe, &key(), &pairs).await;
    assert_eq!(authorized.body["status"], "requires_capture", "{}", authorized.body);
    assert_eq!(authorized.body["capture_method"], "manual");
    assert_eq!(authorized.body["amount_capturable"], 5000);
    assert_eq!(authorized.body["amount_received"], 0);
    let id = authorized.body["id"].as_str().unwrap();

    let too_much = post(
        &stripe,
        &format!("/v1/payment_intents/{id}/capture"),
        Some(&key()),
        &[("amount_to_capture", "6000")],
    )
    .await;
    assert_eq!(too_much.status, 400);
    assert_eq!(too_much.body["error"]["code"], "amount_too_large");

    let captured = post(
        &stripe,
        &format!("/v1/payment_intents/{id}/capture"),
        Some(&key()),
        &[("amount_to_capture", "4000")],
    )
    .await;
    assert_eq!(captured.status, 200, "{}", captured.body);
    assert_eq!(captured.body["status"], "succeeded");
    assert_eq!(captured.body["amount_received"], 4000);
    assert_eq!(captured.body["amount_capturable"], 0);

    let again = post(&stripe, &format!("/v1/payment_intents/{id}/capture"), Some(&key()), &[]).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.body["error"]["code"], "payment_intent_unexpected_state");
    assert_eq!(again.body["error"]["payment_intent"]["status"], "succeeded");
    assert_eq!(stripe.payment_intents()[0]["status"], "succeeded");

    let unknown = post(&stripe, "/v1/payment_intents/pi_missing/capture", Some(&key()), &[]).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn cancels_uncaptured_but_not_succeeded_intents() {
    let stripe = FakeStripe::start(KEY).await;
    let mut pairs = charge("700", &token("spt_ok"));
    pairs.push(("capture_method", "manual".into()));
    let authorized = pay(&stripe, &key(), &pairs).await;
    let id = authorized.body["id"].as_str().unwrap();
    let canceled = post(
        &stripe,
        &format!("/v1/payment_intents/{id}/cancel"),
        Some(&key()),
        &[("cancellation_reason", "abandoned")],
    )
    .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(canceled.body["status"], "canceled");
    assert_eq!(canceled.body["cancellation_reason"], "abandoned");
    assert_eq!(canceled.body["amount_capturable"], 0);

    let succeeded = pay(&stripe, &key(), &charge("700", &token("spt_ok"))).await;
    let id = succeeded.body["id"].as_str().unwrap();
    let refused = post(&stripe, &format!("/v1/payment_intents/{id}/cancel"), Some(&key()), &[]).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["code"], "payment_intent_unexpected_state");
}

#[tokio::test]
async fn declines_are_402_with_the_failed_intent_stored_and_do_not_consume_the_token() {
    let stripe = FakeStripe::start(KEY).await;
    for (prefix, code, decline_code) in [
        ("spt_decline", "card_declined", "generic_decline"),
        ("spt_insufficient", "card_declined", "insufficient_funds"),
        ("spt_expired_card", "expired_card", "expired_card"),
    ] {
        let spt = token(prefix);
        let declined = pay(&stripe, &key(), &charge("1200", &spt)).await;
        assert_eq!(declined.status, 402, "{}", declined.body);
        let error = &declined.body["error"];
        assert_eq!(error["type"], "card_error");
        assert_eq!(error["code"], code);
        assert_eq!(error["decline_code"], decline_code);
        assert!(error["message"].as_str().unwrap().starts_with("Your card"));
        let pi = &error["payment_intent"];
        assert_eq!(pi["status"], "requires_payment_method");
        assert_eq!(pi["last_payment_error"]["code"], code);
        assert_eq!(pi["last_payment_error"]["decline_code"], decline_code);
        assert_eq!(pi["amount_received"], 0);
        let stored = stripe.payment_intents();
        assert_eq!(stored.last().unwrap(), pi);

        // Declines do not consume the token: another attempt is declined again, not "token used".
        let again = pay(&stripe, &key(), &charge("1200", &spt)).await;
        assert_eq!(again.status, 402);
        assert_eq!(again.body["error"]["code"], code);
    }
    assert_eq!(stripe.payment_intents().len(), 6);
}

#[tokio::test]
async fn idempotent_replay_and_idempotency_error() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let pairs = charge("999", &token("spt_ok"));
    let first = pay(&stripe, &k, &pairs).await;
    assert_eq!(first.status, 200);
    let replay = pay(&stripe, &k, &pairs).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.headers["original-request"], first.headers["request-id"]);
    assert_eq!(stripe.payment_intents().len(), 1);

    let mut changed = pairs.clone();
    changed[0].1 = "1000".into();
    let conflict = pay(&stripe, &k, &changed).await;
    assert_eq!(conflict.status, 400);
    assert_eq!(conflict.body["error"]["type"], "idempotency_error");
    assert!(
        conflict.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Keys for idempotent requests can only be used with the same parameters")
    );
    let other_endpoint = post(&stripe, "/v1/refunds", Some(&k), &form(&pairs)).await;
    assert_eq!(other_endpoint.body["error"]["type"], "idempotency_error");
    assert_eq!(stripe.payment_intents().len(), 1);

    // 402s are saved and replayed too.
    let k2 = key();
    let decline_pairs = charge("999", &token("spt_decline"));
    let declined = pay(&stripe, &k2, &decline_pairs).await;
    let replayed = pay(&stripe, &k2, &decline_pairs).await;
    assert_eq!(replayed.status, 402);
    assert_eq!(replayed.body, declined.body);
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    assert_eq!(stripe.payment_intents().len(), 2);
}

#[tokio::test]
async fn flaky_fails_first_with_500_then_succeeds_once_under_the_same_key() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let pairs = charge("300", &token("spt_flaky"));
    let first = pay(&stripe, &k, &pairs).await;
    assert_eq!(first.status, 500);
    assert_eq!(first.body["error"]["type"], "api_error");
    assert!(stripe.payment_intents().is_empty());
    let retry = pay(&stripe, &k, &pairs).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert!(!retry.headers.contains_key("idempotent-replayed"));
    let replay = pay(&stripe, &k, &pairs).await;
    assert_eq!(replay.body, retry.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(stripe.payment_intents().len(), 1);
}

#[tokio::test]
async fn rate_limited_answers_429_first_then_succeeds() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let pairs = charge("300", &token("spt_ratelimited"));
    let first = pay(&stripe, &k, &pairs).await;
    assert_eq!(first.status, 429);
    assert_eq!(first.headers["retry-after"], "0");
    assert_eq!(first.body["error"]["code"], "rate_limit");
    assert!(stripe.payment_intents().is_empty());
    let retry = pay(&stripe, &k, &pairs).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(stripe.payment_intents().len(), 1);
}

#[tokio::test]
async fn tokens_are_single_use() {
    let stripe = FakeStripe::start(KEY).await;
    let spt = token("spt_ok");
    let first = pay(&stripe, &key(), &charge("100", &spt)).await;
    assert_eq!(first.status, 200);
    let reused = pay(&stripe, &key(), &charge("100", &spt)).await;
    assert_eq!(reused.status, 400);
    assert_eq!(reused.body["error"]["type"], "invalid_request_error");
    assert_eq!(reused.body["error"]["code"], "shared_payment_granted_token_used");
    assert!(
        reused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already been used")
    );
    assert_eq!(stripe.payment_intents().len(), 1);
}

#[tokio::test]
async fn token_limits_expiry_and_unknown_tokens() {
    let stripe = FakeStripe::start(KEY).await;
    let limited = token("spt_max1000");
    let over = pay(&stripe, &key(), &charge("1001", &limited)).await;
    assert_eq!(over.status, 400);
    assert_eq!(over.body["error"]["code"], "amount_too_large");
    assert_eq!(over.body["error"]["param"], "amount");
    assert!(over.body["error"]["message"].as_str().unwrap().contains("1000"));
    let within = pay(&stripe, &key(), &charge("1000", &limited)).await;
    assert_eq!(within.status, 200, "{}", within.body);

    let expired = pay(&stripe, &key(), &charge("100", &token("spt_expired"))).await;
    assert_eq!(expired.status, 400);
    assert_eq!(expired.body["error"]["code"], "shared_payment_granted_token_expired");

    let unknown = pay(&stripe, &key(), &charge("100", "tok_visa")).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.body["error"]["code"], "resource_missing");
    assert_eq!(
        unknown.body["error"]["param"],
        "payment_method_data[shared_payment_granted_token]"
    );
    assert_eq!(stripe.payment_intents().len(), 1);
}

#[tokio::test]
async fn three_d_secure_requires_action_unless_results_are_imported() {
    let stripe = FakeStripe::start(KEY).await;
    let spt = token("spt_3ds");
    let challenged = pay(&stripe, &key(), &charge("4200", &spt)).await;
    assert_eq!(challenged.status, 200);
    assert_eq!(challenged.body["status"], "requires_action");
    assert_eq!(challenged.body["next_action"]["type"], "use_stripe_sdk");

    let with_3ds = |cryptogram: &str| {
        let mut pairs = charge("4200", &spt);
        pairs.push((
            "payment_method_options[card][three_d_secure][cryptogram]",
            cryptogram.to_owned(),
        ));
        pairs.push((
            "payment_method_options[card][three_d_secure][electronic_commerce_indicator]",
            "05".into(),
        ));
        pairs.push((
            "payment_method_options[card][three_d_secure][transaction_id]",
            "f2a3b4c5-0000-4000-8000-000000000001".into(),
        ));
        pairs.push(("payment_method_options[card][three_d_secure][version]", "2.2.0".into()));
        pairs
    };
    let denied = pay(&stripe, &key(), &with_3ds("DENIED")).await;
    assert_eq!(denied.status, 402);
    assert_eq!(denied.body["error"]["code"], "card_declined");
    assert_eq!(denied.body["error"]["decline_code"], "authentication_required");

    let authenticated = pay(&stripe, &key(), &with_3ds("AAABBEg0VhI0VniQEjRWAAAAAAA=")).await;
    assert_eq!(authenticated.status, 200, "{}", authenticated.body);
    assert_eq!(authenticated.body["status"], "succeeded");
    assert_eq!(authenticated.body["next_action"], Value::Null);

    // Incomplete imported results are a parameter error.
    let mut partial = charge("4200", &token("spt_3ds"));
    partial.push((
        "payment_method_options[card][three_d_secure][cryptogram]",
        "AAAB".into(),
    ));
    let incomplete = pay(&stripe, &key(), &partial).await;
    assert_eq!(incomplete.body["error"]["code"], "parameter_missing");

    // The requires_action intent can also be confirmed again with the imported results.
    let spt2 = token("spt_3ds");
    let pending = pay(&stripe, &key(), &charge("800", &spt2)).await;
    let id = pending.body["id"].as_str().unwrap();
    let confirmed = post(
        &stripe,
        &format!("/v1/payment_intents/{id}/confirm"),
        Some(&key()),
        &[
            (
                "payment_method_options[card][three_d_secure][cryptogram]",
                "AAABBEg0VhI0VniQEjRWAAAAAAA=",
            ),
            ("payment_method_options[card][three_d_secure][transaction_id]", "tx-1"),
            ("payment_method_options[card][three_d_secure][version]", "2.2.0"),
        ],
    )
    .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.body["status"], "succeeded");
}

#[tokio::test]
async fn hold_saves_first_then_waits_for_release() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let pairs = charge("1500", &token("spt_hold"));
    let held = tokio::spawn({
        let stripe = stripe.clone();
        let k = k.clone();
        let pairs = pairs.clone();
        async move { pay(&stripe, &k, &pairs).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stripe.payment_intents().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held request never created its PaymentIntent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!held.is_finished(), "the response must be held until release_held()");

    // A retry under the same key replays at once, while the original is still held.
    let replay = tokio::time::timeout(Duration::from_secs(2), pay(&stripe, &k, &pairs))
        .await
        .expect("the replay must not be held");
    assert_eq!(replay.status, 200);
    assert_eq!(replay.headers["idempotent-replayed"], "true");

    stripe.release_held();
    let original = tokio::time::timeout(Duration::from_secs(2), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(original.status, 200);
    assert_eq!(original.body["status"], "succeeded");
    assert_eq!(original.body, replay.body);
    assert_eq!(stripe.payment_intents().len(), 1);
}

#[tokio::test]
async fn slow_delays_and_reports_a_concurrent_retry_as_in_progress() {
    let stripe = FakeStripe::start(KEY).await;
    stripe.set_slow_delay(Duration::from_millis(300));
    let k = key();
    let pairs = charge("100", &token("spt_slow"));
    let started = tokio::time::Instant::now();
    let slow = tokio::spawn({
        let stripe = stripe.clone();
        let (k, pairs) = (k.clone(), pairs.clone());
        async move { pay(&stripe, &k, &pairs).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let concurrent = pay(&stripe, &k, &pairs).await;
    assert_eq!(concurrent.status, 409);
    assert_eq!(concurrent.body["error"]["code"], "idempotency_key_in_use");
    let answer = slow.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(answer.status, 200);
    let replay = pay(&stripe, &k, &pairs).await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(stripe.payment_intents().len(), 1);
}

#[tokio::test]
async fn refunds_partial_full_and_over_refund() {
    let stripe = FakeStripe::start(KEY).await;
    let paid = pay(&stripe, &key(), &charge("1000", &token("spt_ok"))).await;
    let id = paid.body["id"].as_str().unwrap();

    let partial = post(
        &stripe,
        "/v1/refunds",
        Some(&key()),
        &[("payment_intent", id), ("amount", "300")],
    )
    .await;
    assert_eq!(partial.status, 200, "{}", partial.body);
    assert_eq!(partial.body["object"], "refund");
    assert_eq!(partial.body["amount"], 300);
    assert_eq!(partial.body["currency"], "usd");
    assert_eq!(partial.body["payment_intent"], id);
    assert_eq!(partial.body["status"], "succeeded");
    assert_eq!(partial.body["metadata"], json!({}));
    assert!(partial.body["id"].as_str().unwrap().starts_with("re_"));

    let too_much = post(
        &stripe,
        "/v1/refunds",
        Some(&key()),
        &[("payment_intent", id), ("amount", "701")],
    )
    .await;
    assert_eq!(too_much.status, 400);
    assert_eq!(too_much.body["error"]["code"], "amount_too_large");

    let rest = post(&stripe, "/v1/refunds", Some(&key()), &[("payment_intent", id)]).await;
    assert_eq!(rest.status, 200);
    assert_eq!(rest.body["amount"], 700);
    let fetched = get(&stripe, &format!("/v1/refunds/{}", rest.body["id"].as_str().unwrap())).await;
    assert_eq!(fetched.body, rest.body);

    let done = post(
        &stripe,
        "/v1/refunds",
        Some(&key()),
        &[("payment_intent", id), ("amount", "1")],
    )
    .await;
    assert_eq!(done.status, 400);
    assert_eq!(done.body["error"]["code"], "charge_already_refunded");

    let unknown = post(
        &stripe,
        "/v1/refunds",
        Some(&key()),
        &[("payment_intent", "pi_missing")],
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["error"]["code"], "resource_missing");

    // Idempotent like the rest.
    let k = key();
    let paid = pay(&stripe, &key(), &charge("500", &token("spt_ok"))).await;
    let id = paid.body["id"].as_str().unwrap();
    let once = post(
        &stripe,
        "/v1/refunds",
        Some(&k),
        &[("payment_intent", id), ("amount", "200")],
    )
    .await;
    let twice = post(
        &stripe,
        "/v1/refunds",
        Some(&k),
        &[("payment_intent", id), ("amount", "200")],
    )
    .await;
    assert_eq!(once.body, twice.body);
    assert_eq!(twice.headers["idempotent-replayed"], "true");
    let rest = post(&stripe, "/v1/refunds", Some(&key()), &[("payment_intent", id)]).await;
    assert_eq!(rest.body["amount"], 300);
}

#[tokio::test]
async fn unknown_routes_are_404_envelopes() {
    let stripe = FakeStripe::start(KEY).await;
    let answer = get(&stripe, "/v1/customers").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["error"]["type"], "invalid_request_error");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unrecognized request URL")
    );
}

#[tokio::test]
async fn logs_params_keys_versions_and_outcomes() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let spt = token("spt_ok");
    let mut pairs = charge("100", &spt);
    pairs.push(("metadata[checkout_session_id]", "cs 1&2=3".into()));
    pairs.push((
        "payment_method_options[card][three_d_secure][cryptogram]",
        "AB+/=".into(),
    ));
    pairs.push((
        "payment_method_options[card][three_d_secure][transaction_id]",
        "t".into(),
    ));
    pairs.push(("payment_method_options[card][three_d_secure][version]", "2.1.0".into()));
    let answer = pay(&stripe, &k, &pairs).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let _ = get(&stripe, "/v1/payment_intents/pi_unknown").await;

    let log = stripe.requests();
    assert_eq!(log.len(), 2);
    let first = &log[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/payment_intents");
    assert_eq!(first.idempotency_key.as_deref(), Some(k.as_str()));
    assert_eq!(first.stripe_version.as_deref(), Some("2026-04-22.preview"));
    assert!(first.authorization_ok);
    assert_eq!(first.params["payment_method_data[shared_payment_granted_token]"], spt);
    assert_eq!(first.params["metadata[checkout_session_id]"], "cs 1&2=3");
    assert_eq!(
        first.params["payment_method_options[card][three_d_secure][cryptogram]"],
        "AB+/="
    );
    assert_eq!(first.params["confirm"], "true");
    assert_eq!(first.status, 200);
    assert_eq!(first.response, answer.body);
    assert_eq!(log[1].method, "GET");
    assert_eq!(log[1].status, 404);
    assert_eq!(log[1].idempotency_key, None);
}

mod webhooks;

/// GET with query parameters, URL-encoded.
async fn get_with(stripe: &FakeStripe, path: &str, query: &[(&str, &str)]) -> Answer {
    let encoded = serde_urlencoded::to_string(query).unwrap();
    get(stripe, &format!("{path}?{encoded}")).await
}

async fn search(stripe: &FakeStripe, query: &str) -> Answer {
    get_with(stripe, "/v1/payment_intents/search", &[("query", query)]).await
}

fn ids(result: &Value) -> Vec<String> {
    result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pi| pi["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A confirmed charge carrying `metadata[acp_attempt_id]`.
fn attempt(amount: &str, token: &str, attempt_id: &str) -> Vec<(&'static str, String)> {
    let mut pairs = charge(amount, token);
    pairs.push(("metadata[acp_attempt_id]", attempt_id.to_owned()));
    pairs
}

#[tokio::test]
async fn search_finds_payment_intents_by_metadata_and_status_newest_first() {
    let stripe = FakeStripe::start(KEY).await;
    let first = pay(&stripe, &key(), &attempt("100", &token("spt_ok"), "pa_1")).await;
    let declined = pay(&stripe, &key(), &attempt("100", &token("spt_decline"), "pa_1")).await;
    let second = pay(&stripe, &key(), &attempt("200", &token("spt_ok"), "pa_1")).await;
    let other = pay(&stripe, &key(), &attempt("300", &token("spt_ok"), "pa_2")).await;
    let id = |a: &Answer| a.body["id"].as_str().unwrap().to_owned();
    let declined_id = declined.body["error"]["payment_intent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let found = search(&stripe, "metadata['acp_attempt_id']:'pa_1'").await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.body["object"], "search_result");
    assert_eq!(found.body["url"], "/v1/payment_intents/search");
    assert_eq!(found.body["has_more"], false);
    assert_eq!(found.body["next_page"], Value::Null);
    assert_eq!(ids(&found.body), vec![id(&second), declined_id, id(&first)]);
    assert_eq!(found.body["data"][0], stripe.payment_intents()[2]);

    let succeeded = search(&stripe, r#"metadata["acp_attempt_id"]:"pa_1" AND status:"succeeded""#).await;
    assert_eq!(ids(&succeeded.body), vec![id(&second), id(&first)]);
    // Space-separated clauses are ANDed too; token fields match case-insensitively.
    let spaced = search(&stripe, "status:'SUCCEEDED' metadata['acp_attempt_id']:'PA_2'").await;
    assert_eq!(ids(&spaced.body), vec![id(&other)]);

    let none = search(&stripe, "metadata['acp_attempt_id']:'pa_404'").await;
    assert_eq!(none.status, 200);
    assert_eq!(none.body["data"], json!([]));
    assert_eq!(none.body["has_more"], false);
    let no_key = search(&stripe, "metadata['no_such_key']:'pa_1'").await;
    assert_eq!(no_key.body["data"], json!([]));
}

#[tokio::test]
async fn search_pages_with_limit_and_next_page() {
    let stripe = FakeStripe::start(KEY).await;
    for amount in ["100", "200", "300"] {
        pay(&stripe, &key(), &attempt(amount, &token("spt_ok"), "pa_page")).await;
    }
    let query = "metadata['acp_attempt_id']:'pa_page'";
    let page1 = get_with(
        &stripe,
        "/v1/payment_intents/search",
        &[("query", query), ("limit", "2")],
    )
    .await;
    assert_eq!(page1.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(page1.body["data"][0]["amount"], 300);
    assert_eq!(page1.body["has_more"], true);
    let cursor = page1.body["next_page"].as_str().unwrap().to_owned();
    let page2 = get_with(
        &stripe,
        "/v1/payment_intents/search",
        &[("query", query), ("limit", "2"), ("page", &cursor)],
    )
    .await;
    assert_eq!(page2.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(page2.body["data"][0]["amount"], 100);
    assert_eq!(page2.body["has_more"], false);
    assert_eq!(page2.body["next_page"], Value::Null);

    for (name, value) in [("limit", "0"), ("limit", "101"), ("limit", "ten"), ("page", "bogus")] {
        let bad = get_with(
            &stripe,
            "/v1/payment_intents/search",
            &[("query", query), (name, value)],
        )
        .await;
        assert_eq!(bad.status, 400, "{name}={value}: {}", bad.body);
        assert_eq!(bad.body["error"]["param"], name);
    }
    let unknown = get_with(
        &stripe,
        "/v1/payment_intents/search",
        &[("query", query), ("sort", "x")],
    )
    .await;
    assert_eq!(unknown.body["error"]["code"], "parameter_unknown");
}

#[tokio::test]
async fn search_refuses_queries_it_cannot_parse() {
    let stripe = FakeStripe::start(KEY).await;
    for (query, problem) in [
        ("metadata['a']:'1' OR status:'succeeded'", "OR"),
        ("metadata['a']:1", "quoted value"),
        ("amount>1000", "'amount'"),
        ("-status:'canceled'", "negation"),
        ("metadata['a':'1'", "expected ]"),
        ("", "empty"),
    ] {
        let bad = search(&stripe, query).await;
        assert_eq!(bad.status, 400, "{query}: {}", bad.body);
        let error = &bad.body["error"];
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], "query");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(problem), "{query}: {message}");
    }
    let missing = get(&stripe, "/v1/payment_intents/search").await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"]["code"], "parameter_missing");
    assert_eq!(missing.body["error"]["param"], "query");
}

#[tokio::test]
async fn search_sees_new_payment_intents_only_after_the_search_delay() {
    let stripe = FakeStripe::start(KEY).await;
    stripe.set_search_delay(Duration::from_millis(300));
    let paid = pay(&stripe, &key(), &attempt("100", &token("spt_ok"), "pa_late")).await;
    let id = paid.body["id"].as_str().unwrap();
    let query = "metadata['acp_attempt_id']:'pa_late'";

    let early = search(&stripe, query).await;
    assert_eq!(early.status, 200);
    assert_eq!(early.body["data"], json!([]), "not yet searchable");
    let fetched = get(&stripe, &format!("/v1/payment_intents/{id}")).await;
    assert_eq!(fetched.status, 200, "retrieval by id is immediate");

    tokio::time::sleep(Duration::from_millis(350)).await;
    let later = search(&stripe, query).await;
    assert_eq!(ids(&later.body), vec![id.to_owned()]);
}

#[tokio::test]
async fn timeout_charges_then_answers_late_and_a_retry_replays_at_once() {
    let stripe = FakeStripe::start(KEY).await;
    stripe.set_slow_delay(Duration::from_millis(800));
    let k = key();
    let pairs = charge("1500", &token("spt_timeout"));
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/payment_intents", stripe.base_url()))
        .bearer_auth(KEY)
        .header("Idempotency-Key", &k)
        .form(&form(&pairs))
        .send()
        .await
        .unwrap_err();
    assert!(gave_up.is_timeout(), "{gave_up}");

    // The charge was made (on a loaded machine, perhaps only just after the client gave up).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while stripe.payment_intents().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stored = stripe.payment_intents();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["status"], "succeeded");

    let started = tokio::time::Instant::now();
    let retry = pay(&stripe, &k, &pairs).await;
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "the replay must not wait for the delay"
    );
    assert_eq!(retry.status, 200);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.body, stored[0]);
    assert_eq!(stripe.payment_intents().len(), 1);
}

#[tokio::test]
async fn lost500_loses_the_first_answers_but_not_the_charge() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let pairs = charge("2000", &token("spt_lost500"));
    // Default: three lost answers, the executing request's included.
    for attempt in 1..=3 {
        let lost = pay(&stripe, &k, &pairs).await;
        assert_eq!(lost.status, 500, "attempt {attempt}: {}", lost.body);
        assert_eq!(lost.body["error"]["type"], "api_error");
        assert_eq!(lost.headers["stripe-should-retry"], "true");
        let stored = stripe.payment_intents();
        assert_eq!(stored.len(), 1, "the PaymentIntent exists from the first request on");
        assert_eq!(stored[0]["status"], "succeeded");
    }
    let found = pay(&stripe, &k, &pairs).await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.headers["idempotent-replayed"], "true");
    assert_eq!(found.body, stripe.payment_intents()[0]);
    let log: Vec<u16> = stripe.requests().iter().map(|r| r.status).collect();
    assert_eq!(log, vec![500, 500, 500, 200]);

    stripe.set_lost_500_count(1);
    let k2 = key();
    let pairs2 = charge("2000", &token("spt_lost500"));
    assert_eq!(pay(&stripe, &k2, &pairs2).await.status, 500);
    assert_eq!(pay(&stripe, &k2, &pairs2).await.status, 200);
    assert_eq!(stripe.payment_intents().len(), 2);
}

#[tokio::test]
async fn garbled_answers_200_with_broken_json_then_replays_valid_json() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let pairs = charge("900", &token("spt_garbled"));
    let response = client()
        .post(format!("{}/v1/payment_intents", stripe.base_url()))
        .bearer_auth(KEY)
        .header("Idempotency-Key", &k)
        .form(&form(&pairs))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    let stored = stripe.payment_intents();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["status"], "succeeded");
    assert!(
        stored[0].to_string().starts_with(&text),
        "the first half of the saved JSON"
    );
    assert_eq!(stripe.requests()[0].response, Value::String(text));

    let replay = pay(&stripe, &k, &pairs).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body, stored[0]);
}

#[tokio::test]
async fn processing_settles_later_to_success_authorization_or_failure() {
    let stripe = FakeStripe::start(KEY).await;
    let spt = token("spt_processing");
    let pending = pay(&stripe, &key(), &charge("1200", &spt)).await;
    assert_eq!(pending.status, 200, "{}", pending.body);
    assert_eq!(pending.body["status"], "processing");
    assert_eq!(pending.body["amount_received"], 0);
    let id = pending.body["id"].as_str().unwrap();
    let reused = pay(&stripe, &key(), &charge("1200", &spt)).await;
    assert_eq!(reused.body["error"]["code"], "shared_payment_granted_token_used");

    let settled = stripe.settle_processing(id, true);
    assert_eq!(settled["status"], "succeeded");
    assert_eq!(settled["amount_received"], 1200);
    assert_eq!(get(&stripe, &format!("/v1/payment_intents/{id}")).await.body, settled);

    let mut manual = charge("800", &token("spt_processing"));
    manual.push(("capture_method", "manual".into()));
    let pending = pay(&stripe, &key(), &manual).await;
    let authorized = stripe.settle_processing(pending.body["id"].as_str().unwrap(), true);
    assert_eq!(authorized["status"], "requires_capture");
    assert_eq!(authorized["amount_capturable"], 800);

    let spt = token("spt_processing");
    let pending = pay(&stripe, &key(), &charge("500", &spt)).await;
    let failed = stripe.settle_processing(pending.body["id"].as_str().unwrap(), false);
    assert_eq!(failed["status"], "requires_payment_method");
    assert_eq!(failed["last_payment_error"]["decline_code"], "generic_decline");
    assert_eq!(failed["last_payment_error"]["charge"], pending.body["latest_charge"]);
    // A failed payment does not consume the token, like a decline.
    let again = pay(&stripe, &key(), &charge("500", &spt)).await;
    assert_eq!(again.body["status"], "processing");

    let types: Vec<String> = stripe
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "payment_intent.processing",
            "payment_intent.succeeded",
            "payment_intent.processing",
            "payment_intent.amount_capturable_updated",
            "payment_intent.processing",
            "payment_intent.payment_failed",
            "payment_intent.processing",
        ]
    );
    let asynchronous = &stripe.events()[1];
    assert_eq!(asynchronous["request"], json!({"id": null, "idempotency_key": null}));
}

#[tokio::test]
async fn refuses_malformed_stripe_versions_without_saving_anything() {
    let stripe = FakeStripe::start(KEY).await;
    let k = key();
    let pairs = charge("100", &token("spt_ok"));
    let send = |version: Option<&'static str>| {
        let mut request = client()
            .post(format!("{}/v1/payment_intents", stripe.base_url()))
            .bearer_auth(KEY)
            .header("Idempotency-Key", &k)
            .form(&form(&pairs));
        if let Some(version) = version {
            request = request.header("Stripe-Version", version);
        }
        request.send()
    };
    for bad in [
        "2019-2-19",
        "latest",
        "2026-04-22.",
        "2026-13-01",
        "2026-04-22.Preview",
        "2026-04-22 preview",
    ] {
        let refused = send(Some(bad)).await.unwrap();
        assert_eq!(refused.status().as_u16(), 400, "{bad}");
        assert!(refused.headers().get("stripe-version").is_none());
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
        assert_eq!(body["error"]["message"], format!("Invalid Stripe API version: {bad}"));
    }
    assert!(stripe.payment_intents().is_empty());

    // Nothing was saved under the key: the same request with a good version executes.
    let accepted = send(Some("2026-04-22.preview")).await.unwrap();
    assert_eq!(accepted.status().as_u16(), 200);
    assert_eq!(accepted.headers()["stripe-version"], "2026-04-22.preview");
    assert!(accepted.headers().get("idempotent-replayed").is_none());
    let replay = send(None).await.unwrap();
    assert_eq!(replay.status().as_u16(), 200, "no header is fine");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    for good in ["2020-08-27", "2025-03-31.basil", "2026-04-22.preview"] {
        assert!(is_api_version(good), "{good}");
    }
}
