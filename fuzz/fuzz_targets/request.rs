//! Arbitrary bytes as a request body of any version and operation: the edge checks, the version's request
//! schema and its adapter must refuse with a JSONPath `param` or accept, never panic; the RFC 8785 canonical form
//! behind idempotency fingerprints must be a fixed point. The first byte picks the version (low nibble) and the operation (high nibble).
#![no_main]

use std::sync::OnceLock;

use acp_merchant::{
    idempotency, input_limits,
    protocol::{self, Operation, WireError, schema::RequestSchemas},
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn schemas() -> &'static RequestSchemas {
    static SCHEMAS: OnceLock<RequestSchemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let versions: Vec<String> = protocol::SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect();
        protocol::Protocol::new(&versions)
            .expect("our documents compile")
            .schemas
    })
}

fn parse(version: &str, operation: Operation, body: &Value) -> Result<(), WireError> {
    input_limits::check_json(body).map_err(|r| WireError::invalid(r.param, r.message))?;
    schemas().check(version, operation, body)?;
    let adapter = protocol::adapter(version).expect("a served version has an adapter");
    match operation {
        Operation::Create => adapter.create(body.clone()).map(drop),
        Operation::Update => adapter.update(body.clone()).map(drop),
        Operation::Complete => adapter.complete(body.clone()).map(drop),
        Operation::Cancel => Ok(()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let versions = protocol::SUPPORTED_VERSIONS;
    let version = versions[usize::from(selector & 0x0f) % versions.len()];
    let operation = Operation::ALL[usize::from(selector >> 4) % Operation::ALL.len()];
    if let Some(canon) = idempotency::canonical(body) {
        assert_eq!(
            idempotency::canonical(canon.as_bytes()).as_deref(),
            Some(canon.as_str())
        );
        assert_eq!(
            idempotency::fingerprint(canon.as_bytes()),
            idempotency::fingerprint(body)
        );
    }
    if let Ok(value) = serde_json::from_slice::<Value>(body)
        && let Err(e) = parse(version, operation, &value)
    {
        assert!(matches!(e.code, "invalid" | "missing"), "{e:?}");
        assert!(e.param.starts_with('$'), "{e:?}");
        assert!(!e.message.contains('\0') && !e.param.contains('\0'), "{e:?}");
    }
});
