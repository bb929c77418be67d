//! Validation against the OFFICIAL ACP JSON Schemas, read at test time from outside the project.
//!
//! The spec lives in `$ACP_SPEC_DIR/spec/<version>/json-schema/` (CI: `ACP_SPEC_DIR=../shared/acp`, relative to
//! the project root). When the variable is unset the suite falls back to `../shared/acp` if it exists; when
//! neither is available it warns loudly (once) and every helper here becomes a no-op / `None`. When the variable
//! is set but unusable, the suite fails. The official files are never copied into the project.
//!
//! Each version gets its own registry and validators: every version's bundle reuses the same `$id`s, so one
//! global registry would silently mix versions.

use std::{
    collections::{BTreeSet, HashMap},
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;

pub const VERSIONS: [&str; 6] = [
    "2025-09-29",
    "2025-12-12",
    "2026-01-16",
    "2026-01-30",
    "2026-04-17",
    "unreleased",
];

const ENV_VAR: &str = "ACP_SPEC_DIR";
const FALLBACK_DIR: &str = "../shared/acp";
const CHECKOUT_FILE: &str = "schema.agentic_checkout.json";
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
/// Longest single error message kept (messages embed the offending instance, which can be a whole session).
const MAX_MESSAGE_CHARS: usize = 600;

/// Root of the official spec folder, or None (after a loud warning) when unset and absent. Panics when
/// ACP_SPEC_DIR is set but unusable.
pub fn spec_dir() -> Option<PathBuf> {
    // A panic inside `get_or_init` leaves the cell empty, so every caller fails with the same message.
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(resolve_spec_dir).clone()
}

fn resolve_spec_dir() -> Option<PathBuf> {
    // Relative paths are relative to the project root. Cargo runs integration tests there anyway; anchoring
    // on the manifest dir keeps a directly-run test binary working from any cwd.
    let anchor = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
        }
    };
    match std::env::var_os(ENV_VAR) {
        Some(raw) if !raw.is_empty() => {
            let raw = raw
                .to_str()
                .unwrap_or_else(|| panic!("{ENV_VAR} is not valid UTF-8: {raw:?}"));
            let dir = anchor(raw);
            if !dir.join("spec").is_dir() {
                panic!(
                    "{ENV_VAR}={raw} is set but {} is not a folder holding the official ACP spec (no spec/ inside)",
                    dir.display()
                );
            }
            Some(dir)
        }
        _ => {
            let dir = anchor(FALLBACK_DIR);
            if dir.join("spec").is_dir() {
                return Some(dir);
            }
            // Written straight to the process's stderr: libtest captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "\n\
                 ************************************************************************************\n\
                 WARNING: official ACP JSON Schemas not found ({ENV_VAR} unset and {} absent).\n\
                 Every official-schema conformance check in this run is SKIPPED.\n\
                 Set {ENV_VAR}=<folder holding spec/ and examples/> to enable them.\n\
                 ************************************************************************************\n",
                dir.display()
            );
            None
        }
    }
}

/// Compiled view of one version's JSON Schema bundle (all `schema.*.json` files of that version).
pub struct Schemas {
    version: &'static str,
    dir: PathBuf,
    /// File name -> patched contents.
    docs: HashMap<String, Value>,
    /// File name -> URI the file is registered under (its `$id`).
    uris: HashMap<String, String>,
    registry: Registry<'static>,
    validators: Mutex<HashMap<(String, String), Arc<Validator>>>,
}

/// Validators for one version's checkout bundle; cached (OnceLock per version). None only when spec_dir() is None.
pub fn schemas(version: &str) -> Option<&'static Schemas> {
    static CELLS: [OnceLock<Schemas>; VERSIONS.len()] = [const { OnceLock::new() }; VERSIONS.len()];
    let idx = VERSIONS
        .iter()
        .position(|v| *v == version)
        .unwrap_or_else(|| panic!("unknown ACP version {version:?}; known: {VERSIONS:?}"));
    let root = spec_dir()?;
    Some(CELLS[idx].get_or_init(|| Schemas::load(VERSIONS[idx], &root)))
}

impl Schemas {
    fn load(version: &'static str, root: &Path) -> Schemas {
        let dir = root.join("spec").join(version).join("json-schema");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read official schema folder {}: {e}", dir.display()));
        let mut docs = HashMap::new();
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if !(name.starts_with("schema.") && name.ends_with(".json")) {
                continue;
            }
            let mut doc = read_json(&path);
            patch_draft4_exclusive_minimum(&mut doc);
            docs.insert(name, doc);
        }
        assert!(
            docs.contains_key(CHECKOUT_FILE),
            "{} has no {CHECKOUT_FILE}",
            dir.display()
        );

        // Every file under its own `$id`.
        let mut uris = HashMap::new();
        for (name, doc) in &docs {
            let id = doc.get("$id").and_then(Value::as_str).map_or_else(
                // No file has lacked an `$id` so far; give one a private, per-version URI should it happen.
                || format!("https://acp-spec.invalid/{version}/{name}"),
                str::to_owned,
            );
            uris.insert(name.clone(), id);
        }
        let mut resources: Vec<(String, Value)> = docs
            .iter()
            .map(|(name, doc)| (uris[name].clone(), doc.clone()))
            .collect();

        // Sibling references: `schema.discount.json` (`$id` https://agentic-commerce-protocol.com/schemas/discount.json)
        // and `schema.cart.json` (`$id` https://example.com/schemas/cart/bundle.schema.json) point at
        // `schema.agentic_checkout.json#/$defs/...`, which resolves against their own `$id` to a URI where nothing
        // lives. Register the sibling file under each such URI too, minus its `$id` so the alias is a plain
        // document whose internal `#/$defs/...` refs resolve within itself.
        let registered: BTreeSet<String> = uris.values().cloned().collect();
        let mut aliases = BTreeSet::new();
        for name in docs.keys() {
            let base = jsonschema::uri::from_str(&uris[name])
                .unwrap_or_else(|e| panic!("{version}/{name}: bad $id {:?}: {e}", uris[name]));
            let mut refs = Vec::new();
            collect_external_refs(&docs[name], &mut refs);
            for reference in refs {
                let target = jsonschema::uri::resolve_against(&base.borrow(), &reference)
                    .unwrap_or_else(|e| panic!("{version}/{name}: cannot resolve $ref {reference:?}: {e}"));
                let target = target.as_str().split('#').next().unwrap_or_default().to_owned();
                if registered.contains(&target) || !aliases.insert(target.clone()) {
                    continue;
                }
                let file = reference
                    .split('#')
                    .next()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                let mut sibling = docs
                    .get(file)
                    .unwrap_or_else(|| {
                        panic!(
                            "{version}/{name}: $ref {reference:?} names no file of {}",
                            dir.display()
                        )
                    })
                    .clone();
                if let Some(obj) = sibling.as_object_mut() {
                    obj.remove("$id");
                }
                resources.push((target, sibling));
            }
        }

        let registry = Registry::new()
            .draft(Draft::Draft202012)
            .extend(resources)
            .and_then(|builder| builder.prepare())
            .unwrap_or_else(|e| panic!("official schema registry for {version} does not build: {e}"));

        Schemas {
            version,
            dir,
            docs,
            uris,
            registry,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// Validate `value` against `$defs/<def>` of schema.agentic_checkout.json of this version (e.g.
    /// "CheckoutSession", "CheckoutSessionWithOrder", "Error", "Order"). Err holds human-readable messages with
    /// instance paths. Panics when the definition does not exist or does not compile (so a negative check can
    /// never pass because of a typo).
    pub fn validate(&self, def: &str, value: &Value) -> Result<(), Vec<String>> {
        self.validate_in(CHECKOUT_FILE, def, value)
    }

    /// Same against another file of the bundle, e.g. validate_in("schema.feed.json", "Product", v).
    pub fn validate_in(&self, file: &str, def: &str, value: &Value) -> Result<(), Vec<String>> {
        let validator = self.validator(file, def);
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| {
                let at = e.instance_path().as_str();
                let at = if at.is_empty() { "/" } else { at };
                format!(
                    "{at}: {} (schema path {})",
                    truncate(&e.to_string()),
                    e.schema_path().as_str()
                )
            })
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn validator(&self, file: &str, def: &str) -> Arc<Validator> {
        let key = (file.to_owned(), def.to_owned());
        if let Some(v) = self.lock().get(&key) {
            return Arc::clone(v);
        }
        let doc = self.docs.get(file).unwrap_or_else(|| {
            let mut files: Vec<_> = self.docs.keys().collect();
            files.sort();
            panic!(
                "ACP {}: no {file} in {} (have {files:?})",
                self.version,
                self.dir.display()
            )
        });
        let defs = doc.get("$defs").and_then(Value::as_object);
        if !defs.is_some_and(|d| d.contains_key(def)) {
            let mut names: Vec<_> = defs.map(|d| d.keys().collect()).unwrap_or_default();
            names.sort();
            panic!("ACP {}: {file} has no $defs/{def} (have {names:?})", self.version);
        }
        let wrapper = serde_json::json!({
            "$schema": DRAFT_2020_12,
            "$ref": format!("{}#/$defs/{def}", self.uris[file]),
        });
        // Built outside the lock: a panic here must not poison the cache for the other tests.
        let built = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_registry(&self.registry)
            .build(&wrapper)
            .unwrap_or_else(|e| panic!("ACP {}: {file} $defs/{def} does not compile: {e}", self.version));
        Arc::clone(self.lock().entry(key).or_insert_with(|| Arc::new(built)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Validator>>> {
        self.validators.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The 2025-09-29 bundle declares `CheckoutSessionWithOrder` as `allOf[CheckoutSessionBase, {order}]`, but that
    /// base has `additionalProperties: false` and no `order` property, so nothing can satisfy it. Detected from the
    /// schema rather than hard-coded by version.
    fn with_order_is_unsatisfiable(&self) -> bool {
        let base = &self.docs[CHECKOUT_FILE]["$defs"]["CheckoutSessionBase"];
        base["additionalProperties"] == Value::Bool(false) && base["properties"].get("order").is_none()
    }
}

/// Panics with the errors and the pretty-printed value when invalid; no-op (returns) when the spec is
/// unavailable (spec_dir() None).
pub fn assert_valid(version: &str, def: &str, value: &Value) {
    let Some(schemas) = schemas(version) else { return };
    if let Err(errors) = schemas.validate(def, value) {
        fail(version, def, &errors, value);
    }
}

/// Validates a checkout session body as the suite requires: `CheckoutSession` always, and also
/// `CheckoutSessionWithOrder` when status == "completed". For bundles whose `CheckoutSessionWithOrder` cannot
/// validate anything (2025-09-29), a completed session is checked as `CheckoutSession` without its `order`, and the
/// `order`, when present, against `$defs/Order`.
pub fn assert_valid_session(version: &str, value: &Value) {
    let Some(schemas) = schemas(version) else { return };
    let completed = value.get("status").and_then(Value::as_str) == Some("completed");
    let mut errors = Vec::new();
    if completed && schemas.with_order_is_unsatisfiable() {
        let mut base = value.clone();
        let order = base.as_object_mut().and_then(|o| o.remove("order"));
        errors.extend(schemas.validate("CheckoutSession", &base).err().unwrap_or_default());
        // `order` stays optional here: the version's own `complete_checkout_session_response` example has none.
        if let Some(order) = order {
            errors.extend(
                schemas
                    .validate("Order", &order)
                    .err()
                    .unwrap_or_default()
                    .into_iter()
                    // "/: msg" (root of `order`) -> "/order: msg"; "/id: msg" -> "/order/id: msg".
                    .map(|e| {
                        format!(
                            "/order{}",
                            e.strip_prefix("/:").map_or(e.clone(), |rest| format!(":{rest}"))
                        )
                    }),
            );
        }
    } else {
        errors.extend(schemas.validate("CheckoutSession", value).err().unwrap_or_default());
        if completed {
            errors.extend(
                schemas
                    .validate("CheckoutSessionWithOrder", value)
                    .err()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| format!("[CheckoutSessionWithOrder] {e}")),
            );
        }
    }
    if !errors.is_empty() {
        fail(version, "CheckoutSession", &errors, value);
    }
}

/// Parsed examples file, e.g. examples("2026-04-17", "examples.agentic_checkout.json"). None when spec unavailable.
pub fn examples(version: &str, file: &str) -> Option<Value> {
    let root = spec_dir()?;
    Some(read_json(&root.join("examples").join(version).join(file)))
}

fn fail(version: &str, def: &str, errors: &[String], value: &Value) -> ! {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    panic!(
        "value does not conform to the official ACP {version} schema `{def}` ({} error(s)):\n  - {}\nvalue:\n{pretty}",
        errors.len(),
        errors.join("\n  - ")
    );
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

/// The 2025-09-29 bundle declares draft 2020-12 yet uses the draft-04 boolean form `"minimum": 0,
/// "exclusiveMinimum": true` (Item.quantity). Under 2020-12 `exclusiveMinimum` must be a number, so the bundle does
/// not compile as published. Rewrite to the 2020-12 equivalent `"exclusiveMinimum": 0` (dropping `minimum`); a
/// boolean `false` just means "inclusive", so it is removed. Applied to every version (no-op elsewhere).
fn patch_draft4_exclusive_minimum(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            for (flag, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
                match obj.get(flag) {
                    Some(Value::Bool(true)) => match obj.remove(bound) {
                        Some(n @ Value::Number(_)) => {
                            obj.insert(flag.to_owned(), n);
                        }
                        _ => panic!("boolean {flag} without a numeric {bound} in an official schema: {obj:?}"),
                    },
                    Some(Value::Bool(false)) => {
                        obj.remove(flag);
                    }
                    _ => {}
                }
            }
            obj.values_mut().for_each(patch_draft4_exclusive_minimum);
        }
        Value::Array(items) => items.iter_mut().for_each(patch_draft4_exclusive_minimum),
        _ => {}
    }
}

/// Every `$ref` that does not start with `#` (i.e. points into another document).
fn collect_external_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            if let Some(Value::String(r)) = obj.get("$ref")
                && !r.starts_with('#')
            {
                out.push(r.clone());
            }
            obj.values().for_each(|v| collect_external_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_external_refs(v, out)),
        _ => {}
    }
}

mod tests {
    use std::panic::AssertUnwindSafe;

    use serde_json::json;

    use super::*;

    /// Smallest body the version's `CheckoutSession` accepts (`capabilities` exists, and is required, from 2025-12-12).
    fn minimal_session(version: &str, status: &str) -> Value {
        let mut session = json!({
            "id": "cs_1",
            "status": status,
            "currency": "usd",
            "line_items": [],
            "totals": [],
            "fulfillment_options": [],
            "messages": [],
            "links": [],
            "capabilities": {}
        });
        if version == "2025-09-29" {
            session.as_object_mut().unwrap().remove("capabilities");
        }
        session
    }

    #[test]
    fn every_version_loads_and_checks_error() {
        for version in VERSIONS {
            let Some(s) = schemas(version) else { return };
            let ok = json!({"type": "invalid_request", "code": "x", "message": "m"});
            assert_eq!(s.validate("Error", &ok), Ok(()), "{version}");
            assert_valid(version, "Error", &ok);
            let errors = s
                .validate("Error", &json!({"type": "invalid_request"}))
                .expect_err(version);
            assert!(errors.iter().any(|e| e.contains("code")), "{version}: {errors:?}");
        }
    }

    #[test]
    fn every_definition_of_every_file_compiles() {
        for version in VERSIONS {
            let Some(s) = schemas(version) else { return };
            for (file, doc) in &s.docs {
                for def in doc["$defs"].as_object().into_iter().flat_map(|d| d.keys()) {
                    // Panics with the def's name when it does not compile.
                    let _ = s.validate_in(file, def, &Value::Null);
                }
            }
        }
    }

    #[test]
    fn versions_have_separate_registries() {
        let (Some(old), Some(new)) = (schemas("2025-09-29"), schemas("2026-04-17")) else {
            return;
        };
        // Same `$id`, different contents: each version must see its own bundle.
        let not_idempotent = json!({"type": "request_not_idempotent", "code": "x", "message": "m"});
        assert_eq!(old.validate("Error", &not_idempotent), Ok(()));
        assert!(new.validate("Error", &not_idempotent).is_err());
        let with_versions =
            json!({"type": "invalid_request", "code": "x", "message": "m", "supported_versions": ["2026-04-17"]});
        assert!(old.validate("Error", &with_versions).is_err());
        assert_eq!(new.validate("Error", &with_versions), Ok(()));
    }

    #[test]
    fn draft4_exclusive_minimum_is_patched_2025_09_29() {
        let Some(s) = schemas("2025-09-29") else { return };
        assert_eq!(
            s.docs[CHECKOUT_FILE]["$defs"]["Item"]["properties"]["quantity"]["exclusiveMinimum"],
            json!(0)
        );
        assert_eq!(s.validate("Item", &json!({"id": "i", "quantity": 1})), Ok(()));
        assert!(s.validate("Item", &json!({"id": "i", "quantity": 0})).is_err());
    }

    #[test]
    fn completed_session_workaround_2025_09_29() {
        for version in VERSIONS {
            let Some(s) = schemas(version) else { return };
            assert_eq!(s.with_order_is_unsatisfiable(), version == "2025-09-29", "{version}");
        }
        let Some(s) = schemas("2025-09-29") else { return };
        let mut done = minimal_session("2025-09-29", "completed");
        done["order"] = json!({"id": "ord_1", "checkout_session_id": "cs_1", "permalink_url": "https://shop/o/1"});
        // The official definition rejects every completed session of this version...
        assert!(s.validate("CheckoutSessionWithOrder", &done).is_err());
        // ...so the suite checks base + Order instead.
        assert_valid_session("2025-09-29", &done);
        let mut bad_order = done.clone();
        bad_order["order"].as_object_mut().unwrap().remove("permalink_url");
        let errors = s
            .validate("Order", &bad_order["order"])
            .expect_err("permalink_url is required");
        assert!(errors.iter().any(|e| e.contains("permalink_url")), "{errors:?}");
        let panic = std::panic::catch_unwind(|| assert_valid_session("2025-09-29", &bad_order)).expect_err("must fail");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("/order: \"permalink_url\" is a required property"),
            "{message}"
        );
        // That version's official completed example carries no `order`, so it is optional there.
        assert_valid_session("2025-09-29", &minimal_session("2025-09-29", "completed"));
        assert_valid_session("2025-09-29", &minimal_session("2025-09-29", "ready_for_payment"));
        // An `order` on a non-completed session is still rejected by the base.
        let mut early = minimal_session("2025-09-29", "ready_for_payment");
        early["order"] = done["order"].clone();
        assert!(std::panic::catch_unwind(|| assert_valid_session("2025-09-29", &early)).is_err());
    }

    #[test]
    fn completed_session_2026_04_17_checks_with_order() {
        let Some(s) = schemas("2026-04-17") else { return };
        let mut done = minimal_session("2026-04-17", "completed");
        assert!(std::panic::catch_unwind(|| assert_valid_session("2026-04-17", &done)).is_err());
        done["order"] = json!({"id": "ord_1", "checkout_session_id": "cs_1", "permalink_url": "https://shop/o/1"});
        assert_eq!(s.validate("CheckoutSessionWithOrder", &done), Ok(()));
        assert_valid_session("2026-04-17", &done);
    }

    #[test]
    fn examples_2026_04_17() {
        let Some(ex) = examples("2026-04-17", "examples.agentic_checkout.json") else {
            return;
        };
        let s = schemas("2026-04-17").expect("spec present");
        // Entries are plain bodies (not {"summary", "value"} wrappers).
        assert_valid("2026-04-17", "Error", &ex["error_400_invalid_item"]);
        // The official session examples of this version do validate (checked; not true of every example file).
        assert_valid("2026-04-17", "CheckoutSession", &ex["create_checkout_session_response"]);
        let session = minimal_session("2026-04-17", "ready_for_payment");
        assert_eq!(s.validate("CheckoutSession", &session), Ok(()));
        assert_valid_session("2026-04-17", &session);
        let mut no_id = session.clone();
        no_id.as_object_mut().unwrap().remove("id");
        let errors = s.validate("CheckoutSession", &no_id).expect_err("missing id must fail");
        assert!(errors.iter().any(|e| e.contains("\"id\"")), "{errors:?}");
    }

    #[test]
    fn official_session_examples_pass_assert_valid_session() {
        for version in VERSIONS {
            let Some(ex) = examples(version, "examples.agentic_checkout.json") else {
                return;
            };
            let mut checked = 0;
            for (name, body) in ex.as_object().expect("examples file is an object of named bodies") {
                if name.ends_with("_checkout_session_response") || name.starts_with("checkout_session_") {
                    let outcome = std::panic::catch_unwind(|| assert_valid_session(version, body));
                    assert!(outcome.is_ok(), "{version} official example {name} rejected");
                    checked += 1;
                }
            }
            assert!(checked >= 5, "{version}: only {checked} session examples found");
        }
    }

    #[test]
    fn unknown_definition_panics_instead_of_failing_validation() {
        let Some(s) = schemas("2026-04-17") else { return };
        // `WebhookEvent` exists only in the OpenAPI webhook spec, not in any JSON Schema bundle.
        assert!(std::panic::catch_unwind(AssertUnwindSafe(|| s.validate("WebhookEvent", &json!({})))).is_err());
        assert!(
            std::panic::catch_unwind(AssertUnwindSafe(|| s.validate_in(
                "schema.nope.json",
                "Error",
                &json!({})
            )))
            .is_err()
        );
    }

    #[test]
    fn feed_product_2026_04_17() {
        let Some(s) = schemas("2026-04-17") else { return };
        let product =
            json!({"id": "p1", "variants": [{"id": "v1", "title": "T", "price": {"amount": 100, "currency": "USD"}}]});
        assert_eq!(s.validate_in("schema.feed.json", "Product", &product), Ok(()));
        let mut extra = product.clone();
        extra["unknown_field"] = json!(true);
        assert!(s.validate_in("schema.feed.json", "Product", &extra).is_err());
    }

    #[test]
    fn cross_file_refs_resolve_2026_04_17() {
        let Some(s) = schemas("2026-04-17") else { return };
        // schema.cart.json and schema.discount.json reach into schema.agentic_checkout.json by relative path.
        let cart = json!({"id": "c1", "line_items": [], "currency": "usd", "totals": []});
        assert_eq!(s.validate_in("schema.cart.json", "Cart", &cart), Ok(()));
        let mut bad_total = cart.clone();
        bad_total["totals"] = json!([{"bogus": 1}]);
        let errors = s
            .validate_in("schema.cart.json", "Cart", &bad_total)
            .expect_err("Total is enforced");
        assert!(errors.iter().all(|e| e.starts_with("/totals/0")), "{errors:?}");

        let session = minimal_session("2026-04-17", "ready_for_payment");
        assert_eq!(
            s.validate_in("schema.discount.json", "checkout_with_discount", &session),
            Ok(())
        );
        let mut no_id = session.clone();
        no_id.as_object_mut().unwrap().remove("id");
        let errors = s
            .validate_in("schema.discount.json", "checkout_with_discount", &no_id)
            .expect_err("base enforced");
        assert!(errors.iter().any(|e| e.contains("CheckoutSessionBase")), "{errors:?}");
    }
}
