//! ACP 2026-01-16 end to end: the 2025-12-12 suite (`v2025_12_12`) run for this version, plus what this version
//! changes: fulfillment options with `totals[]`, `payment_provider.merchant_id`, `authentication_provider`, the
//! five-outcome `authentication_result`, and the capability-negotiation example file.

use serde_json::json;

use crate::{
    helpers::spawn_app,
    lifecycle::TEE,
    v2025_12_12::{self as suite, Version, create, option_total, payment, post, session},
};

pub const V: Version = Version {
    name: "2026-01-16",
    doc: include_str!("../../openapi/2026-01-16.json"),
    authenticated: "authenticated",
    attempt: "attempt",
    declines: &["failed", "unavailable", "rejected"],
    foreign_outcome: "denied",
    bad_eci: "5",
};

#[tokio::test]
async fn v2026_01_16_lifecycle_on_the_simulator() {
    suite::lifecycle_on_the_simulator(&V).await;
}

#[tokio::test]
async fn v2026_01_16_three_ds_on_the_simulator() {
    suite::three_ds_on_the_simulator(&V).await;
}

#[tokio::test]
async fn v2026_01_16_three_ds_outcomes_decline_or_complete() {
    suite::three_ds_outcomes(&V).await;
}

#[tokio::test]
async fn v2026_01_16_stripe_payments_and_three_ds() {
    suite::stripe_payments_and_three_ds(&V).await;
}

#[tokio::test]
async fn v2026_01_16_cancel_with_and_without_a_body() {
    suite::cancel_with_and_without_a_body(&V).await;
}

#[tokio::test]
async fn v2026_01_16_illegal_transitions() {
    suite::illegal_transitions(&V).await;
}

#[tokio::test]
async fn v2026_01_16_expired_sessions_read_canceled() {
    suite::expired_sessions_read_canceled(&V).await;
}

#[tokio::test]
async fn v2026_01_16_a_session_being_paid_is_in_progress() {
    suite::a_session_being_paid_is_in_progress(&V).await;
}

#[tokio::test]
async fn v2026_01_16_error_table() {
    suite::error_table(&V).await;
}

#[tokio::test]
async fn v2026_01_16_messages_in_the_versions_vocabulary() {
    suite::messages_in_the_versions_vocabulary(&V).await;
}

#[tokio::test]
async fn v2026_01_16_a_2026_04_17_session_reads_in_this_version() {
    suite::a_2026_04_17_session_reads_in_this_version(&V).await;
}

#[tokio::test]
async fn v2026_01_16_discounts_tax_and_pickup() {
    suite::discounts_tax_and_pickup(&V).await;
}

#[tokio::test]
async fn v2026_01_16_order_webhooks() {
    suite::order_webhooks(&V).await;
}

#[tokio::test]
async fn v2026_01_16_every_example_request() {
    let files = [
        "examples.agentic_checkout.json",
        "examples.capability_negotiation.json",
        "examples.delegate_payment.json",
    ];
    let table = suite::every_example_request(&V, &files).await;
    if table.is_empty() {
        return; // spec unavailable; official.rs said so loudly
    }
    assert_eq!(table.len(), 16, "{table:?}");
    let negotiated = table
        .iter()
        .filter(|(name, _, _)| name.starts_with("examples.capability_negotiation.json"));
    assert_eq!(negotiated.clone().count(), 7);
    for (name, status, _) in negotiated {
        assert_eq!(
            *status, 201,
            "{name}: `agent_capabilities` is ignored, the session is made"
        );
    }
}

#[test]
fn v2026_01_16_the_examples_validate_against_their_schema() {
    suite::the_examples_validate_against_their_schema(&V);
}

#[tokio::test]
async fn v2026_01_16_create_refuses_what_its_schema_forbids() {
    suite::create_refuses_what_its_schema_forbids(&V).await;
}

#[tokio::test]
async fn v2026_01_16_update_complete_and_cancel_refuse_what_their_schemas_forbid() {
    suite::update_complete_and_cancel_refuse_what_their_schemas_forbid(&V).await;
}

#[tokio::test]
async fn v2026_01_16_our_document_matches_the_official_openapi() {
    suite::our_document_matches_the_official_openapi(&V).await;
}

#[tokio::test]
async fn v2026_01_16_options_carry_totals_and_the_provider_names_the_merchant() {
    let app = spawn_app().await;
    let created = create(&app, &V, json!([{"id": TEE, "quantity": 1}])).await;
    for option in created["fulfillment_options"].as_array().unwrap() {
        assert_eq!(option["totals"][0]["type"], "total", "{option:#}");
        option_total(&V, option);
    }
    let merchant = created["payment_provider"]["merchant_id"]
        .as_str()
        .expect("merchant_id is required");
    assert_eq!(
        created["authentication_provider"],
        json!({"provider": "stripe", "merchant_id": merchant, "supported_authentication_methods": ["3ds"]})
    );
    let id = created["id"].as_str().unwrap();
    let r = post(
        &app,
        &V,
        &format!("/checkout_sessions/{id}/complete"),
        &payment("spt_sim_3ds"),
    )
    .send()
    .await
    .unwrap();
    let pending = session(&V, r, reqwest::StatusCode::OK).await;
    let mut keys: Vec<&str> = pending["authentication_metadata"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["acquirer_details", "channel", "directory_server"],
        "no property the version lacks"
    );
}
