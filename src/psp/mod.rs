//! Payment service providers. The checkout service talks to one [`Psp`]; which one is configuration
//! (`ACP_PSP`). Declines and authentication requests are outcomes (data), not errors: an error means the PSP
//! gave no usable answer (unreachable, timed out, refused our credentials).

pub mod simulator;
pub mod stripe;

use std::future::Future;

use sha2::{Digest, Sha256};

/// Imported 3-D Secure results (from the agent's `authentication_result.outcome_details`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreeDsData {
    pub cryptogram: String,
    pub electronic_commerce_indicator: String,
    pub transaction_id: String,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// Derived from (session, token, amount) so retries reuse it and a new token gets a new one.
    pub idempotency_key: String,
    pub checkout_session_id: String,
    /// The order id the charge will belong to (reserved before charging, so the PSP metadata names it).
    pub order_reference: String,
    pub agent_id: String,
    pub amount: i64,
    pub currency: String,
    pub token: String,
    /// Present when the buyer completed 3-D Secure for this attempt.
    pub three_ds: Option<ThreeDsData>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Paid (or authorized, under manual capture); `charge_id` is the PSP's reference (a PaymentIntent id).
    Succeeded {
        charge_id: String,
    },
    Declined {
        code: String,
        message: String,
    },
    RequiresAuthentication,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    Succeeded,
    RequiresCapture,
    RequiresAuthentication,
    Failed,
    Canceled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOutcome {
    pub refund_id: String,
    pub amount: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PspError {
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The PSP refused the operation itself (for example refunding more than was charged).
    #[error("payment provider refused: {0}")]
    Refused(String),
    #[error("payment provider storage error: {0}")]
    Storage(#[from] sqlx::Error),
}

/// The PSP idempotency key for charging `amount` on `session` with `token`. The token is hashed in, never
/// stored or logged in clear. An authenticated (3-D Secure) attempt is a different operation from the first one.
pub fn idempotency_key(session: &str, token: &str, amount: i64, authenticated: bool) -> String {
    let mut h = Sha256::new();
    let amount = amount.to_string();
    let auth: &[u8] = if authenticated { b"3ds" } else { b"" };
    for part in [
        session.as_bytes(),
        b"\0",
        token.as_bytes(),
        b"\0",
        amount.as_bytes(),
        b"\0",
        auth,
    ] {
        h.update(part);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("acp_{hex}")
}

/// What every PSP adapter offers. Operations after the first charge take their own idempotency key so that a
/// retried capture, cancel or refund happens once.
pub trait PaymentProvider {
    fn confirm(&self, request: &ChargeRequest) -> impl Future<Output = Result<ChargeOutcome, PspError>> + Send;
    fn capture(&self, charge_id: &str, idempotency_key: &str) -> impl Future<Output = Result<(), PspError>> + Send;
    fn cancel(&self, charge_id: &str, idempotency_key: &str) -> impl Future<Output = Result<(), PspError>> + Send;
    fn retrieve(&self, charge_id: &str) -> impl Future<Output = Result<ChargeStatus, PspError>> + Send;
    fn refund(
        &self,
        charge_id: &str,
        amount: i64,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<RefundOutcome, PspError>> + Send;
}

/// The configured PSP. An enum over the two adapters: static dispatch, no trait objects.
#[derive(Clone)]
pub enum Psp {
    Simulator(simulator::Simulator),
    Stripe(stripe::Stripe),
}

impl PaymentProvider for Psp {
    async fn confirm(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
        match self {
            Self::Simulator(p) => p.confirm(request).await,
            Self::Stripe(p) => p.confirm(request).await,
        }
    }

    async fn capture(&self, charge_id: &str, key: &str) -> Result<(), PspError> {
        match self {
            Self::Simulator(p) => p.capture(charge_id, key).await,
            Self::Stripe(p) => p.capture(charge_id, key).await,
        }
    }

    async fn cancel(&self, charge_id: &str, key: &str) -> Result<(), PspError> {
        match self {
            Self::Simulator(p) => p.cancel(charge_id, key).await,
            Self::Stripe(p) => p.cancel(charge_id, key).await,
        }
    }

    async fn retrieve(&self, charge_id: &str) -> Result<ChargeStatus, PspError> {
        match self {
            Self::Simulator(p) => p.retrieve(charge_id).await,
            Self::Stripe(p) => p.retrieve(charge_id).await,
        }
    }

    async fn refund(&self, charge_id: &str, amount: i64, key: &str) -> Result<RefundOutcome, PspError> {
        match self {
            Self::Simulator(p) => p.refund(charge_id, amount, key).await,
            Self::Stripe(p) => p.refund(charge_id, amount, key).await,
        }
    }
}
