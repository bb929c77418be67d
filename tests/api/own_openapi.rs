//! The project's own `openapi/<version>.json`, one per served ACP version: served as written, consistent with the
//! official OpenAPI's operations of that version, and describing every body the suite receives (the helpers
//! validate each one against the document of its version).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use serde_json::{Value, json};

use crate::{
    helpers::{API_VERSION, spawn_app},
    official::spec_dir,
};

/// (version, document, whether its POSTs require `Idempotency-Key`).
const DOCS: [(&str, &str, bool); 5] = [
    ("2026-04-17", include_str!("../../openapi/2026-04-17.json"), true),
    ("2026-01-30", include_str!("../../openapi/2026-01-30.json"), false),
    ("2026-01-16", include_str!("../../openapi/2026-01-16.json"), false),
    ("2025-12-12", include_str!("../../openapi/2025-12-12.json"), false),
    ("2025-09-29", include_str!("../../openapi/2025-09-29.json"), false),
];

fn text(version: &str) -> &'static str {
    DOCS.iter()
        .find(|(v, ..)| *v == version)
        .map(|(_, text, _)| *text)
        .unwrap_or_else(|| panic!("no openapi/{version}.json"))
}

fn doc(version: &str) -> &'static Value {
    static PARSED: [OnceLock<Value>; DOCS.len()] = [const { OnceLock::new() }; DOCS.len()];
    let index = DOCS.iter().position(|(v, ..)| *v == version).expect("known version");
    PARSED[index].get_or_init(|| serde_json::from_str(text(version)).expect("our OpenAPI document is JSON"))
}

/// `components.schemas.<def>` of our document for `version`, compiled.
pub fn validator(version: &str, def: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{def}"),
        "components": doc(version)["components"],
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .unwrap_or_else(|e| panic!("our {version} schema {def} does not compile: {e}"))
}

/// Panics unless `value` matches `def` of our OpenAPI document for `version`.
pub fn assert_matches_doc(version: &str, def: &str, value: &Value) {
    type Cache = Mutex<HashMap<(String, String), Arc<jsonschema::Validator>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (version.to_owned(), def.to_owned());
    let cached = CACHE.get_or_init(Default::default).lock().unwrap().get(&key).cloned();
    let v = cached.unwrap_or_else(|| {
        let built = Arc::new(validator(version, def));
        CACHE.get().unwrap().lock().unwrap().insert(key, built.clone());
        built
    });
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "body does not match our {version} openapi {def}: {errors:?}\n{value:#}"
    );
}

/// Panics unless `value` matches `def` of our document for the version the lifecycle tests speak.
pub fn assert_matches_our_doc(def: &str, value: &Value) {
    assert_matches_doc(API_VERSION, def, value);
}

#[tokio::test]
async fn the_documents_are_served_as_written() {
    let app = spawn_app().await;
    for (version, text, _) in DOCS {
        let response = app
            .client
            .get(app.url(&format!("/openapi/{version}.json")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{version}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.text().await.unwrap(), text, "{version}");
    }
}

#[test]
fn every_schema_in_the_documents_compiles() {
    for (version, ..) in DOCS {
        for name in doc(version)["components"]["schemas"].as_object().unwrap().keys() {
            validator(version, name);
        }
    }
}

#[test]
fn operations_match_the_official_openapi() {
    let Some(dir) = spec_dir() else { return };
    for (version, _, key_required) in DOCS {
        let path = dir.join(format!("spec/{version}/openapi/openapi.agentic_checkout.yaml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let official: Value = serde_yaml_ng::from_str(&text).expect("official OpenAPI parses");
        let ours = doc(version);
        let mut checked = 0;
        for (path, item) in official["paths"].as_object().unwrap() {
            for method in ["get", "post"] {
                let Some(op) = item.get(method) else { continue };
                let mine = &ours["paths"][path][method];
                assert!(mine.is_object(), "{version}: we do not describe {method} {path}");
                assert_eq!(mine["operationId"], op["operationId"], "{version} {method} {path}");
                let success = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .find(|k| k.starts_with('2'))
                    .unwrap();
                assert!(
                    mine["responses"][success].is_object(),
                    "{version} {method} {path} lacks its {success}"
                );
                if method == "post" {
                    let params: Vec<&str> = mine["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|p| p["$ref"].as_str())
                        .collect();
                    for required in ["APIVersion", "IdempotencyKey"] {
                        assert!(
                            params.iter().any(|p| p.ends_with(required)),
                            "{version} {method} {path} lacks {required}"
                        );
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 5, "{version}: the five checkout operations");
        let parameters = &ours["components"]["parameters"];
        assert_eq!(parameters["APIVersion"]["schema"]["enum"], json!([version]));
        assert_eq!(
            parameters["IdempotencyKey"]["required"],
            json!(key_required),
            "{version}"
        );
    }
}

#[test]
fn our_schemas_reject_what_we_never_send() {
    for (version, ..) in DOCS {
        let error = validator(version, "Error");
        assert!(error.is_valid(&json!({"type": "invalid_request", "code": "x", "message": "m", "param": "$.a"})));
        assert!(!error.is_valid(&json!({"type": "invalid_request", "code": "x"})));
        assert!(!error.is_valid(&json!({"type": "teapot", "code": "x", "message": "m"})));
        assert!(!error.is_valid(&json!({"type": "invalid_request", "code": "x", "message": "m", "detail": 1})));
        let session = validator(version, "CheckoutSession");
        assert!(!session.is_valid(&json!({"id": "cs_1", "status": "completed"})));
    }
}
