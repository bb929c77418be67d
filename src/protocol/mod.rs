//! The ACP wire, per version, below both the HTTP layer and the webhook outbox. Each version module (an
//! [`Adapter`]) parses requests — already validated against its own OpenAPI request schemas ([`schema`]) — into
//! the canonical inputs of `checkout::service`, and renders the canonical session and order strictly in its shape.

pub mod legacy;
pub mod schema;
pub mod session_view;
pub mod unreleased;
pub mod v2025_09_29;
pub mod v2025_12_12;
pub mod v2026_01_16;
pub mod v2026_01_30;
pub mod v2026_04_17;

use serde::Deserialize;
use serde_json::Value;

use crate::{
    checkout::{
        model::Session,
        service::{CompleteInput, CreateInput, UpdateInput},
    },
    orders::model::Order,
};

/// One ACP version on the wire: how its requests become the canonical inputs and how the canonical session and
/// order look to its agents. Adding a version is one module implementing this, one OpenAPI document
/// (`openapi/<version>.json`) and one line in [`ADAPTERS`].
pub trait Adapter: Send + Sync {
    /// The `API-Version` value, e.g. `2026-04-17`.
    fn version(&self) -> &'static str;
    /// This project's OpenAPI document for the version: served at `GET /openapi/<version>.json`, and the source
    /// of the request schemas every body is validated against before it is parsed.
    fn openapi(&self) -> &'static str;
    /// Whether every POST must carry an `Idempotency-Key` (2026-04-17 on); before, it is optional.
    fn idempotency_key_required(&self) -> bool;
    /// The `Error.type` of an idempotency refusal (409 in flight, 422 conflict).
    fn idempotency_error_type(&self) -> &'static str {
        "invalid_request"
    }
    fn create(&self, body: Value) -> Result<CreateInput, WireError>;
    fn update(&self, body: Value) -> Result<UpdateInput, WireError>;
    fn complete(&self, body: Value) -> Result<CompleteInput, WireError>;
    /// A request field the domain names in canonical terms (`$.line_items[0].id`, `$.fulfillment_details.address`,
    /// …), as this version's request spells it; `None` when the version's request has no such field. Applied to
    /// the `param` of every error a call of this version answers (schema errors already speak the version).
    fn request_param(&self, param: &str) -> Option<String> {
        Some(param.to_owned())
    }
    /// The message of an error with `code` for this version's agents (what to do when the usual remedy is a
    /// field the version lacks).
    fn error_message(&self, _code: &str, message: String) -> String {
        message
    }
    /// The session as this version's `CheckoutSession` (with `order` once completed).
    fn render(&self, session: &Session, ctx: &WireContext) -> Value;
    /// The session as response bytes: [`Adapter::render`] printed, unless the version prints without the tree.
    fn render_bytes(&self, session: &Session, ctx: &WireContext) -> Vec<u8> {
        print(&self.render(session, ctx))
    }
    /// The body of an order webhook (`order_create` / `order_update`) in this version's shape.
    fn webhook_body(&self, event_type: &str, order: &Order) -> Value;
}

/// Every version this build can serve, newest first (the order `supported_versions` lists them in). `unreleased`
/// is served only when `ACP_API_VERSIONS` names it.
pub static ADAPTERS: &[&dyn Adapter] = &[
    &unreleased::Unreleased,
    &v2026_04_17::V2026_04_17,
    &v2026_01_30::V2026_01_30,
    &v2026_01_16::V2026_01_16,
    &v2025_12_12::V2025_12_12,
    &v2025_09_29::V2025_09_29,
];

/// Versions served unless `ACP_API_VERSIONS` narrows them.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    v2026_04_17::VERSION,
    v2026_01_30::VERSION,
    v2026_01_16::VERSION,
    v2025_12_12::VERSION,
    v2025_09_29::VERSION,
];

/// The id of the one payment handler offered: tokenized cards (Stripe Shared Payment Tokens). Versions before
/// 2026-01-30 name no handler; their `payment_data {token, provider}` is this handler's.
pub const CARD_HANDLER_ID: &str = "card_tokenized";

/// The newest released version's adapter (what a record of an unknown version is rendered in).
fn newest_released() -> &'static dyn Adapter {
    ADAPTERS
        .iter()
        .copied()
        .find(|a| a.version() == SUPPORTED_VERSIONS[0])
        .unwrap_or(ADAPTERS[0])
}

/// The adapter of `version`, among every version this build knows.
pub fn adapter(version: &str) -> Option<&'static dyn Adapter> {
    ADAPTERS.iter().copied().find(|a| a.version() == version)
}

/// The request an operation validates against (names of this project's OpenAPI components).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Update,
    Complete,
    Cancel,
}

impl Operation {
    pub const ALL: [Operation; 4] = [Self::Create, Self::Update, Self::Complete, Self::Cancel];

    pub fn schema_name(self) -> &'static str {
        match self {
            Self::Create => "CheckoutSessionCreateRequest",
            Self::Update => "CheckoutSessionUpdateRequest",
            Self::Complete => "CheckoutSessionCompleteRequest",
            Self::Cancel => "CancelSessionRequest",
        }
    }
}

/// A request problem the HTTP layer turns into a 400 with `param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub code: &'static str,
    pub param: String,
    pub message: String,
}

impl WireError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: "invalid",
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn missing(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: "missing",
            param: param.into(),
            message: message.into(),
        }
    }
}

/// Parses a body that already passed its schema into the adapter's typed request (the schema and the types
/// agree, so a failure here is rare; it is still a precise 400, never a 5xx).
pub fn typed<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, WireError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        WireError::invalid(
            crate::jsonpath::from_serde_path(e.path()),
            format!("Invalid value: {}", e.inner()),
        )
    })
}

/// Shop-level facts every rendering needs, built once from configuration.
#[derive(Debug, Clone)]
pub struct WireContext {
    pub payment_handlers: Vec<Value>,
    pub seller_interventions: Vec<String>,
    /// Interventions the merchant requires of negotiating agents (`required_interventions`).
    pub required_interventions: Vec<String>,
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

/// The webhook body for `order` in `version` (the newest version's shape when the version is unknown).
pub fn webhook_body(version: &str, event_type: &str, order: &Order) -> Value {
    adapter(version)
        .unwrap_or_else(newest_released)
        .webhook_body(event_type, order)
}

/// A response body printed into a buffer sized for a typical session, so printing one rarely reallocates.
pub fn print(body: &impl serde::Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    // Serializing plain structs and `Value`s into memory cannot fail; an empty body would show it if it did.
    if serde_json::to_writer(&mut out, body).is_err() {
        out.clear();
    }
    out
}

/// The session as an agent of `version` sees it (every version renders from the one canonical session).
pub fn render_session(version: &str, session: &Session, ctx: &WireContext) -> Value {
    adapter(version).unwrap_or_else(newest_released).render(session, ctx)
}

/// The versions this process serves, with their compiled request schemas.
pub struct Protocol {
    enabled: Vec<&'static dyn Adapter>,
    pub schemas: schema::RequestSchemas,
}

impl Protocol {
    /// Serves `versions` (each must be known; newest first is kept whatever the order given).
    pub fn new(versions: &[String]) -> Result<Self, schema::SchemaError> {
        let enabled: Vec<&'static dyn Adapter> = ADAPTERS
            .iter()
            .copied()
            .filter(|a| versions.iter().any(|v| v == a.version()))
            .collect();
        let schemas = schema::RequestSchemas::compile(&enabled)?;
        Ok(Self { enabled, schemas })
    }

    /// The adapter of `version` if this process serves it.
    pub fn enabled(&self, version: &str) -> Option<&'static dyn Adapter> {
        self.enabled.iter().copied().find(|a| a.version() == version)
    }

    /// The served versions, newest first.
    pub fn versions(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|a| a.version()).collect()
    }
}
