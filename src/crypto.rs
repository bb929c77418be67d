//! HMAC-SHA256, keyed once here for every signer and verifier in the server (Stripe and merchant webhook
//! signatures, agents' HMAC request signatures, order-page tokens, dashboard cookies).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The HMAC-SHA256 state over the concatenation of `parts` under `key`: `finalize` it to sign, or compare a
/// presented tag in constant time with `verify_slice` / `verify_truncated_left`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (long keys are hashed first), so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_concatenated_and_any_key_length_works() {
        let whole = hmac_sha256(b"key", &[b"t.body"]).finalize().into_bytes();
        let split = hmac_sha256(b"key", &[b"t", b".", b"body"]).finalize().into_bytes();
        assert_eq!(whole, split);
        let long_key = [7u8; 200];
        assert!(
            hmac_sha256(&long_key, &[b"x"])
                .verify_slice(&hmac_sha256(&long_key, &[b"x"]).finalize().into_bytes())
                .is_ok()
        );
        assert!(hmac_sha256(b"", &[]).verify_slice(&[0u8; 32]).is_err());
    }
}
