//! Logs are JSON lines, one per request with its request id, and never carry secrets or personal data.

use std::time::Duration;

use crate::helpers::{AGENT_KEY, ChildServer, TestDb};

const BEARER: &str = "sk_bearer_secret_value_998877";
const SPT: &str = "spt_123SecretSharedPaymentToken";
const EMAIL: &str = "jane.buyer@example.com";
const PHONE: &str = "+15551234567";
const STREET: &str = "1234 Hidden Orchard Lane";
const CARD: &str = "4242424242424242";

#[tokio::test]
async fn request_logs_are_json_lines_without_secrets_or_personal_data() {
    let db = TestDb::migrated().await;
    let mut server = ChildServer::start(
        &["serve"],
        &[
            ("ACP_ENV", "development"),
            ("ACP_PSP", "simulator"),
            ("DATABASE_URL", &db.url),
            ("ACP_AGENT_API_KEY", AGENT_KEY),
            // Debug level: even the chattiest setting must not leak.
            ("ACP_LOG_LEVEL", "debug"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let body = serde_json::json!({
        "buyer": {"email": EMAIL, "phone_number": PHONE},
        "fulfillment_details": {"address": {"line_one": STREET}},
        "payment_data": {"instrument": {"credential": {"type": "spt", "token": SPT}}, "card": CARD},
    });
    let paths = ["/checkout_sessions", "/healthz", "/checkout_sessions/cs_1/complete"];
    for (i, path) in paths.iter().enumerate() {
        let response = client
            .post(server.url(path))
            .bearer_auth(BEARER)
            .header("Request-Id", format!("log-test-{i}"))
            .header("X-Buyer-Email", EMAIL)
            .header("X-Payment-Token", SPT)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error());
    }
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(10)).await, Some(0));
    // The reader tasks may still be draining the pipes.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let output = server.output();
    let all = output.join("\n");
    for secret in [BEARER, SPT, EMAIL, PHONE, STREET, CARD, "Bearer"] {
        assert!(!all.contains(secret), "log output contains {secret:?}:\n{all}");
    }
    for line in &output {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON line: {line}");
    }
    for (i, path) in paths.iter().enumerate() {
        let id = format!("log-test-{i}");
        let lines: Vec<serde_json::Value> = output
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "request completed" && v["request_id"] == id.as_str())
            .collect();
        assert_eq!(lines.len(), 1, "one completion line per request for {path}");
        let line = &lines[0];
        assert_eq!(line["method"], "POST");
        assert!(line["status"].as_u64().is_some());
        assert!(line["latency_ms"].as_f64().is_some());
        assert!(line["route"].is_string());
    }
}
