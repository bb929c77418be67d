//! Secrets at rest: values such as webhook signing secrets are stored sealed with XChaCha20-Poly1305 under a key
//! from `ACP_SECRETS_KEYS`, never in clear.
//!
//! Stored form: `v1:<key_id>:<base64(24-byte nonce || ciphertext and tag)>`. The associated data is the value's
//! place (for example `agent_webhook_secret.secret`), so a sealed value copied into another column does not open.
//! The first configured key seals; every configured key opens, which is what makes rotation possible.

pub mod store;

use std::{fmt, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, Generate, KeyInit, Payload},
};

use crate::config::Secret;

/// The version prefix of the stored form.
const PREFIX: &str = "v1";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// The development key (id `dev`), used only outside production when `ACP_SECRETS_KEYS` is unset. It is
/// published here, so it protects nothing: production refuses to start without its own keys.
pub const DEV_SECRETS_KEYS: &str = "dev:YWNwLW1lcmNoYW50LWRldi1rZXktaW5zZWN1cmUtMDA=";
/// The same key as bytes (`acp-merchant-dev-key-insecure-00`).
const DEV_KEY: &[u8; KEY_LEN] = b"acp-merchant-dev-key-insecure-00";

/// Why `ACP_SECRETS_KEYS` was refused. Messages name key ids, never key material.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("must list at least one key as key_id:base64-32-bytes")]
    Empty,
    #[error("entry {0} is not key_id:base64-32-bytes")]
    Malformed(usize),
    #[error("key id `{0}` must be 1 to 32 letters, digits, `-` or `_`")]
    BadId(String),
    #[error("key `{0}` is not valid base64")]
    BadBase64(String),
    #[error("key `{id}` is {len} bytes; it must be exactly 32 (generate one with `openssl rand -base64 32`)")]
    WrongLength { id: String, len: usize },
    #[error("key id `{0}` appears more than once")]
    Duplicate(String),
}

/// Why a stored value did not open. Messages name key ids and places, never the value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("the stored value is not sealed (expected v1:<key_id>:<base64>)")]
    NotSealed,
    #[error("the stored value is sealed with key `{0}`, which is not configured in ACP_SECRETS_KEYS")]
    UnknownKey(String),
    #[error("the stored value is not valid v1 sealed data")]
    Malformed,
    #[error("the value sealed with key `{key_id}` does not open for `{context}` (wrong key, wrong place or tampered)")]
    Undecryptable { key_id: String, context: String },
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

struct Ring {
    /// The first configured key: it seals.
    active: Key,
    /// The other configured keys: they only open.
    older: Vec<Key>,
}

/// The configured keys; cheap to clone (shared).
#[derive(Clone)]
pub struct Keyring {
    ring: Arc<Ring>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids only: the key material never reaches a log.
        f.debug_struct("Keyring").field("key_ids", &self.key_ids()).finish()
    }
}

impl Keyring {
    /// Parses `key_id:base64-32-bytes[,key_id:base64-32-bytes...]`.
    pub fn parse(value: &str) -> Result<Self, KeyringError> {
        let mut keys: Vec<Key> = Vec::new();
        let entries = value.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let key = parse_key(index + 1, entry)?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(KeyringError::Duplicate(key.id));
            }
            keys.push(key);
        }
        let mut keys = keys.into_iter();
        let active = keys.next().ok_or(KeyringError::Empty)?;
        Ok(Self {
            ring: Arc::new(Ring {
                active,
                older: keys.collect(),
            }),
        })
    }

    /// The insecure development keyring: the key of [`DEV_SECRETS_KEYS`].
    pub fn development() -> Self {
        let key = Key {
            id: "dev".to_owned(),
            cipher: XChaCha20Poly1305::new(&(*DEV_KEY).into()),
        };
        Self {
            ring: Arc::new(Ring {
                active: key,
                older: Vec::new(),
            }),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.ring.active).chain(self.ring.older.iter())
    }

    /// The id of the key that seals.
    pub fn active_key_id(&self) -> &str {
        &self.ring.active.id
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys().map(|k| k.id.as_str()).collect()
    }

    /// Seals `plaintext` for `context` (its place, e.g. `agent_webhook_secret.secret`) with the active key and a
    /// fresh random nonce.
    pub fn seal(&self, context: &str, plaintext: &str) -> String {
        let key = &self.ring.active;
        let nonce = XNonce::generate();
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        // XChaCha20-Poly1305 refuses only messages beyond 256 GiB; secrets are a few bytes.
        let ciphertext = key
            .cipher
            .encrypt(&nonce, payload)
            .expect("XChaCha20-Poly1305 seals any message shorter than 256 GiB");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!("{PREFIX}:{}:{}", key.id, BASE64.encode(sealed))
    }

    /// Opens a value stored by [`Keyring::seal`] with the same `context`.
    pub fn open(&self, context: &str, stored: &str) -> Result<Secret, SecretsError> {
        let (key_id, data) = split_sealed(stored).ok_or(SecretsError::NotSealed)?;
        let key = self
            .keys()
            .find(|k| k.id == key_id)
            .ok_or_else(|| SecretsError::UnknownKey(key_id.to_owned()))?;
        let bytes = BASE64.decode(data).map_err(|_| SecretsError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretsError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SecretsError::Malformed)?;
        let undecryptable = || SecretsError::Undecryptable {
            key_id: key_id.to_owned(),
            context: context.to_owned(),
        };
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plaintext = key.cipher.decrypt(&nonce, payload).map_err(|_| undecryptable())?;
        String::from_utf8(plaintext)
            .map(Secret::new)
            .map_err(|_| undecryptable())
    }

    /// Whether `stored` is in the sealed form (it may still fail to open).
    pub fn is_sealed(stored: &str) -> bool {
        split_sealed(stored).is_some()
    }

    /// The id of the key `stored` was sealed with, when it is sealed.
    pub fn sealed_key_id(stored: &str) -> Option<&str> {
        split_sealed(stored).map(|(id, _)| id)
    }
}

fn split_sealed(stored: &str) -> Option<(&str, &str)> {
    let rest = stored.strip_prefix(PREFIX)?.strip_prefix(':')?;
    let (key_id, data) = rest.split_once(':')?;
    (valid_id(key_id) && !data.is_empty()).then_some((key_id, data))
}

fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_key(position: usize, entry: &str) -> Result<Key, KeyringError> {
    let (id, material) = entry.split_once(':').ok_or(KeyringError::Malformed(position))?;
    let id = id.trim();
    if !valid_id(id) {
        return Err(KeyringError::BadId(id.to_owned()));
    }
    let bytes = BASE64
        .decode(material.trim())
        .map_err(|_| KeyringError::BadBase64(id.to_owned()))?;
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| KeyringError::WrongLength {
        id: id.to_owned(),
        len: bytes.len(),
    })?;
    Ok(Key {
        id: id.to_owned(),
        cipher: XChaCha20Poly1305::new(&key.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "a:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const KEY_B: &str = "b:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const PLACE: &str = "agent_webhook_secret.secret";

    fn ring(value: &str) -> Keyring {
        Keyring::parse(value).expect("valid keyring")
    }

    #[test]
    fn sealed_values_open_with_the_same_key_and_place() {
        let keyring = ring(KEY_A);
        let stored = keyring.seal(PLACE, "whsec_hello");
        assert!(stored.starts_with("v1:a:"), "{stored}");
        assert!(!stored.contains("whsec_hello"));
        assert!(Keyring::is_sealed(&stored));
        assert_eq!(keyring.open(PLACE, &stored).unwrap().expose(), "whsec_hello");
        assert_ne!(keyring.seal(PLACE, "whsec_hello"), stored, "fresh nonce every time");
    }

    #[test]
    fn a_key_id_not_configured_is_named() {
        let stored = ring(KEY_A).seal(PLACE, "s");
        assert_eq!(
            ring(KEY_B).open(PLACE, &stored),
            Err(SecretsError::UnknownKey("a".into()))
        );
    }

    #[test]
    fn another_key_under_the_same_id_does_not_open() {
        let stored = ring(KEY_A).seal(PLACE, "s");
        let impostor = ring(&KEY_B.replace("b:", "a:"));
        assert!(matches!(
            impostor.open(PLACE, &stored),
            Err(SecretsError::Undecryptable { .. })
        ));
    }

    #[test]
    fn tampered_ciphertext_does_not_open() {
        let keyring = ring(KEY_A);
        let stored = keyring.seal(PLACE, "whsec_hello");
        let (head, data) = stored.rsplit_once(':').unwrap();
        let mut bytes = BASE64.decode(data).unwrap();
        for index in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[index] ^= 0x01;
            let tampered = format!("{head}:{}", BASE64.encode(&bytes));
            assert!(
                matches!(keyring.open(PLACE, &tampered), Err(SecretsError::Undecryptable { .. })),
                "byte {index}"
            );
            bytes[index] ^= 0x01;
        }
        assert_eq!(keyring.open(PLACE, "v1:a:AAAA"), Err(SecretsError::Malformed));
        assert_eq!(keyring.open(PLACE, "v1:a:***"), Err(SecretsError::Malformed));
    }

    #[test]
    fn a_value_moved_to_another_place_does_not_open() {
        let keyring = ring(KEY_A);
        let stored = keyring.seal("agent.webhook_secret", "s");
        assert!(matches!(
            keyring.open(PLACE, &stored),
            Err(SecretsError::Undecryptable { .. })
        ));
    }

    #[test]
    fn clear_values_are_not_sealed() {
        for clear in ["whsec_x", "v1:", "v1:a:", "v2:a:AAAA", "v1:bad id:AAAA"] {
            assert!(!Keyring::is_sealed(clear), "{clear}");
            assert_eq!(ring(KEY_A).open(PLACE, clear), Err(SecretsError::NotSealed), "{clear}");
        }
    }

    #[test]
    fn every_key_opens_and_the_first_seals() {
        let old = ring(KEY_A).seal(PLACE, "s");
        let rotated = ring(&format!("{KEY_B},{KEY_A}"));
        assert_eq!(rotated.active_key_id(), "b");
        assert_eq!(rotated.open(PLACE, &old).unwrap().expose(), "s");
        assert_eq!(Keyring::sealed_key_id(&rotated.seal(PLACE, "s")), Some("b"));
    }

    #[test]
    fn bad_keyrings_are_refused_with_their_reason() {
        assert_eq!(Keyring::parse("").unwrap_err(), KeyringError::Empty);
        assert_eq!(Keyring::parse("nocolon").unwrap_err(), KeyringError::Malformed(1));
        assert_eq!(
            Keyring::parse("k:***").unwrap_err(),
            KeyringError::BadBase64("k".into())
        );
        assert_eq!(
            Keyring::parse("k:AAAA").unwrap_err(),
            KeyringError::WrongLength { id: "k".into(), len: 3 }
        );
        assert_eq!(
            Keyring::parse(&format!("{KEY_A},{KEY_A}")).unwrap_err(),
            KeyringError::Duplicate("a".into())
        );
        assert_eq!(
            Keyring::parse("b@d:AAAA").unwrap_err(),
            KeyringError::BadId("b@d".into())
        );
    }

    #[test]
    fn the_development_keyring_is_the_documented_one() {
        let keyring = Keyring::development();
        assert_eq!(keyring.key_ids(), ["dev"]);
        let stored = keyring.seal(PLACE, "s");
        assert_eq!(ring(DEV_SECRETS_KEYS).open(PLACE, &stored).unwrap().expose(), "s");
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let shown = format!("{:?}", ring(KEY_A));
        assert!(shown.contains("\"a\""), "{shown}");
        assert!(!shown.contains("AAAA"), "{shown}");
    }
}
