//! The merchant dashboard (issue 13): who may open it (the admin bearer, or the login cookie for its GETs only),
//! the login flow and its cookie, hostile text, webhook health, and in headless Chromium the page with the same
//! figures as the analytics API.

use acp_merchant::{
    dashboard::{page::percent, session},
    order_page::page::money,
};
use chrono::{DateTime, Duration, Utc};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::{
    browser,
    helpers::{ADMIN_TOKEN, AGENT_KEY, API_VERSION, TestApp, logged, spawn_app, spawn_app_with},
    lifecycle::{TEE, create_body, payment, session as checkout_session},
};

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn login(app: &TestApp, token: &str) -> reqwest::Response {
    client()
        .post(app.url("/admin/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

/// Logs in with the admin token; returns the cookie's `name=value`.
async fn cookie(app: &TestApp) -> String {
    let r = login(app, ADMIN_TOKEN).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()[reqwest::header::SET_COOKIE].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

async fn get_with_cookie(app: &TestApp, path: &str, cookie: &str) -> (StatusCode, String) {
    let r = client()
        .get(app.url(path))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

fn is_dashboard(body: &str) -> bool {
    body.contains("id=\"funnel-chart\"")
}

fn forged(key: &str, expires: DateTime<Utc>) -> String {
    format!("{}={}", session::COOKIE_NAME, session::issue(key, expires).unwrap())
}

#[tokio::test]
async fn the_admin_bearer_opens_the_dashboard_and_an_agent_key_or_nobody_does_not() {
    let app = spawn_app().await;
    let r = app.admin(Method::GET, "/admin/dashboard").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let headers = r.headers().clone();
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
    let body = r.text().await.unwrap();
    assert!(
        is_dashboard(&body) && body.contains("id=\"conversion-chart\""),
        "{body}"
    );
    // Self-contained: no script and nothing loaded from anywhere.
    for external in ["<script", "src=", "<link", "@import", "url("] {
        assert!(!body.contains(external), "{external} in the page");
    }

    // Without from/to: the 30 days up to now.
    let attr = |id: &str| -> DateTime<Utc> {
        let marker = format!("id=\"{id}\" datetime=\"");
        let start = body.find(&marker).unwrap() + marker.len();
        body[start..].split('"').next().unwrap().parse().unwrap()
    };
    let (from, to) = (attr("period-from"), attr("period-to"));
    assert_eq!(to - from, Duration::days(30));
    assert!((Utc::now() - to).num_seconds().abs() < 60, "{to}");
    let r = app
        .admin(Method::GET, "/admin/dashboard?from=yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["param"], "from");

    // An agent key is a wrong bearer: the admin API's 401, never the page.
    let r = client()
        .get(app.url("/admin/dashboard"))
        .bearer_auth(AGENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!is_dashboard(&r.text().await.unwrap()));
    // A wrong bearer wins over a valid cookie.
    let valid = cookie(&app).await;
    let r = client()
        .get(app.url("/admin/dashboard"))
        .bearer_auth(AGENT_KEY)
        .header(reqwest::header::COOKIE, &valid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Nobody: the login form, 401.
    let r = client().get(app.url("/admin/dashboard")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("action=\"/admin/login\"") && !is_dashboard(&body),
        "{body}"
    );
}

#[tokio::test]
async fn a_wrong_token_shows_the_form_again_and_the_right_one_sets_a_strict_cookie() {
    let app = spawn_app().await;
    let r = client().get(app.url("/admin/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("name=\"token\""));

    for wrong in ["", "nope", AGENT_KEY, &format!("{ADMIN_TOKEN}x")] {
        let r = login(&app, wrong).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(r.headers().get(reqwest::header::SET_COOKIE).is_none(), "{wrong}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("Sign-in failed.") && body.contains("name=\"token\""),
            "{body}"
        );
    }

    let r = login(&app, ADMIN_TOKEN).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[reqwest::header::LOCATION], "/admin/dashboard");
    let set = r.headers()[reqwest::header::SET_COOKIE].to_str().unwrap().to_owned();
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=43200"] {
        assert!(attributes.contains(&flag), "{flag} missing from {set}");
    }
    assert!(!set.contains(ADMIN_TOKEN), "the cookie never carries the token");
    let cookie = attributes[0].to_owned();
    assert!(cookie.starts_with("acp_dashboard="), "{cookie}");

    let (status, body) = get_with_cookie(&app, "/admin/dashboard", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(is_dashboard(&body));
    // Neither the token posted in the form nor the cookie it bought reaches the logs.
    let value = cookie.trim_start_matches("acp_dashboard=");
    assert!(!logged(&[ADMIN_TOKEN]) && !logged(&[value]), "a credential was logged");

    // Logging out clears the cookie.
    let r = client().post(app.url("/admin/logout")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cleared = r.headers()[reqwest::header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("acp_dashboard=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn the_cookie_lifetime_is_configurable_and_expired_forged_or_old_key_cookies_are_refused() {
    let app = spawn_app_with(&[("dashboard_session_ttl_secs", "60")]).await;
    let before = Utc::now().timestamp();
    let r = login(&app, ADMIN_TOKEN).await;
    let set = r.headers()[reqwest::header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.contains("Max-Age=60;"), "{set}");
    let value = set.split(';').next().unwrap().trim_start_matches("acp_dashboard=");
    let expires: i64 = value.split_once('.').unwrap().0.parse().unwrap();
    assert!((before + 59..=before + 61).contains(&expires), "{expires} vs {before}");

    let now = Utc::now();
    let refused = [
        // Expired a second ago.
        forged(ADMIN_TOKEN, now - Duration::seconds(1)),
        // Signed with another key: an old admin token after rotation, or a guess.
        forged("an-old-admin-token-0123456789abcdef", now + Duration::hours(1)),
        // The expiry pushed out under the old signature.
        format!(
            "acp_dashboard={}.{}",
            expires + 86_400,
            value.split_once('.').unwrap().1
        ),
        "acp_dashboard=garbage".to_owned(),
    ];
    for cookie in &refused {
        let (status, body) = get_with_cookie(&app, "/admin/dashboard", cookie).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{cookie}");
        assert!(!is_dashboard(&body), "{cookie}");
    }
    let (status, _) = get_with_cookie(&app, "/admin/dashboard", &forged(ADMIN_TOKEN, now + Duration::hours(1))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a cookie signed with the current admin token works"
    );
}

#[tokio::test]
async fn a_cookie_never_authorizes_an_admin_post_or_another_admin_get() {
    let app = spawn_app().await;
    let valid = cookie(&app).await;
    let expired = forged(ADMIN_TOKEN, Utc::now() - Duration::seconds(5));
    let cost = json!({"channel": "chan", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
                      "amount": 100, "currency": "usd"});
    for cookie in [&valid, &expired] {
        let requests = [
            client().post(app.url("/admin/analytics/costs")).json(&cost),
            client().post(app.url("/admin/agents")).json(&json!({"name": "Sneaky"})),
            client().post(app.url("/admin/catalog/import")).body("{}\n"),
            client().put(app.url("/admin/pricing/rules")).json(&json!({})),
            client().delete(app.url("/admin/agents/agent_default")),
            client().get(app.url("/admin/analytics/funnel?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z")),
            client().get(app.url("/admin/orders")),
            client().get(app.url("/admin/agents")),
            client().get(app.url("/admin/catalog/export")),
        ];
        for request in requests {
            let r = request
                .header(reqwest::header::COOKIE, cookie.as_str())
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .send()
                .await
                .unwrap();
            let url = r.url().clone();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{url} with {cookie}");
        }
    }
    let costs: i64 = sqlx::query_scalar("select count(*) from channel_cost")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let agents: i64 = sqlx::query_scalar("select count(*) from agent")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!((costs, agents), (0, 0), "nothing was written");
}

#[tokio::test]
async fn cross_site_login_posts_are_refused() {
    let app = spawn_app().await;
    let cases: [(&str, &str); 3] = [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ];
    for (name, value) in cases {
        let r = client()
            .post(app.url("/admin/login"))
            .header(name, value)
            .form(&[("token", ADMIN_TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(r.headers().get(reqwest::header::SET_COOKIE).is_none());
    }
    let r = client()
        .post(app.url("/admin/logout"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a cross-site logout is refused too");
    // The same origin (what a browser sends from the login form) is fine.
    let r = client()
        .post(app.url("/admin/login"))
        .header("origin", format!("http://{}", app.addr))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

/// Creates a payable session with `key` and completes it; returns the completed session.
async fn buy(app: &TestApp, key: &str) -> Value {
    let created = checkout_session(
        app.acp_as(Method::POST, "/checkout_sessions", key, API_VERSION)
            .json(&create_body(json!([{"id": TEE}])))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let done = checkout_session(
        app.acp_as(
            Method::POST,
            &format!("/checkout_sessions/{id}/complete"),
            key,
            API_VERSION,
        )
        .json(&payment("spt_sim_ok"))
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(done["status"], "completed", "{done:#}");
    done
}

#[tokio::test]
async fn hostile_text_on_the_dashboard_is_escaped() {
    let app = spawn_app().await;
    let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&";
    let r = app
        .admin(Method::POST, "/admin/agents")
        .json(&json!({"name": hostile}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let key = r.json::<Value>().await.unwrap()["api_key"].as_str().unwrap().to_owned();
    buy(&app, &key).await;
    let body = app
        .admin(Method::GET, "/admin/dashboard")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains("<script") && !body.contains("<img"), "{body}");
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&quot;&#39;&amp;"),
        "{body}"
    );
}

#[tokio::test]
async fn webhook_health_counts_pending_and_dead_events_and_the_oldest_pending_age() {
    let app = spawn_app().await;
    for (status, age_secs) in [("pending", 600), ("pending", 30), ("dead", 5000), ("delivered", 9000)] {
        sqlx::query(
            "insert into webhook_event (event_id, order_id, stream, agent_id, event_type, payload, status,
                                        next_attempt_at, created_at)
             values (gen_random_uuid(), 'ord_x', 'ord_x', 'agent_default', 'order_update', '{}', $1, now() + interval '1 day',
                     now() - make_interval(secs => $2))",
        )
        .bind(status)
        .bind(age_secs as f64)
        .execute(&app.db)
        .await
        .unwrap();
    }
    let body = app
        .admin(Method::GET, "/admin/dashboard")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text_of(&body, "webhook-pending"), "2");
    assert_eq!(text_of(&body, "webhook-dead"), "1");
    let oldest = text_of(&body, "webhook-oldest");
    let secs: i64 = oldest.trim_end_matches(" s").parse().unwrap();
    assert!((600..610).contains(&secs), "{oldest}");
}

/// The text of the element with `id` (no nested markup).
fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = dom.find(&marker).unwrap_or_else(|| panic!("no #{id} in {dom}")) + marker.len();
    dom[start..].split('<').next().unwrap().to_owned()
}

/// The text of the cell with `class` in the row that starts with `row` (an opening `<tr …>` tag).
fn cell(dom: &str, row: &str, class: &str) -> String {
    let start = dom.find(row).unwrap_or_else(|| panic!("no {row} in {dom}"));
    let row_text = &dom[start..start + dom[start..].find("</tr>").unwrap()];
    text_of(&row_text.replace(&format!("class=\"{class}\""), "id=\"cell\""), "cell")
}

/// The `(from, to)` of every over-time row, in order.
fn bucket_periods(dom: &str) -> Vec<(String, String)> {
    dom.split("<tr data-from=\"")
        .skip(1)
        .map(|rest| {
            let from = rest.split('"').next().unwrap().to_owned();
            let to = rest
                .split("data-to=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            (from, to)
        })
        .collect()
}

async fn api_funnel(app: &TestApp, from: &str, to: &str) -> Value {
    let url = Url::parse_with_params(&app.url("/admin/analytics/funnel"), &[("from", from), ("to", to)]).unwrap();
    let r = app.client.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// The period's figures on the page (its DOM) equal the analytics API's answer, bucket by bucket too.
async fn assert_page_matches_api(app: &TestApp, dom: &str, funnel: &Value) {
    let count = |k: &str| funnel[k].as_u64().unwrap().to_string();
    assert_eq!(text_of(dom, "kpi-sessions"), count("sessions"));
    assert_eq!(text_of(dom, "kpi-ready"), count("ready_for_payment"));
    assert_eq!(text_of(dom, "kpi-completed"), count("completed"));
    assert_eq!(text_of(dom, "kpi-canceled"), count("canceled"));
    assert_eq!(text_of(dom, "kpi-expired"), count("expired"));
    assert_eq!(text_of(dom, "kpi-still-open"), count("still_open"));
    assert_eq!(
        text_of(dom, "kpi-conversion"),
        percent(funnel["conversion_rate"].as_str())
    );
    assert_eq!(
        text_of(dom, "kpi-abandonment"),
        percent(funnel["abandonment_rate"].as_str())
    );
    for aov in funnel["average_order_value"].as_array().unwrap() {
        let currency = aov["currency"].as_str().unwrap();
        let row = format!("<tr data-currency=\"{currency}\">");
        let expected = money(aov["average"].as_i64().unwrap(), currency);
        assert_eq!(
            cell(&dom[dom.find("id=\"aov\"").unwrap()..], &row, "n average"),
            expected
        );
    }
    let cpas = funnel["cost_per_acquisition"].as_array().unwrap();
    assert!(!cpas.is_empty(), "the fixture records a cost");
    for cpa in cpas {
        let currency = cpa["currency"].as_str().unwrap();
        let row = format!("<tr data-currency=\"{currency}\">");
        let expected = money(cpa["cost_per_order"].as_i64().unwrap(), currency);
        assert_eq!(
            cell(&dom[dom.find("id=\"cpa\"").unwrap()..], &row, "n per-order"),
            expected
        );
    }
    let buckets = bucket_periods(dom);
    assert!(!buckets.is_empty());
    let mut sessions = 0;
    for (from, to) in &buckets {
        let expected = api_funnel(app, from, to).await;
        let row = format!("<tr data-from=\"{from}\" data-to=\"{to}\">");
        assert_eq!(cell(dom, &row, "n sessions"), expected["sessions"].to_string());
        assert_eq!(cell(dom, &row, "n completed"), expected["completed"].to_string());
        assert_eq!(
            cell(dom, &row, "n conversion"),
            percent(expected["conversion_rate"].as_str())
        );
        let listed = |field: &str, amount: &str| -> String {
            let values = expected[field].as_array().unwrap().iter();
            let shown: Vec<String> = values
                .map(|v| match v[amount].as_i64() {
                    Some(minor) => money(minor, v["currency"].as_str().unwrap()),
                    None => "—".to_owned(),
                })
                .collect();
            shown.join(", ")
        };
        assert_eq!(cell(dom, &row, "aov"), listed("average_order_value", "average"));
        assert_eq!(cell(dom, &row, "cpa"), listed("cost_per_acquisition", "cost_per_order"));
        sessions += expected["sessions"].as_u64().unwrap();
    }
    assert_eq!(
        sessions,
        funnel["sessions"].as_u64().unwrap(),
        "the buckets cover the period"
    );
}

#[tokio::test]
async fn chromium_shows_the_same_figures_as_the_analytics_api() {
    if !browser::available() {
        return;
    }
    let app = spawn_app().await;
    // Two orders, one cancel with a reason, one session left open, and a channel cost for CPA.
    let first = buy(&app, AGENT_KEY).await;
    let second = buy(&app, AGENT_KEY).await;
    for cancel_body in [json!({"intent_trace": {"reason_code": "price_sensitivity"}}), json!({})] {
        let created = checkout_session(
            app.acp_post("/checkout_sessions", &create_body(json!([{"id": TEE}])))
                .send()
                .await
                .unwrap(),
            StatusCode::CREATED,
        )
        .await;
        let id = created["id"].as_str().unwrap();
        if cancel_body.get("intent_trace").is_some() {
            let r = app
                .acp_post(&format!("/checkout_sessions/{id}/cancel"), &cancel_body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        }
    }
    let now = Utc::now();
    let (from, to) = (
        (now - Duration::hours(2)).to_rfc3339(),
        (now + Duration::hours(1)).to_rfc3339(),
    );
    let r = app
        .admin(Method::POST, "/admin/analytics/costs")
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"channel": "agent_default", "from": from, "to": to, "amount": 9000, "currency": "usd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());

    let funnel = api_funnel(&app, &from, &to).await;
    assert_eq!(
        (funnel["sessions"].as_u64(), funnel["completed"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(funnel["canceled"].as_u64(), Some(1));
    let url = Url::parse_with_params(&app.url("/admin/dashboard"), &[("from", &from), ("to", &to)]).unwrap();
    let cookie = cookie(&app).await;
    let dom = browser::render_dom(url.as_str(), Some(&cookie)).await;
    assert!(dom.contains("<svg id=\"funnel-chart\""), "the chart renders: {dom}");
    assert!(dom.contains("<rect class=\"bar\""), "{dom}");
    assert_page_matches_api(&app, &dom, &funnel).await;
    assert!(dom.contains("price_sensitivity: 1"), "{dom}");
    for order in [&first, &second] {
        let id = order["order"]["id"].as_str().unwrap();
        let row = format!("<tr data-order=\"{id}\">");
        let status: String = sqlx::query_scalar("select status from merchant_order where order_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(cell(&dom, &row, "status"), status);
    }
    // Without the cookie Chromium gets the login form.
    let anonymous = browser::render_dom(url.as_str(), None).await;
    assert!(anonymous.contains("name=\"token\"") && !anonymous.contains("funnel-chart"));

    let shot = browser::screenshot_with_cookie(url.as_str(), "dashboard", Some(&cookie)).await;
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real picture: {}",
        shot.display()
    );
}
