//! One virtual agent's side of ACP 2026-04-17: the four requests of a full flow plus GET, each with every header
//! an agent sends (an `Idempotency-Key` on every POST), and each response checked for the fields that prove the
//! step worked. Anything else is an [`Unexpected`].

use std::sync::Arc;

use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::Psp;

pub const API_VERSION: &str = "2026-04-17";
/// The fulfillment option the flow switches to (standard is selected by default).
const EXPRESS: &str = "ship_express";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Create,
    UpdateAddress,
    UpdateOption,
    Complete,
    Get,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Create,
        Endpoint::UpdateAddress,
        Endpoint::UpdateOption,
        Endpoint::Complete,
        Endpoint::Get,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Create => "create",
            Endpoint::UpdateAddress => "update address",
            Endpoint::UpdateOption => "update option",
            Endpoint::Complete => "complete",
            Endpoint::Get => "get",
        }
    }

    pub fn is_post(self) -> bool {
        self != Endpoint::Get
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A response that did not prove its step worked (or no response at all). Details never carry the request's
/// buyer data: only the status, the session status or the ACP error fields.
#[derive(Debug, Clone, Serialize)]
pub struct Unexpected {
    pub endpoint: Endpoint,
    pub status: Option<u16>,
    pub detail: String,
}

impl std::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "{}: HTTP {status}: {}", self.endpoint.name(), self.detail),
            None => write!(f, "{}: {}", self.endpoint.name(), self.detail),
        }
    }
}

#[derive(Clone)]
pub struct Agent {
    client: reqwest::Client,
    base_url: Arc<str>,
    key: Arc<str>,
    psp: Psp,
}

impl Agent {
    pub fn new(client: reqwest::Client, base_url: &str, key: &str, psp: Psp) -> Self {
        Self {
            client,
            base_url: base_url.into(),
            key: key.into(),
            psp,
        }
    }

    /// Creates a session for one `variant`, without an address yet: `not_ready_for_payment`. Returns its id.
    pub async fn create(&self, variant: &str) -> Result<String, Unexpected> {
        let body = json!({
            "currency": "usd",
            "line_items": [{"id": variant}],
            "capabilities": {"interventions": {"supported": ["3ds"]}},
        });
        let (status, session) = self
            .send(Endpoint::Create, Method::POST, "/checkout_sessions", Some(&body))
            .await?;
        check_session(Endpoint::Create, status, &session, 201, "not_ready_for_payment")?;
        session["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| unexpected(Endpoint::Create, status, "the session has no id"))
    }

    /// Adds the buyer and the address: `ready_for_payment` (standard shipping selected by default).
    pub async fn update_address(&self, id: &str) -> Result<(), Unexpected> {
        let body = json!({"fulfillment_details": {
            "name": "Bench Buyer", "email": "buyer@bench.example",
            "address": {"name": "Bench Buyer", "line_one": "1 Main St", "city": "Springfield", "state": "IL",
                        "country": "US", "postal_code": "62701"}}});
        let path = format!("/checkout_sessions/{id}");
        let (status, session) = self
            .send(Endpoint::UpdateAddress, Method::POST, &path, Some(&body))
            .await?;
        check_session(Endpoint::UpdateAddress, status, &session, 200, "ready_for_payment")
    }

    /// Switches to express shipping: still `ready_for_payment`, with express selected.
    pub async fn update_option(&self, id: &str, variant: &str) -> Result<(), Unexpected> {
        let body = json!({"selected_fulfillment_options": [
            {"type": "shipping", "option_id": EXPRESS, "item_ids": [variant]}]});
        let path = format!("/checkout_sessions/{id}");
        let (status, session) = self
            .send(Endpoint::UpdateOption, Method::POST, &path, Some(&body))
            .await?;
        check_session(Endpoint::UpdateOption, status, &session, 200, "ready_for_payment")?;
        check_selected_option(&session, EXPRESS).map_err(|detail| unexpected(Endpoint::UpdateOption, status, detail))
    }

    /// Pays: `completed` with an order. Returns the order id.
    pub async fn complete(&self, id: &str) -> Result<String, Unexpected> {
        let token = match self.psp {
            Psp::Simulator => "spt_sim_ok".to_owned(),
            // The fake Stripe's tokens are single use, like Stripe's.
            Psp::FakeStripe => format!("spt_ok_{}", uuid::Uuid::new_v4().simple()),
        };
        let body = json!({"payment_data": {"handler_id": "card_tokenized",
            "instrument": {"type": "card", "credential": {"type": "spt", "token": token}}}});
        let path = format!("/checkout_sessions/{id}/complete");
        let (status, session) = self.send(Endpoint::Complete, Method::POST, &path, Some(&body)).await?;
        check_session(Endpoint::Complete, status, &session, 200, "completed")?;
        order_id(&session).ok_or_else(|| unexpected(Endpoint::Complete, status, "completed without an order id"))
    }

    /// Reads a session back: 200, a JSON session with the same id and a status. The body is parsed whole, but
    /// into the two fields checked rather than a tree, so the load generator leaves the CPU it shares with
    /// PostgreSQL to PostgreSQL.
    pub async fn get(&self, id: &str) -> Result<(), Unexpected> {
        #[derive(serde::Deserialize)]
        struct Head {
            id: String,
            status: String,
        }
        let path = format!("/checkout_sessions/{id}");
        let (status, bytes) = self.send_raw(Endpoint::Get, Method::GET, &path, None).await?;
        match serde_json::from_slice::<Head>(&bytes) {
            Ok(head) if status == 200 && head.id == id && !head.status.is_empty() => Ok(()),
            _ => {
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                Err(unexpected(Endpoint::Get, status, describe_body(&body)))
            }
        }
    }

    async fn send(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Unexpected> {
        let (status, bytes) = self.send_raw(endpoint, method, path, body).await?;
        let json = serde_json::from_slice(&bytes).map_err(|_| unexpected(endpoint, status, "the body is not JSON"))?;
        Ok((status, json))
    }

    async fn send_raw(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, bytes::Bytes), Unexpected> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&*self.key)
            .header("API-Version", API_VERSION);
        if let Some(body) = body {
            request = request
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(body);
        }
        let response = request.send().await.map_err(|e| Unexpected {
            endpoint,
            status: None,
            detail: format!("no response: {e}"),
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unexpected(endpoint, status, format!("body: {e}")))?;
        Ok((status, bytes))
    }
}

fn unexpected(endpoint: Endpoint, status: u16, detail: impl Into<String>) -> Unexpected {
    Unexpected {
        endpoint,
        status: Some(status),
        detail: detail.into(),
    }
}

/// The HTTP status and the session status a step must answer with.
pub fn check_session(
    endpoint: Endpoint,
    status: u16,
    session: &Value,
    want_http: u16,
    want_status: &str,
) -> Result<(), Unexpected> {
    if status == want_http && session["status"] == want_status && session["id"].is_string() {
        return Ok(());
    }
    Err(unexpected(
        endpoint,
        status,
        format!("expected {want_http} {want_status}; got {}", describe_body(session)),
    ))
}

fn check_selected_option(session: &Value, option: &str) -> Result<(), String> {
    let selected = session["selected_fulfillment_options"]
        .as_array()
        .is_some_and(|options| options.iter().any(|o| o["option_id"] == option));
    if selected {
        Ok(())
    } else {
        Err(format!("{option} is not selected"))
    }
}

pub fn order_id(session: &Value) -> Option<String> {
    session["order"]["id"].as_str().map(str::to_owned)
}

/// What a body says, without buyer data: an ACP error's fields, or a session's status and message codes.
pub fn describe_body(body: &Value) -> String {
    if let Some(code) = body["code"].as_str() {
        return format!(
            "{} {code}: {} (param {})",
            body["type"].as_str().unwrap_or("?"),
            body["message"].as_str().unwrap_or(""),
            body["param"].as_str().unwrap_or("-")
        );
    }
    let messages: Vec<String> = body["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    format!(
                        "{}/{}",
                        m["type"].as_str().unwrap_or("?"),
                        m["code"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!("session status {}, messages [{}]", body["status"], messages.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_passes_only_with_the_expected_status_and_state() {
        let ready = json!({"id": "cs_1", "status": "ready_for_payment", "email": "x@y.z"});
        assert!(check_session(Endpoint::UpdateAddress, 200, &ready, 200, "ready_for_payment").is_ok());
        assert!(check_session(Endpoint::UpdateAddress, 201, &ready, 200, "ready_for_payment").is_err());
        let not_ready = json!({"id": "cs_1", "status": "not_ready_for_payment",
                               "messages": [{"type": "error", "code": "missing"}]});
        let err = check_session(Endpoint::UpdateAddress, 200, &not_ready, 200, "ready_for_payment").unwrap_err();
        assert!(err.detail.contains("error/missing"), "{err}");
    }

    #[test]
    fn error_details_name_the_acp_code_and_never_echo_the_body() {
        let error = json!({"type": "invalid_request", "code": "idempotency_in_flight", "message": "busy",
                           "buyer": {"email": "secret@example.com"}});
        let text = describe_body(&error);
        assert!(text.contains("idempotency_in_flight"));
        assert!(!text.contains("secret@example.com"));
    }

    #[test]
    fn the_option_update_must_select_express() {
        let session = json!({"selected_fulfillment_options": [{"type": "shipping", "option_id": "ship_express"}]});
        assert!(check_selected_option(&session, EXPRESS).is_ok());
        let standard = json!({"selected_fulfillment_options": [{"type": "shipping", "option_id": "ship_standard"}]});
        assert!(check_selected_option(&standard, EXPRESS).is_err());
    }

    #[test]
    fn a_completed_session_names_its_order() {
        assert_eq!(order_id(&json!({"order": {"id": "ord_1"}})), Some("ord_1".to_owned()));
        assert_eq!(order_id(&json!({"status": "completed"})), None);
    }
}
