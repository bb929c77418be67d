//! ACP 2026-01-16 on the wire. Its requests are those of 2025-12-12 except the 3-D Secure outcome vocabulary, so
//! the request types of [`super::v2025_12_12`] are reused as they are; its session is 2025-12-12's with three
//! changes, applied here on top of that module's writer.
//!
//! Reading: as 2025-12-12 (see its module docs), with `authentication_result.outcome` ∈
//! `authenticated | failed | unavailable | rejected | attempt`, read as the 2025-12-12 outcomes VERSION_DIFFS §9.2
//! recommends: `failed → denied`, `unavailable → not_supported`, `attempt → attempt_acknowledged`,
//! `authenticated` and `rejected` unchanged. The official schema no longer requires `outcome_details`; ours does
//! for `authenticated` and `attempt`, because the payment cannot be authorised without the cryptogram (a body
//! without it is a 400 `missing` at `$.authentication_result.outcome_details`). The ECI lost its enum here; we
//! accept any two digits.
//!
//! Writing: the 2025-12-12 mapping table applies, with these differences:
//!
//! | canonical | 2026-01-16 |
//! |---|---|
//! | fulfillment option money | `totals: [{type: "total", display_text, amount}]`, `description` (no `subtitle`, `subtotal`, `tax`, `total`) |
//! | `capabilities.payment.handlers` | `payment_provider` as 2025-12-12 plus the required `merchant_id` (the card handler's `config.merchant_id`) |
//! | the card handler's `config.supports_3ds` | `authentication_provider {provider: "stripe", merchant_id, supported_authentication_methods: ["3ds"]}` (the PSP runs the authentication the agent delegates) |
//! | `authentication_metadata` | as 2025-12-12 (`channel` required, meaning the same); only `channel, acquirer_details, directory_server, flow_preference` (`additionalProperties: false`) |
//!
//! Official examples: every body of `examples/2026-01-16/examples.agentic_checkout.json` validates against its
//! schema. The requests of `examples.capability_negotiation.json` carry `agent_capabilities`, a draft no schema of
//! this version defines (the official create request forbids it); our reader ignores it like any unknown field,
//! so they create sessions (201). The delegate-payment examples are requests to the PSP, not to this server.

use serde_json::{Value, json};

use super::{
    Adapter, WireContext, WireError, legacy, typed,
    v2025_12_12::{self, CompleteRequest, CreateRequest, UpdateRequest},
    v2026_04_17,
};
use crate::checkout::{
    model::Session,
    service::{CompleteInput, CreateInput, UpdateInput},
};

pub const VERSION: &str = "2026-01-16";

/// The 2026-01-16 adapter.
pub struct V2026_01_16;

pub static V2026_01_16_DOC: &str = include_str!("../../openapi/2026-01-16.json");

impl Adapter for V2026_01_16 {
    fn version(&self) -> &'static str {
        VERSION
    }

    fn openapi(&self) -> &'static str {
        V2026_01_16_DOC
    }

    fn idempotency_key_required(&self) -> bool {
        false
    }

    fn idempotency_error_type(&self) -> &'static str {
        "request_not_idempotent"
    }

    fn create(&self, body: Value) -> Result<CreateInput, WireError> {
        Ok(typed::<CreateRequest>(body)?.into_input())
    }

    fn update(&self, body: Value) -> Result<UpdateInput, WireError> {
        Ok(typed::<UpdateRequest>(body)?.into_input())
    }

    fn complete(&self, body: Value) -> Result<CompleteInput, WireError> {
        typed::<CompleteRequest>(body)?.into_input(outcome)
    }

    fn request_param(&self, param: &str) -> Option<String> {
        v2025_12_12::request_param(param)
    }

    fn render(&self, session: &Session, ctx: &WireContext) -> Value {
        render(session, ctx)
    }

    fn webhook_body(&self, event_type: &str, order: &crate::orders::model::Order) -> Value {
        legacy::webhook_body(event_type, order)
    }
}

/// A 2026-01-16 outcome as the 2025-12-12 outcome it means (VERSION_DIFFS §9.2).
fn outcome(outcome: &str) -> Option<&str> {
    match outcome {
        "authenticated" => Some("authenticated"),
        "failed" => Some("denied"),
        "unavailable" => Some("not_supported"),
        "rejected" => Some("rejected"),
        "attempt" => Some("attempt_acknowledged"),
        _ => None,
    }
}

/// The session as 2026-01-16 defines `CheckoutSession`: 2025-12-12's, with option `totals[]`, the merchant id and
/// the authentication provider.
pub fn render(s: &Session, ctx: &WireContext) -> Value {
    let mut v = v2025_12_12::render(s, ctx);
    v["fulfillment_options"] = v2025_12_12::known_options(s)
        .map(v2026_04_17::fulfillment_option)
        .collect();
    if let Some(handler) = v2025_12_12::card_handler(ctx) {
        let config = &handler["config"];
        match config["merchant_id"].as_str() {
            Some(merchant_id) => {
                v["payment_provider"]["merchant_id"] = json!(merchant_id);
                if config["supports_3ds"] == json!(true) {
                    v["authentication_provider"] = json!({
                        "provider": "stripe",
                        "merchant_id": merchant_id,
                        "supported_authentication_methods": ["3ds"],
                    });
                }
            }
            // `merchant_id` is required here: without one, no payment provider can be described.
            None => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("payment_provider");
                }
            }
        }
    }
    v
}
