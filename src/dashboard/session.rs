//! The dashboard's login cookie: `<expiry unix seconds>.<base64url(HMAC-SHA256(key, "acp-dashboard:" expiry))>`.
//! The key is the admin token itself, so nobody without it can mint or extend a cookie, and rotating the admin
//! token logs every dashboard session out. The cookie only ever authorizes the dashboard's GETs.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The cookie's name.
pub const COOKIE_NAME: &str = "acp_dashboard";
/// The only path the cookie is sent to.
pub const COOKIE_PATH: &str = "/admin";
/// Separates the signed message from other uses of the admin token as a key.
const CONTEXT: &str = "acp-dashboard:";

fn keyed(key: &str, expiry: &str) -> Hmac<Sha256> {
    crate::crypto::hmac_sha256(key.as_bytes(), &[CONTEXT.as_bytes(), expiry.as_bytes()])
}

/// A cookie value valid until `expires`, signed with `key`.
pub fn issue(key: &str, expires: DateTime<Utc>) -> Option<String> {
    let at = expires.timestamp();
    let signature = keyed(key, &at.to_string()).finalize().into_bytes();
    Some(format!("{at}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// Whether `value` was issued with `key` and has not expired at `now` (the MAC is checked in constant time).
pub fn verify(key: &str, value: &str, now: DateTime<Utc>) -> bool {
    let Some((expiry, mac)) = value.split_once('.') else {
        return false;
    };
    let Ok(expires) = expiry.parse::<i64>() else {
        return false;
    };
    let Ok(presented) = URL_SAFE_NO_PAD.decode(mac) else {
        return false;
    };
    // `expiry` must be the canonical rendering, so one expiry has exactly one valid cookie.
    expires.to_string() == expiry && keyed(key, expiry).verify_slice(&presented).is_ok() && now.timestamp() < expires
}

/// The `Set-Cookie` value of a login: Secure, HttpOnly, SameSite=Strict, limited to `/admin` and to `max_age`.
pub fn set_cookie(value: &str, max_age_secs: u64) -> String {
    format!("{COOKIE_NAME}={value}; Max-Age={max_age_secs}; Path={COOKIE_PATH}; Secure; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Max-Age=0; Path={COOKIE_PATH}; Secure; HttpOnly; SameSite=Strict")
}

/// The dashboard cookie's value among the request's `Cookie` headers.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "admin-token-0123456789abcdef";

    #[test]
    fn an_issued_cookie_verifies_until_it_expires() {
        let now = Utc::now();
        let value = issue(KEY, now + chrono::Duration::seconds(60)).unwrap();
        assert!(verify(KEY, &value, now));
        assert!(!verify(KEY, &value, now + chrono::Duration::seconds(61)));
    }

    #[test]
    fn another_key_a_changed_expiry_or_garbage_never_verifies() {
        let now = Utc::now();
        let expires = now + chrono::Duration::seconds(60);
        let value = issue(KEY, expires).unwrap();
        assert!(!verify("another-admin-token-0123456789", &value, now));
        let (_, mac) = value.split_once('.').unwrap();
        let extended = format!("{}.{mac}", expires.timestamp() + 3600);
        assert!(!verify(KEY, &extended, now));
        let padded = format!("0{}.{mac}", expires.timestamp());
        assert!(!verify(KEY, &padded, now));
        for junk in ["", ".", "123", "abc.def", "9999999999."] {
            assert!(!verify(KEY, junk, now), "{junk}");
        }
    }

    #[test]
    fn the_cookie_carries_every_protective_flag() {
        let header = set_cookie("v", 43200);
        for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=43200"] {
            assert!(header.contains(flag), "{header}");
        }
    }
}
