//! `Merchant-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + raw body)>` (ACP 2026-04-17,
//! Stripe-compatible). The key is the secret's UTF-8 bytes; the hex is lowercase.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Tolerance receivers apply to `t` (ACP recommends 300 s).
pub const TOLERANCE_SECS: u64 = 300;

fn mac(secret: &str, t: u64, body: &[u8]) -> Hmac<Sha256> {
    crate::crypto::hmac_sha256(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body])
}

/// The header value for `body` signed at unix time `t`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let digest = mac(secret, t, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("Merchant-Signature must be t=<timestamp>,v1=<64 hex>")]
    Malformed,
    #[error("timestamp outside the allowed window")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

/// Verifies a header against `body` at unix time `now`: well-formed, `|now − t| ≤ tolerance`, and a
/// constant-time HMAC comparison.
pub fn verify(secret: &str, header: &str, body: &[u8], now: u64, tolerance: u64) -> Result<(), VerifyError> {
    let (t, v1) = parse(header).ok_or(VerifyError::Malformed)?;
    if now.abs_diff(t) > tolerance {
        return Err(VerifyError::Stale);
    }
    mac(secret, t, body)
        .verify_slice(&v1)
        .map_err(|_| VerifyError::Mismatch)
}

fn parse(header: &str) -> Option<(u64, Vec<u8>)> {
    let (t_part, v_part) = header.trim().split_once(',')?;
    let t = t_part.strip_prefix("t=")?;
    let hex = v_part.strip_prefix("v1=")?;
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) || hex.len() != 64 {
        return None;
    }
    let bytes = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((t.parse().ok()?, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed vectors, computed independently (Python's hmac module) from secret, timestamp and body.
    const VECTORS: &[(&str, u64, &str, &str)] = &[
        (
            "whsec_test",
            1_700_000_000,
            r#"{"a":1}"#,
            "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789",
        ),
        (
            "whsec_rotated_0123456789",
            1_763_900_000,
            r#"{"type":"order_create","data":{"id":"ord_1"}}"#,
            "b2e3e6914108dc91a401e7df510b86ee22294c6e80fd624cca8fe26622179c9e",
        ),
        (
            "s",
            0,
            "",
            "2572e102ebbc88d57bc0ef48471ee28bb7fc8c6e9c0558b3c8e5d276f84ac9c3",
        ),
    ];

    #[test]
    fn signatures_match_the_fixed_vectors() {
        for (secret, t, body, hex) in VECTORS {
            assert_eq!(sign(secret, *t, body.as_bytes()), format!("t={t},v1={hex}"));
            assert_eq!(
                verify(secret, &format!("t={t},v1={hex}"), body.as_bytes(), *t, TOLERANCE_SECS),
                Ok(())
            );
        }
    }

    #[test]
    fn verification_refuses_tampering_staleness_and_garbage() {
        let header = sign("whsec_test", 1_700_000_000, b"{}");
        assert_eq!(
            verify("whsec_test", &header, b"{ }", 1_700_000_000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("other", &header, b"{}", 1_700_000_000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("whsec_test", &header, b"{}", 1_700_000_301, 300),
            Err(VerifyError::Stale)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", &format!("t=1,v1={}", "g".repeat(64))] {
            assert_eq!(
                verify("whsec_test", bad, b"{}", 1, 300),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
        // Uppercase hex is accepted (the header regex allows it).
        let upper = header
            .replace("v1=", "V")
            .to_uppercase()
            .replace('V', "v1=")
            .replace("T=", "t=");
        assert_eq!(verify("whsec_test", &upper, b"{}", 1_700_000_000, 300), Ok(()));
    }
}
