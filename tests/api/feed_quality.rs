//! The feed quality report (issue 15): a fixture feed with one product per rule gets exactly that rule's finding,
//! from the library, the command line and the admin API alike.

use std::collections::BTreeSet;

use acp_merchant::catalog::quality::{self, RULES, Severity};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{binary, spawn_app};

const FIXTURE: &str = include_str!("../fixtures/feed-quality.jsonl");
const FIXTURE_PATH: &str = "tests/fixtures/feed-quality.jsonl";

/// Product `q_<rule>` of the fixture breaks exactly `rule`, at this path; `q_clean` breaks nothing.
const EXPECTED: &[(&str, &str)] = &[
    ("schema", "$.variants[0].colour"),
    ("title_missing", "$.title"),
    ("title_length", "$.title"),
    ("description_missing", "$.description"),
    ("description_length", "$.description"),
    ("image_missing", "$.media"),
    ("media_not_https", "$.media[0].url"),
    ("media_shape", "$.media[0]"),
    ("price_missing", "$.variants[0].price"),
    ("price_currency_mismatch", "$.variants[0].list_price.currency"),
    ("list_price_below_price", "$.variants[0].list_price.amount"),
    ("availability_missing", "$.variants[0].availability"),
    ("availability_inconsistent", "$.variants[0].availability"),
    ("category_missing", "$.variants[0].categories"),
    ("barcode_missing", "$.variants[0].barcodes"),
    ("barcode_invalid", "$.variants[0].barcodes[0].value"),
    ("barcode_check_digit", "$.variants[0].barcodes[0].value"),
    ("variant_options_inconsistent", "$.variants[1].variant_options"),
];

fn expected_for(product_id: &str) -> Vec<(String, String)> {
    let rule = product_id.strip_prefix("q_").expect("fixture ids start with q_");
    EXPECTED
        .iter()
        .filter(|(r, _)| *r == rule)
        .map(|(r, path)| ((*r).to_owned(), (*path).to_owned()))
        .collect()
}

#[test]
fn the_fixture_feed_gets_exactly_one_documented_finding_per_product() {
    let report = quality::check_feed(FIXTURE);
    let covered: BTreeSet<&str> = EXPECTED.iter().map(|(rule, _)| *rule).collect();
    let documented: BTreeSet<&str> = RULES.iter().map(|r| r.id).collect();
    assert_eq!(covered, documented, "the fixture has one product per documented rule");
    assert_eq!(report.products.len(), RULES.len() + 1, "plus the clean product");
    for product in &report.products {
        let id = product.product_id.as_deref().expect("every fixture line has an id");
        let got: Vec<(String, String)> = product
            .findings
            .iter()
            .map(|f| (f.rule.to_owned(), f.path.clone()))
            .collect();
        assert_eq!(got, expected_for(id), "{id}");
        let penalty = product.findings.iter().map(|f| match f.severity {
            Severity::Error => 40,
            Severity::Warning => 10,
            Severity::Info => 2,
        });
        assert_eq!(product.score, 100 - penalty.sum::<u32>(), "{id}");
    }
    let s = &report.summary;
    assert_eq!((s.errors, s.warnings, s.infos), (1, 13, 4));
    // Variants of the valid lines: one each, two in q_variant_options_inconsistent.
    assert_eq!((s.products, s.variants), (19, 19));
    let variant_finding = &report.products[RULES.len()].findings[0];
    assert_eq!(variant_finding.variant_id.as_deref(), Some("var_q_voi_red"));
}

#[tokio::test]
async fn catalog_check_prints_the_report_and_fails_on_a_schema_violation() {
    // No settings, no database: the command reads the file only.
    let output = binary(&["catalog", "check", FIXTURE_PATH], &[]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(1), "a schema violation fails the check");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("q_schema (line 2): score 60"), "{text}");
    assert!(text.contains("warning  barcode_check_digit"), "{text}");
    assert!(
        text.ends_with("19 products, 19 variants: 1 errors, 13 warnings, 4 infos; score 90\n"),
        "{text}"
    );

    let output = binary(&["catalog", "check", "--json", "config/demo-catalog.jsonl"], &[])
        .output()
        .await
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["summary"]["products"], 12);
    assert_eq!(report["summary"]["errors"], 0);
    assert_eq!(report["products"][0]["line"], 1);

    let output = binary(&["catalog", "check", "/nonexistent.jsonl"], &[])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[tokio::test]
async fn the_admin_report_covers_the_stored_catalog() {
    let app = spawn_app().await;
    let r = app.admin(Method::GET, "/admin/catalog/quality").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let before: Value = r.json().await.unwrap();
    let stored_before = before["summary"]["products"].as_u64().unwrap();

    // Every valid line of the fixture (the import refuses the schema violation).
    let valid: String = FIXTURE
        .lines()
        .filter(|l| !l.contains("\"q_schema\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let r = app
        .admin(Method::POST, "/admin/catalog/import")
        .body(valid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    let r = app.admin(Method::GET, "/admin/catalog/quality").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["summary"]["products"].as_u64().unwrap(), stored_before + 18);
    for product in report["products"].as_array().unwrap() {
        let id = product["product_id"].as_str().unwrap();
        assert!(product.get("line").is_none(), "stored products have no line");
        if !id.starts_with("q_") {
            continue;
        }
        let got: Vec<(String, String)> = product["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["rule"].as_str().unwrap().to_owned(),
                    f["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(got, expected_for(id), "{id}");
    }

    let r = app.client.get(app.url("/admin/catalog/quality")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
