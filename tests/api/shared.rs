//! Small helpers several version suites need alike: reading totals, the PaymentIntent POSTs the fake Stripe saw,
//! raw-body POSTs, and the official webhook schema of a version as a receiver's validator.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use reqwest::RequestBuilder;
use serde_json::{Value, json};
use test_support::{
    fake_stripe::{FakeStripe, LoggedRequest},
    webhook_receiver::Validator,
};

use crate::{
    helpers::{AGENT_KEY, TestApp},
    official::spec_dir,
};

/// The amount of the `totals[]` entries of `kind` (0 when there is none).
pub fn total(body: &Value, kind: &str) -> i64 {
    body["totals"]
        .as_array()
        .expect("totals is an array")
        .iter()
        .filter(|t| t["type"] == kind)
        .map(|t| t["amount"].as_i64().expect("amount is an integer"))
        .sum()
}

/// Every PaymentIntent creation the fake Stripe received, in order.
pub fn intent_posts(fake: &FakeStripe) -> Vec<LoggedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/payment_intents")
        .collect()
}

/// A POST in `version` with a raw body of a chosen content type.
pub fn post_raw(app: &TestApp, version: &str, path: &str, content_type: &str, body: &str) -> RequestBuilder {
    app.client
        .post(app.url(path))
        .bearer_auth(AGENT_KEY)
        .header("API-Version", version)
        .header("Content-Type", content_type)
        .body(body.to_owned())
}

/// `WebhookEvent` of `version`'s official webhook OpenAPI, compiled once per version (the document is
/// self-contained up to 2026-01-30). None when the spec folder is unavailable.
pub fn official_webhook_schema(version: &str) -> Option<Arc<jsonschema::Validator>> {
    type Cache = Mutex<HashMap<String, Arc<jsonschema::Validator>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let dir = spec_dir()?;
    let mut cache = CACHE.get_or_init(Cache::default).lock().expect("cache lock");
    let built = cache.entry(version.to_owned()).or_insert_with(|| {
        let path = dir.join(format!("spec/{version}/openapi/openapi.agentic_checkout_webhook.yaml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let document: Value = serde_yaml_ng::from_str(&text).expect("official webhook OpenAPI parses");
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": "#/components/schemas/WebhookEvent",
            "components": document["components"],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .expect("WebhookEvent compiles");
        assert!(
            !validator.is_valid(&json!({"type": "order_create", "data": {"type": "order"}})),
            "the {version} webhook schema is really enforced"
        );
        Arc::new(validator)
    });
    Some(Arc::clone(built))
}

/// A webhook receiver's validator from a compiled schema: every violation, joined; anything goes without one.
pub fn receiver_validator(schema: Option<Arc<jsonschema::Validator>>) -> Validator {
    Arc::new(move |body: &Value| match &schema {
        Some(validator) => {
            let errors: Vec<String> = validator
                .iter_errors(body)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        }
        None => Ok(()),
    })
}
