//! Capability negotiation (API versions 2026-01-30 and later; DIGEST §3.10): what the session offers is the
//! intersection of what the agent declared and what the merchant supports. Unknown declared values are ignored,
//! never refused. Interventions the merchant requires (`required_interventions`) that the agent did not declare
//! block payment with an `intervention_required` error; a payment handler list with nothing in common with the
//! merchant's blocks it with `unsupported`. Both are re-checked on every recompute, so an agent that re-declares
//! its capabilities on update unblocks the session.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{Message, Session};

/// The first API version whose sessions carry `capabilities` (older agents cannot declare any).
pub const FIRST_NEGOTIATING_VERSION: &str = "2026-01-30";

/// Interventions this server can perform, hence the only ones it may require (`required_interventions`).
pub const PERFORMED_INTERVENTIONS: [&str; 1] = ["3ds"];

/// What the agent declared in `capabilities`, as far as negotiation needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    pub interventions: Vec<String>,
    pub extensions: Vec<String>,
    /// `None` when the agent declared no handler list (every merchant handler is then offered).
    pub payment_handlers: Option<Vec<String>>,
}

/// The session's negotiation state, stored with the session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiation {
    /// Names (`dev.acp.tokenized.card`, …) of the handlers the agent declared; `None`: it declared none.
    #[serde(default)]
    pub agent_handlers: Option<Vec<String>>,
    /// Interventions the merchant requires for this session (empty for versions that cannot negotiate).
    #[serde(default)]
    pub required_interventions: Vec<String>,
    /// Set when the agent declared handlers and none of them is the merchant's.
    #[serde(default)]
    pub no_common_handler: bool,
}

/// Whether sessions created with `api_version` negotiate capabilities (`unreleased` sorts after every date).
pub fn negotiates(api_version: &str) -> bool {
    api_version >= FIRST_NEGOTIATING_VERSION
}

/// Handler names from a declared `capabilities.payment`: objects' `name`, or bare strings; anything else is
/// ignored. `None` unless `handlers` is an array.
pub fn declared_handler_names(payment: Option<&Value>) -> Option<Vec<String>> {
    let handlers = payment?.get("handlers")?.as_array()?;
    Some(
        handlers
            .iter()
            .filter_map(|h| h.as_str().or_else(|| h.get("name").and_then(Value::as_str)))
            .map(str::to_owned)
            .collect(),
    )
}

/// Whether the merchant handler `handler` (a `PaymentHandler` object) is offered to this session.
pub fn offers(negotiation: &Negotiation, handler: &Value) -> bool {
    match (&negotiation.agent_handlers, handler.get("name").and_then(Value::as_str)) {
        (None, _) => true,
        (Some(names), Some(name)) => names.iter().any(|n| n == name),
        (Some(_), None) => false,
    }
}

/// Applies a declaration to the session (on create, and on an update that re-declares capabilities).
pub fn apply(session: &mut Session, declared: Declared, merchant_handlers: &[Value]) {
    session.agent_interventions = declared.interventions;
    session.agent_extensions = declared.extensions;
    session.negotiation.agent_handlers = declared.payment_handlers;
    session.negotiation.no_common_handler = !merchant_handlers.is_empty()
        && session.negotiation.agent_handlers.is_some()
        && !merchant_handlers.iter().any(|h| offers(&session.negotiation, h));
}

/// Required interventions the agent did not declare, in the merchant's order.
pub fn missing_interventions(session: &Session) -> Vec<&str> {
    session
        .negotiation
        .required_interventions
        .iter()
        .filter(|r| !session.agent_interventions.contains(r))
        .map(String::as_str)
        .collect()
}

/// The messages negotiation adds to the session: errors, so the session is not ready for payment.
pub fn messages(session: &Session) -> Vec<Message> {
    let mut messages: Vec<Message> = missing_interventions(session)
        .into_iter()
        .map(|missing| {
            Message::error(
                "intervention_required",
                "$.capabilities.interventions.supported",
                format!(
                    "This merchant requires the {missing} intervention (enforcement: always), which the agent did not \
                     declare in capabilities.interventions.supported."
                ),
                "recoverable",
            )
        })
        .collect();
    if session.negotiation.no_common_handler {
        messages.push(Message::error(
            "unsupported",
            "$.capabilities.payment.handlers",
            "None of the payment handlers the agent declared is offered by this merchant.",
            "recoverable",
        ));
    }
    messages
}

/// `enforcement` of the response: `always` when the merchant requires an intervention.
pub fn enforcement(negotiation: &Negotiation) -> &'static str {
    if negotiation.required_interventions.is_empty() {
        "conditional"
    } else {
        "always"
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn declared_handlers_are_read_leniently() {
        assert_eq!(declared_handler_names(None), None);
        assert_eq!(declared_handler_names(Some(&json!({"methods": ["card"]}))), None);
        assert_eq!(
            declared_handler_names(Some(&json!({"handlers": [{"name": "a"}, "b", 3, {"id": "x"}]}))),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn a_handler_is_offered_when_nothing_or_its_name_was_declared() {
        let card = json!({"id": "card", "name": "dev.acp.tokenized.card"});
        let mut n = Negotiation::default();
        assert!(offers(&n, &card));
        n.agent_handlers = Some(vec!["dev.acp.tokenized.card".into()]);
        assert!(offers(&n, &card));
        n.agent_handlers = Some(vec!["com.example.wallet".into()]);
        assert!(!offers(&n, &card));
        n.agent_handlers = Some(vec![]);
        assert!(!offers(&n, &card));
    }

    #[test]
    fn versions_from_2026_01_30_negotiate() {
        assert!(!negotiates("2026-01-16"));
        assert!(negotiates("2026-01-30"));
        assert!(negotiates("2026-04-17"));
        assert!(negotiates("unreleased"));
    }
}
