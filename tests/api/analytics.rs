//! Funnel events, the analytics API, CPA, the events export and order tags (issue 13), over a fixture of 22
//! sessions driven through the real HTTP API: two agents on two channels, two currencies, every outcome. The
//! expected figures are computed by hand in the comments beside them.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{AGENT_KEY, API_VERSION, TestApp, eventually, spawn_app, spawn_app_with},
    lifecycle::{TEE, address, payment, session},
    shared::total,
};

const EUR_ITEM: &str = "var_funnel_eur";
/// The cohort window: sessions are pinned at T0 + k minutes (k = 1..22).
const T0: &str = "2026-01-01T00:00:00Z";

fn t0() -> DateTime<Utc> {
    T0.parse().unwrap()
}

/// One fixture session: who created it, its index (creation order) and what happened to it.
struct Made {
    id: String,
    /// Seconds from create to complete (pinned), for completed sessions.
    complete_after: Option<i64>,
}

struct Agent {
    key: String,
}

async fn register_agent(app: &TestApp) -> (String, Agent) {
    let r = app
        .admin(Method::POST, "/admin/agents")
        .json(&json!({"name": "Agent B"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let agent = Agent {
        key: body["api_key"].as_str().unwrap().to_owned(),
    };
    (body["agent_id"].as_str().unwrap().to_owned(), agent)
}

async fn set_channel(app: &TestApp, agent_id: &str, channel: &str) {
    let r = app
        .admin(Method::PUT, &format!("/admin/agents/{agent_id}/channel"))
        .json(&json!({"channel_id": channel}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

/// A euro product without shipping, so euro sessions are payable.
async fn add_euro_product(app: &TestApp) {
    let line = json!({"id": "prod_funnel_eur", "title": "Euro guide", "variants": [
        {"id": EUR_ITEM, "title": "Euro guide", "price": {"amount": 2000, "currency": "EUR"},
         "availability": {"available": true, "status": "in_stock"}}]});
    let r = app
        .admin(Method::POST, "/admin/catalog/import")
        .body(format!("{line}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let attrs = json!({"variant_id": EUR_ITEM, "requires_shipping": false});
    let r = app
        .admin(Method::POST, "/admin/catalog/attributes")
        .body(attrs.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

impl Agent {
    fn post(&self, app: &TestApp, path: &str, body: &Value) -> reqwest::RequestBuilder {
        app.acp_as(Method::POST, path, &self.key, API_VERSION).json(body)
    }

    /// Creates a session for `email` in `currency` (`usd`: a tee shipped to the US; `eur`: the euro guide).
    /// Without an email the session has no contact details and is not ready.
    async fn create(&self, app: &TestApp, currency: &str, email: Option<&str>) -> Value {
        let item = if currency == "eur" { EUR_ITEM } else { TEE };
        let mut body = json!({
            "currency": currency,
            "line_items": [{"id": item}],
            "capabilities": {"interventions": {"supported": ["3ds"]}},
        });
        if let Some(email) = email {
            body["fulfillment_details"] = json!({"name": "A Buyer", "email": email, "address": address("US")});
        }
        session(
            self.post(app, "/checkout_sessions", &body).send().await.unwrap(),
            StatusCode::CREATED,
        )
        .await
    }

    async fn complete(&self, app: &TestApp, id: &str, body: &Value) -> Value {
        let path = format!("/checkout_sessions/{id}/complete");
        session(self.post(app, &path, body).send().await.unwrap(), StatusCode::OK).await
    }

    async fn cancel(&self, app: &TestApp, id: &str, reason: Option<&str>) -> Value {
        let body = match reason {
            Some(code) => json!({"intent_trace": {"reason_code": code, "trace_summary": "changed my mind"}}),
            None => json!({}),
        };
        let path = format!("/checkout_sessions/{id}/cancel");
        session(self.post(app, &path, &body).send().await.unwrap(), StatusCode::OK).await
    }

    /// Outcomes, each returning the fixture record.
    async fn completed(&self, app: &TestApp, currency: &str, email: &str, after: i64) -> Made {
        let s = self.create(app, currency, Some(email)).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let done = self.complete(app, &id, &payment("spt_sim_ok")).await;
        assert_eq!(done["status"], "completed", "{done:#}");
        Made {
            id,
            complete_after: Some(after),
        }
    }

    async fn declined(&self, app: &TestApp, id: &str) {
        let declined = self.complete(app, id, &payment("spt_sim_decline")).await;
        assert_eq!(declined["status"], "ready_for_payment", "{declined:#}");
    }

    async fn three_ds(&self, app: &TestApp, id: &str) {
        let pending = self.complete(app, id, &payment("spt_sim_3ds")).await;
        assert_eq!(pending["status"], "authentication_required", "{pending:#}");
    }

    async fn open(&self, app: &TestApp, currency: &str, email: Option<&str>) -> Made {
        let s = self.create(app, currency, email).await;
        made(&s)
    }
}

fn made(session: &Value) -> Made {
    Made {
        id: session["id"].as_str().unwrap().to_owned(),
        complete_after: None,
    }
}

fn authenticated(token: &str) -> Value {
    let mut body = payment(token);
    body["authentication_result"] = json!({"outcome": "authenticated", "outcome_details": {
        "three_ds_cryptogram": "AAIBBYNoEwAAACcKhAJkdQAAAAA=", "electronic_commerce_indicator": "05",
        "transaction_id": "f38e6948-5388-41a6-bca4-b49723c19437", "version": "2.2.0"}});
    body
}

/// Makes the session expire now (both the column the sweeper selects on and the stored state), then waits for
/// the sweeper.
async fn expire(app: &TestApp, id: &str) {
    sqlx::query(
        "update checkout_session set expires_at = now() - interval '1 second',
                state = jsonb_set(state::jsonb, '{expires_at}', to_jsonb(now() - interval '1 second'))
         where checkout_session_id = $1",
    )
    .bind(id)
    .execute(&app.db)
    .await
    .unwrap();
    let swept = eventually(Duration::from_secs(5), || async {
        let status: String = sqlx::query_scalar("select status from checkout_session where checkout_session_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
        status == "expired"
    })
    .await;
    assert!(swept, "the sweeper expires {id}");
}

/// Pins the fixture's event times: session k is created at T0 + k minutes, completes `complete_after` seconds
/// later, and its other events happen 5 seconds after creation.
async fn pin_times(app: &TestApp, sessions: &[Made]) {
    for (k, made) in sessions.iter().enumerate() {
        let created = t0() + chrono::Duration::minutes(k as i64 + 1);
        sqlx::query(
            "update funnel_event set occurred_at = case kind
                 when 'session_created' then $2
                 when 'completed' then $2 + make_interval(secs => $3)
                 else $2 + interval '5 seconds' end
             where checkout_session_id = $1",
        )
        .bind(&made.id)
        .bind(created)
        .bind(made.complete_after.unwrap_or(0) as f64)
        .execute(&app.db)
        .await
        .unwrap();
    }
}

async fn record_cost(app: &TestApp, channel: &str, from: &str, to: &str, amount: i64, currency: &str) {
    let r = app
        .admin(Method::POST, "/admin/analytics/costs")
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"channel": channel, "from": from, "to": to, "amount": amount, "currency": currency}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
}

/// Builds the 22-session fixture (see the module docs); returns agent B's id.
async fn fixture(app: &TestApp) -> String {
    add_euro_product(app).await;
    let (b_id, b) = register_agent(app).await;
    set_channel(app, "agent_default", "chan_a").await;
    set_channel(app, &b_id, "chan_b").await;
    let a = Agent {
        key: AGENT_KEY.to_owned(),
    };
    let mut s: Vec<Made> = Vec::new();
    // Agent A (chan_a), all USD, one tee + standard shipping = 3000.
    s.push(a.completed(app, "usd", "alice@example.com", 10).await); // 1 new buyer
    s.push(a.completed(app, "usd", "bob@example.com", 20).await); // 2
    s.push(a.completed(app, "usd", " Alice@Example.com ", 30).await); // 3 returning (alice, normalized)
    let declined_then_paid = a.open(app, "usd", Some("carol@example.com")).await; // 4
    a.declined(app, &declined_then_paid.id).await;
    a.complete(app, &declined_then_paid.id, &payment("spt_sim_ok")).await;
    s.push(Made {
        complete_after: Some(40),
        ..declined_then_paid
    });
    let three_ds = a.open(app, "usd", Some("dave@example.com")).await; // 5
    a.three_ds(app, &three_ds.id).await;
    let paid = a.complete(app, &three_ds.id, &authenticated("spt_sim_3ds")).await;
    assert_eq!(paid["status"], "completed", "{paid:#}");
    s.push(Made {
        complete_after: Some(50),
        ..three_ds
    });
    for reason in [Some("price_sensitivity"), Some("shipping_cost"), None] {
        let m = a.open(app, "usd", Some("c@example.com")).await; // 6, 7, 8
        a.cancel(app, &m.id, reason).await;
        s.push(m);
    }
    let m = a.open(app, "usd", Some("e@example.com")).await; // 9 expired
    expire(app, &m.id).await;
    s.push(m);
    s.push(a.open(app, "usd", Some("o@example.com")).await); // 10 open, ready
    let not_ready = a.open(app, "usd", None).await; // 11 open, never ready
    s.push(not_ready);
    let m = a.open(app, "usd", Some("d@example.com")).await; // 12 declined, still open
    a.declined(app, &m.id).await;
    s.push(m);

    // Agent B (chan_b): euro guide = 2000 (no shipping), or the USD tee.
    s.push(b.completed(app, "eur", "erin@example.com", 15).await); // 13
    s.push(b.completed(app, "eur", "frank@example.com", 25).await); // 14
    let m = b.open(app, "eur", Some("g@example.com")).await; // 15 canceled, price_sensitivity
    b.cancel(app, &m.id, Some("price_sensitivity")).await;
    s.push(m);
    let m = b.open(app, "eur", Some("h@example.com")).await; // 16 expired
    expire(app, &m.id).await;
    s.push(m);
    s.push(b.completed(app, "usd", "alice@example.com", 35).await); // 17 returning (alice)
    let m = b.open(app, "usd", Some("i@example.com")).await; // 18 3DS, authentication failed, open
    b.three_ds(app, &m.id).await;
    let mut failed = payment("spt_sim_3ds");
    failed["authentication_result"] = json!({"outcome": "denied"});
    b.complete(app, &m.id, &failed).await;
    s.push(m);
    let m = b.open(app, "usd", Some("j@example.com")).await; // 19 canceled, unknown code → other
    b.cancel(app, &m.id, Some("astrology")).await;
    s.push(m);
    s.push(b.open(app, "usd", Some("k@example.com")).await); // 20 open
    let m = b.open(app, "usd", Some("l@example.com")).await; // 21 declined, then canceled without reason
    b.declined(app, &m.id).await;
    b.cancel(app, &m.id, None).await;
    s.push(m);
    s.push(b.open(app, "eur", Some("m@example.com")).await); // 22 open (euro)
    assert_eq!(s.len(), 22);
    pin_times(app, &s).await;

    // Costs (window [T0, T0+1h)): chan_a 10000 USD over two hours → 5000 counted; chan_b 3000 EUR over
    // [T0-1h, T0+1h) → 1500; chan_b 600 USD inside → 600; another channel outside the window → nothing.
    record_cost(app, "chan_a", T0, "2026-01-01T02:00:00Z", 10_000, "USD").await;
    record_cost(
        app,
        "chan_b",
        "2025-12-31T23:00:00Z",
        "2026-01-01T01:00:00Z",
        3000,
        "EUR",
    )
    .await;
    record_cost(
        app,
        "chan_b",
        "2026-01-01T00:10:00Z",
        "2026-01-01T00:20:00Z",
        600,
        "USD",
    )
    .await;
    record_cost(
        app,
        "chan_x",
        "2026-01-01T02:00:00Z",
        "2026-01-01T03:00:00Z",
        999,
        "USD",
    )
    .await;
    b_id
}

async fn funnel(app: &TestApp, extra: &str) -> Value {
    let r = app
        .admin(
            Method::GET,
            &format!("/admin/analytics/funnel?from={T0}&to=2026-01-01T01:00:00Z{extra}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn reasons(funnel: &Value) -> Vec<(String, u64)> {
    funnel["top_cancel_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["reason"].as_str().unwrap().to_owned(), r["count"].as_u64().unwrap()))
        .collect()
}

#[tokio::test]
async fn funnel_figures_match_a_hand_computed_fixture() {
    let app = spawn_app_with(&[("expiry_sweep_interval_ms", "100")]).await;
    let b_id = fixture(&app).await;

    let all = funnel(&app, "").await;
    // 22 sessions; 21 ready (all but #11); completed #1-5, #13, #14, #17 = 8; canceled #6-8, #15, #19, #21 = 6;
    // expired #9, #16 = 2; still open #10-12, #18, #20, #22 = 6.
    assert_eq!(all["sessions"], 22, "{all:#}");
    assert_eq!(all["ready_for_payment"], 21);
    assert_eq!(all["ready_rate"], "0.9545"); // 21/22 = 0.95454…
    assert_eq!(all["completed"], 8);
    assert_eq!(all["conversion_rate"], "0.3636"); // 8/22
    assert_eq!(all["canceled"], 6);
    assert_eq!(all["expired"], 2);
    assert_eq!(all["abandonment_rate"], "0.3636"); // (6+2)/22
    assert_eq!(all["still_open"], 6);
    // Declined: #4, #12, #18 (3-D Secure failed), #21 = 4; authentication_required: #5, #18 = 2;
    // attempts = 4 + 2 + 8 completed = 14.
    assert_eq!(all["declined_attempts"], 4);
    assert_eq!(all["authentication_required"], 2);
    assert_eq!(all["payment_attempts"], 14);
    assert_eq!(all["decline_rate"], "0.2857"); // 4/14 = 0.285714…
    // USD: #1-5 and #17, 3000 each; EUR: #13, #14, 2000 each.
    assert_eq!(
        all["average_order_value"],
        json!([{"currency": "eur", "orders": 2, "revenue": 4000, "average": 2000},
               {"currency": "usd", "orders": 6, "revenue": 18000, "average": 3000}])
    );
    // Alice completed #1 before #3 and #17 were created: 2 returning, 6 new.
    assert_eq!(all["buyers"], json!({"new": 6, "returning": 2, "unknown": 0}));
    assert_eq!(
        reasons(&all),
        [
            ("price_sensitivity".to_owned(), 2),
            ("unspecified".to_owned(), 2),
            ("other".to_owned(), 1),
            ("shipping_cost".to_owned(), 1)
        ]
    );
    // Durations 10, 15, 20, 25, 30, 35, 40, 50 s → median (25 + 30) / 2.
    assert_eq!(all["median_seconds_to_complete"], "27.500");
    // USD 5000 + 600 = 5600 / 8 = 700; EUR 1500 / 8 = 187.5 → 188.
    assert_eq!(
        all["cost_per_acquisition"],
        json!([{"currency": "eur", "cost": 1500, "completed": 8, "cost_per_order": 188},
               {"currency": "usd", "cost": 5600, "completed": 8, "cost_per_order": 700}])
    );

    // Agent B only: #13-22 = 10 sessions, all ready; completed #13, #14, #17; canceled #15, #19, #21; expired #16;
    // open #18, #20, #22. Its channel's costs: USD 600 / 3 = 200, EUR 1500 / 3 = 500.
    let b = funnel(&app, &format!("&agent={b_id}")).await;
    assert_eq!(
        (b["sessions"].as_u64(), b["completed"].as_u64(), b["canceled"].as_u64()),
        (Some(10), Some(3), Some(3))
    );
    assert_eq!((b["expired"].as_u64(), b["still_open"].as_u64()), (Some(1), Some(3)));
    assert_eq!(b["ready_rate"], "1.0000");
    assert_eq!(b["conversion_rate"], "0.3000");
    assert_eq!(b["abandonment_rate"], "0.4000");
    // Declined #18, #21; authentication #18; attempts 2 + 1 + 3 = 6.
    assert_eq!(b["decline_rate"], "0.3333");
    assert_eq!(b["buyers"], json!({"new": 2, "returning": 1, "unknown": 0}));
    assert_eq!(
        b["cost_per_acquisition"],
        json!([{"currency": "eur", "cost": 1500, "completed": 3, "cost_per_order": 500},
               {"currency": "usd", "cost": 600, "completed": 3, "cost_per_order": 200}])
    );

    // Channel chan_a = agent A: #1-12; 5 completed; USD 5000 / 5 = 1000.
    let a = funnel(&app, "&channel=chan_a").await;
    assert_eq!((a["sessions"].as_u64(), a["completed"].as_u64()), (Some(12), Some(5)));
    assert_eq!(a["ready_rate"], "0.9167"); // 11/12
    assert_eq!(a["median_seconds_to_complete"], "30.000"); // 10, 20, 30, 40, 50
    assert_eq!(
        a["cost_per_acquisition"],
        json!([{"currency": "usd", "cost": 5000, "completed": 5, "cost_per_order": 1000}])
    );

    // Euro sessions: #13-16, #22 = 5; completed 2; all channels' costs: USD 5600 / 2, EUR 1500 / 2.
    let eur = funnel(&app, "&currency=EUR").await;
    assert_eq!(
        (eur["sessions"].as_u64(), eur["completed"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(eur["conversion_rate"], "0.4000");
    assert_eq!(
        eur["average_order_value"],
        json!([{"currency": "eur", "orders": 2, "revenue": 4000, "average": 2000}])
    );
    assert_eq!(
        eur["cost_per_acquisition"],
        json!([{"currency": "eur", "cost": 1500, "completed": 2, "cost_per_order": 750},
               {"currency": "usd", "cost": 5600, "completed": 2, "cost_per_order": 2800}])
    );

    // A window with none of the cohort: zero sessions and no rates.
    let r = app
        .admin(
            Method::GET,
            "/admin/analytics/funnel?from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z",
        )
        .send()
        .await
        .unwrap();
    let empty: Value = r.json().await.unwrap();
    assert_eq!(empty["sessions"], 0);
    assert_eq!(empty["conversion_rate"], Value::Null);

    assert_order_tags(&app, &b_id).await;
    assert_export_round_trips(&app, &all).await;
}

/// Orders carry agent, channel and source in the admin API (never in the ACP session).
async fn assert_order_tags(app: &TestApp, b_id: &str) {
    let r = app.admin(Method::GET, "/admin/orders").send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    let orders = body["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 8);
    let by_agent = |agent: &str| orders.iter().filter(|o| o["tags"]["agent_id"] == agent).count();
    assert_eq!(by_agent("agent_default"), 5);
    assert_eq!(by_agent(b_id), 3);
    for order in orders {
        assert_eq!(order["tags"]["source"], "chat_to_checkout", "{order:#}");
        let channel = if order["tags"]["agent_id"] == "agent_default" {
            "chan_a"
        } else {
            "chan_b"
        };
        assert_eq!(order["tags"]["channel_id"], channel, "{order:#}");
    }
    let id = orders[0]["id"].as_str().unwrap();
    let r = app
        .admin(Method::GET, &format!("/admin/orders/{id}"))
        .send()
        .await
        .unwrap();
    let order: Value = r.json().await.unwrap();
    assert_eq!(order["tags"]["source"], "chat_to_checkout");
}

/// Reads every page of the export (`limit` 7, following `X-Next-Cursor`, and checks `Link` names the same
/// cursor); returns the rows as JSON objects.
async fn export_all(app: &TestApp, csv: bool) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/admin/analytics/events?limit=7".to_owned();
        if let Some(c) = &cursor {
            path += &format!("&cursor={c}");
        }
        let mut request = app.admin(Method::GET, &path);
        if csv {
            request = request.header("Accept", "text/csv");
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        let next = r.headers().get("x-next-cursor").map(|v| v.to_str().unwrap().to_owned());
        if let Some(next) = &next {
            let link = r.headers()["link"].to_str().unwrap();
            assert!(
                link.contains(&format!("cursor={next}")) && link.ends_with("rel=\"next\""),
                "{link}"
            );
        }
        let text = r.text().await.unwrap();
        if csv {
            assert!(content_type.starts_with("text/csv"), "{content_type}");
            rows.extend(parse_csv(&text));
        } else {
            assert_eq!(content_type, "application/x-ndjson");
            rows.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    rows
}

/// The export's CSV (no field of the fixture needs quoting) as JSON objects keyed by the header.
fn parse_csv(text: &str) -> Vec<Value> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..4], ["id", "occurred_at", "checkout_session_id", "kind"]);
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), header.len(), "{line}");
            let object: serde_json::Map<String, Value> = header
                .iter()
                .zip(fields)
                .map(|(h, f)| {
                    let value = match (*h, f) {
                        (_, "") => Value::Null,
                        ("id" | "amount", n) => json!(n.parse::<i64>().unwrap()),
                        (_, text) => json!(text),
                    };
                    (h.to_string(), value)
                })
                .collect();
            Value::Object(object)
        })
        .collect()
}

async fn assert_export_round_trips(app: &TestApp, all: &Value) {
    let stored: i64 = sqlx::query_scalar("select count(*) from funnel_event")
        .fetch_one(&app.db)
        .await
        .unwrap();
    for csv in [false, true] {
        let rows = export_all(app, csv).await;
        assert_eq!(rows.len() as i64, stored, "every event exported (csv: {csv})");
        let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        ids.dedup();
        assert_eq!(ids.len(), rows.len(), "each event once, in id order (csv: {csv})");
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let mut kinds: HashMap<String, u64> = HashMap::new();
        for row in &rows {
            *kinds.entry(row["kind"].as_str().unwrap().to_owned()).or_default() += 1;
            assert_eq!(row["source"], "chat_to_checkout");
            assert!(row.get("email").is_none());
            let hash = row["buyer_hash"].as_str();
            assert!(hash.is_none_or(|h| h.len() == 64 && !h.contains('@')), "{row}");
        }
        // The same figures recomputed from the export (the fixture's events all fall in the cohort).
        let n = |kind: &str| json!(kinds.get(kind).copied().unwrap_or(0));
        assert_eq!(n("session_created"), all["sessions"], "csv: {csv}");
        assert_eq!(n("ready_for_payment"), all["ready_for_payment"]);
        assert_eq!(n("completed"), all["completed"]);
        assert_eq!(n("canceled"), all["canceled"]);
        assert_eq!(n("expired"), all["expired"]);
        assert_eq!(n("payment_declined"), all["declined_attempts"]);
        assert_eq!(n("authentication_required"), all["authentication_required"]);
        let revenue: i64 = rows
            .iter()
            .filter(|r| r["kind"] == "completed" && r["currency"] == "usd")
            .map(|r| r["amount"].as_i64().unwrap())
            .sum();
        assert_eq!(revenue, 18000);
    }
}

#[tokio::test]
async fn an_event_is_written_in_the_transaction_of_its_change() {
    let app = spawn_app().await;
    let agent = Agent {
        key: AGENT_KEY.to_owned(),
    };
    let s = agent.create(&app, "usd", Some("t@example.com")).await;
    assert_eq!(total(&s, "total"), 3000);
    let id = s["id"].as_str().unwrap();
    // A failing event insert must undo the cancel it describes.
    sqlx::raw_sql(
        "create function refuse_cancel_event() returns trigger language plpgsql as $$
         begin if new.kind = 'canceled' then raise exception 'refused by the test'; end if; return new; end $$;
         create trigger refuse_cancel_event before insert on funnel_event
         for each row execute function refuse_cancel_event();",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let r = app
        .acp_post(&format!("/checkout_sessions/{id}/cancel"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let status: String = sqlx::query_scalar("select status from checkout_session where checkout_session_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "ready_for_payment", "the cancel rolled back with its event");
    sqlx::raw_sql("drop trigger refuse_cancel_event on funnel_event")
        .execute(&app.db)
        .await
        .unwrap();

    // A refused change writes no event: completing a canceled session.
    agent.cancel(&app, id, None).await;
    let r = app
        .acp_post(&format!("/checkout_sessions/{id}/complete"), &payment("spt_sim_ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let kinds: Vec<String> =
        sqlx::query_scalar("select kind from funnel_event where checkout_session_id = $1 order by funnel_event_id")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(kinds, ["session_created", "ready_for_payment", "canceled"]);
}

#[tokio::test]
async fn analytics_parameters_are_validated_and_costs_need_an_idempotency_key() {
    let app = spawn_app().await;
    for (query, param) in [
        ("to=2026-01-02T00:00:00Z", "from"),
        ("from=yesterday&to=2026-01-02T00:00:00Z", "from"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
    ] {
        let r = app
            .admin(Method::GET, &format!("/admin/analytics/funnel?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["param"], param, "{query}: {body}");
    }
    let r = app
        .admin(Method::GET, "/admin/analytics/events?cursor=bogus")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app.client.get(app.url("/admin/analytics/funnel")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let cost = json!({"channel": "c", "from": T0, "to": "2026-01-02T00:00:00Z", "amount": 5, "currency": "usd"});
    let r = app
        .admin(Method::POST, "/admin/analytics/costs")
        .json(&cost)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "idempotency_key_required");
    // A replayed key records the cost once.
    for _ in 0..2 {
        let r = app
            .admin(Method::POST, "/admin/analytics/costs")
            .header("Idempotency-Key", "cost-1")
            .json(&cost)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let costs: i64 = sqlx::query_scalar("select count(*) from channel_cost")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(costs, 1);
    let mut bad = cost.clone();
    bad["to"] = json!(T0);
    let r = app
        .admin(Method::POST, "/admin/analytics/costs")
        .header("Idempotency-Key", "cost-2")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = app
        .admin(Method::PUT, "/admin/agents/agent_nobody/channel")
        .json(&json!({"channel_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .admin(Method::PUT, "/admin/agents/agent_default/channel")
        .json(&json!({"channel_id": "has space"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// The kinds, reasons and buyer hashes of a session's events, in order.
async fn session_events(app: &TestApp, id: &str) -> Vec<(String, Option<String>, Option<String>, String)> {
    sqlx::query_as(
        "select kind, reason, buyer_hash, channel_id from funnel_event where checkout_session_id = $1
         order by funnel_event_id",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn events_record_ready_once_decline_codes_channels_and_a_salted_buyer_hash() {
    use sha2::{Digest, Sha256};
    let salt = "test-analytics-salt-0123456789";
    let app = spawn_app_with(&[("analytics_salt", salt)]).await;
    let agent = Agent {
        key: AGENT_KEY.to_owned(),
    };
    // Created without contact details (not ready), then ready, then falls back, then ready again: one ready event.
    let s = agent.create(&app, "usd", None).await;
    assert_eq!(s["status"], "not_ready_for_payment");
    let id = s["id"].as_str().unwrap();
    let path = format!("/checkout_sessions/{id}");
    let contact = json!({"fulfillment_details": {"name": "Z", "email": "  Zoe@Example.COM", "address": address("US")}});
    for body in [contact.clone(), json!({"fulfillment_details": null}), contact] {
        session(agent.post(&app, &path, &body).send().await.unwrap(), StatusCode::OK).await;
    }
    // The channel changes: later events carry the new one, earlier ones keep theirs.
    set_channel(&app, "agent_default", "chan_new").await;
    agent.declined(&app, id).await;
    // The same cancel twice under one Idempotency-Key: replayed, one event.
    let cancel = json!({"intent_trace": {"reason_code": "shipping_speed"}});
    for _ in 0..2 {
        let r = app
            .acp_post_keyed(&format!("{path}/cancel"), "cancel-once", &cancel)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let all = session_events(&app, id).await;
    // Each update is also a `session_updated` event (the support view's timeline), not a funnel step.
    assert_eq!(all.iter().filter(|e| e.0 == "session_updated").count(), 3);
    let events: Vec<_> = all.into_iter().filter(|e| e.0 != "session_updated").collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        kinds,
        ["session_created", "ready_for_payment", "payment_declined", "canceled"]
    );
    assert_eq!(events[2].1.as_deref(), Some("card_declined"), "the PSP's decline code");
    assert_eq!(events[3].1.as_deref(), Some("shipping_speed"));
    let expected: String = Sha256::digest(format!("{salt}\0zoe@example.com"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(events[0].2, None, "no email known at creation");
    assert!(
        events[1..].iter().all(|e| e.2.as_deref() == Some(expected.as_str())),
        "{events:?}"
    );
    let channels: Vec<&str> = events.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(channels, ["agent_default", "agent_default", "chan_new", "chan_new"]);

    // The export window: only events at or after `from` and before `to`.
    sqlx::query("update funnel_event set occurred_at = $2 where checkout_session_id = $1 and kind = 'canceled'")
        .bind(id)
        .bind(t0())
        .execute(&app.db)
        .await
        .unwrap();
    let r = app
        .admin(
            Method::GET,
            &format!("/admin/analytics/events?from={T0}&to=2026-01-01T00:00:01Z"),
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-next-cursor").is_none());
    let text = r.text().await.unwrap();
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(rows[0]["kind"], "canceled");
    assert!(!text.to_lowercase().contains("zoe"), "no email in the export");
}
