//! Request signatures per agent (issue 12): the three algorithms, canonical bodies, every refusal with its precise
//! message, the modes, `method_path_body`, the admin route, the environment agent and the `sign` command.

use acp_merchant::signatures::{Algorithm, SignKey, sign_request, timestamp_now};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, spki::der::pem::LineEnding};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{AGENT_KEY, API_VERSION, BIN, TestApp, spawn_app, spawn_app_with},
    lifecycle::{TEE, create_body, error, session},
};

const HMAC_SECRET: &str = "test_hmac_secret_0123456789abcdefghij";

/// 32 random bytes without a random-number crate: two v4 UUIDs.
fn random_32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

/// A fresh key pair (or secret) for `algorithm`: the agent's signing key and what the merchant stores.
fn key_pair(algorithm: Algorithm) -> (SignKey, Value) {
    match algorithm {
        Algorithm::Ed25519 => {
            let key = ed25519_dalek::SigningKey::from_bytes(&random_32());
            let public = key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
            (
                SignKey::Ed25519(key),
                json!({"algorithm": "ed25519", "public_key": public}),
            )
        }
        Algorithm::Es256 => {
            let key = p256::ecdsa::SigningKey::from_slice(&random_32()).unwrap();
            // The raw form this time: base64url of the uncompressed SEC1 point.
            let public = URL_SAFE_NO_PAD.encode(key.verifying_key().to_encoded_point(false).as_bytes());
            (SignKey::Es256(key), json!({"algorithm": "es256", "public_key": public}))
        }
        Algorithm::HmacSha256 => (
            SignKey::parse(Algorithm::HmacSha256, HMAC_SECRET).unwrap(),
            json!({"algorithm": "hmac-sha256", "hmac_secret": HMAC_SECRET}),
        ),
    }
}

/// Registers an agent and returns its API key and id.
async fn new_agent(app: &TestApp) -> (String, String) {
    let r = app
        .admin(Method::POST, "/admin/agents")
        .json(&json!({"name": "Signing agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let agent: Value = r.json().await.unwrap();
    (
        agent["api_key"].as_str().unwrap().to_owned(),
        agent["agent_id"].as_str().unwrap().to_owned(),
    )
}

async fn set_policy(app: &TestApp, agent_id: &str, policy: &Value) -> reqwest::Response {
    app.admin(Method::PUT, &format!("/admin/agents/{agent_id}/signature"))
        .json(policy)
        .send()
        .await
        .unwrap()
}

/// An agent with `mode`, signing with a fresh key of `algorithm`.
async fn signing_agent(app: &TestApp, mode: &str, algorithm: Algorithm, covers: &str) -> (String, SignKey) {
    let (api_key, agent_id) = new_agent(app).await;
    let (sign_key, mut policy) = key_pair(algorithm);
    policy["mode"] = json!(mode);
    policy["covers"] = json!(covers);
    let r = set_policy(app, &agent_id, &policy).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    (api_key, sign_key)
}

/// A create request carrying exactly `body` (bytes as given) and, when set, the two signature headers.
fn create_raw(app: &TestApp, api_key: &str, body: &str, headers: Option<(&str, &str)>) -> reqwest::RequestBuilder {
    let mut request = app
        .acp_as(Method::POST, "/checkout_sessions", api_key, API_VERSION)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((signature, timestamp)) = headers {
        request = request.header("Signature", signature).header("Timestamp", timestamp);
    }
    request
}

fn signed(key: &SignKey, timestamp: &str, body: &str) -> String {
    sign_request(key, timestamp, None, body.as_bytes()).unwrap().signature
}

fn body_text() -> String {
    create_body(json!([{"id": TEE}])).to_string()
}

async fn refused(response: reqwest::Response, message: &str) {
    let body = error(response, StatusCode::UNAUTHORIZED, "invalid_signature", None).await;
    assert_eq!(body["message"], message, "{body:#}");
}

#[tokio::test]
async fn hmac_ed25519_and_es256_signatures_are_accepted_on_posts_and_gets() {
    let app = spawn_app().await;
    for algorithm in [Algorithm::HmacSha256, Algorithm::Ed25519, Algorithm::Es256] {
        let (api_key, key) = signing_agent(&app, "required", algorithm, "body").await;
        let body = body_text();
        let ts = timestamp_now();
        let r = create_raw(&app, &api_key, &body, Some((&signed(&key, &ts, &body), &ts)))
            .send()
            .await
            .unwrap();
        let created = session(r, StatusCode::CREATED).await;
        // A GET signs the empty body: the message is the timestamp and a dot.
        let path = format!("/checkout_sessions/{}", created["id"].as_str().unwrap());
        let r = app
            .acp_as(Method::GET, &path, &api_key, API_VERSION)
            .header("Signature", signed(&key, &ts, ""))
            .header("Timestamp", &ts)
            .send()
            .await
            .unwrap();
        session(r, StatusCode::OK).await;
    }
}

#[tokio::test]
async fn reordered_keys_and_extra_whitespace_still_verify() {
    let app = spawn_app().await;
    let (api_key, key) = signing_agent(&app, "required", Algorithm::Ed25519, "body").await;
    let ts = timestamp_now();
    let signature = signed(&key, &ts, &body_text());
    // Same JSON, different bytes: keys reversed and pretty-printed.
    let mut reversed = serde_json::Map::new();
    let original = create_body(json!([{"id": TEE}]));
    for (k, v) in original.as_object().unwrap().iter().rev() {
        reversed.insert(k.clone(), v.clone());
    }
    let sent = format!(
        "\n  {}  \n",
        serde_json::to_string_pretty(&Value::Object(reversed)).unwrap()
    );
    assert_ne!(sent, body_text());
    let r = create_raw(&app, &api_key, &sent, Some((&signature, &ts)))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::CREATED).await;
}

#[tokio::test]
async fn every_bad_signature_is_refused_with_its_precise_message() {
    let app = spawn_app().await;
    let (api_key, key) = signing_agent(&app, "required", Algorithm::HmacSha256, "body").await;
    let body = body_text();
    let now = chrono::Utc::now();
    let ts = timestamp_now();
    let at = |secs: i64| (now + chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let other_key = SignKey::parse(Algorithm::HmacSha256, "another_secret_that_is_long_enough_0000").unwrap();
    let tampered = body.replace(TEE, "var_trail_map_pack");
    // Whole-second timestamps truncate up to 1 s towards the past: 302 s is outside ±300 s either way.
    let (stale, future) = (at(-302), at(302));
    let cases: [(String, String, String, &str); 6] = [
        (
            signed(&other_key, &ts, &body),
            ts.clone(),
            body.clone(),
            "Signature does not verify",
        ),
        (
            signed(&key, &ts, &body),
            ts.clone(),
            tampered,
            "Signature does not verify",
        ),
        (
            signed(&key, &stale, &body),
            stale.clone(),
            body.clone(),
            "Timestamp is outside the ±300 s window around the server's clock",
        ),
        (
            signed(&key, &future, &body),
            future.clone(),
            body.clone(),
            "Timestamp is outside the ±300 s window around the server's clock",
        ),
        (
            signed(&key, "yesterday", &body),
            "yesterday".into(),
            body.clone(),
            "Malformed Timestamp header: expected an RFC 3339 date-time such as 2026-01-01T00:00:00Z",
        ),
        (
            "%%%not+base64/".into(),
            ts.clone(),
            body.clone(),
            "Signature header is not valid base64url",
        ),
    ];
    for (signature, timestamp, sent, message) in cases {
        let r = create_raw(&app, &api_key, &sent, Some((&signature, &timestamp)))
            .send()
            .await
            .unwrap();
        refused(r, message).await;
    }
    let sessions: i64 = sqlx::query_scalar("select count(*) from checkout_session")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 0, "no refused request created anything");
}

#[tokio::test]
async fn a_refused_signature_claims_no_idempotency_key() {
    let app = spawn_app().await;
    let (api_key, key) = signing_agent(&app, "required", Algorithm::HmacSha256, "body").await;
    let body = body_text();
    let ts = timestamp_now();
    // reqwest appends headers, so build the keyed requests without the helper's own key.
    let keyed = |signature: String| {
        app.client
            .post(app.url("/checkout_sessions"))
            .bearer_auth(&api_key)
            .header("API-Version", API_VERSION)
            .header("Idempotency-Key", "idem_signed_once")
            .header("content-type", "application/json")
            .header("Signature", signature)
            .header("Timestamp", &ts)
            .body(body.clone())
            .send()
    };
    refused(keyed("AAAA".into()).await.unwrap(), "Signature does not verify").await;
    let r = keyed(signed(&key, &ts, &body)).await.unwrap();
    session(r, StatusCode::CREATED).await;
}

#[tokio::test]
async fn required_mode_refuses_a_request_missing_either_header() {
    let app = spawn_app().await;
    let (api_key, key) = signing_agent(&app, "required", Algorithm::Ed25519, "body").await;
    let body = body_text();
    let r = create_raw(&app, &api_key, &body, None).send().await.unwrap();
    refused(r, "Missing Signature header").await;
    let r = create_raw(&app, &api_key, &body, None)
        .header("Signature", signed(&key, &timestamp_now(), &body))
        .send()
        .await
        .unwrap();
    refused(r, "Missing Timestamp header").await;
    let r = create_raw(&app, &api_key, &body, None)
        .header("Timestamp", timestamp_now())
        .send()
        .await
        .unwrap();
    refused(r, "Missing Signature header").await;
    // The signature is checked before API-Version: a request missing both hears about the signature.
    let r = app
        .client
        .post(app.url("/checkout_sessions"))
        .bearer_auth(&api_key)
        .json(&create_body(json!([{"id": TEE}])))
        .send()
        .await
        .unwrap();
    refused(r, "Missing Signature header").await;
    // Authentication still comes first: a wrong bearer key is 401 unauthorized, not a signature complaint.
    let r = create_raw(&app, "not_a_key", &body, None).send().await.unwrap();
    error(r, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
}

#[tokio::test]
async fn optional_mode_accepts_unsigned_requests_and_refuses_bad_signatures() {
    let app = spawn_app().await;
    let (api_key, key) = signing_agent(&app, "optional", Algorithm::Es256, "body").await;
    let body = body_text();
    let r = create_raw(&app, &api_key, &body, None).send().await.unwrap();
    session(r, StatusCode::CREATED).await;
    let ts = timestamp_now();
    let r = create_raw(&app, &api_key, &body, Some((&signed(&key, &ts, "{}"), &ts)))
        .send()
        .await
        .unwrap();
    refused(r, "Signature does not verify").await;
    let r = create_raw(&app, &api_key, &body, Some((&signed(&key, &ts, &body), &ts)))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::CREATED).await;
}

#[tokio::test]
async fn off_mode_ignores_signature_headers() {
    let app = spawn_app().await;
    let (api_key, _) = signing_agent(&app, "off", Algorithm::HmacSha256, "body").await;
    let r = create_raw(&app, &api_key, &body_text(), Some(("%%%garbage", "not a time")))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::CREATED).await;
    // The environment agent is off by default too.
    let r = app
        .acp_post("/checkout_sessions", &create_body(json!([{"id": TEE}])))
        .header("Signature", "garbage")
        .send()
        .await
        .unwrap();
    session(r, StatusCode::CREATED).await;
}

#[tokio::test]
async fn method_path_body_covers_method_and_path() {
    let app = spawn_app().await;
    let (api_key, key) = signing_agent(&app, "required", Algorithm::Ed25519, "method_path_body").await;
    let body = body_text();
    let ts = timestamp_now();
    // A body-only signature is not enough for this agent.
    let r = create_raw(&app, &api_key, &body, Some((&signed(&key, &ts, &body), &ts)))
        .send()
        .await
        .unwrap();
    refused(r, "Signature does not verify").await;
    let covering = |method: &str, path: &str, body: &str| {
        sign_request(&key, &ts, Some((method, path)), body.as_bytes())
            .unwrap()
            .signature
    };
    let r = create_raw(
        &app,
        &api_key,
        &body,
        Some((&covering("POST", "/checkout_sessions", &body), &ts)),
    )
    .send()
    .await
    .unwrap();
    let first = session(r, StatusCode::CREATED).await;
    let r = create_raw(
        &app,
        &api_key,
        &body,
        Some((&covering("POST", "/checkout_sessions", &body), &ts)),
    )
    .send()
    .await
    .unwrap();
    let second = session(r, StatusCode::CREATED).await;
    let first_path = format!("/checkout_sessions/{}", first["id"].as_str().unwrap());
    let second_path = format!("/checkout_sessions/{}", second["id"].as_str().unwrap());
    let get = |path: &str, signature: String| {
        app.acp_as(Method::GET, path, &api_key, API_VERSION)
            .header("Signature", signature)
            .header("Timestamp", &ts)
            .send()
    };
    // Signed for the first session, replayed against the second: refused.
    refused(
        get(&second_path, covering("GET", &first_path, "")).await.unwrap(),
        "Signature does not verify",
    )
    .await;
    // The method is covered too.
    refused(
        get(&first_path, covering("POST", &first_path, "")).await.unwrap(),
        "Signature does not verify",
    )
    .await;
    // The query string is part of the path.
    let with_query = format!("{first_path}?view=full");
    refused(
        get(&with_query, covering("GET", &first_path, "")).await.unwrap(),
        "Signature does not verify",
    )
    .await;
    let r = get(&with_query, covering("GET", &with_query, "")).await.unwrap();
    session(r, StatusCode::OK).await;
}

#[tokio::test]
async fn the_admin_route_validates_every_field_and_never_echoes_the_secret() {
    let app = spawn_app().await;
    let (_, agent_id) = new_agent(&app).await;
    let cases = [
        (json!({"mode": "sometimes"}), "$.mode"),
        (json!({"mode": "required"}), "$.algorithm"),
        (json!({"mode": "required", "algorithm": "rsa"}), "$.algorithm"),
        (json!({"mode": "required", "algorithm": "ed25519"}), "$.public_key"),
        (
            json!({"mode": "required", "algorithm": "ed25519", "public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}),
            "$.public_key",
        ),
        (
            json!({"mode": "required", "algorithm": "es256", "public_key": "AAAA"}),
            "$.public_key",
        ),
        (
            json!({"mode": "required", "algorithm": "hmac-sha256", "hmac_secret": "short"}),
            "$.hmac_secret",
        ),
        (json!({"mode": "required", "algorithm": "hmac-sha256"}), "$.hmac_secret"),
        (
            json!({"mode": "required", "algorithm": "hmac-sha256", "hmac_secret": HMAC_SECRET, "covers": "all"}),
            "$.covers",
        ),
    ];
    for (policy, param) in cases {
        let r = set_policy(&app, &agent_id, &policy).await;
        let body = error(r, StatusCode::BAD_REQUEST, "invalid", Some(param)).await;
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let good = json!({"mode": "required", "algorithm": "hmac-sha256", "hmac_secret": HMAC_SECRET});
    let r = set_policy(&app, &agent_id, &good).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(!text.contains(HMAC_SECRET), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["mode"], "required");
    assert_eq!(answer["hmac_secret_set"], true);
    let r = set_policy(&app, "agent_nobody", &good).await;
    error(r, StatusCode::NOT_FOUND, "not_found", None).await;
    let r = set_policy(&app, "agent_default", &good).await;
    error(r, StatusCode::BAD_REQUEST, "invalid", None).await;
    // Behind the Admin extractor: an agent key is not enough.
    let r = app
        .client
        .put(app.url(&format!("/admin/agents/{agent_id}/signature")))
        .bearer_auth(AGENT_KEY)
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_environment_agent_is_configured_by_the_environment() {
    let app = spawn_app_with(&[
        ("agent_signature_mode", "required"),
        ("agent_signature_algorithm", "hmac-sha256"),
        ("agent_signature_key", HMAC_SECRET),
        ("signature_tolerance_secs", "60"),
    ])
    .await;
    let key = SignKey::parse(Algorithm::HmacSha256, HMAC_SECRET).unwrap();
    let body = body_text();
    let r = create_raw(&app, AGENT_KEY, &body, None).send().await.unwrap();
    refused(r, "Missing Signature header").await;
    let stale = (chrono::Utc::now() - chrono::Duration::seconds(61)).to_rfc3339();
    let r = create_raw(&app, AGENT_KEY, &body, Some((&signed(&key, &stale, &body), &stale)))
        .send()
        .await
        .unwrap();
    refused(r, "Timestamp is outside the ±60 s window around the server's clock").await;
    let ts = timestamp_now();
    let r = create_raw(&app, AGENT_KEY, &body, Some((&signed(&key, &ts, &body), &ts)))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::CREATED).await;
}

#[test]
fn environment_signature_settings_are_validated_at_start_up() {
    let base = [("env", "development"), ("psp", "simulator")];
    let problem = |extra: &[(&str, &str)]| {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        acp_merchant::config::Settings::from_pairs(&pairs).unwrap_err().setting
    };
    assert_eq!(
        problem(&[("agent_signature_mode", "always")]),
        "ACP_AGENT_SIGNATURE_MODE"
    );
    assert_eq!(
        problem(&[("agent_signature_mode", "required")]),
        "ACP_AGENT_SIGNATURE_ALGORITHM"
    );
    assert_eq!(
        problem(&[
            ("agent_signature_mode", "required"),
            ("agent_signature_algorithm", "ed25519")
        ]),
        "ACP_AGENT_SIGNATURE_KEY"
    );
    assert_eq!(
        problem(&[
            ("agent_signature_mode", "required"),
            ("agent_signature_algorithm", "ed25519"),
            ("agent_signature_key", "not-a-key"),
        ]),
        "ACP_AGENT_SIGNATURE_KEY"
    );
    assert_eq!(
        problem(&[("signature_tolerance_secs", "0")]),
        "ACP_SIGNATURE_TOLERANCE_SECS"
    );
    assert_eq!(
        problem(&[("agent_signature_covers", "path")]),
        "ACP_AGENT_SIGNATURE_COVERS"
    );
}

#[tokio::test]
async fn the_sign_command_output_verifies_against_the_server() {
    let app = spawn_app().await;
    let (api_key, agent_id) = new_agent(&app).await;
    let private = ed25519_dalek::SigningKey::from_bytes(&random_32());
    let public = private.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    let policy =
        json!({"mode": "required", "algorithm": "ed25519", "public_key": public, "covers": "method_path_body"});
    assert_eq!(set_policy(&app, &agent_id, &policy).await.status(), StatusCode::OK);

    let dir = std::env::temp_dir().join(format!("acp-sign-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("agent.pem");
    std::fs::write(&key_file, private.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let body_file = dir.join("body.json");
    let body = body_text();
    std::fs::write(&body_file, &body).unwrap();
    let output = tokio::process::Command::new(BIN)
        .args(["sign", "--algorithm", "ed25519", "--key-file"])
        .arg(&key_file)
        .args(["--method", "POST", "--path", "/checkout_sessions", "--body-file"])
        .arg(&body_file)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let header = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} line in {stdout}"))
            .to_owned()
    };
    let (signature, timestamp) = (header("Signature"), header("Timestamp"));
    let r = create_raw(&app, &api_key, &body, Some((&signature, &timestamp)))
        .send()
        .await
        .unwrap();
    session(r, StatusCode::CREATED).await;
}

/// A line of the README's worked example.
fn readme_value(label: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme.find("<!-- signature-example -->").expect("README example");
    readme[start..]
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("README example has no `{label}` line"))
}

#[tokio::test]
async fn the_sign_command_prints_the_readme_example_from_standard_input() {
    use tokio::io::AsyncWriteExt as _;
    let dir = std::env::temp_dir().join(format!("acp-sign-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("hmac.txt");
    // A key file ends with a newline; it is not part of the secret.
    std::fs::write(&key_file, format!("{}\n", readme_value("key:"))).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["sign", "--algorithm", "hmac-sha256", "--key-file"])
        .arg(&key_file)
        .args(["--timestamp", &readme_value("timestamp:"), "--body-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(readme_value("body:").as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!(
            "Signature: {}\nTimestamp: {}\n",
            readme_value("signature:"),
            readme_value("timestamp:")
        )
    );
}
