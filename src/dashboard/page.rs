//! The dashboard's HTML: self-contained (inline CSS allowed by its hash, inline SVG charts, no script, no external
//! asset), every value HTML-escaped. Figures are printed as the analytics API gives them (rates as percentages of
//! its four-decimal strings, amounts in the currency's major unit), with element ids a test or a scraper can read.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{Dashboard, RecentOrder, WebhookHealth};
use crate::{
    analytics::{Funnel, funnel::Acquisition, funnel::OrderValue},
    order_page::page::{escape, money},
};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f4;color:#1d1d1b}\
main{max-width:64rem;margin:0 auto;padding:1.5rem}h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem}\
table{width:100%;border-collapse:collapse;background:#fff}th,td{text-align:left;padding:.4rem;\
border-bottom:1px solid #ddd}td.n,th.n{text-align:right}.kpis{display:flex;flex-wrap:wrap;gap:.8rem}\
.kpi{background:#fff;padding:.6rem 1rem;border-radius:.4rem;min-width:7rem}.kpi b{display:block;font-size:1.3rem}\
svg{background:#fff;max-width:100%}.bar{fill:#2f6f4f}.lost{fill:#b5523b}.axis{stroke:#999}\
svg text{font-size:12px;fill:#1d1d1b}form.inline{display:inline}.muted{color:#666}";

pub fn content_security_policy() -> String {
    crate::html::content_security_policy(STYLE, "'self'")
}

/// A rate of the analytics API (`"0.6667"`) as a percentage (`"66.67%"`); `—` when it is undefined.
pub fn percent(rate: Option<&str>) -> String {
    rate.and_then(|r| r.parse::<Decimal>().ok())
        .map(|r| format!("{:.2}%", r * Decimal::from(100)))
        .unwrap_or_else(|| "—".to_owned())
}

fn date(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn document(title: &str, body: &str) -> String {
    crate::html::document(title, STYLE, body)
}

/// The login form; `failed` adds a message that says no more than that the sign-in failed.
pub fn login(failed: bool) -> String {
    let message = if failed {
        "<p id=\"login-failed\" role=\"alert\">Sign-in failed.</p>"
    } else {
        ""
    };
    document(
        "Merchant dashboard: sign in",
        &format!(
            "<h1>Merchant dashboard</h1>{message}<form method=\"post\" action=\"/admin/login\">\
             <label>Admin token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" \
             required></label> <button type=\"submit\">Sign in</button></form>"
        ),
    )
}

/// The dashboard of one period.
pub fn render(d: &Dashboard) -> String {
    let f = &d.funnel;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Merchant dashboard</h1><p>Sessions created from <time id=\"period-from\" datetime=\"{}\">{}</time> \
         to <time id=\"period-to\" datetime=\"{}\">{}</time> \
         <form class=\"inline\" method=\"post\" action=\"/admin/logout\"><button type=\"submit\">Sign out</button>\
         </form></p>",
        escape(&f.from.to_rfc3339()),
        escape(&date(&f.from)),
        escape(&f.to.to_rfc3339()),
        escape(&date(&f.to))
    );
    kpis(&mut body, f);
    funnel_chart(&mut body, f);
    money_table(&mut body, "aov", "Average order value", &f.average_order_value);
    cpa_table(&mut body, "cpa", &f.cost_per_acquisition);
    over_time(&mut body, &d.over_time);
    cancel_reasons(&mut body, f);
    webhooks(&mut body, &d.webhooks);
    orders(&mut body, &d.recent_orders);
    document("Merchant dashboard", &body)
}

fn kpis(out: &mut String, f: &Funnel) {
    out.push_str("<h2>Funnel</h2><div class=\"kpis\">");
    let figures: [(&str, &str, String); 9] = [
        ("kpi-sessions", "Sessions", f.sessions.to_string()),
        ("kpi-ready", "Ready for payment", f.ready_for_payment.to_string()),
        ("kpi-completed", "Completed", f.completed.to_string()),
        ("kpi-canceled", "Canceled", f.canceled.to_string()),
        ("kpi-expired", "Expired", f.expired.to_string()),
        ("kpi-still-open", "Still open", f.still_open.to_string()),
        ("kpi-conversion", "Conversion", percent(f.conversion_rate.as_deref())),
        ("kpi-abandonment", "Abandonment", percent(f.abandonment_rate.as_deref())),
        ("kpi-decline", "Decline rate", percent(f.decline_rate.as_deref())),
    ];
    for (id, label, value) in figures {
        let _ = write!(
            out,
            "<div class=\"kpi\">{label}<b id=\"{id}\">{}</b></div>",
            escape(&value)
        );
    }
    out.push_str("</div>");
}

/// Horizontal bars, created → ready → completed, then the lost ones (canceled, expired), scaled to `created`.
fn funnel_chart(out: &mut String, f: &Funnel) {
    let stages = [
        ("Created", f.sessions, "bar"),
        ("Ready for payment", f.ready_for_payment, "bar"),
        ("Completed", f.completed, "bar"),
        ("Canceled", f.canceled, "lost"),
        ("Expired", f.expired, "lost"),
    ];
    let height = stages.len() * 30 + 10;
    let _ = write!(
        out,
        "<svg id=\"funnel-chart\" role=\"img\" aria-label=\"Checkout funnel\" width=\"640\" height=\"{height}\" \
         viewBox=\"0 0 640 {height}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let max = f.sessions.max(1);
    for (i, (label, value, class)) in stages.iter().enumerate() {
        let y = 10 + i * 30;
        let width = value * 400 / max;
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{}\">{label}</text><rect class=\"{class}\" x=\"150\" y=\"{y}\" width=\"{width}\" \
             height=\"20\"/><text class=\"value\" data-stage=\"{}\" x=\"{}\" y=\"{}\">{value}</text>",
            y + 15,
            label.to_ascii_lowercase().replace(' ', "_"),
            156 + width,
            y + 15
        );
    }
    out.push_str("</svg>");
}

fn money_table(out: &mut String, id: &str, title: &str, values: &[OrderValue]) {
    let _ = write!(
        out,
        "<h2>{title}</h2><table id=\"{id}\"><thead><tr><th>Currency</th><th class=\"n\">Orders</th>\
         <th class=\"n\">Revenue</th><th class=\"n\">Average</th></tr></thead><tbody>"
    );
    for v in values {
        let _ = write!(
            out,
            "<tr data-currency=\"{}\"><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n average\">{}</td></tr>",
            escape(&v.currency),
            escape(&v.currency.to_ascii_uppercase()),
            v.orders,
            escape(&money(v.revenue, &v.currency)),
            escape(&money(v.average, &v.currency))
        );
    }
    out.push_str("</tbody></table>");
}

fn cpa_table(out: &mut String, id: &str, values: &[Acquisition]) {
    let _ = write!(
        out,
        "<h2>Cost per acquisition</h2><table id=\"{id}\"><thead><tr><th>Currency</th><th class=\"n\">Cost</th>\
         <th class=\"n\">Completed</th><th class=\"n\">Cost per order</th></tr></thead><tbody>"
    );
    if values.is_empty() {
        out.push_str("<tr><td colspan=\"4\" class=\"muted\">No channel costs recorded for this period.</td></tr>");
    }
    for v in values {
        let _ = write!(
            out,
            "<tr data-currency=\"{}\"><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n per-order\">{}</td></tr>",
            escape(&v.currency),
            escape(&v.currency.to_ascii_uppercase()),
            escape(&money(v.cost, &v.currency)),
            v.completed,
            escape(&cpa(v))
        );
    }
    out.push_str("</tbody></table>");
}

fn cpa(v: &Acquisition) -> String {
    v.cost_per_order
        .map(|c| money(c, &v.currency))
        .unwrap_or_else(|| "—".to_owned())
}

/// One bar per bucket (conversion, 0–100 %), then the bucket table with every figure printed.
fn over_time(out: &mut String, buckets: &[Funnel]) {
    out.push_str("<h2>Over time</h2>");
    let n = buckets.len().max(1);
    let slot = 600 / n;
    let _ = write!(
        out,
        "<svg id=\"conversion-chart\" role=\"img\" aria-label=\"Conversion over time\" width=\"640\" height=\"150\" \
         viewBox=\"0 0 640 150\" xmlns=\"http://www.w3.org/2000/svg\"><line class=\"axis\" x1=\"30\" y1=\"120\" \
         x2=\"630\" y2=\"120\"/><text x=\"0\" y=\"24\">100%</text><text x=\"0\" y=\"124\">0%</text>"
    );
    for (i, b) in buckets.iter().enumerate() {
        let rate = b
            .conversion_rate
            .as_deref()
            .and_then(|r| r.parse::<f64>().ok())
            .unwrap_or(0.0);
        let height = (rate * 100.0).round() as usize;
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{height}\"><title>{}: {}</title></rect>",
            32 + i * slot,
            120 - height,
            slot.saturating_sub(2).max(1),
            escape(&date(&b.from)),
            escape(&percent(b.conversion_rate.as_deref()))
        );
    }
    out.push_str(
        "</svg><table id=\"over-time\"><thead><tr><th>From</th><th class=\"n\">Sessions</th>\
         <th class=\"n\">Completed</th><th class=\"n\">Conversion</th><th>Average order value</th>\
         <th>Cost per acquisition</th></tr></thead><tbody>",
    );
    for b in buckets {
        let aov: Vec<String> = b
            .average_order_value
            .iter()
            .map(|v| money(v.average, &v.currency))
            .collect();
        let cpas: Vec<String> = b.cost_per_acquisition.iter().map(cpa).collect();
        let _ = write!(
            out,
            "<tr data-from=\"{}\" data-to=\"{}\"><td>{}</td><td class=\"n sessions\">{}</td>\
             <td class=\"n completed\">{}</td><td class=\"n conversion\">{}</td><td class=\"aov\">{}</td>\
             <td class=\"cpa\">{}</td></tr>",
            escape(&b.from.to_rfc3339()),
            escape(&b.to.to_rfc3339()),
            escape(&date(&b.from)),
            b.sessions,
            b.completed,
            escape(&percent(b.conversion_rate.as_deref())),
            escape(&aov.join(", ")),
            escape(&cpas.join(", "))
        );
    }
    out.push_str("</tbody></table>");
}

fn cancel_reasons(out: &mut String, f: &Funnel) {
    out.push_str("<h2>Top cancel reasons</h2><ul id=\"cancel-reasons\">");
    for r in &f.top_cancel_reasons {
        let _ = write!(out, "<li>{}: {}</li>", escape(&r.reason), r.count);
    }
    out.push_str("</ul>");
}

fn webhooks(out: &mut String, w: &WebhookHealth) {
    let oldest = w
        .oldest_pending_secs
        .map(|s| format!("{s} s"))
        .unwrap_or_else(|| "—".to_owned());
    let _ = write!(
        out,
        "<h2>Order webhooks</h2><div class=\"kpis\"><div class=\"kpi\">Pending<b id=\"webhook-pending\">{}</b></div>\
         <div class=\"kpi\">Dead-lettered<b id=\"webhook-dead\">{}</b></div>\
         <div class=\"kpi\">Oldest pending<b id=\"webhook-oldest\">{}</b></div></div>",
        w.pending,
        w.dead,
        escape(&oldest)
    );
}

fn orders(out: &mut String, orders: &[RecentOrder]) {
    out.push_str(
        "<h2>Recent orders</h2><table id=\"recent-orders\"><thead><tr><th>Order</th><th>Status</th>\
         <th class=\"n\">Total</th><th>Agent</th><th>Placed</th></tr></thead><tbody>",
    );
    for o in orders {
        let agent = match &o.agent_name {
            Some(name) => format!("{name} ({})", o.agent_id),
            None => o.agent_id.clone(),
        };
        let _ = write!(
            out,
            "<tr data-order=\"{}\"><td>{}</td><td class=\"status\">{}</td><td class=\"n\">{}</td>\
             <td class=\"agent\">{}</td><td>{}</td></tr>",
            escape(&o.order_id),
            escape(&o.order_id),
            escape(&o.status),
            escape(&money(o.total_amount, &o.currency)),
            escape(&agent),
            escape(&date(&o.created_at))
        );
    }
    out.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_as_percentages() {
        assert_eq!(percent(Some("0.6667")), "66.67%");
        assert_eq!(percent(Some("1.0000")), "100.00%");
        assert_eq!(percent(None), "—");
    }

    #[test]
    fn the_policy_allows_the_stylesheet_and_same_origin_forms_only() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
        assert!(csp.contains("form-action 'self'") && !csp.contains("unsafe"), "{csp}");
    }
}
