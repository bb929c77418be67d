//! The ACP wire, per version, below both the HTTP layer and (later) the webhook worker. Each version module
//! parses requests into the canonical inputs of `checkout::service` and renders the canonical session.

pub mod v2026_04_17;

use serde::Deserialize;
use serde_json::Value;

/// Versions served, newest first (the order `supported_versions` lists them in).
pub const SUPPORTED_VERSIONS: &[&str] = &[v2026_04_17::VERSION];

/// Shop-level facts every rendering needs, built once from configuration.
#[derive(Debug, Clone)]
pub struct WireContext {
    pub payment_handlers: Vec<Value>,
    pub seller_interventions: Vec<String>,
    pub links: Vec<Value>,
    pub authentication_metadata: Value,
}

/// Distinguishes an explicit `null` (clear the field) from an absent one (leave it unchanged).
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The webhook body for `order`, in the ACP version of the session it came from (the only one served today is
/// 2026-04-17; older versions get their own shapes with the all-versions work).
pub fn webhook_body(event_type: &str, order: &crate::orders::model::Order) -> Value {
    v2026_04_17::webhook_body(event_type, order)
}

/// The session as an agent of `version` sees it (every version renders from the one canonical session).
pub fn render_session(_version: &str, session: &crate::checkout::model::Session, ctx: &WireContext) -> Value {
    // Only 2026-04-17 is served today; older versions get their adapters with the all-versions work.
    v2026_04_17::render(session, ctx)
}
