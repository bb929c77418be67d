//! Capability negotiation (DIGEST §3.10), for every version that negotiates (2026-01-30 and 2026-04-17): the
//! response's capabilities are the intersection of the agent's declaration and the merchant's; unknown values are
//! ignored; a required intervention the agent lacks blocks payment with `intervention_required` until it is
//! declared. Every body is validated against the official schema and our own document (`session_in`).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{AGENT_KEY, TestApp, spawn_app, spawn_app_with},
    lifecycle::{TEE, create_body, session_in},
};

const VERSIONS: [&str; 2] = ["2026-01-30", "2026-04-17"];
const CARD: &str = "dev.acp.tokenized.card";

/// A full `PaymentHandler` declaration named `name`, as an agent sends it.
fn handler(name: &str) -> Value {
    json!({
        "id": format!("agent_{}", name.replace('.', "_")), "name": name, "version": "2026-01-22",
        "spec": "https://acp.dev/handlers/x", "requires_delegate_payment": true, "requires_pci_compliance": false,
        "psp": "stripe", "config_schema": "https://acp.dev/schemas/x/config.json",
        "instrument_schemas": ["https://acp.dev/schemas/x/instrument.json"], "config": {},
    })
}

/// Creates a session in `version` with `capabilities` (`None`: the member is left out).
async fn create_declaring(app: &TestApp, version: &str, capabilities: Option<Value>) -> Value {
    let mut body = create_body(json!([{"id": TEE, "quantity": 1}]));
    match capabilities {
        Some(c) => body["capabilities"] = c,
        None => {
            body.as_object_mut().unwrap().remove("capabilities");
        }
    }
    let r = app
        .acp_as(Method::POST, "/checkout_sessions", AGENT_KEY, version)
        .json(&body)
        .send()
        .await
        .unwrap();
    session_in(version, r, StatusCode::CREATED).await
}

fn supported(s: &Value) -> &Value {
    &s["capabilities"]["interventions"]["supported"]
}

fn handler_names(s: &Value) -> Vec<&str> {
    s["capabilities"]["payment"]["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect()
}

fn extension_names(s: &Value) -> Vec<&str> {
    s["capabilities"]["extensions"]
        .as_array()
        .map(|e| e.iter().map(|x| x["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn codes(s: &Value) -> Vec<&str> {
    s["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["code"].as_str())
        .collect()
}

#[tokio::test]
async fn an_agent_declaring_everything_gets_what_the_merchant_supports() {
    let app = spawn_app().await;
    for v in VERSIONS {
        let all = json!({"interventions": {"supported": ["3ds", "biometric", "address_verification"]},
                         "extensions": ["discount"], "payment": {"handlers": [handler(CARD)]}});
        let s = create_declaring(&app, v, Some(all)).await;
        assert_eq!(supported(&s), &json!(["3ds"]), "{v}: seller ∩ agent");
        assert_eq!(handler_names(&s), [CARD], "{v}");
        assert_eq!(extension_names(&s), ["discount"], "{v}");
        assert_eq!(s["capabilities"]["interventions"]["required"], json!([]), "{v}");
        assert_eq!(s["capabilities"]["interventions"]["enforcement"], "conditional", "{v}");
        assert_eq!(s["status"], "ready_for_payment", "{v}: {s:#}");
    }
}

#[tokio::test]
async fn an_agent_declaring_nothing_gets_no_intervention_no_extension_and_every_handler() {
    let app = spawn_app().await;
    for v in VERSIONS {
        for declared in [None, Some(json!({}))] {
            let s = create_declaring(&app, v, declared.clone()).await;
            assert_eq!(supported(&s), &json!([]), "{v} {declared:?}");
            assert_eq!(handler_names(&s), [CARD], "{v} {declared:?}: no list restricts nothing");
            assert!(s["capabilities"].get("extensions").is_none(), "{v} {declared:?}");
            assert!(s.get("discounts").is_none(), "{v} {declared:?}");
            assert_eq!(s["status"], "ready_for_payment", "{v} {declared:?}");
        }
    }
}

#[tokio::test]
async fn an_agent_declaring_a_subset_gets_only_that_subset() {
    let app = spawn_app().await;
    for v in VERSIONS {
        let only_3ds = create_declaring(&app, v, Some(json!({"interventions": {"supported": ["3ds"]}}))).await;
        assert_eq!(supported(&only_3ds), &json!(["3ds"]), "{v}");
        assert!(only_3ds["capabilities"].get("extensions").is_none(), "{v}");
        let only_discount = create_declaring(
            &app,
            v,
            Some(json!({"interventions": {"supported": ["biometric"]}, "extensions": ["discount"]})),
        )
        .await;
        assert_eq!(
            supported(&only_discount),
            &json!([]),
            "{v}: biometric is not the merchant's"
        );
        assert_eq!(extension_names(&only_discount), ["discount"], "{v}");
        assert!(
            only_discount.get("discounts").is_some(),
            "{v}: the active extension's field"
        );
    }
}

#[tokio::test]
async fn unknown_declared_values_are_ignored_never_refused() {
    let app = spawn_app().await;
    for v in VERSIONS {
        let odd = json!({"interventions": {"supported": ["3ds", "retina_scan"], "display_context": "webview"},
                         "extensions": ["discount", "loyalty_points", "com.example.gift_wrap@2026-01-01"],
                         "payment": {"handlers": [handler(CARD), handler("com.example.future_wallet"), "bare.name", 7]}});
        let s = create_declaring(&app, v, Some(odd)).await;
        assert_eq!(supported(&s), &json!(["3ds"]), "{v}");
        assert_eq!(extension_names(&s), ["discount"], "{v}");
        assert_eq!(handler_names(&s), [CARD], "{v}");
        let text = s.to_string();
        for unknown in [
            "retina_scan",
            "loyalty_points",
            "gift_wrap",
            "future_wallet",
            "bare.name",
        ] {
            assert!(!text.contains(unknown), "{v}: {unknown} echoed");
        }
        assert_eq!(s["status"], "ready_for_payment", "{v}");
    }
}

#[tokio::test]
async fn a_handler_the_merchant_lacks_is_dropped_and_none_in_common_blocks_payment() {
    let app = spawn_app().await;
    for v in VERSIONS {
        let mixed = json!({"interventions": {"supported": ["3ds"]},
                           "payment": {"handlers": [handler("com.example.wallet"), handler(CARD)]}});
        let s = create_declaring(&app, v, Some(mixed)).await;
        assert_eq!(handler_names(&s), [CARD], "{v}");
        assert_eq!(s["status"], "ready_for_payment", "{v}");

        let lacking = json!({"interventions": {"supported": ["3ds"]},
                             "payment": {"handlers": [handler("com.example.wallet")]}});
        let s = create_declaring(&app, v, Some(lacking)).await;
        assert_eq!(handler_names(&s), Vec::<&str>::new(), "{v}");
        assert_eq!(s["status"], "not_ready_for_payment", "{v}");
        let m = s["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["code"] == "unsupported")
            .unwrap_or_else(|| panic!("{v}: no unsupported message: {s:#}"));
        assert_eq!(m["type"], "error");
        assert_eq!(m["param"], "$.capabilities.payment.handlers");
    }
}

#[tokio::test]
async fn a_required_intervention_the_agent_lacks_blocks_payment_until_declared() {
    let app = spawn_app_with(&[("required_interventions", "3ds")]).await;
    for v in VERSIONS {
        let s = create_declaring(&app, v, Some(json!({"interventions": {"supported": ["biometric"]}}))).await;
        assert_eq!(s["status"], "not_ready_for_payment", "{v}: {s:#}");
        assert_eq!(s["capabilities"]["interventions"]["required"], json!(["3ds"]), "{v}");
        assert_eq!(s["capabilities"]["interventions"]["enforcement"], "always", "{v}");
        assert_eq!(supported(&s), &json!([]), "{v}");
        let m = s["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["code"] == "intervention_required")
            .unwrap_or_else(|| panic!("{v}: no intervention_required: {s:#}"));
        assert_eq!(
            (&m["type"], &m["param"]),
            (&json!("error"), &json!("$.capabilities.interventions.supported"))
        );
        let id = s["id"].as_str().unwrap();

        // Completing is refused while the requirement is unmet.
        let refused = app
            .acp_as(Method::POST, &format!("/checkout_sessions/{id}/complete"), AGENT_KEY, v)
            .json(&crate::lifecycle::payment("spt_sim_ok"))
            .send()
            .await
            .unwrap();
        assert!(refused.status().is_client_error(), "{v}: {}", refused.status());

        // Re-declared on update: the requirement is met and the session becomes ready.
        let updated = app
            .acp_as(Method::POST, &format!("/checkout_sessions/{id}"), AGENT_KEY, v)
            .json(&json!({"capabilities": {"interventions": {"supported": ["3ds", "biometric"]}}}))
            .send()
            .await
            .unwrap();
        let updated = session_in(v, updated, StatusCode::OK).await;
        assert_eq!(updated["status"], "ready_for_payment", "{v}: {updated:#}");
        assert_eq!(supported(&updated), &json!(["3ds"]), "{v}");
        assert_eq!(
            updated["capabilities"]["interventions"]["required"],
            json!(["3ds"]),
            "{v}"
        );
        assert!(!codes(&updated).contains(&"intervention_required"), "{v}");

        // Declared from the start: ready at once.
        let ready = create_declaring(&app, v, Some(json!({"interventions": {"supported": ["3ds"]}}))).await;
        assert_eq!(ready["status"], "ready_for_payment", "{v}");
    }
}

#[tokio::test]
async fn versions_before_2026_01_30_are_not_held_to_required_interventions() {
    let app = spawn_app_with(&[("required_interventions", "3ds")]).await;
    let body = json!({"items": [{"id": TEE, "quantity": 1}],
                      "fulfillment_details": {"name": "Jane Buyer", "email": "jane@example.com",
                                              "address": crate::lifecycle::address("US")}});
    let r = app
        .acp_as(Method::POST, "/checkout_sessions", AGENT_KEY, "2025-12-12")
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = session_in("2025-12-12", r, StatusCode::CREATED).await;
    assert_eq!(s["status"], "ready_for_payment", "{s:#}");
}

#[test]
fn required_interventions_are_validated() {
    let settings = |value: &str| {
        acp_merchant::config::Settings::from_pairs(&[
            ("env", "development"),
            ("psp", "simulator"),
            ("required_interventions", value),
        ])
    };
    assert_eq!(settings("").unwrap().required_interventions, Vec::<String>::new());
    assert_eq!(settings(" 3ds, 3ds ").unwrap().required_interventions, ["3ds"]);
    let refused = settings("3ds,telepathy").unwrap_err().to_string();
    assert!(
        refused.contains("ACP_REQUIRED_INTERVENTIONS") && refused.contains("telepathy"),
        "{refused}"
    );
    assert!(
        settings("biometric").is_err(),
        "this server performs no biometric check"
    );
}
