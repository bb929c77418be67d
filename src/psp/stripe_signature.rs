//! Verification of Stripe's webhook signatures (https://docs.stripe.com/webhooks, "verify signatures manually").
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`: each `v1` is HMAC-SHA256 keyed with an
//! endpoint secret (`whsec_…`, the whole string is the key) over `<t>.<raw body>`. Stripe sends one `v1` per
//! active secret while a secret is being rolled, and we may hold several secrets ourselves during our own
//! rotation: a delivery is genuine when any `v1` matches any of our secrets. `v0` (test-mode legacy) is ignored.
//! The timestamp must be within the tolerance of now, either way, which bounds replays of a captured delivery.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature timestamp is {age_secs} s from now, outside the {tolerance_secs} s tolerance")]
    Stale { age_secs: i64, tolerance_secs: i64 },
    #[error("no v1 signature matches any configured endpoint secret")]
    NoMatch,
}

/// Checks `header` against `payload` and `secrets` at `now` (unix seconds).
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[Secret],
    tolerance_secs: i64,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let (timestamp, signatures) = parse(header)?;
    let age = now - timestamp;
    if age.abs() > tolerance_secs {
        return Err(SignatureError::Stale {
            age_secs: age,
            tolerance_secs,
        });
    }
    let matches = secrets.iter().any(|secret| {
        signatures
            .iter()
            .any(|candidate| signature_matches(secret.expose().as_bytes(), timestamp, payload, candidate))
    });
    if matches { Ok(()) } else { Err(SignatureError::NoMatch) }
}

/// The hex HMAC Stripe would send for `payload` at `timestamp` with `secret` (for tests and tools).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    hex(&keyed(secret.as_bytes(), timestamp, payload).finalize().into_bytes())
}

fn parse(header: &str) -> Result<(i64, Vec<Vec<u8>>), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("every element must be key=value"));
        };
        match key {
            "t" => {
                let t = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed("t is not a unix timestamp"))?;
                timestamp = Some(t);
            }
            "v1" => signatures.push(unhex(value).ok_or(SignatureError::Malformed("v1 is not hex"))?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t= element"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1= signature"));
    }
    Ok((timestamp, signatures))
}

fn keyed(secret: &[u8], timestamp: i64, payload: &[u8]) -> HmacSha256 {
    crate::crypto::hmac_sha256(secret, &[timestamp.to_string().as_bytes(), b".", payload])
}

/// Constant-time comparison (through `verify_slice`).
fn signature_matches(secret: &[u8], timestamp: i64, payload: &[u8], candidate: &[u8]) -> bool {
    keyed(secret, timestamp, payload).verify_slice(candidate).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret_0123456789";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    fn secrets(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|s| Secret::new(*s)).collect()
    }

    fn header(t: i64, signatures: &[String]) -> String {
        let mut parts = vec![format!("t={t}")];
        parts.extend(signatures.iter().map(|s| format!("v1={s}")));
        parts.join(",")
    }

    #[test]
    fn a_valid_signature_passes() {
        let h = header(1_000, &[sign(BODY, SECRET, 1_000)]);
        assert_eq!(verify(BODY, Some(&h), &secrets(&[SECRET]), 300, 1_100), Ok(()));
    }

    #[test]
    fn a_tampered_body_or_wrong_secret_fails() {
        let h = header(1_000, &[sign(BODY, SECRET, 1_000)]);
        let tampered = br#"{"id":"evt_1","type":"payment_intent.canceled"}"#;
        assert_eq!(
            verify(tampered, Some(&h), &secrets(&[SECRET]), 300, 1_000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(BODY, Some(&h), &secrets(&["whsec_other"]), 300, 1_000),
            Err(SignatureError::NoMatch)
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = header(1_001, &[sign(BODY, SECRET, 1_000)]);
        assert_eq!(
            verify(BODY, Some(&moved), &secrets(&[SECRET]), 300, 1_000),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_fail() {
        let h = header(1_000, &[sign(BODY, SECRET, 1_000)]);
        assert!(matches!(
            verify(BODY, Some(&h), &secrets(&[SECRET]), 300, 1_301),
            Err(SignatureError::Stale { age_secs: 301, .. })
        ));
        assert!(matches!(
            verify(BODY, Some(&h), &secrets(&[SECRET]), 300, 699),
            Err(SignatureError::Stale { .. })
        ));
    }

    #[test]
    fn rotation_accepts_any_secret_and_any_signature() {
        let old = "whsec_old_0000";
        let new = "whsec_new_1111";
        // Stripe rolling its secret: two v1 values, we know only the new one.
        let h = header(1_000, &[sign(BODY, old, 1_000), sign(BODY, new, 1_000)]);
        assert_eq!(verify(BODY, Some(&h), &secrets(&[new]), 300, 1_000), Ok(()));
        // Us rotating: one v1 with the old secret, we hold both.
        let h = header(1_000, &[sign(BODY, old, 1_000)]);
        assert_eq!(verify(BODY, Some(&h), &secrets(&[new, old]), 300, 1_000), Ok(()));
    }

    #[test]
    fn malformed_headers_are_named() {
        let s = secrets(&[SECRET]);
        assert_eq!(verify(BODY, None, &s, 300, 0), Err(SignatureError::Missing));
        assert!(matches!(
            verify(BODY, Some("v1=00"), &s, 300, 0),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(BODY, Some("t=1"), &s, 300, 0),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(BODY, Some("t=x,v1=00"), &s, 300, 0),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(BODY, Some("t=1,v1=zz"), &s, 300, 0),
            Err(SignatureError::Malformed(_))
        ));
    }

    /// A delivery signed by Stripe's own Python library (`scripts/stripe-signature-fixture.py`), so a mistake
    /// shared by our signer and our verifier cannot pass.
    #[test]
    fn a_signature_made_by_stripes_library_verifies() {
        let fixture: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/stripe/webhook_signed_by_stripe_python.json"
        ))
        .expect("fixture is JSON");
        let payload = fixture["payload"].as_str().expect("payload");
        let header = fixture["header"].as_str().expect("header");
        let secret = fixture["secret"].as_str().expect("secret");
        let timestamp = fixture["timestamp"].as_i64().expect("timestamp");
        assert_eq!(
            verify(payload.as_bytes(), Some(header), &secrets(&[secret]), 300, timestamp),
            Ok(())
        );
        assert!(header.contains(&sign(payload.as_bytes(), secret, timestamp)));
        let mut tampered = payload.to_owned();
        tampered.push(' ');
        assert_eq!(
            verify(tampered.as_bytes(), Some(header), &secrets(&[secret]), 300, timestamp),
            Err(SignatureError::NoMatch)
        );
    }
}
