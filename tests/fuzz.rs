//! Randomized robustness run over request validation, parsing and canonicalisation (issue 12).
//!
//! Ignored by the normal suite (which only compiles it); `scripts/fuzz [SECS]` runs it, each test for `FUZZ_SECS`
//! seconds (default 60). Inputs are mostly near-valid: the official request examples of every version
//! (`$ACP_SPEC_DIR/examples/<version>/`) and our own valid requests, mutated (keys dropped or duplicated, wrong
//! types, huge numbers, NUL and control characters, deep nesting, long strings, raw byte flips), plus random JSON;
//! over HTTP also odd session ids and hostile header values (API-Version, Idempotency-Key, Request-Id, …).
//!
//! Properties: nothing panics; every refusal is a proper ACP error (400/404/405/409/413/415/422 with `type`,
//! `code` and `message`, and a JSONPath `param` when it is about the body); valid requests are accepted; the
//! RFC 8785 canonical form used for idempotency fingerprints is idempotent and blind to key order and whitespace.

#[allow(dead_code, unused_imports)]
#[path = "api/helpers.rs"]
mod helpers;

use std::{
    cell::{Cell, RefCell},
    path::PathBuf,
    time::{Duration, Instant},
};

use acp_merchant::{
    catalog,
    config::Secret,
    idempotency, input_limits,
    protocol::{self, Operation, WireError},
    psp::stripe_signature,
};
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Map, Value, json};

const TEE: &str = "var_trail_tee_m_blue";
const MUG: &str = "var_camp_mug";
const DEMO_CATALOG: &str = include_str!("../config/demo-catalog.jsonl");

/// How long each fuzz test runs: `FUZZ_SECS` (default 60).
fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Runs `test` over `strategy` in batches until the time budget is spent; proptest shrinks any failure.
fn run_for<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let cases = std::cell::Cell::new(0u64);
    let counted = |value: S::Value| {
        cases.set(cases.get() + 1);
        test(value)
    };
    let started = Instant::now();
    while started.elapsed() < budget() {
        // A fresh runner per batch: a runner counts its successes across runs, and each new one draws a new seed.
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, counted) {
            panic!("{name}: {e}");
        }
    }
    assert!(cases.get() > 0, "{name}: the time budget allowed no case at all");
    println!(
        "{name}: {} cases in {:.1} s, no failure",
        cases.get(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Seeds: valid requests of every version.

fn address() -> Value {
    json!({"name": "Jane Buyer", "line_one": "1 Main St", "city": "Springfield", "state": "IL",
           "country": "US", "postal_code": "62701"})
}

/// A create body every version accepts (shape per version), with `quantity` of `item`.
fn valid_create(version: &str, item: &str, quantity: u32) -> Value {
    let details = json!({"name": "Jane Buyer", "email": "jane@example.com", "address": address()});
    match version {
        "2025-09-29" => json!({"items": [{"id": item, "quantity": quantity}], "fulfillment_address": address()}),
        "2025-12-12" | "2026-01-16" => {
            json!({"items": [{"id": item, "quantity": quantity}], "fulfillment_details": details})
        }
        _ => json!({"currency": "usd", "line_items": [{"id": item, "quantity": quantity}],
                    "capabilities": {"interventions": {"supported": ["3ds"]}}, "fulfillment_details": details}),
    }
}

fn valid_update(version: &str, item: &str, quantity: u32) -> Value {
    match version {
        "2025-09-29" | "2025-12-12" | "2026-01-16" => json!({"items": [{"id": item, "quantity": quantity}]}),
        _ => json!({"line_items": [{"id": item, "quantity": quantity}]}),
    }
}

fn valid_complete(version: &str, token: &str) -> Value {
    match version {
        "2025-09-29" | "2025-12-12" | "2026-01-16" => json!({"payment_data": {"token": token, "provider": "stripe"}}),
        _ => json!({"payment_data": {"handler_id": "card_tokenized",
                    "instrument": {"type": "card", "credential": {"type": "spt", "token": token}}}}),
    }
}

/// The official request examples of `version`, with the operation each is for (none without `ACP_SPEC_DIR`).
fn official_requests(version: &str) -> Vec<(Operation, Value)> {
    let Some(root) = std::env::var_os("ACP_SPEC_DIR").map(PathBuf::from) else {
        return Vec::new();
    };
    let path = root
        .join("examples")
        .join(version)
        .join("examples.agentic_checkout.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let Ok(Value::Object(examples)) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    examples
        .into_iter()
        .filter(|(name, _)| name.ends_with("_request"))
        .filter_map(|(name, body)| operation_of(&name).map(|op| (op, body)))
        .collect()
}

fn operation_of(example: &str) -> Option<Operation> {
    [
        ("create_", Operation::Create),
        ("update_", Operation::Update),
        ("complete_", Operation::Complete),
        ("cancel_", Operation::Cancel),
    ]
    .into_iter()
    .find(|(prefix, _)| example.starts_with(prefix))
    .map(|(_, op)| op)
}

/// Every seed: (version, operation, valid body).
fn seeds() -> Vec<(&'static str, Operation, Value)> {
    let mut out = Vec::new();
    for &version in protocol::SUPPORTED_VERSIONS {
        out.push((version, Operation::Create, valid_create(version, TEE, 1)));
        out.push((version, Operation::Update, valid_update(version, MUG, 2)));
        out.push((version, Operation::Complete, valid_complete(version, "spt_sim_ok")));
        out.push((version, Operation::Cancel, json!({})));
        for (op, body) in official_requests(version) {
            out.push((version, op, body));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Mutations.

/// One change to a JSON value at the node chosen by an index.
#[derive(Debug, Clone)]
enum Mutation {
    Drop,
    Replace(Value),
    DeepNest(usize),
    Wrap,
    RenameKey(String),
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\u{0}".to_owned()),
        Just("a\u{0}b".to_owned()),
        Just("\u{1}\u{7f}\u{9f}\n\t".to_owned()),
        Just("\u{202e}\u{feff}\u{fffd}".to_owned()),
        Just("\u{1F600}é".to_owned()),
        (1usize..40_000).prop_map(|n| "x".repeat(n)),
        Just(String::new()),
        Just("var_trail_tee_m_blue".to_owned()),
        Just("9999999999999999999999".to_owned()),
        ".{0,40}",
    ]
}

fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        hostile_string().prop_map(Value::String),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        Just(json!(5e-324)),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0usize..300).prop_map(|n| Value::Array(vec![json!({"id": TEE}); n])),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::Drop),
        6 => hostile_value().prop_map(Mutation::Replace),
        1 => (20usize..200).prop_map(Mutation::DeepNest),
        1 => Just(Mutation::Wrap),
        1 => hostile_string().prop_map(Mutation::RenameKey),
    ]
}

/// JSON Pointers of every node of `value` (the root included).
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn apply(mut value: Value, at: &Index, mutation: &Mutation) -> Value {
    let mut all = Vec::new();
    pointers(&value, String::new(), &mut all);
    let pointer = all[at.index(all.len())].clone();
    if pointer.is_empty() {
        return match mutation {
            Mutation::Replace(v) => v.clone(),
            Mutation::Wrap => json!([value]),
            _ => value,
        };
    }
    let (parent_ptr, last) = pointer.rsplit_once('/').unwrap_or(("", ""));
    let key = last.replace("~1", "/").replace("~0", "~");
    let Some(parent) = value.pointer_mut(parent_ptr) else {
        return value;
    };
    match (parent, mutation) {
        (Value::Object(map), Mutation::Drop) => {
            map.remove(&key);
        }
        (Value::Object(map), Mutation::RenameKey(new)) => {
            if let Some(v) = map.remove(&key) {
                map.insert(new.clone(), v);
            }
        }
        (Value::Array(items), Mutation::Drop) => {
            if let Ok(i) = key.parse::<usize>() {
                items.remove(i);
            }
        }
        (parent, m) => {
            let slot = match parent {
                Value::Object(map) => map.get_mut(&key),
                Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = match m {
                    Mutation::Replace(v) => v.clone(),
                    Mutation::DeepNest(depth) => nested(*depth, slot.take()),
                    Mutation::Wrap => json!([slot.take()]),
                    _ => slot.take(),
                };
            }
        }
    }
    value
}

fn nested(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |inner, i| {
        if i % 2 == 0 {
            json!([inner])
        } else {
            json!({"a": inner})
        }
    })
}

/// A JSON text of `value` with members in a shuffled order and random whitespace (same meaning, other bytes).
fn reordered_text(value: &Value, seed: u64) -> String {
    let mut out = String::new();
    write_reordered(value, seed, &mut out);
    out
}

fn write_reordered(value: &Value, seed: u64, out: &mut String) {
    let space = if seed & 1 == 1 { " \n\t" } else { "" };
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            if !members.is_empty() {
                let turn = (seed as usize) % members.len();
                members.rotate_left(turn);
                if seed & 2 == 2 {
                    members.reverse();
                }
            }
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(space);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(space);
                out.push(':');
                write_reordered(v, seed.rotate_left(7) ^ i as u64, out);
            }
            out.push_str(space);
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(space);
                write_reordered(v, seed.rotate_left(3) ^ i as u64, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A request body on the wire: mostly JSON, sometimes raw bytes.
#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    /// A JSON text with the first member of the top-level object written twice.
    DuplicateKey(Value),
    Raw(Vec<u8>),
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Json(v) => v.to_string().into_bytes(),
            Body::DuplicateKey(v) => duplicate_first_key(v).into_bytes(),
            Body::Raw(b) => b.clone(),
        }
    }
}

fn duplicate_first_key(value: &Value) -> String {
    match value.as_object().and_then(|m| m.iter().next()) {
        Some((k, v)) => {
            let text = value.to_string();
            let member = format!("{}:{}", Value::String(k.clone()), v);
            format!("{{{member},{}", &text[1..])
        }
        None => value.to_string(),
    }
}

/// A random JSON value (any shape, hostile leaves).
fn random_json() -> impl Strategy<Value = Value> {
    hostile_value().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}|.{0,8}", inner), 0..8)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// (version, operation, body): a mutated seed, a seed with raw byte flips, or random JSON.
fn request() -> impl Strategy<Value = (&'static str, Operation, Body)> {
    let seeds = seeds();
    let seed = prop::sample::select(seeds);
    let mutated = (
        seed.clone(),
        prop::collection::vec((any::<Index>(), mutation()), 1..4),
        prop::bool::weighted(0.1),
    )
        .prop_map(|((version, op, body), mutations, duplicate)| {
            let body = mutations.iter().fold(body, |b, (at, m)| apply(b, at, m));
            (
                version,
                op,
                if duplicate {
                    Body::DuplicateKey(body)
                } else {
                    Body::Json(body)
                },
            )
        });
    let flipped = (seed.clone(), prop::collection::vec((any::<Index>(), any::<u8>()), 1..6)).prop_map(
        |((version, op, body), flips)| {
            let mut bytes = body.to_string().into_bytes();
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            (version, op, Body::Raw(bytes))
        },
    );
    let random = (seed, random_json()).prop_map(|((version, op, _), body)| (version, op, Body::Json(body)));
    prop_oneof![6 => mutated, 2 => flipped, 1 => random]
}

// ---------------------------------------------------------------------------------------------------------------
// Pure functions: edge checks, schema validation, per-version parsing, canonicalisation, feed, Stripe-Signature.

fn schemas() -> protocol::schema::RequestSchemas {
    let versions: Vec<String> = protocol::SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect();
    protocol::Protocol::new(&versions)
        .expect("our documents compile")
        .schemas
}

/// Parses `body` the way the handlers do: edge checks, schema, then the version's adapter.
fn parse_request(
    schemas: &protocol::schema::RequestSchemas,
    version: &str,
    op: Operation,
    body: &Value,
) -> Result<(), WireError> {
    input_limits::check_json(body).map_err(|r| WireError::invalid(r.param, r.message))?;
    schemas.check(version, op, body)?;
    let adapter = protocol::adapter(version).expect("a served version has an adapter");
    match op {
        Operation::Create => adapter.create(body.clone()).map(drop),
        Operation::Update => adapter.update(body.clone()).map(drop),
        Operation::Complete => adapter.complete(body.clone()).map(drop),
        Operation::Cancel => Ok(()),
    }
}

fn assert_proper_refusal(e: &WireError) -> Result<(), TestCaseError> {
    prop_assert!(matches!(e.code, "invalid" | "missing"), "code {}", e.code);
    prop_assert!(e.param.starts_with('$'), "param {:?}", e.param);
    prop_assert!(!e.message.is_empty());
    prop_assert!(
        !e.message.contains('\0') && !e.param.contains('\0'),
        "a refusal carries a NUL: {e:?}"
    );
    Ok(())
}

fn canonical_properties(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Some(canon) = idempotency::canonical(bytes) else {
        return Ok(());
    };
    let again = idempotency::canonical(canon.as_bytes());
    prop_assert_eq!(again.as_deref(), Some(canon.as_str()), "canon(canon(x)) != canon(x)");
    prop_assert_eq!(
        idempotency::fingerprint(canon.as_bytes()),
        idempotency::fingerprint(bytes)
    );
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        for seed in [1u64, 2, 3, 0x9e37_79b9] {
            let shuffled = reordered_text(&value, seed);
            let reordered = idempotency::canonical(shuffled.as_bytes());
            prop_assert_eq!(
                reordered.as_deref(),
                Some(canon.as_str()),
                "key order or whitespace changed the canonical form"
            );
        }
    }
    Ok(())
}

/// Official examples this server refuses on purpose (README, known deviations): 2025-09-29's create example
/// orders 2.5 units, and this store sells whole items only.
fn deliberately_refused(version: &str, op: Operation, body: &Value) -> bool {
    version == "2025-09-29" && op == Operation::Create && body["items"][0]["quantity"] == json!(2.5)
}

#[test]
fn valid_requests_of_every_version_are_accepted() {
    let schemas = schemas();
    let mut refused = Vec::new();
    let mut checked = 0;
    for (version, op, body) in seeds() {
        match parse_request(&schemas, version, op, &body) {
            Ok(()) => assert!(
                !deliberately_refused(version, op, &body),
                "{version} {op:?} is accepted now"
            ),
            Err(_) if deliberately_refused(version, op, &body) => {}
            Err(e) => refused.push(format!("{version} {op:?}: {e:?}\n{body}")),
        }
        checked += 1;
    }
    assert!(refused.is_empty(), "valid requests refused:\n{}", refused.join("\n"));
    assert!(checked >= protocol::SUPPORTED_VERSIONS.len() * 4);
}

#[test]
#[ignore = "fuzz run: scripts/fuzz"]
fn fuzz_request_parsing_never_panics_and_refuses_properly() {
    let schemas = schemas();
    run_for("request parsing", request(), |(version, op, body)| {
        let bytes = body.bytes();
        canonical_properties(&bytes)?;
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes)
            && let Err(e) = parse_request(&schemas, version, op, &value)
        {
            assert_proper_refusal(&e)?;
        }
        Ok(())
    });
}

#[test]
#[ignore = "fuzz run: scripts/fuzz"]
fn fuzz_valid_variations_are_accepted_and_canonical_form_is_stable() {
    let schemas = schemas();
    const ITEMS: [&str; 5] = [TEE, MUG, "var_headlamp_pro", "x", "any.id:1"];
    let strategy = (
        prop::sample::select(protocol::SUPPORTED_VERSIONS),
        prop::sample::select(&ITEMS[..]),
        1u32..=999,
        any::<u64>(),
    );
    run_for("valid variations", strategy, |(version, item, quantity, seed)| {
        for (op, body) in [
            (Operation::Create, valid_create(version, item, quantity)),
            (Operation::Update, valid_update(version, item, quantity)),
        ] {
            let text = reordered_text(&body, seed);
            let value: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(
                parse_request(&schemas, version, op, &value).is_ok(),
                "{version} {op:?} refused {text}"
            );
            canonical_properties(text.as_bytes())?;
        }
        Ok(())
    });
}

#[test]
#[ignore = "fuzz run: scripts/fuzz"]
fn fuzz_edge_checks_feed_and_stripe_signature() {
    let lines: Vec<&str> = DEMO_CATALOG.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(catalog::parse_products(DEMO_CATALOG).is_ok(), "the demo catalog parses");
    let feed_line = (
        prop::sample::select(lines),
        prop::collection::vec((any::<Index>(), mutation()), 0..4),
    )
        .prop_map(|(line, mutations)| {
            let value: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            mutations.iter().fold(value, |v, (at, m)| apply(v, at, m)).to_string()
        });
    let strategy = (
        prop_oneof![".{0,64}", "(%[0-9A-Fa-f]{2}|[a-z_.:]){0,40}", hostile_string()],
        prop_oneof![feed_line, ".{0,200}"],
        prop_oneof![
            ".{0,80}",
            "(t=[0-9-]{0,20}|v1=[0-9a-f]{0,70}|v0=x|[a-z]{0,3}=?)(,(t=[0-9-]{0,20}|v1=[0-9a-fA-F]{0,70}| ?)){0,4}"
        ],
        any::<Vec<u8>>(),
        -10_000i64..10_000,
    );
    let secrets = [Secret::new("whsec_fuzz".to_owned())];
    run_for(
        "edge, feed, signature",
        strategy,
        |(component, feed, header, payload, skew)| {
            let plausible = input_limits::plausible_id(&component);
            let hostile = input_limits::uri_component_is_hostile(&component);
            prop_assert!(
                !(plausible && hostile),
                "{component:?} is both a plausible id and hostile"
            );
            if component.contains('\0') {
                prop_assert!(!plausible && hostile);
            }
            match catalog::parse_products(&feed) {
                Ok(products) => {
                    for p in &products {
                        prop_assert!(catalog::feed::check(p).is_ok());
                    }
                }
                Err(catalog::CatalogError::Line { param, message, .. }) => {
                    prop_assert!(param.starts_with('$'), "{param}");
                    prop_assert!(!message.contains('\0'));
                }
                Err(e) => prop_assert!(false, "a parse touched the database: {e}"),
            }
            let _ = catalog::parse_attributes(&feed);
            let now = 1_700_000_000;
            prop_assert!(stripe_signature::verify(&payload, Some(&header), &secrets, 300, now).is_err());
            let signed = format!(
                "t={},v1={}",
                now + skew,
                stripe_signature::sign(&payload, "whsec_fuzz", now + skew)
            );
            let verdict = stripe_signature::verify(&payload, Some(&signed), &secrets, 300, now);
            prop_assert_eq!(verdict.is_ok(), skew.abs() <= 300, "{}", signed);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Over HTTP: the real server on its own database.

/// Statuses a refusal may have (anything else, 5xx above all, is a failure).
const REFUSALS: [u16; 9] = [400, 401, 404, 405, 409, 413, 415, 422, 431];

/// Fresh sessions to aim updates, completes and cancels at, one per version.
async fn sessions(app: &helpers::TestApp) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for &version in protocol::SUPPORTED_VERSIONS {
        let response = app
            .acp_as(reqwest::Method::POST, "/checkout_sessions", helpers::AGENT_KEY, version)
            .json(&valid_create(version, TEE, 1))
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), 201, "{version}: a valid create is accepted");
        let body: Value = response.json().await.expect("JSON");
        out.push((version, body["id"].as_str().expect("session id").to_owned()));
    }
    out
}

/// A header of the request replaced by a hostile value: (lower-case name, raw bytes).
type OddHeader = Option<(&'static str, Vec<u8>)>;

fn odd_header() -> impl Strategy<Value = OddHeader> {
    let name = prop::sample::select(vec![
        "idempotency-key",
        "api-version",
        "request-id",
        "content-type",
        "authorization",
    ]);
    let value = prop_oneof![
        "[ -~]{0,60}".prop_map(String::into_bytes),
        prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..60),
        (200usize..20_000).prop_map(|n| vec![b'k'; n]),
    ];
    prop::option::weighted(0.15, (name, value))
}

async fn send(
    app: &helpers::TestApp,
    session: &str,
    (version, op, body): (&str, Operation, Vec<u8>),
    odd: OddHeader,
) -> (u16, Value) {
    let path = match op {
        Operation::Create => "/checkout_sessions".to_owned(),
        Operation::Update => format!("/checkout_sessions/{session}"),
        Operation::Complete => format!("/checkout_sessions/{session}/complete"),
        Operation::Cancel => format!("/checkout_sessions/{session}/cancel"),
    };
    let mut headers: Vec<(&str, Vec<u8>)> = vec![
        ("authorization", format!("Bearer {}", helpers::AGENT_KEY).into_bytes()),
        ("api-version", version.as_bytes().to_vec()),
        ("idempotency-key", uuid::Uuid::new_v4().to_string().into_bytes()),
        ("content-type", b"application/json".to_vec()),
    ];
    if let Some((name, value)) = odd {
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value));
    }
    let mut request = app.client.post(app.url(&path)).body(body);
    for (name, value) in headers {
        // Bytes no header can carry (control characters) are left out, which is one more odd request.
        if let Ok(value) = reqwest::header::HeaderValue::from_bytes(&value) {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn assert_proper_answer(status: u16, body: &Value, what: &str) -> Result<(), TestCaseError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    prop_assert!(REFUSALS.contains(&status), "{what}: status {status}: {body}");
    for field in ["type", "code", "message"] {
        prop_assert!(body[field].is_string(), "{what}: {status} without {field}: {body}");
    }
    if status == 400 && matches!(body["code"].as_str(), Some("invalid" | "missing")) {
        let param = body["param"].as_str().unwrap_or_default();
        prop_assert!(
            param.starts_with('$'),
            "{what}: a body refusal without a JSONPath param: {body}"
        );
    }
    Ok(())
}

#[test]
#[ignore = "fuzz run: scripts/fuzz"]
fn fuzz_the_server_never_answers_5xx_and_refuses_properly() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // reqwest and the app's pool need the runtime's reactor even outside `block_on` (dropping, building).
    let _context = runtime.enter();
    let app = runtime.block_on(helpers::spawn_app());
    let targets = RefCell::new(runtime.block_on(sessions(&app)));
    let count = Cell::new(0u32);
    let strategy = (
        request(),
        prop::option::weighted(0.2, prop_oneof![".{0,40}", "(%[0-9A-Fa-f]{2}|[a-z_]){1,30}"]),
        odd_header(),
    );
    run_for("http", strategy, |((version, op, body), odd_id, odd)| {
        count.set(count.get() + 1);
        if count.get().is_multiple_of(200) {
            targets.replace(runtime.block_on(sessions(&app)));
        }
        let session = targets
            .borrow()
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, id)| id.clone());
        let session = odd_id.clone().unwrap_or_else(|| session.unwrap_or_default());
        let (status, answer) = runtime.block_on(send(&app, &session, (version, op, body.bytes()), odd));
        assert_proper_answer(status, &answer, &format!("{version} {op:?} on {session:?}"))?;
        if let Some(id) = odd_id {
            let response = runtime.block_on(
                app.acp_as(
                    reqwest::Method::GET,
                    &format!("/checkout_sessions/{id}"),
                    helpers::AGENT_KEY,
                    version,
                )
                .send(),
            );
            if let Ok(response) = response {
                let status = response.status().as_u16();
                let answer: Value = runtime.block_on(response.json()).unwrap_or(Value::Null);
                assert_proper_answer(status, &answer, &format!("GET {id:?}"))?;
            }
        }
        Ok(())
    });
    drop(app);
}
