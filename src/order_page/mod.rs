//! The buyer's order page (issue 13): the order's `permalink_url` opens a page this server serves,
//! `{public_base_url}/orders/{order_id}?t={token}`, or the merchant's own page through
//! `ACP_ORDER_PAGE_URL_TEMPLATE`. The token is base64url(HMAC-SHA256(`ACP_ORDER_PAGE_KEY`, order id)) truncated to
//! 128 bits: without the key nobody can derive another order's link, so order ids cannot be enumerated.

pub mod page;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;

use crate::config::Secret;

/// The published development key: development uses it when none is set; production refuses it.
pub const DEVELOPMENT_KEY: &str = "dev-order-page-key-published-not-secret";
/// Shortest key production accepts (HMAC keys below the hash's block size gain nothing by being short).
const MIN_PRODUCTION_KEY_LEN: usize = 32;
/// 128 bits of the HMAC: 22 base64url characters, far beyond guessing.
const TOKEN_BYTES: usize = 16;

/// The validated order-page settings (`ACP_ORDER_PAGE_*`, `ACP_SUPPORT_*`).
#[derive(Debug, Clone)]
pub struct OrderPageSettings {
    pub key: Secret,
    /// The merchant's own order page, with `{order_id}` (and usually `{token}`) placeholders.
    pub url_template: Option<String>,
    pub support_email: Option<String>,
    pub support_url: Option<Url>,
}

/// A setting (its key) and what is wrong with it; config.rs words it with the environment variable.
pub type SettingProblem = (&'static str, String);

impl OrderPageSettings {
    pub fn parse(
        key: Option<Secret>,
        url_template: Option<&str>,
        support_email: &str,
        support_url: &str,
        production: bool,
    ) -> Result<Self, SettingProblem> {
        let key = parse_key(key, production)?;
        let url_template = url_template
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| check_template(t, production).map(|()| t.to_owned()))
            .transpose()?;
        let support_email = Some(support_email.trim()).filter(|e| !e.is_empty()).map(str::to_owned);
        if let Some(email) = &support_email
            && !looks_like_email(email)
        {
            return Err(("support_email", format!("`{email}` is not an e-mail address")));
        }
        let support_url = Some(support_url.trim())
            .filter(|u| !u.is_empty())
            .map(|u| match Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
                _ => Err(("support_url", format!("`{u}` must be an http(s) URL with a host"))),
            })
            .transpose()?;
        Ok(Self {
            key,
            url_template,
            support_email,
            support_url,
        })
    }
}

fn parse_key(key: Option<Secret>, production: bool) -> Result<Secret, SettingProblem> {
    match key.filter(|k| !k.expose().is_empty()) {
        None if production => Err((
            "order_page_key",
            "required in production (generate one with `openssl rand -base64 32`)".into(),
        )),
        None => Ok(Secret::new(DEVELOPMENT_KEY)),
        Some(k) if production && k.expose() == DEVELOPMENT_KEY => Err((
            "order_page_key",
            "the published development key is refused in production".into(),
        )),
        Some(k) if production && k.expose().len() < MIN_PRODUCTION_KEY_LEN => Err((
            "order_page_key",
            format!("must be at least {MIN_PRODUCTION_KEY_LEN} characters in production"),
        )),
        Some(k) => Ok(k),
    }
}

fn check_template(template: &str, production: bool) -> Result<(), SettingProblem> {
    let problem = |p: String| Err(("order_page_url_template", p));
    if !template.contains("{order_id}") {
        return problem("must contain the `{order_id}` placeholder".into());
    }
    let sample = fill(template, "ord_sample", "token");
    let url = match Url::parse(&sample) {
        Ok(url) if url.host().is_some() => url,
        _ => {
            return problem(format!(
                "`{template}` is not an absolute URL once its placeholders are filled"
            ));
        }
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if !production => Ok(()),
        "http" => problem("must be https in production".into()),
        other => problem(format!("unsupported scheme `{other}`")),
    }
}

fn looks_like_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty() && domain.contains('.') && !value.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
}

fn fill(template: &str, order_id: &str, token: &str) -> String {
    template.replace("{order_id}", order_id).replace("{token}", token)
}

/// Builds permalinks and checks the tokens they carry.
#[derive(Debug, Clone)]
pub struct OrderLinks {
    key: Secret,
    base: String,
    template: Option<String>,
}

impl OrderLinks {
    pub fn new(settings: &OrderPageSettings, public_base_url: &Url) -> Self {
        Self {
            key: settings.key.clone(),
            base: public_base_url.as_str().trim_end_matches('/').to_owned(),
            template: settings.url_template.clone(),
        }
    }

    /// The link handed to the buyer (through the agent) for `order_id`.
    pub fn permalink(&self, order_id: &str) -> String {
        let id: String = url::form_urlencoded::byte_serialize(order_id.as_bytes()).collect();
        let token = self.token(order_id);
        match &self.template {
            Some(template) => fill(template, &id, &token),
            None => format!("{}/orders/{id}?t={token}", self.base),
        }
    }

    /// base64url of the first 128 bits of HMAC-SHA256(key, order id).
    pub fn token(&self, order_id: &str) -> String {
        let mac = self.mac(order_id).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&mac[..TOKEN_BYTES])
    }

    /// Whether `candidate` is `order_id`'s token, compared in constant time (`verify_truncated_left`).
    pub fn token_matches(&self, order_id: &str, candidate: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(candidate) else {
            return false;
        };
        bytes.len() == TOKEN_BYTES && self.mac(order_id).verify_truncated_left(&bytes).is_ok()
    }

    fn mac(&self, order_id: &str) -> Hmac<Sha256> {
        crate::crypto::hmac_sha256(self.key.expose().as_bytes(), &[order_id.as_bytes()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(template: Option<&str>) -> OrderLinks {
        let settings = OrderPageSettings::parse(Some(Secret::new("k".repeat(40))), template, "", "", false).unwrap();
        OrderLinks::new(&settings, &Url::parse("https://shop.example.com/").unwrap())
    }

    #[test]
    fn a_permalink_carries_a_128_bit_token_that_only_matches_its_order() {
        let links = links(None);
        let url = links.permalink("ord_1");
        let token = links.token("ord_1");
        assert_eq!(url, format!("https://shop.example.com/orders/ord_1?t={token}"));
        assert_eq!(token.len(), 22, "16 bytes in base64url without padding");
        assert!(links.token_matches("ord_1", &token));
        assert!(!links.token_matches("ord_2", &token));
        assert!(!links.token_matches("ord_1", &token[..21]));
        assert!(!links.token_matches("ord_1", ""));
        assert_ne!(links.token("ord_1"), links.token("ord_2"));
    }

    #[test]
    fn a_template_sends_the_buyer_to_the_merchants_page() {
        let links = links(Some("https://shop.example.com/account/orders/{order_id}?t={token}"));
        let token = links.token("ord_9");
        assert_eq!(
            links.permalink("ord_9"),
            format!("https://shop.example.com/account/orders/ord_9?t={token}")
        );
    }

    #[test]
    fn production_demands_a_real_key_and_an_https_template() {
        let prod = |key: Option<&str>, template: Option<&str>| {
            OrderPageSettings::parse(key.map(Secret::new), template, "", "", true).map(drop)
        };
        let long = "x".repeat(40);
        assert_eq!(prod(None, None).unwrap_err().0, "order_page_key");
        assert_eq!(prod(Some(DEVELOPMENT_KEY), None).unwrap_err().0, "order_page_key");
        assert_eq!(prod(Some("short"), None).unwrap_err().0, "order_page_key");
        assert!(prod(Some(&long), None).is_ok());
        let http = prod(Some(&long), Some("http://shop.example.com/o/{order_id}")).unwrap_err();
        assert_eq!(http.0, "order_page_url_template");
        let no_id = prod(Some(&long), Some("https://shop.example.com/o/")).unwrap_err();
        assert!(no_id.1.contains("{order_id}"), "{}", no_id.1);
        assert!(prod(Some(&long), Some("https://shop.example.com/o/{order_id}?t={token}")).is_ok());
        let dev = OrderPageSettings::parse(None, None, "", "", false).unwrap();
        assert_eq!(dev.key.expose(), DEVELOPMENT_KEY);
    }

    #[test]
    fn support_contacts_are_checked() {
        let parse = |email: &str, url: &str| OrderPageSettings::parse(None, None, email, url, false);
        assert_eq!(parse("not-an-address", "").unwrap_err().0, "support_email");
        assert_eq!(parse("", "ftp://x").unwrap_err().0, "support_url");
        let ok = parse("help@shop.example.com", "https://shop.example.com/help").unwrap();
        assert_eq!(ok.support_email.as_deref(), Some("help@shop.example.com"));
    }
}
