//! `GET /.well-known/acp.json` (DIGEST §3.18): the official `DiscoveryResponse`, public, cacheable with an
//! `ETag`, following the served versions and never revealing merchant ids, handlers, PSPs or keys.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_TOKEN, AGENT_KEY, TestApp, spawn_app, spawn_app_with},
    official::assert_valid,
};

const PATH: &str = "/.well-known/acp.json";

/// Fetches the document without any credential and checks it against the official schema.
async fn discover(app: &TestApp) -> (reqwest::header::HeaderMap, Value) {
    let r = app.client.get(app.url(PATH)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let headers = r.headers().clone();
    let body: Value = r.json().await.unwrap();
    assert_valid("2026-04-17", "DiscoveryResponse", &body);
    (headers, body)
}

#[tokio::test]
async fn the_document_is_public_and_matches_the_official_schema() {
    let app = spawn_app_with(&[
        ("documentation_url", "https://shop.example.com/acp"),
        ("supported_locales", "en-US, fr-FR"),
        ("public_base_url", "https://shop.example.com"),
    ])
    .await;
    let (headers, body) = discover(&app).await;
    assert_eq!(headers["content-type"], "application/json");
    let released = ["2025-09-29", "2025-12-12", "2026-01-16", "2026-01-30", "2026-04-17"];
    assert_eq!(
        body["protocol"],
        json!({"name": "acp", "version": "2026-04-17", "supported_versions": released,
               "documentation_url": "https://shop.example.com/acp"})
    );
    assert_eq!(body["api_base_url"], "https://shop.example.com");
    assert_eq!(body["transports"], json!(["rest"]));
    let capabilities = &body["capabilities"];
    assert_eq!(capabilities["services"], json!(["checkout", "orders"]));
    assert_eq!(capabilities["intervention_types"], json!(["3ds"]));
    assert_eq!(capabilities["extensions"][0]["name"], "discount");
    assert_eq!(capabilities["supported_locales"], json!(["en-US", "fr-FR"]));
    let catalog: Vec<String> =
        sqlx::query_scalar("select distinct lower(currency) from variant where currency is not null order by 1")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(!catalog.is_empty());
    assert_eq!(capabilities["supported_currencies"], json!(catalog));
}

#[tokio::test]
async fn the_document_is_cacheable_and_revalidates_with_its_etag() {
    let app = spawn_app().await;
    let (headers, _) = discover(&app).await;
    assert_eq!(headers["cache-control"], "public, max-age=3600");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let (again, _) = discover(&app).await;
    assert_eq!(again["etag"], etag.as_str(), "the tag is stable while nothing changes");

    for matching in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"stale\", {etag}"),
        "*".to_owned(),
    ] {
        let r = app
            .client
            .get(app.url(PATH))
            .header("If-None-Match", &matching)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{matching}");
        assert_eq!(r.headers()["etag"], etag.as_str());
        assert_eq!(r.headers()["cache-control"], "public, max-age=3600");
        assert!(r.bytes().await.unwrap().is_empty(), "a 304 has no body");
    }
    let stale = app
        .client
        .get(app.url(PATH))
        .header("If-None-Match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
}

#[tokio::test]
async fn supported_versions_follow_the_api_versions_setting() {
    let app = spawn_app_with(&[("api_versions", "2026-01-30,2025-12-12")]).await;
    let (_, body) = discover(&app).await;
    assert_eq!(
        body["protocol"]["supported_versions"],
        json!(["2025-12-12", "2026-01-30"])
    );
    assert_eq!(body["protocol"]["version"], "2026-01-30");
    assert!(
        body["protocol"].get("documentation_url").is_none(),
        "not configured: omitted"
    );

    // `unreleased` is not a date, which the schema's pattern demands: served, but never listed.
    let app = spawn_app_with(&[("api_versions", "2026-04-17,unreleased")]).await;
    let (_, body) = discover(&app).await;
    assert_eq!(body["protocol"]["supported_versions"], json!(["2026-04-17"]));
    assert_eq!(body["protocol"]["version"], "2026-04-17");
}

#[tokio::test]
async fn the_document_reveals_no_merchant_id_handler_psp_or_secret() {
    let merchant_id = "acct_discovery_secret_merchant";
    let app = spawn_app_with(&[("payment_merchant_id", merchant_id)]).await;
    let r = app.client.get(app.url(PATH)).send().await.unwrap();
    let text = r.text().await.unwrap();
    for secret in [
        merchant_id,
        "merchant_id",
        AGENT_KEY,
        ADMIN_TOKEN,
        "card_tokenized",
        "dev.acp.tokenized.card",
        "stripe",
        "psp",
        "handler",
    ] {
        assert!(!text.contains(secret), "{secret} appears in {text}");
    }
}

#[tokio::test]
async fn the_document_stays_reachable_with_rate_limits_on_and_is_limited_per_address() {
    let app = spawn_app_with(&[
        ("rate_limit_enabled", "true"),
        ("rate_limit_ip_per_sec", "1"),
        ("rate_limit_ip_burst", "2"),
    ])
    .await;
    discover(&app).await;
    // One token a second: of eight quick calls, some find the bucket empty however slow the machine is.
    let mut limited = None;
    for _ in 0..8 {
        let r = app.client.get(app.url(PATH)).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
    }
    let limited = limited.expect("the per-address limit applies to the discovery document");
    assert!(limited.headers().contains_key("retry-after"));
}

#[test]
fn discovery_settings_are_validated() {
    let settings = |pairs: &[(&str, &str)]| {
        let mut all = vec![("env", "development"), ("psp", "simulator")];
        all.extend_from_slice(pairs);
        acp_merchant::config::Settings::from_pairs(&all)
    };
    let ok = settings(&[
        ("supported_locales", "en-US, fr, zh-Hant-TW"),
        ("documentation_url", ""),
    ])
    .unwrap();
    assert_eq!(ok.discovery.supported_locales, ["en-US", "fr", "zh-Hant-TW"]);
    assert!(ok.discovery.documentation_url.is_none());
    let bad_locale = settings(&[("supported_locales", "en-US,english please")])
        .unwrap_err()
        .to_string();
    assert!(bad_locale.contains("ACP_SUPPORTED_LOCALES"), "{bad_locale}");
    let bad_url = settings(&[("documentation_url", "ftp://docs.example")])
        .unwrap_err()
        .to_string();
    assert!(bad_url.contains("ACP_DOCUMENTATION_URL"), "{bad_url}");
}
