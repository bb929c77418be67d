//! Payment service providers. The checkout service talks to one [`Psp`]; which one is configuration
//! (`ACP_PSP`).
//!
//! Every answer is sorted by what it proves about the money, because that decides what the session may do next:
//! - [`ChargeOutcome`]: the PSP answered and the answer is final for this attempt (paid, declined, or waiting for
//!   3-D Secure).
//! - [`PspError::Ambiguous`]: the PSP may or may not have charged (timeout, connection lost after sending, 5xx
//!   after every retry, an unreadable 2xx, a payment still `processing`). Never a decline: the attempt stays open
//!   and is settled later by asking the PSP ([`PaymentProvider::lookup`]).
//! - [`PspError::Rejected`]: the PSP refused the request itself before acting on it (bad credentials, an invalid
//!   parameter or API version). No charge was made; it is a merchant-side fault, never shown as a decline.
//! - [`PspError::NotSent`]: the request never left (no connection could be opened). No charge was made.

pub mod observed;
pub mod simulator;
pub mod stripe;
pub mod stripe_signature;

use std::future::Future;

use sha2::{Digest, Sha256};

/// Imported 3-D Secure results (from the agent's `authentication_result.outcome_details`). `Debug` leaves the
/// cryptogram (an authentication value) out.
#[derive(Clone, PartialEq, Eq)]
pub struct ThreeDsData {
    pub cryptogram: String,
    pub electronic_commerce_indicator: String,
    pub transaction_id: String,
    pub version: String,
}

impl std::fmt::Debug for ThreeDsData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreeDsData")
            .field("cryptogram", &"[redacted]")
            .field("electronic_commerce_indicator", &self.electronic_commerce_indicator)
            .field("transaction_id", &self.transaction_id)
            .field("version", &self.version)
            .finish()
    }
}

/// The metadata key under which every PaymentIntent names the payment attempt it belongs to (how a resolver finds
/// the intent when its id was never heard).
pub const ATTEMPT_METADATA_KEY: &str = "acp_attempt_id";

/// `Debug` is written by hand: it leaves the payment token out.
#[derive(Clone)]
pub struct ChargeRequest {
    /// The payment attempt this charge belongs to (sent as metadata, so the PSP can be asked about it later).
    pub attempt_id: String,
    /// The attempt's PSP key: every request for this attempt carries it, so the PSP acts at most once.
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

impl std::fmt::Debug for ChargeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargeRequest")
            .field("attempt_id", &self.attempt_id)
            .field("idempotency_key", &self.idempotency_key)
            .field("checkout_session_id", &self.checkout_session_id)
            .field("order_reference", &self.order_reference)
            .field("agent_id", &self.agent_id)
            .field("amount", &self.amount)
            .field("currency", &self.currency)
            .field("token", &"[redacted]")
            .field("three_ds", &self.three_ds)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Paid (or authorized, under manual capture); `payment_id` is the PSP's reference (a PaymentIntent id).
    Succeeded { payment_id: String, captured: bool },
    /// Refused by the issuer or the token's limits; nothing was charged.
    Declined {
        code: String,
        message: String,
        payment_id: Option<String>,
    },
    /// The issuer wants 3-D Secure: the payment is live but waiting.
    RequiresAuthentication { payment_id: String },
}

/// What the PSP says about an attempt when asked later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Charged {
        payment_id: String,
        captured: bool,
    },
    /// A payment exists and cannot charge any more (failed, canceled).
    NotCharged {
        payment_id: String,
        detail: String,
    },
    RequiresAuthentication {
        payment_id: String,
    },
    /// Still being worked on by the PSP (`processing`): ask again later.
    Pending {
        payment_id: Option<String>,
    },
    /// No payment for the attempt. `authoritative` when the PSP's answer is exact (retrieval by id, the
    /// simulator's ledger); Stripe's search is eventually consistent, so its "nothing" proves no charge only once
    /// the attempt is older than the configured grace.
    NotFound {
        authoritative: bool,
    },
}

/// The result of asking the PSP to cancel a payment that should not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Canceled now, or it had already failed or been canceled: it can never charge.
    Canceled,
    /// Too late: it already charged (or authorized).
    AlreadyCharged { captured: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOutcome {
    pub refund_id: String,
    pub amount: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PspError {
    /// The PSP may have acted; settle it by asking.
    #[error("payment provider outcome unknown: {reason}")]
    Ambiguous { reason: String, payment_id: Option<String> },
    /// The PSP refused the request before acting on it (`code` is the PSP's error code).
    #[error("payment provider refused the request ({code}): {message}")]
    Rejected { code: String, message: String },
    /// The request never reached the PSP.
    #[error("payment provider unreachable: {0}")]
    NotSent(String),
    #[error("payment provider storage error: {0}")]
    Storage(#[from] sqlx::Error),
}

impl PspError {
    pub fn ambiguous(reason: impl Into<String>) -> Self {
        Self::Ambiguous {
            reason: reason.into(),
            payment_id: None,
        }
    }
}

/// The PSP key of a payment attempt: the attempt id itself, which is unique and stored before the first call.
pub fn attempt_idempotency_key(attempt_id: &str) -> String {
    format!("acp_{attempt_id}")
}

/// SHA-256 over what a charge carries besides the attempt's stored facts (the token and the 3-D Secure data): two
/// requests with the same fingerprint send the PSP identical parameters. The token itself is never stored.
pub fn request_fingerprint(token: &str, three_ds: Option<&ThreeDsData>) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(b"\0");
    if let Some(t) = three_ds {
        for part in [
            &t.cryptogram,
            &t.electronic_commerce_indicator,
            &t.transaction_id,
            &t.version,
        ] {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
    }
    h.finalize().to_vec()
}

/// What every PSP adapter offers. Operations after the charge take their own idempotency key so that a retried
/// capture, cancel or refund happens once.
pub trait PaymentProvider {
    fn charge(&self, request: &ChargeRequest) -> impl Future<Output = Result<ChargeOutcome, PspError>> + Send;
    /// Asks about an attempt: by its payment id when known, else by the attempt id in the payment's metadata.
    fn lookup(
        &self,
        attempt_id: &str,
        payment_id: Option<&str>,
    ) -> impl Future<Output = Result<Lookup, PspError>> + Send;
    /// Captures `amount` of an authorized payment.
    fn capture(
        &self,
        payment_id: &str,
        amount: i64,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<(), PspError>> + Send;
    fn cancel(
        &self,
        payment_id: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<CancelOutcome, PspError>> + Send;
    fn refund(
        &self,
        payment_id: &str,
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

impl Psp {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Simulator(_) => "simulator",
            Self::Stripe(_) => "stripe",
        }
    }
}

impl PaymentProvider for Psp {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
        observed::observe(self.name(), "charge", observed::charge_outcome, async {
            match self {
                Self::Simulator(p) => p.charge(request).await,
                Self::Stripe(p) => p.charge(request).await,
            }
        })
        .await
    }

    async fn lookup(&self, attempt_id: &str, payment_id: Option<&str>) -> Result<Lookup, PspError> {
        observed::observe(self.name(), "lookup", observed::answer_outcome, async {
            match self {
                Self::Simulator(p) => p.lookup(attempt_id, payment_id).await,
                Self::Stripe(p) => p.lookup(attempt_id, payment_id).await,
            }
        })
        .await
    }

    async fn capture(&self, payment_id: &str, amount: i64, key: &str) -> Result<(), PspError> {
        observed::observe(self.name(), "capture", observed::answer_outcome, async {
            match self {
                Self::Simulator(p) => p.capture(payment_id, amount, key).await,
                Self::Stripe(p) => p.capture(payment_id, amount, key).await,
            }
        })
        .await
    }

    async fn cancel(&self, payment_id: &str, key: &str) -> Result<CancelOutcome, PspError> {
        observed::observe(self.name(), "cancel", observed::answer_outcome, async {
            match self {
                Self::Simulator(p) => p.cancel(payment_id, key).await,
                Self::Stripe(p) => p.cancel(payment_id, key).await,
            }
        })
        .await
    }

    async fn refund(&self, payment_id: &str, amount: i64, key: &str) -> Result<RefundOutcome, PspError> {
        observed::observe(self.name(), "refund", observed::answer_outcome, async {
            match self {
                Self::Simulator(p) => p.refund(payment_id, amount, key).await,
                Self::Stripe(p) => p.refund(payment_id, amount, key).await,
            }
        })
        .await
    }
}

/// A refund the PSP reports (Stripe `charge.refunded` / `refund.*` events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedRefund {
    pub refund_id: String,
    pub amount: i64,
    /// Set on refunds this server made (their adjustment id), so a report of our own refund changes nothing.
    pub adjustment_id: Option<String>,
}

/// What a PSP's own notification says, in the terms the checkout understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PspEvent {
    PaymentSucceeded {
        attempt_id: Option<String>,
        payment_id: String,
        captured: bool,
    },
    PaymentFailed {
        attempt_id: Option<String>,
        payment_id: String,
        code: String,
    },
    PaymentCanceled {
        attempt_id: Option<String>,
        payment_id: String,
        /// Stripe's `cancellation_reason` (`automatic` when an uncaptured authorization lapsed).
        reason: Option<String>,
    },
    Refunded {
        payment_id: String,
        refunds: Vec<ReportedRefund>,
    },
    Disputed {
        payment_id: String,
        dispute_id: String,
        amount: i64,
        reason: String,
    },
    /// A type this server does not act on.
    Ignored,
}
