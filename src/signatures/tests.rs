use chrono::{TimeZone, Utc};

use super::*;

const README: &str = include_str!("../../README.md");

/// The value after `label` on its line of the README's worked example (between the signature-example markers).
fn readme_value(label: &str) -> String {
    let start = README
        .find("<!-- signature-example -->")
        .expect("README has the signature example");
    let example = &README[start..];
    let end = example.find("<!-- /signature-example -->").expect("example end marker");
    example[..end]
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("README example has no `{label}` line"))
}

#[test]
fn readme_worked_example_is_what_the_code_computes() {
    let key = SignKey::parse(Algorithm::HmacSha256, &readme_value("key:")).unwrap();
    let timestamp = readme_value("timestamp:");
    let body = readme_value("body:");
    let canonical = canonical_body(body.as_bytes()).unwrap();
    assert_eq!(canonical, readme_value("canonical:"));
    let signed = Signed {
        timestamp: &timestamp,
        method: "POST",
        path_and_query: "/checkout_sessions",
        canonical_body: &canonical,
    };
    let plain = message(Covers::Body, &signed);
    assert_eq!(String::from_utf8(plain.clone()).unwrap(), readme_value("message:"));
    assert_eq!(key.sign(&plain), readme_value("signature:"));
    let with_path = message(Covers::MethodPathBody, &signed);
    assert_eq!(
        String::from_utf8(with_path.clone()).unwrap(),
        readme_value("message (method_path_body):")
    );
    assert_eq!(key.sign(&with_path), readme_value("signature (method_path_body):"));
    // And the verifier agrees with the signer on the published value.
    let verify = VerifyKey::parse(Algorithm::HmacSha256, &readme_value("key:")).unwrap();
    let published = BASE64URL_LENIENT.decode(readme_value("signature:")).unwrap();
    assert!(verify.verifies(&plain, &published));
}

#[test]
fn canonical_body_sorts_keys_strips_whitespace_and_keeps_the_empty_body_empty() {
    assert_eq!(canonical_body(b"").unwrap(), "");
    assert_eq!(
        canonical_body(b"{ \"b\" : 1.0, \"a\": [2, 1] }").unwrap(),
        r#"{"a":[2,1],"b":1}"#
    );
    assert!(canonical_body(b"{not json").is_err());
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn headers<'a>(signature: Option<&'a str>, timestamp: Option<&'a str>) -> SignatureHeaders<'a> {
    SignatureHeaders { signature, timestamp }
}

#[test]
fn precheck_names_each_problem() {
    let ts = "2026-01-01T00:00:00Z";
    assert_eq!(
        precheck(headers(None, Some(ts)), now(), 300),
        Err(SignatureError::MissingSignature)
    );
    assert_eq!(
        precheck(headers(Some("AAAA"), None), now(), 300),
        Err(SignatureError::MissingTimestamp)
    );
    assert_eq!(
        precheck(headers(Some("AAAA"), Some("yesterday")), now(), 300),
        Err(SignatureError::MalformedTimestamp)
    );
    assert_eq!(
        precheck(headers(Some("AAAA"), Some("2025-12-31T23:54:59Z")), now(), 300),
        Err(SignatureError::OutsideWindow(300))
    );
    assert_eq!(
        precheck(headers(Some("AAAA"), Some("2026-01-01T00:05:01Z")), now(), 300),
        Err(SignatureError::OutsideWindow(300))
    );
    assert_eq!(
        precheck(headers(Some("not base64!"), Some(ts)), now(), 300),
        Err(SignatureError::BadBase64)
    );
    assert_eq!(
        precheck(headers(Some("AAAA"), Some("2025-12-31T23:54:59.500Z")), now(), 300),
        Err(SignatureError::OutsideWindow(300)),
        "300.5 s is outside a 300 s window"
    );
    // The window's edges are inside; another offset naming the same instant is the same time.
    assert!(precheck(headers(Some("AAAA"), Some("2025-12-31T23:55:00Z")), now(), 300).is_ok());
    assert!(precheck(headers(Some("AAAA"), Some("2026-01-01T01:00:00+01:00")), now(), 300).is_ok());
}

#[test]
fn padded_and_unpadded_base64url_decode_alike() {
    let ts = "2026-01-01T00:00:00Z";
    let unpadded = precheck(headers(Some("_-8"), Some(ts)), now(), 300).unwrap();
    let padded = precheck(headers(Some("_-8="), Some(ts)), now(), 300).unwrap();
    assert_eq!(unpadded, vec![0xff, 0xef]);
    assert_eq!(padded, unpadded);
}

/// 32 random bytes without a random-number crate: two v4 UUIDs.
fn random_32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

#[test]
fn ed25519_and_es256_keys_parse_as_pem_or_raw_and_verify_only_their_own_signatures() {
    use ed25519_dalek::pkcs8::{EncodePublicKey as _, spki::der::pem::LineEnding};
    let msg = b"2026-01-01T00:00:00Z.{}";

    let ed = ed25519_dalek::SigningKey::from_bytes(&random_32());
    let ed_pem = ed.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    let ed_raw = URL_SAFE_NO_PAD.encode(ed.verifying_key().as_bytes());
    let ed_sig = URL_SAFE_NO_PAD.decode(SignKey::Ed25519(ed.clone()).sign(msg)).unwrap();
    for text in [&ed_pem, &ed_raw] {
        let key = VerifyKey::parse(Algorithm::Ed25519, text).unwrap();
        assert!(key.verifies(msg, &ed_sig));
        assert!(!key.verifies(b"2026-01-01T00:00:00Z.{\"a\":1}", &ed_sig));
    }

    let ec = p256::ecdsa::SigningKey::from_slice(&random_32()).unwrap();
    let ec_pem = ec.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    let ec_raw = URL_SAFE_NO_PAD.encode(ec.verifying_key().to_encoded_point(true).as_bytes());
    let ec_sig = URL_SAFE_NO_PAD.decode(SignKey::Es256(ec.clone()).sign(msg)).unwrap();
    let ec_der = p256::ecdsa::Signature::from_slice(&ec_sig).unwrap().to_der();
    for text in [&ec_pem, &ec_raw] {
        let key = VerifyKey::parse(Algorithm::Es256, text).unwrap();
        assert!(key.verifies(msg, &ec_sig));
        assert!(key.verifies(msg, ec_der.as_bytes()), "DER signatures are accepted too");
        assert!(!key.verifies(msg, &ed_sig));
    }
    // A key of the other algorithm, or text that is no key, does not parse.
    assert!(VerifyKey::parse(Algorithm::Ed25519, &ec_pem).is_err());
    assert!(VerifyKey::parse(Algorithm::Es256, &ed_raw).is_err());
    assert!(VerifyKey::parse(Algorithm::Ed25519, "not a key").is_err());
    assert!(VerifyKey::parse(Algorithm::HmacSha256, "short").is_err());
}

#[test]
fn hmac_secrets_never_show_in_debug_output() {
    let key = VerifyKey::parse(Algorithm::HmacSha256, "a_secret_that_must_not_be_printed_ever").unwrap();
    let policy = AgentSignature {
        mode: Mode::Required,
        covers: Covers::Body,
        key: Some(key),
    };
    assert!(!format!("{policy:?}").contains("must_not_be_printed"));
}
