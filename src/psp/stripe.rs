//! Stripe: PaymentIntents confirmed with a Shared Payment Token, form-encoded, authenticated with the secret key,
//! pinned to a `Stripe-Version`, every POST under an `Idempotency-Key`.
//!
//! Retries: 429, 5xx, timeouts and connection failures are retried with exponential backoff under the *same*
//! Stripe idempotency key, so Stripe executes the operation at most once; after the last try the caller gets
//! [`PspError::Unavailable`] and the session stays intact. Card errors (HTTP 402) and token problems (consumed,
//! expired, over its limit) are declines with a message the agent can show.

use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::{ChargeOutcome, ChargeRequest, ChargeStatus, PaymentProvider, PspError, RefundOutcome};
use crate::config::{CaptureMethod, Secret, Settings, StripeSettings, StripeTokenParam};

#[derive(Clone)]
pub struct Stripe {
    client: reqwest::Client,
    base: Url,
    secret_key: Secret,
    settings: StripeSettings,
}

/// A Stripe answer we can act on: its HTTP status and JSON body.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Stripe {
    pub fn new(settings: &Settings) -> Result<Self, PspError> {
        let secret_key = settings
            .stripe_secret_key
            .clone()
            .ok_or_else(|| PspError::Unavailable("ACP_STRIPE_SECRET_KEY is not set".into()))?;
        let client = reqwest::Client::builder()
            .connect_timeout(settings.stripe.connect_timeout)
            .timeout(settings.stripe.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PspError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
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

    async fn send(
        &self,
        path: &str,
        params: Option<&[(String, String)]>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, PspError> {
        let mut last_problem = String::new();
        for attempt in 0..=self.settings.max_retries {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
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
            match result {
                Ok(response) => {
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    tracing::info!(
                        psp = "stripe",
                        path,
                        status = status.as_u16(),
                        elapsed_ms,
                        attempt,
                        payment_intent = body["id"].as_str().or(body["error"]["payment_intent"]["id"].as_str()),
                        "stripe call"
                    );
                    // 409 is Stripe saying the same key is still being processed: as retryable as a 429.
                    if status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::CONFLICT
                        || status.is_server_error()
                    {
                        last_problem = format!("HTTP {status}");
                        continue;
                    }
                    if status == StatusCode::UNAUTHORIZED {
                        tracing::error!("Stripe refused the secret key");
                        return Err(PspError::Unavailable("Stripe refused the configured secret key".into()));
                    }
                    return Ok(Answer { status, body });
                }
                Err(e) => {
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else {
                        "connection failure"
                    };
                    tracing::warn!(psp = "stripe", path, elapsed_ms, attempt, "stripe call failed: {kind}");
                    last_problem = kind.to_owned();
                }
            }
        }
        Err(PspError::Unavailable(format!(
            "Stripe did not answer usefully ({last_problem})"
        )))
    }

    /// Exponential backoff with a little jitter, capped at two seconds.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.settings.retry_backoff.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << (attempt - 1).min(10));
        let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % (base / 4 + 1);
        Duration::from_millis((exp + jitter).min(2_000))
    }

    fn confirm_params(&self, r: &ChargeRequest) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = vec![
            ("amount".into(), r.amount.to_string()),
            ("currency".into(), r.currency.clone()),
            ("confirm".into(), "true".into()),
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
    }
}

fn intent_id(body: &Value) -> Result<String, PspError> {
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| PspError::Unavailable("Stripe answered without an id".into()))
}

impl PaymentProvider for Stripe {
    async fn confirm(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
        let answer = self
            .post(
                "/v1/payment_intents",
                &self.confirm_params(request),
                &request.idempotency_key,
            )
            .await?;
        if answer.status.is_success() {
            return match answer.body["status"].as_str() {
                Some("succeeded" | "requires_capture" | "processing") => Ok(ChargeOutcome::Succeeded {
                    charge_id: intent_id(&answer.body)?,
                }),
                Some("requires_action") => Ok(ChargeOutcome::RequiresAuthentication),
                _ => Ok(decline_from(&answer.body)),
            };
        }
        if answer.body["error"]["type"] == "idempotency_error" {
            // Our own bug (same key, different parameters): never a decline, and never retried blindly.
            tracing::error!(
                psp = "stripe",
                "stripe refused a reused idempotency key with different parameters"
            );
            return Err(PspError::Refused("Stripe refused the idempotency key".into()));
        }
        if answer.status.is_client_error() {
            if answer.status != StatusCode::PAYMENT_REQUIRED {
                tracing::warn!(
                    psp = "stripe",
                    code = answer.body["error"]["code"].as_str(),
                    "stripe refused the charge"
                );
            }
            return Ok(decline_from(&answer.body));
        }
        Err(PspError::Unavailable(format!(
            "unexpected Stripe status {}",
            answer.status
        )))
    }

    async fn capture(&self, charge_id: &str, key: &str) -> Result<(), PspError> {
        let answer = self
            .post(&format!("/v1/payment_intents/{charge_id}/capture"), &[], key)
            .await?;
        expect_success(answer).map(drop)
    }

    async fn cancel(&self, charge_id: &str, key: &str) -> Result<(), PspError> {
        let answer = self
            .post(&format!("/v1/payment_intents/{charge_id}/cancel"), &[], key)
            .await?;
        expect_success(answer).map(drop)
    }

    async fn retrieve(&self, charge_id: &str) -> Result<ChargeStatus, PspError> {
        let answer = expect_success(
            self.send(&format!("/v1/payment_intents/{charge_id}"), None, None)
                .await?,
        )?;
        Ok(match answer["status"].as_str() {
            Some("succeeded") => ChargeStatus::Succeeded,
            Some("requires_capture") => ChargeStatus::RequiresCapture,
            Some("requires_action") => ChargeStatus::RequiresAuthentication,
            Some("canceled") => ChargeStatus::Canceled,
            _ => ChargeStatus::Failed,
        })
    }

    async fn refund(&self, charge_id: &str, amount: i64, key: &str) -> Result<RefundOutcome, PspError> {
        let params = [
            ("payment_intent".to_owned(), charge_id.to_owned()),
            ("amount".to_owned(), amount.to_string()),
        ];
        let body = expect_success(self.post("/v1/refunds", &params, key).await?)?;
        Ok(RefundOutcome {
            refund_id: intent_id(&body)?,
            amount: body["amount"].as_i64().unwrap_or(amount),
        })
    }
}

fn expect_success(answer: Answer) -> Result<Value, PspError> {
    if answer.status.is_success() {
        Ok(answer.body)
    } else {
        let message = answer.body["error"]["message"].as_str().unwrap_or("refused").to_owned();
        Err(PspError::Refused(message))
    }
}
