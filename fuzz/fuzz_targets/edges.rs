//! Arbitrary bytes through the other parsers of untrusted text: path/query components (`plausible_id`,
//! `uri_component_is_hostile`), the catalog feed and attributes (JSONL) and the `Stripe-Signature` header.
//! Nothing may panic; an id is never both plausible and hostile; a feed refusal names a JSONPath.
#![no_main]

use acp_merchant::{catalog, config::Secret, input_limits, psp::stripe_signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert!(!(input_limits::plausible_id(&text) && input_limits::uri_component_is_hostile(&text)));
    match catalog::parse_products(&text) {
        Ok(products) => assert!(products.iter().all(|p| catalog::feed::check(p).is_ok())),
        Err(catalog::CatalogError::Line { param, .. }) => assert!(param.starts_with('$'), "{param}"),
        Err(e) => panic!("parsing touched the database: {e}"),
    }
    let _ = catalog::parse_attributes(&text);
    let (header, payload) = text.split_once('\n').unwrap_or((&text, ""));
    let secrets = [Secret::new("whsec_fuzz")];
    let verdict = stripe_signature::verify(payload.as_bytes(), Some(header), &secrets, 300, 1_700_000_000);
    assert!(verdict.is_err(), "a random header verified: {header}");
});
