//! Schema-first validation: every request body is checked against the request schema of its version in this
//! project's own `openapi/<version>.json` before it is parsed into typed structs. The documents are compiled once,
//! at start-up; the tolerated deviations from the official schemas are written into them, so the document an agent
//! reads and the behaviour it meets cannot drift apart.
//!
//! A violation becomes a 400: `missing` for an absent required field, `invalid` for everything else, with the
//! validator's instance location as an RFC 9535 JSONPath `param` and a message a person can act on: the
//! validator's own, or the `x-error-message` the document sets on the schema that refused the value (so the
//! explanation an agent reads in the document is the one it gets).

use std::collections::HashMap;

use jsonschema::{Validator, error::ValidationErrorKind};
use serde_json::{Value, json};

use super::{Adapter, Operation, WireError};

/// Longest message text taken from the validator (it may quote the offending value).
const MAX_DETAIL_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
#[error("openapi/{version}.json: {problem}")]
pub struct SchemaError {
    pub version: &'static str,
    pub problem: String,
}

/// The compiled request schemas of every enabled version.
pub struct RequestSchemas {
    validators: HashMap<(&'static str, Operation), Validator>,
    /// Each version's document, where a refusing schema's `x-error-message` is looked up.
    docs: HashMap<&'static str, Value>,
}

impl RequestSchemas {
    pub fn compile(adapters: &[&'static dyn Adapter]) -> Result<Self, SchemaError> {
        let mut validators = HashMap::new();
        let mut docs = HashMap::new();
        for adapter in adapters {
            let version = adapter.version();
            let doc: Value = serde_json::from_str(adapter.openapi()).map_err(|e| SchemaError {
                version,
                problem: format!("not JSON: {e}"),
            })?;
            for operation in Operation::ALL {
                validators.insert((version, operation), compile_one(version, &doc, operation)?);
            }
            docs.insert(version, doc);
        }
        Ok(Self { validators, docs })
    }

    /// Checks `body` against the request schema of `operation` in `version`.
    pub fn check(&self, version: &str, operation: Operation, body: &Value) -> Result<(), WireError> {
        let Some(validator) = self.validators.get(&(version, operation)) else {
            return Ok(());
        };
        match validator.iter_errors(body).next() {
            None => Ok(()),
            Some(error) => Err(to_wire_error(&error, self.docs.get(version))),
        }
    }
}

fn compile_one(version: &'static str, doc: &Value, operation: Operation) -> Result<Validator, SchemaError> {
    let name = operation.schema_name();
    if doc["components"]["schemas"].get(name).is_none() {
        return Err(SchemaError {
            version,
            problem: format!("no components.schemas.{name}"),
        });
    }
    let wrapper = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&wrapper)
        .map_err(|e| SchemaError {
            version,
            problem: format!("{name} does not compile: {e}"),
        })
}

/// The `x-error-message` of the schema holding the keyword that failed. The schema path is canonical (no `$ref`
/// traversal), so it points into the document's components like the validator's wrapper does.
fn documented_message<'d>(error: &jsonschema::ValidationError<'_>, doc: Option<&'d Value>) -> Option<&'d str> {
    let path = error.schema_path().as_str();
    let (parent, _keyword) = path.rsplit_once('/')?;
    doc?.pointer(parent)?.get("x-error-message")?.as_str()
}

fn to_wire_error(error: &jsonschema::ValidationError<'_>, doc: Option<&Value>) -> WireError {
    let at = pointer_to_jsonpath(error.instance_path().as_str());
    match error.kind() {
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context }
            if let Some(closest) = closest_branch_error(context) =>
        {
            to_wire_error(closest, doc)
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let param = crate::jsonpath::member(&at, name);
            WireError::missing(param.clone(), format!("{param} is required"))
        }
        _ if let Some(message) = documented_message(error, doc) => {
            WireError::invalid(at.clone(), format!("{at}: {message}"))
        }
        // Size refusals name the bound and never echo the (possibly huge) value.
        ValidationErrorKind::MaxItems { limit } => {
            WireError::invalid(at.clone(), format!("{at}: at most {limit} entries are allowed"))
        }
        ValidationErrorKind::MinItems { limit } => {
            WireError::invalid(at.clone(), format!("{at}: at least {limit} entries are required"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            WireError::invalid(at.clone(), format!("{at}: at most {limit} characters are allowed"))
        }
        ValidationErrorKind::MinLength { limit } => {
            WireError::invalid(at.clone(), format!("{at}: at least {limit} characters are required"))
        }
        _ => {
            let mut detail: String = error.to_string().chars().take(MAX_DETAIL_CHARS).collect();
            if detail.chars().count() == MAX_DETAIL_CHARS {
                detail.push('…');
            }
            WireError::invalid(at.clone(), format!("{at}: {detail}"))
        }
    }
}

/// Of the alternatives of an `anyOf`/`oneOf` that all failed, the error of the one that came closest: the one
/// whose first error lies deepest in the instance, and a wrong member rather than a wrong type on a tie. A
/// nullable object is `anyOf: [object, null]`; for `{"name": "J"}` the person needs "line_one is required",
/// not "matches none of the alternatives".
fn closest_branch_error<'a>(
    context: &'a [Vec<jsonschema::ValidationError<'static>>],
) -> Option<&'a jsonschema::ValidationError<'static>> {
    context.iter().filter_map(|errors| errors.first()).max_by_key(|e| {
        let depth = e.instance_path().as_str().matches('/').count();
        let not_a_type_error = !matches!(e.kind(), ValidationErrorKind::Type { .. });
        (depth, not_a_type_error)
    })
}

/// `/a/0/b~1c` → `$.a[0]['b/c']`.
pub fn pointer_to_jsonpath(pointer: &str) -> String {
    let mut out = String::from("$");
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            crate::jsonpath::push_member(&mut out, &segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_jsonpaths() {
        assert_eq!(pointer_to_jsonpath(""), "$");
        assert_eq!(pointer_to_jsonpath("/line_items/0/id"), "$.line_items[0].id");
        assert_eq!(pointer_to_jsonpath("/a~1b/c d"), "$['a/b']['c d']");
    }

    #[test]
    fn a_documented_message_explains_the_refusal() {
        let schemas = RequestSchemas::compile(super::super::ADAPTERS).expect("compiles");
        let version = super::super::v2025_09_29::VERSION;
        for quantity in [json!(2.5), json!(0), json!(100_000)] {
            let body = json!({"items": [{"id": "var_a", "quantity": quantity}]});
            let e = schemas.check(version, Operation::Create, &body).unwrap_err();
            assert_eq!(e.code, "invalid");
            assert_eq!(e.param, "$.items[0].quantity");
            assert!(e.message.contains("whole number of units"), "{quantity}: {}", e.message);
        }
        // Without one, the validator's own words.
        let e = schemas
            .check(
                version,
                Operation::Create,
                &json!({"items": [{"id": 7, "quantity": 1}]}),
            )
            .unwrap_err();
        assert!(e.message.contains("string"), "{}", e.message);
    }

    #[test]
    fn a_nullable_object_reports_what_is_wrong_inside_it() {
        let schemas = RequestSchemas::compile(super::super::ADAPTERS).expect("compiles");
        let version = super::super::v2025_09_29::VERSION;
        let e = schemas
            .check(
                version,
                Operation::Update,
                &json!({"fulfillment_address": {"name": "J"}}),
            )
            .unwrap_err();
        assert_eq!(
            (e.code, e.param.as_str()),
            ("missing", "$.fulfillment_address.line_one")
        );
        let e = schemas
            .check(
                version,
                Operation::Update,
                &json!({"fulfillment_address": {"country": "usa"}}),
            )
            .unwrap_err();
        assert_eq!(
            e.param, "$.fulfillment_address.name",
            "the first problem inside the object"
        );
        let e = schemas
            .check(version, Operation::Update, &json!({"fulfillment_address": 5}))
            .unwrap_err();
        assert_eq!((e.code, e.param.as_str()), ("invalid", "$.fulfillment_address"));
        assert!(!e.message.contains("anyOf"), "{}", e.message);
    }

    #[test]
    fn every_adapter_document_compiles() {
        let schemas = RequestSchemas::compile(super::super::ADAPTERS).expect("compiles");
        assert_eq!(
            schemas.validators.len(),
            super::super::ADAPTERS.len() * Operation::ALL.len()
        );
    }
}
