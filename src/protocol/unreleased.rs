//! ACP `unreleased` (the spec's next version at HEAD): 2026-04-17 plus two additive request fields. Served only
//! when `ACP_API_VERSIONS` names it.
//!
//! | | unreleased | handled as |
//! |---|---|---|
//! | complete `fulfillment_details` | contact details applied before paying (SEP #196) | name, email and phone are applied; an address other than the priced one is 409 `conflict` (update the session first) |
//! | `Item.suggested_price` | the agent's view of the feed price (SEP #197) | accepted and not used: the catalog price is authoritative, and any difference shows in the totals |
//! | everything else | as 2026-04-17 | the 2026-04-17 reader and writer (`protocol.version` stays `2026-04-17`: the schema wants a date) |

use serde::Deserialize;
use serde_json::Value;

use super::{Adapter, WireContext, WireError, typed, v2026_04_17};
use crate::checkout::{
    model::{FulfillmentDetails, Session},
    service::{CompleteInput, CreateInput, UpdateInput},
};

pub const VERSION: &str = "unreleased";

pub struct Unreleased;

pub static UNRELEASED_DOC: &str = include_str!("../../openapi/unreleased.json");

/// The part of the complete request that 2026-04-17 does not have.
#[derive(Deserialize)]
struct CompleteExtras {
    #[serde(default)]
    fulfillment_details: Option<FulfillmentDetails>,
}

impl Adapter for Unreleased {
    fn version(&self) -> &'static str {
        VERSION
    }

    fn openapi(&self) -> &'static str {
        UNRELEASED_DOC
    }

    fn idempotency_key_required(&self) -> bool {
        true
    }

    fn create(&self, body: Value) -> Result<CreateInput, WireError> {
        v2026_04_17::V2026_04_17.create(body)
    }

    fn update(&self, body: Value) -> Result<UpdateInput, WireError> {
        v2026_04_17::V2026_04_17.update(body)
    }

    fn complete(&self, mut body: Value) -> Result<CompleteInput, WireError> {
        let extras = body
            .as_object_mut()
            .and_then(|o| o.remove("fulfillment_details"))
            .map(|details| typed::<CompleteExtras>(serde_json::json!({"fulfillment_details": details})))
            .transpose()?;
        let mut input = v2026_04_17::V2026_04_17.complete(body)?;
        input.fulfillment_details = extras.and_then(|e| e.fulfillment_details);
        Ok(input)
    }

    fn render(&self, session: &Session, ctx: &WireContext) -> Value {
        // `protocol.version` must be a date in this schema: the session reports the release it builds on.
        v2026_04_17::render(session, ctx)
    }

    fn webhook_body(&self, event_type: &str, order: &crate::orders::model::Order) -> Value {
        v2026_04_17::webhook_body(event_type, order)
    }
}
