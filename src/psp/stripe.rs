//! Stripe: PaymentIntents paid with a Shared Payment Token, form-encoded, authenticated with the secret key,
//! pinned to a `Stripe-Version`, every POST under an `Idempotency-Key`.
//!
//! ## One attempt, one key, settled by asking
//!
//! Stripe documents the Shared Payment Token as a parameter of *creating* a PaymentIntent
//! (`payment_method_data[shared_payment_granted_token]` on `POST /v1/payment_intents`, with `confirm=true`; the
//! 2026-04-22 changelog and the "Process payment credentials from an agent" guide). Its confirm endpoint documents
//! no such parameter, so creating an intent first and confirming it with the token later is not something we can
//! rely on. The design therefore keeps create-and-confirm in one call and makes that call safe to repeat and to
//! question:
//! - the payment attempt (its id, its key, the amount) is committed before the call (`checkout::attempt`);
//! - the call carries the attempt's key, so any number of retries or replays executes at most once at Stripe, and
//!   a replay with identical parameters returns the saved outcome;
//! - the intent carries the attempt id in `metadata[acp_attempt_id]`, so when the answer was lost and the token is
//!   not at hand, [`PaymentProvider::lookup`] finds the intent through the Search API (or by id once known);
//! - an answer that does not prove the outcome (timeout, connection lost after sending, 5xx or 409 after the last
//!   retry, an unreadable 2xx, `processing`) is [`PspError::Ambiguous`], never a decline.
//!
//! Stripe's search is eventually consistent ("under normal operating conditions, data is searchable in less than a
//! minute"), so an empty search result is reported as not authoritative; the resolver treats it as proof of no
//! charge only once the attempt is older than `ACP_PSP_LOOKUP_GRACE_SECS`.
//!
//! Declines: 402 card errors and the token errors Stripe documents for Shared Payment Tokens (used, expired, over
//! its usage limit, unknown). Every other 4xx is [`PspError::Rejected`]: a merchant-side fault (wrong key, wrong
//! `Stripe-Version`, invalid parameter), logged at `error` with Stripe's error code and never shown as a decline.
//! `idempotency_error` is the exception: a request under this key already ran with other parameters, so a charge
//! may exist and the answer is ambiguous.

use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::{
    ATTEMPT_METADATA_KEY, CancelOutcome, ChargeOutcome, ChargeRequest, Lookup, PaymentProvider, PspError, PspEvent,
    RefundOutcome, ReportedRefund,
};
use crate::config::{CaptureMethod, Secret, Settings, StripeSettings, StripeTokenParam};

#[derive(Clone)]
pub struct Stripe {
    client: reqwest::Client,
    base: Url,
    secret_key: Secret,
    settings: StripeSettings,
}

/// A Stripe answer whose body we could read: its HTTP status and JSON body.
struct Answer {
    status: StatusCode,
    body: Value,
}

/// How one HTTP exchange went.
enum Exchange {
    Answered(Answer),
    /// Worth another try under the same key; `sent` says whether Stripe may have received it.
    Retry {
        problem: String,
        sent: bool,
    },
}

/// Token problems Stripe reports as 400s that are, for the buyer, declines.
const TOKEN_DECLINE_CODES: &[&str] = &[
    "shared_payment_granted_token_used",
    "shared_payment_granted_token_expired",
    "shared_payment_granted_token_revoked",
    "amount_too_large",
];

impl Stripe {
    pub fn new(settings: &Settings) -> Result<Self, PspError> {
        let secret_key = settings
            .stripe_secret_key
            .clone()
            .ok_or_else(|| PspError::NotSent("ACP_STRIPE_SECRET_KEY is not set".into()))?;
        let client = reqwest::Client::builder()
            .connect_timeout(settings.stripe.connect_timeout)
            .timeout(settings.stripe.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PspError::NotSent(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: settings.stripe_api_base.clone(),
            secret_key,
            settings: settings.stripe.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    /// POSTs `params` under `idempotency_key`, retrying what is safe to retry.
    async fn post(&self, path: &str, params: &[(String, String)], idempotency_key: &str) -> Result<Answer, PspError> {
        self.send(path, Some(params), Some(idempotency_key)).await
    }

    async fn get(&self, path: &str) -> Result<Answer, PspError> {
        self.send(path, None, None).await
    }

    /// Sends with retries. Gives up with [`PspError::Ambiguous`] when any try may have reached Stripe, and with
    /// [`PspError::NotSent`] when none could (every connection attempt failed).
    async fn send(
        &self,
        path: &str,
        params: Option<&[(String, String)]>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, PspError> {
        let mut last_problem = String::new();
        let mut maybe_sent = false;
        for attempt in 0..=self.settings.max_retries {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            match self.exchange(path, params, idempotency_key, attempt).await {
                Exchange::Answered(answer) => return Ok(answer),
                Exchange::Retry { problem, sent } => {
                    maybe_sent |= sent;
                    last_problem = problem;
                }
            }
        }
        let reason = format!("Stripe gave no usable answer ({last_problem})");
        if maybe_sent {
            Err(PspError::ambiguous(reason))
        } else {
            Err(PspError::NotSent(reason))
        }
    }

    async fn exchange(
        &self,
        path: &str,
        params: Option<&[(String, String)]>,
        idempotency_key: Option<&str>,
        attempt: u32,
    ) -> Exchange {
        let mut request = match params {
            Some(p) => self.client.post(self.url(path)).form(p),
            None => self.client.get(self.url(path)),
        };
        request = request
            .bearer_auth(self.secret_key.expose())
            .header("Stripe-Version", &self.settings.api_version);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let started = Instant::now();
        let result = request.send().await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                // Only a failed connect proves the request never left; anything later may have reached Stripe.
                let sent = !e.is_connect();
                let kind = if e.is_timeout() {
                    "timeout"
                } else if sent {
                    "connection lost"
                } else {
                    "connection refused"
                };
                tracing::warn!(psp = "stripe", path, elapsed_ms, attempt, "stripe call failed: {kind}");
                return Exchange::Retry {
                    problem: kind.to_owned(),
                    sent,
                };
            }
        };
        let status = response.status();
        let body = match response.bytes().await.map(|b| serde_json::from_slice::<Value>(&b)) {
            Ok(Ok(body)) => body,
            _ => {
                // A 2xx we cannot read may be a charge: retried under the same key, Stripe replays its result.
                tracing::warn!(
                    psp = "stripe",
                    path,
                    status = status.as_u16(),
                    elapsed_ms,
                    attempt,
                    "stripe answer unreadable"
                );
                return Exchange::Retry {
                    problem: format!("unreadable HTTP {} answer", status.as_u16()),
                    sent: true,
                };
            }
        };
        tracing::info!(
            psp = "stripe",
            path,
            status = status.as_u16(),
            elapsed_ms,
            attempt,
            payment_intent = body["id"].as_str().or(body["error"]["payment_intent"]["id"].as_str()),
            "stripe call"
        );
        // 409 is Stripe saying the same key is still executing; 429 and 5xx are Stripe's "try again".
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::CONFLICT || status.is_server_error() {
            return Exchange::Retry {
                problem: format!("HTTP {}", status.as_u16()),
                // A 429 was refused before executing; a 409 or 5xx may hide an execution.
                sent: status != StatusCode::TOO_MANY_REQUESTS,
            };
        }
        Exchange::Answered(Answer { status, body })
    }

    /// Exponential backoff with a little jitter, capped at two seconds.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.settings.retry_backoff.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << (attempt - 1).min(10));
        let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % (base / 4 + 1);
        Duration::from_millis((exp + jitter).min(MAX_BACKOFF_MS))
    }

    fn charge_params(&self, r: &ChargeRequest) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = vec![
            ("amount".into(), r.amount.to_string()),
            ("currency".into(), r.currency.clone()),
            ("confirm".into(), "true".into()),
            (format!("metadata[{ATTEMPT_METADATA_KEY}]"), r.attempt_id.clone()),
            ("metadata[checkout_session_id]".into(), r.checkout_session_id.clone()),
            ("metadata[order_reference]".into(), r.order_reference.clone()),
            ("metadata[source]".into(), "chat_to_checkout".into()),
            ("metadata[agent_id]".into(), r.agent_id.clone()),
        ];
        let token_key = match self.settings.token_param {
            StripeTokenParam::PaymentMethodData => "payment_method_data[shared_payment_granted_token]",
            StripeTokenParam::TopLevel => "shared_payment_granted_token",
        };
        p.push((token_key.into(), r.token.clone()));
        if self.settings.capture_method == CaptureMethod::Manual {
            p.push(("capture_method".into(), "manual".into()));
        }
        if let Some(t) = &r.three_ds {
            let prefix = "payment_method_options[card][three_d_secure]";
            p.push((format!("{prefix}[cryptogram]"), t.cryptogram.clone()));
            p.push((
                format!("{prefix}[electronic_commerce_indicator]"),
                t.electronic_commerce_indicator.clone(),
            ));
            p.push((format!("{prefix}[transaction_id]"), t.transaction_id.clone()));
            p.push((format!("{prefix}[version]"), t.version.clone()));
        }
        p
    }

    /// A 4xx that is not a decline: a fault on our side. Logged loudly with Stripe's code, never shown to buyers.
    fn rejected(&self, path: &str, answer: &Answer) -> PspError {
        let error = &answer.body["error"];
        let code = error["code"].as_str().or(error["type"].as_str()).unwrap_or("unknown");
        let message = error["message"].as_str().unwrap_or("refused");
        tracing::error!(
            psp = "stripe",
            path,
            status = answer.status.as_u16(),
            stripe_error_code = code,
            stripe_error_type = error["type"].as_str(),
            "stripe refused the request: merchant-side configuration or integration fault"
        );
        PspError::Rejected {
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }
}

const MAX_BACKOFF_MS: u64 = 2_000;

/// The longest a charge can take, for the shutdown check: every try times out and every backoff is at its most.
pub fn worst_case(settings: &StripeSettings) -> Duration {
    let base = settings.retry_backoff.as_millis() as u64;
    let backoffs: u64 = (1..=settings.max_retries)
        .map(|attempt| (base.saturating_mul(1u64 << (attempt - 1).min(10)) + base / 4).min(MAX_BACKOFF_MS))
        .sum();
    settings.timeout * (settings.max_retries + 1) + Duration::from_millis(backoffs)
}

/// Is this Stripe error, for the buyer, a decline?
fn is_decline(answer: &Answer) -> bool {
    let error = &answer.body["error"];
    if answer.status == StatusCode::PAYMENT_REQUIRED || error["type"] == "card_error" {
        return true;
    }
    let code = error["code"].as_str().unwrap_or("");
    let names_token = error["param"]
        .as_str()
        .is_some_and(|p| p.contains("shared_payment_granted_token"));
    TOKEN_DECLINE_CODES.contains(&code) || (code == "resource_missing" && names_token)
}

/// What a Stripe error body says, turned into a decline the buyer can act on.
fn decline_from(body: &Value) -> ChargeOutcome {
    let error = &body["error"];
    let code = error["decline_code"]
        .as_str()
        .or(error["code"].as_str())
        .unwrap_or("payment_failed");
    let message = match error["code"].as_str() {
        Some("shared_payment_granted_token_used") => {
            "This payment token was already used; ask the buyer for a new one."
        }
        Some("shared_payment_granted_token_expired") => "This payment token has expired; ask the buyer for a new one.",
        Some("shared_payment_granted_token_revoked") => "This payment token was revoked; ask the buyer for a new one.",
        Some("resource_missing") => "This payment token is not valid; ask the buyer for a new one.",
        Some("amount_too_large") => "The total is over this payment token's spending limit.",
        Some("expired_card") => "The card has expired.",
        _ => match code {
            "insufficient_funds" => "The card has insufficient funds.",
            "authentication_required" => "The card issuer declined the payment after authentication.",
            _ => "The card was declined.",
        },
    };
    ChargeOutcome::Declined {
        code: code.to_owned(),
        message: message.to_owned(),
        payment_id: error["payment_intent"]["id"].as_str().map(str::to_owned),
    }
}

/// A PaymentIntent as Stripe returned it, read as a charge outcome.
fn outcome_of(intent: &Value) -> Result<ChargeOutcome, PspError> {
    let Some(id) = intent["id"].as_str().map(str::to_owned) else {
        return Err(PspError::ambiguous("Stripe answered without a PaymentIntent id"));
    };
    match intent["status"].as_str() {
        Some("succeeded") => Ok(ChargeOutcome::Succeeded {
            payment_id: id,
            captured: true,
        }),
        Some("requires_capture") => Ok(ChargeOutcome::Succeeded {
            payment_id: id,
            captured: false,
        }),
        Some("requires_action") => Ok(ChargeOutcome::RequiresAuthentication { payment_id: id }),
        Some("requires_payment_method" | "canceled") => {
            let error = &intent["last_payment_error"];
            Ok(ChargeOutcome::Declined {
                code: error["decline_code"]
                    .as_str()
                    .or(error["code"].as_str())
                    .unwrap_or("payment_failed")
                    .to_owned(),
                message: "The card was declined.".to_owned(),
                payment_id: Some(id),
            })
        }
        other => Err(PspError::Ambiguous {
            reason: format!("PaymentIntent status {}", other.unwrap_or("missing")),
            payment_id: Some(id),
        }),
    }
}

/// A PaymentIntent as Stripe returned it, read as a lookup.
fn lookup_of(intent: &Value) -> Lookup {
    let id = intent["id"].as_str().unwrap_or_default().to_owned();
    match intent["status"].as_str() {
        Some("succeeded") => Lookup::Charged {
            payment_id: id,
            captured: true,
        },
        Some("requires_capture") => Lookup::Charged {
            payment_id: id,
            captured: false,
        },
        Some("requires_action") => Lookup::RequiresAuthentication { payment_id: id },
        Some("requires_payment_method") => Lookup::NotCharged {
            payment_id: id,
            detail: intent["last_payment_error"]["code"]
                .as_str()
                .unwrap_or("requires_payment_method")
                .to_owned(),
        },
        Some("canceled") => Lookup::NotCharged {
            payment_id: id,
            detail: "canceled".into(),
        },
        _ => Lookup::Pending { payment_id: Some(id) },
    }
}

/// The most telling of several intents found for one attempt: a charge beats everything.
fn most_telling(found: Vec<Lookup>) -> Lookup {
    let rank = |l: &Lookup| match l {
        Lookup::Charged { .. } => 0,
        Lookup::Pending { .. } => 1,
        Lookup::RequiresAuthentication { .. } => 2,
        Lookup::NotCharged { .. } => 3,
        Lookup::NotFound { .. } => 4,
    };
    found
        .into_iter()
        .min_by_key(rank)
        .unwrap_or(Lookup::NotFound { authoritative: false })
}

impl PaymentProvider for Stripe {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
        let path = "/v1/payment_intents";
        let answer = self
            .post(path, &self.charge_params(request), &request.idempotency_key)
            .await?;
        if answer.status.is_success() {
            return outcome_of(&answer.body);
        }
        if answer.body["error"]["type"] == "idempotency_error" {
            // A request under this key already ran with other parameters: it may have charged.
            tracing::error!(
                psp = "stripe",
                "stripe refused a reused idempotency key with different parameters"
            );
            return Err(PspError::ambiguous("Stripe reported an idempotency_error"));
        }
        if is_decline(&answer) {
            return Ok(decline_from(&answer.body));
        }
        Err(self.rejected(path, &answer))
    }

    async fn lookup(&self, attempt_id: &str, payment_id: Option<&str>) -> Result<Lookup, PspError> {
        if let Some(id) = payment_id {
            let answer = self.get(&format!("/v1/payment_intents/{id}")).await?;
            if answer.status == StatusCode::NOT_FOUND {
                return Ok(Lookup::NotFound { authoritative: true });
            }
            if !answer.status.is_success() {
                return Err(self.rejected("/v1/payment_intents/{id}", &answer));
            }
            return Ok(lookup_of(&answer.body));
        }
        // Search by the attempt id in the intent's metadata (https://docs.stripe.com/search#search-query-language).
        let query = format!("metadata['{ATTEMPT_METADATA_KEY}']:'{attempt_id}'");
        let path = format!(
            "/v1/payment_intents/search?query={}",
            url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        );
        let answer = self.get(&path).await?;
        if !answer.status.is_success() {
            return Err(self.rejected("/v1/payment_intents/search", &answer));
        }
        let found: Vec<Lookup> = answer.body["data"]
            .as_array()
            .map(|intents| intents.iter().map(lookup_of).collect())
            .unwrap_or_default();
        Ok(most_telling(found))
    }

    async fn capture(&self, payment_id: &str, amount: i64, key: &str) -> Result<(), PspError> {
        let path = format!("/v1/payment_intents/{payment_id}/capture");
        let params = [("amount_to_capture".to_owned(), amount.to_string())];
        let answer = self.post(&path, &params, key).await?;
        if answer.status.is_success() {
            return Ok(());
        }
        let state = answer.body["error"]["payment_intent"]["status"].as_str();
        if state == Some("succeeded") {
            return Ok(());
        }
        if state == Some("canceled") {
            return Err(PspError::Rejected {
                code: "authorization_canceled".into(),
                message: "the authorization was canceled or expired before capture".into(),
            });
        }
        Err(self.rejected("/v1/payment_intents/{id}/capture", &answer))
    }

    async fn cancel(&self, payment_id: &str, key: &str) -> Result<CancelOutcome, PspError> {
        let path = format!("/v1/payment_intents/{payment_id}/cancel");
        let answer = self.post(&path, &[], key).await?;
        if answer.status.is_success() {
            return Ok(CancelOutcome::Canceled);
        }
        match answer.body["error"]["payment_intent"]["status"].as_str() {
            Some("canceled") => Ok(CancelOutcome::Canceled),
            Some("succeeded") => Ok(CancelOutcome::AlreadyCharged { captured: true }),
            _ => Err(self.rejected("/v1/payment_intents/{id}/cancel", &answer)),
        }
    }

    async fn refund(&self, payment_id: &str, amount: i64, key: &str) -> Result<RefundOutcome, PspError> {
        let params = [
            ("payment_intent".to_owned(), payment_id.to_owned()),
            ("amount".to_owned(), amount.to_string()),
            // Lets a `charge.refunded` event be recognised as our own refund.
            ("metadata[acp_adjustment_id]".to_owned(), key.to_owned()),
        ];
        let answer = self.post("/v1/refunds", &params, key).await?;
        if !answer.status.is_success() {
            return Err(self.rejected("/v1/refunds", &answer));
        }
        let refund_id = answer.body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PspError::ambiguous("Stripe answered a refund without an id"))?;
        Ok(RefundOutcome {
            refund_id,
            amount: answer.body["amount"].as_i64().unwrap_or(amount),
        })
    }
}

/// Reads a Stripe Event (https://docs.stripe.com/api/events/object) as what it means for the checkout.
pub fn event_of(event: &Value) -> PspEvent {
    let object = &event["data"]["object"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let attempt_id = text(&object["metadata"][ATTEMPT_METADATA_KEY]);
    let id = text(&object["id"]).unwrap_or_default();
    match event["type"].as_str().unwrap_or_default() {
        "payment_intent.succeeded" | "payment_intent.amount_capturable_updated" => PspEvent::PaymentSucceeded {
            attempt_id,
            payment_id: id,
            captured: object["status"] == "succeeded",
        },
        "payment_intent.payment_failed" => PspEvent::PaymentFailed {
            attempt_id,
            payment_id: id,
            code: text(&object["last_payment_error"]["decline_code"])
                .or_else(|| text(&object["last_payment_error"]["code"]))
                .unwrap_or_else(|| "payment_failed".into()),
        },
        "payment_intent.canceled" => PspEvent::PaymentCanceled {
            attempt_id,
            payment_id: id,
            reason: text(&object["cancellation_reason"]),
        },
        "charge.refunded" => PspEvent::Refunded {
            payment_id: text(&object["payment_intent"]).unwrap_or_default(),
            refunds: object["refunds"]["data"]
                .as_array()
                .map(|list| list.iter().filter_map(reported_refund).collect())
                .unwrap_or_default(),
        },
        // Since 2022-11-15 a Charge no longer lists its refunds unless expanded: `refund.created` carries each one.
        "refund.created" | "refund.updated" => PspEvent::Refunded {
            payment_id: text(&object["payment_intent"]).unwrap_or_default(),
            refunds: reported_refund(object).into_iter().collect(),
        },
        "charge.dispute.created" => PspEvent::Disputed {
            payment_id: text(&object["payment_intent"]).unwrap_or_default(),
            dispute_id: id,
            amount: object["amount"].as_i64().unwrap_or(0),
            reason: text(&object["reason"]).unwrap_or_else(|| "general".into()),
        },
        _ => PspEvent::Ignored,
    }
}

/// A succeeded (or pending) refund object; failed and canceled refunds gave nothing back.
fn reported_refund(refund: &Value) -> Option<ReportedRefund> {
    if !matches!(refund["status"].as_str(), Some("succeeded" | "pending") | None) {
        return None;
    }
    Some(ReportedRefund {
        refund_id: refund["id"].as_str()?.to_owned(),
        amount: refund["amount"].as_i64()?,
        adjustment_id: refund["metadata"]["acp_adjustment_id"].as_str().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(timeout_ms: u64, retries: u32, backoff_ms: u64) -> StripeSettings {
        StripeSettings {
            api_version: "2026-04-22.preview".into(),
            token_param: StripeTokenParam::PaymentMethodData,
            capture_method: CaptureMethod::Automatic,
            connect_timeout: Duration::from_millis(timeout_ms),
            timeout: Duration::from_millis(timeout_ms),
            max_retries: retries,
            retry_backoff: Duration::from_millis(backoff_ms),
        }
    }

    #[test]
    fn worst_case_counts_every_try_and_the_largest_backoffs() {
        // 3 tries of 8 s, backoffs 250+62 and 500+62 ms.
        assert_eq!(worst_case(&settings(8_000, 2, 250)), Duration::from_millis(24_874));
        // Backoffs are capped at 2 s each.
        assert_eq!(
            worst_case(&settings(1_000, 3, 1_500)),
            Duration::from_millis(4_000 + 1_875 + 2_000 + 2_000)
        );
        assert_eq!(worst_case(&settings(1_000, 0, 250)), Duration::from_millis(1_000));
    }

    #[test]
    fn intents_read_as_outcomes_and_lookups() {
        let pi = |status: &str| serde_json::json!({"id": "pi_1", "status": status});
        assert_eq!(
            outcome_of(&pi("requires_capture")).unwrap(),
            ChargeOutcome::Succeeded {
                payment_id: "pi_1".into(),
                captured: false
            }
        );
        assert!(matches!(
            outcome_of(&pi("processing")),
            Err(PspError::Ambiguous {
                payment_id: Some(_),
                ..
            })
        ));
        assert!(matches!(
            outcome_of(&serde_json::json!({"status": "succeeded"})),
            Err(PspError::Ambiguous { .. })
        ));
        assert_eq!(
            lookup_of(&pi("processing")),
            Lookup::Pending {
                payment_id: Some("pi_1".into())
            }
        );
        assert!(matches!(lookup_of(&pi("canceled")), Lookup::NotCharged { .. }));
        let best = most_telling(vec![lookup_of(&pi("canceled")), lookup_of(&pi("succeeded"))]);
        assert!(matches!(best, Lookup::Charged { captured: true, .. }));
        assert_eq!(most_telling(vec![]), Lookup::NotFound { authoritative: false });
    }

    #[test]
    fn only_card_and_token_errors_are_declines() {
        let answer = |status: u16, error: Value| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: serde_json::json!({ "error": error }),
        };
        assert!(is_decline(&answer(
            402,
            serde_json::json!({"type": "card_error", "code": "card_declined"})
        )));
        assert!(is_decline(&answer(
            400,
            serde_json::json!({"type": "invalid_request_error", "code": "shared_payment_granted_token_used"})
        )));
        assert!(is_decline(&answer(
            400,
            serde_json::json!({"type": "invalid_request_error", "code": "resource_missing",
                               "param": "payment_method_data[shared_payment_granted_token]"})
        )));
        assert!(!is_decline(&answer(
            400,
            serde_json::json!({"type": "invalid_request_error", "code": "parameter_unknown", "param": "foo"})
        )));
        assert!(!is_decline(&answer(
            400,
            serde_json::json!({"type": "invalid_request_error",
                                                            "message": "Invalid Stripe API version: x"})
        )));
        assert!(!is_decline(&answer(
            404,
            serde_json::json!({"type": "invalid_request_error", "code": "resource_missing", "param": "intent"})
        )));
    }
}
