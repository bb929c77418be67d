//! Standard Webhooks signing (<https://www.standardwebhooks.com>), for the merchant's own endpoints: headers
//! `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `id.timestamp.body`, keyed by the base64 part of a `whsec_…` secret, so receivers verify with the published
//! libraries.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::Mac;

const PREFIX: &str = "whsec_";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a signing secret is `whsec_` followed by base64 of 24 to 64 bytes")]
    Malformed,
}

/// The key bytes of a `whsec_…` secret.
pub fn key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix(PREFIX).ok_or(SecretError::Malformed)?;
    let key = STANDARD.decode(encoded).map_err(|_| SecretError::Malformed)?;
    if (24..=64).contains(&key.len()) {
        Ok(key)
    } else {
        Err(SecretError::Malformed)
    }
}

/// A new random secret: 32 bytes from the operating system's generator.
pub fn generate_secret() -> String {
    let bytes: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|u| u.into_bytes())
        .collect();
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// The `webhook-signature` value for `body` sent as message `id` at unix time `timestamp`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mac = crate::crypto::hmac_sha256(
        key,
        &[id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Whether any `v1` signature of a `webhook-signature` header (space-separated) matches, compared in constant
/// time; for tests and integrators.
pub fn verify(key: &[u8], id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|encoded| {
        STANDARD.decode(encoded).is_ok_and(|given| {
            crate::crypto::hmac_sha256(
                key,
                &[id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body],
            )
            .verify_slice(&given)
            .is_ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector the Standard Webhooks reference libraries publish.
    #[test]
    fn the_published_test_vector_reproduces() {
        let key = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("the vector's secret");
        let (id, timestamp, body) = (
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sign(&key, id, timestamp, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(verify(
            &key,
            id,
            timestamp,
            body,
            "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        assert!(!verify(
            &key,
            id,
            timestamp + 1,
            body,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
    }

    #[test]
    fn secrets_are_whsec_base64_of_enough_bytes() {
        let fresh = generate_secret();
        assert_eq!(key(&fresh).map(|k| k.len()), Ok(32));
        assert_ne!(fresh, generate_secret());
        assert_eq!(key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(SecretError::Malformed));
        assert_eq!(key("whsec_c2hvcnQ="), Err(SecretError::Malformed), "too short");
        assert_eq!(key("whsec_not base64!"), Err(SecretError::Malformed));
    }
}
