//! The order page's HTML: one self-contained document (inline CSS only, no script, no external asset), every
//! value HTML-escaped. The stylesheet is allowed by its hash in the Content-Security-Policy, so no other style
//! (or anything else) can run even if escaping ever failed.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use reqwest::Url;

use super::OrderPageSettings;
use crate::orders::model::{Adjustment, Fulfillment, Order};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f4;color:#1d1d1b}\
main{max-width:44rem;margin:0 auto;padding:1.5rem}h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem}\
table{width:100%;border-collapse:collapse;background:#fff}th,td{text-align:left;padding:.5rem;\
border-bottom:1px solid #ddd}td.n,th.n{text-align:right}.status{display:inline-block;padding:.2rem .6rem;\
border-radius:1rem;background:#1d1d1b;color:#fff;font-size:.9rem}ul{padding-left:1.2rem}";

pub fn content_security_policy() -> String {
    crate::html::content_security_policy(STYLE, "'none'")
}

pub use crate::html::escape;

/// `1234` USD → `12.34 USD`, with the currency's ISO 4217 exponent.
pub fn money(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    let exponent = crate::pricing::currency::exponent(&code).unwrap_or(2);
    if exponent == 0 {
        return format!("{amount} {code}");
    }
    let scale = 10_i64.pow(exponent);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let (major, minor) = (abs / scale.unsigned_abs(), abs % scale.unsigned_abs());
    format!("{sign}{major}.{minor:0width$} {code}", width = exponent as usize)
}

fn date(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The page of a 404: the same for an unknown order and for a wrong or missing token.
pub fn not_found() -> String {
    document(
        "Order not found",
        "<h1>Order not found</h1><p>This link is not valid. Please use the link from your order confirmation.</p>",
    )
}

/// The order page. `policy_links` are the (ACP link type, URL) pairs of the configuration.
pub fn render(order: &Order, settings: &OrderPageSettings, policy_links: &[(&'static str, Url)]) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Order <span id=\"order-number\">{}</span></h1><p>Status: <span class=\"status\" id=\"order-status\">{}</span></p>\
         <p>Placed on {}</p>",
        escape(&order.id),
        escape(order.status()),
        date(&order.created_at)
    );
    lines(&mut body, order);
    totals(&mut body, order);
    fulfillments(&mut body, &order.fulfillments);
    refunds(&mut body, &order.adjustments, &order.currency);
    support(&mut body, settings, policy_links);
    document(&format!("Order {}", order.id), &body)
}

fn document(title: &str, body: &str) -> String {
    crate::html::document(title, STYLE, body)
}

fn lines(out: &mut String, order: &Order) {
    out.push_str(
        "<h2>Items</h2><table id=\"lines\"><thead><tr><th>Item</th><th class=\"n\">Quantity</th>\
         <th class=\"n\">Unit price</th><th>Status</th></tr></thead><tbody>",
    );
    for line in &order.lines {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&line.title),
            line.current,
            escape(&money(line.unit_price, &order.currency)),
            escape(line.status())
        );
    }
    out.push_str("</tbody></table>");
}

fn totals(out: &mut String, order: &Order) {
    out.push_str("<h2>Totals</h2><table id=\"totals\"><tbody>");
    for total in &order.totals {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\" data-kind=\"{}\">{}</td></tr>",
            escape(&total.display_text),
            escape(&total.kind),
            escape(&money(total.amount, &order.currency))
        );
    }
    out.push_str("</tbody></table>");
}

fn fulfillments(out: &mut String, fulfillments: &[Fulfillment]) {
    out.push_str("<h2>Shipping</h2>");
    if fulfillments.is_empty() {
        out.push_str("<p id=\"fulfillment\">Not shipped yet.</p>");
        return;
    }
    out.push_str("<ul id=\"fulfillment\">");
    for f in fulfillments {
        let _ = write!(out, "<li>{}", escape(&f.status));
        if let Some(carrier) = &f.carrier {
            let _ = write!(out, " by {}", escape(carrier));
        }
        if let Some(number) = &f.tracking_number {
            let _ = write!(
                out,
                ", tracking number <span class=\"tracking\">{}</span>",
                escape(number)
            );
        }
        if let Some(url) = f.tracking_url.as_deref().and_then(web_link) {
            let _ = write!(
                out,
                " (<a href=\"{}\" rel=\"noopener noreferrer\">track the parcel</a>)",
                escape(url.as_str())
            );
        }
        if let Some(last) = f.events.last() {
            let _ = write!(out, ", updated {}", date(&last.occurred_at));
        }
        out.push_str("</li>");
    }
    out.push_str("</ul>");
}

fn refunds(out: &mut String, adjustments: &[Adjustment], currency: &str) {
    let refunds: Vec<&Adjustment> = adjustments.iter().filter(|a| a.kind == "refund").collect();
    if refunds.is_empty() {
        return;
    }
    out.push_str("<h2>Refunds</h2><ul id=\"refunds\">");
    for r in refunds {
        let _ = write!(
            out,
            "<li>{} ({}) on {}",
            escape(&money(r.amount, currency)),
            escape(&r.status),
            date(&r.occurred_at)
        );
        if let Some(reason) = &r.reason {
            let _ = write!(out, ": {}", escape(reason));
        }
        out.push_str("</li>");
    }
    out.push_str("</ul>");
}

fn support(out: &mut String, settings: &OrderPageSettings, policy_links: &[(&'static str, Url)]) {
    out.push_str("<h2>Help</h2><ul id=\"support\">");
    if let Some(email) = &settings.support_email {
        let _ = write!(out, "<li>E-mail: <a href=\"mailto:{0}\">{0}</a></li>", escape(email));
    }
    if let Some(url) = &settings.support_url {
        let _ = write!(
            out,
            "<li><a href=\"{}\">Customer support</a></li>",
            escape(url.as_str())
        );
    }
    for (kind, url) in policy_links {
        let _ = write!(
            out,
            "<li><a href=\"{}\">{}</a></li>",
            escape(url.as_str()),
            policy_title(kind)
        );
    }
    out.push_str("</ul>");
}

fn policy_title(kind: &str) -> &'static str {
    match kind {
        "terms_of_use" => "Terms of use",
        "privacy_policy" => "Privacy policy",
        "return_policy" => "Return policy",
        _ => "Policy",
    }
}

/// Only http(s) links become anchors: a `javascript:` tracking URL stays text.
fn web_link(value: &str) -> Option<Url> {
    Url::parse(value)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_every_special_character() {
        assert_eq!(
            escape("<a href='x'>\"&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn money_uses_the_currency_exponent() {
        assert_eq!(money(1234, "usd"), "12.34 USD");
        assert_eq!(money(5, "usd"), "0.05 USD");
        assert_eq!(money(1234, "jpy"), "1234 JPY");
        assert_eq!(money(1234, "kwd"), "1.234 KWD");
        assert_eq!(money(-150, "eur"), "-1.50 EUR");
    }

    #[test]
    fn only_web_links_become_anchors() {
        assert!(web_link("javascript:alert(1)").is_none());
        assert!(web_link("https://carrier.example/t/1").is_some());
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_stylesheet() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe"));
    }
}
