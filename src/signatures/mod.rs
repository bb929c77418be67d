//! Request signatures per agent (ACP RFC: agents SHOULD sign requests; DIGEST §2.4, §14 item 14).
//!
//! An agent signs `timestamp "." canonical_body` — or, when it chose `method_path_body`,
//! `timestamp "." METHOD "." path_with_query "." canonical_body` — where `timestamp` is the `Timestamp` header
//! byte for byte and `canonical_body` is the RFC 8785 (JCS) form of the JSON body (the empty string for an empty
//! body). The signature travels base64url-encoded in the `Signature` header. Algorithms: Ed25519 and ES256 (P-256
//! ECDSA over SHA-256) with the agent's public key, or HMAC-SHA256 with a shared secret.
//!
//! This module is the domain side: parsing keys, building the message, verifying and (for the `sign` command)
//! signing. The HTTP layer is `crate::http::signed`; storage is [`store`].

pub mod store;

use std::fmt;

use base64::{
    Engine,
    engine::{
        DecodePaddingMode,
        general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD},
    },
};
use chrono::{DateTime, Utc};
use hmac::Mac;

use crate::config::Secret;

/// The algorithms an agent can sign with, as published in the README and the OpenAPI documents.
pub const ALGORITHMS: [&str; 3] = ["ed25519", "es256", "hmac-sha256"];

/// Shortest HMAC secret accepted: 32 characters, the output size of SHA-256.
pub const MIN_HMAC_SECRET_CHARS: usize = 32;

/// Decodes base64url with or without `=` padding (agents differ; both mean the same bytes).
const BASE64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether an agent's requests must, may or need not be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Off,
    /// Unsigned requests pass; a request that carries a signature must carry a good one.
    Optional,
    Required,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "off" => Some(Self::Off),
            "optional" => Some(Self::Optional),
            "required" => Some(Self::Required),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ed25519,
    Es256,
    HmacSha256,
}

impl Algorithm {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ed25519" => Some(Self::Ed25519),
            "es256" => Some(Self::Es256),
            "hmac-sha256" => Some(Self::HmacSha256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::Es256 => "es256",
            Self::HmacSha256 => "hmac-sha256",
        }
    }
}

/// What the signed message covers besides the timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Covers {
    #[default]
    Body,
    MethodPathBody,
}

impl Covers {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "body" => Some(Self::Body),
            "method_path_body" => Some(Self::MethodPathBody),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Body => "body",
            Self::MethodPathBody => "method_path_body",
        }
    }
}

/// The key a signature is checked with. The HMAC secret is a [`Secret`], so `Debug` never shows it.
#[derive(Clone)]
pub enum VerifyKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    Es256(p256::ecdsa::VerifyingKey),
    Hmac(Secret),
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ed25519(_) => "VerifyKey::Ed25519",
            Self::Es256(_) => "VerifyKey::Es256",
            Self::Hmac(_) => "VerifyKey::Hmac([redacted])",
        })
    }
}

impl VerifyKey {
    /// Reads an agent's key for `algorithm`: a public key as PEM (SPKI, `-----BEGIN PUBLIC KEY-----`) or base64url
    /// raw bytes (Ed25519: 32 bytes; P-256: the SEC1 point, 33 or 65 bytes), or the HMAC shared secret itself.
    /// The HMAC secret is taken byte for byte (no trimming: both sides must hold the same bytes).
    pub fn parse(algorithm: Algorithm, text: &str) -> Result<Self, KeyError> {
        match algorithm {
            Algorithm::Ed25519 => parse_ed25519(text.trim()).map(Self::Ed25519),
            Algorithm::Es256 => parse_es256(text.trim()).map(Self::Es256),
            Algorithm::HmacSha256 if text.chars().count() < MIN_HMAC_SECRET_CHARS => Err(KeyError(format!(
                "an HMAC secret needs at least {MIN_HMAC_SECRET_CHARS} characters"
            ))),
            Algorithm::HmacSha256 => Ok(Self::Hmac(Secret::new(text))),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::Ed25519,
            Self::Es256(_) => Algorithm::Es256,
            Self::Hmac(_) => Algorithm::HmacSha256,
        }
    }

    /// Whether `signature` signs `message` under this key (HMAC compared in constant time; Ed25519 strictly;
    /// ES256 as 64 bytes `r || s` or DER).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ed25519_dalek::Verifier as _;
        match self {
            Self::Ed25519(key) => {
                ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| key.verify_strict(message, &s).is_ok())
            }
            Self::Es256(key) => p256::ecdsa::Signature::from_slice(signature)
                .or_else(|_| p256::ecdsa::Signature::from_der(signature))
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
            Self::Hmac(secret) => crate::crypto::hmac_sha256(secret.expose().as_bytes(), &[message])
                .verify_slice(signature)
                .is_ok(),
        }
    }
}

/// A key that does not parse, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn is_pem(text: &str) -> bool {
    text.starts_with("-----BEGIN")
}

fn raw_bytes(text: &str) -> Result<Vec<u8>, KeyError> {
    BASE64URL_LENIENT
        .decode(text)
        .map_err(|_| KeyError("the key is neither PEM nor base64url".into()))
}

fn parse_ed25519(text: &str) -> Result<ed25519_dalek::VerifyingKey, KeyError> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    if is_pem(text) {
        return ed25519_dalek::VerifyingKey::from_public_key_pem(text)
            .map_err(|_| KeyError("not an Ed25519 public key in PEM (SPKI)".into()));
    }
    let bytes: [u8; 32] = raw_bytes(text)?
        .try_into()
        .map_err(|_| KeyError("a raw Ed25519 public key is 32 bytes".into()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError("not a valid Ed25519 public key".into()))
}

fn parse_es256(text: &str) -> Result<p256::ecdsa::VerifyingKey, KeyError> {
    use p256::pkcs8::DecodePublicKey as _;
    if is_pem(text) {
        return p256::ecdsa::VerifyingKey::from_public_key_pem(text)
            .map_err(|_| KeyError("not a P-256 public key in PEM (SPKI)".into()));
    }
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&raw_bytes(text)?)
        .map_err(|_| KeyError("a raw P-256 public key is a SEC1 point (33 or 65 bytes) on the curve".into()))
}

/// One agent's signature policy.
#[derive(Debug, Clone, Default)]
pub struct AgentSignature {
    pub mode: Mode,
    pub covers: Covers,
    /// Always present unless the mode is `off`.
    pub key: Option<VerifyKey>,
}

/// Why a request's signature was refused; each message is the `message` of the 401 `invalid_signature`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Missing Signature header")]
    MissingSignature,
    #[error("Missing Timestamp header")]
    MissingTimestamp,
    #[error("Malformed Timestamp header: expected an RFC 3339 date-time such as 2026-01-01T00:00:00Z")]
    MalformedTimestamp,
    #[error("Timestamp is outside the ±{0} s window around the server's clock")]
    OutsideWindow(u64),
    #[error("Signature header is not valid base64url")]
    BadBase64,
    #[error("Signature does not verify")]
    DoesNotVerify,
}

/// The two signature headers as received (not yet checked).
#[derive(Debug, Clone, Copy, Default)]
pub struct SignatureHeaders<'a> {
    pub signature: Option<&'a str>,
    pub timestamp: Option<&'a str>,
}

impl SignatureHeaders<'_> {
    pub fn absent(&self) -> bool {
        self.signature.is_none() && self.timestamp.is_none()
    }
}

/// The header checks that need no body: both present, the timestamp well formed and fresh, the signature
/// decodable. Returns the decoded signature.
pub fn precheck(
    headers: SignatureHeaders<'_>,
    now: DateTime<Utc>,
    tolerance_secs: u64,
) -> Result<Vec<u8>, SignatureError> {
    let signature = headers.signature.ok_or(SignatureError::MissingSignature)?;
    let timestamp = headers.timestamp.ok_or(SignatureError::MissingTimestamp)?;
    let at = DateTime::parse_from_rfc3339(timestamp).map_err(|_| SignatureError::MalformedTimestamp)?;
    // Milliseconds, so a timestamp 300.9 s away is outside a 300 s window (whole seconds would truncate it in).
    let skew_ms = now.signed_duration_since(at).num_milliseconds().unsigned_abs();
    if skew_ms > tolerance_secs.saturating_mul(1000) {
        return Err(SignatureError::OutsideWindow(tolerance_secs));
    }
    BASE64URL_LENIENT
        .decode(signature.trim())
        .map_err(|_| SignatureError::BadBase64)
}

/// The RFC 8785 canonical form of a JSON body; the empty body is the empty string.
pub fn canonical_body(body: &[u8]) -> Result<String, serde_json::Error> {
    if body.is_empty() {
        return Ok(String::new());
    }
    let value: serde_json::Value = serde_json::from_slice(body)?;
    serde_json_canonicalizer::to_string(&value)
}

/// The request parts a signature can cover.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub timestamp: &'a str,
    pub method: &'a str,
    /// The path with its query string, as sent (`/checkout_sessions/cs_1?x=1`).
    pub path_and_query: &'a str,
    pub canonical_body: &'a str,
}

/// The exact bytes that are signed.
pub fn message(covers: Covers, signed: &Signed<'_>) -> Vec<u8> {
    let text = match covers {
        Covers::Body => format!("{}.{}", signed.timestamp, signed.canonical_body),
        Covers::MethodPathBody => format!(
            "{}.{}.{}.{}",
            signed.timestamp,
            signed.method.to_ascii_uppercase(),
            signed.path_and_query,
            signed.canonical_body
        ),
    };
    text.into_bytes()
}

/// A signing key, for the `sign` command and for tests: private Ed25519 and P-256 keys as PKCS#8 PEM or base64url
/// raw 32 bytes, or the HMAC secret.
pub enum SignKey {
    Ed25519(ed25519_dalek::SigningKey),
    Es256(p256::ecdsa::SigningKey),
    Hmac(Secret),
}

impl SignKey {
    /// Key files usually end with a newline: it is not part of an HMAC secret.
    pub fn parse(algorithm: Algorithm, text: &str) -> Result<Self, KeyError> {
        match algorithm {
            Algorithm::Ed25519 => parse_ed25519_private(text.trim()).map(Self::Ed25519),
            Algorithm::Es256 => parse_es256_private(text.trim()).map(Self::Es256),
            Algorithm::HmacSha256 => Ok(Self::Hmac(Secret::new(text.trim_end_matches(['\r', '\n'])))),
        }
    }

    /// The signature of `message`, base64url without padding (ES256 as 64 bytes `r || s`).
    pub fn sign(&self, message: &[u8]) -> String {
        use ed25519_dalek::Signer as _;
        let bytes = match self {
            Self::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
            Self::Es256(key) => {
                let signature: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(key, message);
                signature.to_bytes().to_vec()
            }
            Self::Hmac(secret) => crate::crypto::hmac_sha256(secret.expose().as_bytes(), &[message])
                .finalize()
                .into_bytes()
                .to_vec(),
        };
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

fn parse_ed25519_private(text: &str) -> Result<ed25519_dalek::SigningKey, KeyError> {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    if is_pem(text) {
        return ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map_err(|_| KeyError("not an Ed25519 private key in PKCS#8 PEM".into()));
    }
    let seed: [u8; 32] = raw_bytes(text)?
        .try_into()
        .map_err(|_| KeyError("a raw Ed25519 private key is 32 bytes".into()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

fn parse_es256_private(text: &str) -> Result<p256::ecdsa::SigningKey, KeyError> {
    use p256::pkcs8::DecodePrivateKey as _;
    if is_pem(text) {
        return p256::ecdsa::SigningKey::from_pkcs8_pem(text)
            .map_err(|_| KeyError("not a P-256 private key in PKCS#8 PEM".into()));
    }
    p256::ecdsa::SigningKey::from_slice(&raw_bytes(text)?)
        .map_err(|_| KeyError("a raw P-256 private key is a 32-byte scalar".into()))
}

/// What the `sign` command (and a test agent) sends: the two header values for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub signature: String,
    pub timestamp: String,
}

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("key: {0}")]
    Key(#[from] KeyError),
    #[error("the body is not JSON: {0}")]
    Body(#[from] serde_json::Error),
}

/// Signs one request as an agent would: `method_path` set means the signature covers method and path too.
pub fn sign_request(
    key: &SignKey,
    timestamp: &str,
    method_path: Option<(&str, &str)>,
    body: &[u8],
) -> Result<SignedHeaders, SignError> {
    let canonical = canonical_body(body)?;
    let (covers, method, path_and_query) = match method_path {
        Some((method, path)) => (Covers::MethodPathBody, method, path),
        None => (Covers::Body, "", ""),
    };
    let signed = Signed {
        timestamp,
        method,
        path_and_query,
        canonical_body: &canonical,
    };
    Ok(SignedHeaders {
        signature: key.sign(&message(covers, &signed)),
        timestamp: timestamp.to_owned(),
    })
}

/// `Timestamp` header value for `now`: RFC 3339 in UTC, whole seconds.
pub fn timestamp_now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;
