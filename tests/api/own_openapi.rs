//! The project's own `openapi/2026-04-17.json`: served as written, consistent with the official OpenAPI's
//! operations, and describing every body the suite receives (the helpers validate each one against it).

use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::{helpers::spawn_app, official::spec_dir};

const DOC: &str = include_str!("../../openapi/2026-04-17.json");

fn doc() -> &'static Value {
    static DOC_VALUE: OnceLock<Value> = OnceLock::new();
    DOC_VALUE.get_or_init(|| serde_json::from_str(DOC).expect("openapi/2026-04-17.json is JSON"))
}

fn validator(def: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{def}"),
        "components": doc()["components"],
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .unwrap_or_else(|e| panic!("our schema {def} does not compile: {e}"))
}

/// Panics unless `value` matches `def` of our own OpenAPI document.
pub fn assert_matches_our_doc(def: &str, value: &Value) {
    static SESSION: OnceLock<jsonschema::Validator> = OnceLock::new();
    static ERROR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let v = match def {
        "CheckoutSession" => SESSION.get_or_init(|| validator("CheckoutSession")),
        "Error" => ERROR.get_or_init(|| validator("Error")),
        other => panic!("no cached validator for {other}"),
    };
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "body does not match our openapi {def}: {errors:?}\n{value:#}"
    );
}

#[tokio::test]
async fn the_document_is_served_as_written() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/openapi/2026-04-17.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), DOC);
}

#[test]
fn every_schema_in_the_document_compiles() {
    for name in doc()["components"]["schemas"].as_object().unwrap().keys() {
        validator(name);
    }
}

#[test]
fn operations_match_the_official_openapi() {
    let Some(dir) = spec_dir() else { return };
    let path = dir.join("spec/2026-04-17/openapi/openapi.agentic_checkout.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let official: Value = serde_yaml_ng::from_str(&text).expect("official OpenAPI parses");
    let ours = doc();
    let mut checked = 0;
    for (path, item) in official["paths"].as_object().unwrap() {
        for method in ["get", "post"] {
            let Some(op) = item.get(method) else { continue };
            let mine = &ours["paths"][path][method];
            assert!(mine.is_object(), "we do not describe {method} {path}");
            assert_eq!(mine["operationId"], op["operationId"], "{method} {path}");
            let success = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .find(|k| k.starts_with('2'))
                .unwrap();
            assert!(
                mine["responses"][success].is_object(),
                "{method} {path} lacks its {success}"
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
                        "{method} {path} lacks {required}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "the five checkout operations");
    assert_eq!(
        ours["components"]["parameters"]["APIVersion"]["schema"]["enum"],
        json!(["2026-04-17"])
    );
}

#[test]
fn our_schemas_reject_what_we_never_send() {
    let error = validator("Error");
    assert!(error.is_valid(&json!({"type": "invalid_request", "code": "x", "message": "m", "param": "$.a"})));
    assert!(!error.is_valid(&json!({"type": "invalid_request", "code": "x"})));
    assert!(!error.is_valid(&json!({"type": "teapot", "code": "x", "message": "m"})));
    assert!(!error.is_valid(&json!({"type": "invalid_request", "code": "x", "message": "m", "detail": 1})));
    let session = validator("CheckoutSession");
    assert!(!session.is_valid(&json!({"id": "cs_1", "status": "completed"})));
}
