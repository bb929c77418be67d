//! Funnel analytics (issue 13): the events written beside each checkout change ([`events`]), the cohort funnel
//! with conversion, abandonment, AOV and CPA ([`funnel`], a pure computation over the events), channel costs
//! ([`costs`]) and the raw events export ([`export`]). The formulas are in the README's "Analytics" section.

pub mod costs;
pub mod events;
pub mod export;
pub mod funnel;

pub use events::{EventKind, Recorder};
pub use funnel::{Funnel, FunnelQuery, funnel};

/// Where every event and order comes from: agent checkout.
pub const SOURCE: &str = "chat_to_checkout";

/// The attribution tags an order carries in the admin API and merchant exports (never in ACP objects): the
/// agent, its channel when the order completed (the agent id when none was set) and the source.
pub fn order_tags(agent_id: &str, channel_id: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "agent_id": agent_id,
        "channel_id": channel_id.unwrap_or(agent_id),
        "source": SOURCE,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// A request value that cannot be used; `param` names it.
    #[error("{message}")]
    Invalid { param: String, message: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl AnalyticsError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.to_owned(),
            message: message.into(),
        }
    }
}
