//! Payment service providers. The checkout service talks to one [`Psp`]; which one is configuration
//! (`ACP_PSP`). Declines and authentication requests are outcomes (data), not errors: errors mean the PSP could
//! not give an answer.

pub mod simulator;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// Derived from (session, token, amount) so retries reuse it and a new token gets a new one.
    pub idempotency_key: String,
    pub checkout_session_id: String,
    pub amount: i64,
    pub currency: String,
    pub token: String,
    /// True when the buyer completed 3-D Secure for this attempt.
    pub authenticated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded { charge_id: String },
    Declined { code: String, message: String },
    RequiresAuthentication,
}

#[derive(Debug, thiserror::Error)]
pub enum PspError {
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    #[error("payment provider storage error: {0}")]
    Storage(#[from] sqlx::Error),
}

/// The PSP idempotency key for charging `amount` on `session` with `token`. The token is hashed in, never
/// stored or logged in clear.
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

/// The configured PSP. An enum rather than a trait object: two implementations, no dynamic loading.
#[derive(Clone)]
pub enum Psp {
    Simulator(simulator::Simulator),
    /// A configured PSP this build cannot call yet: every charge answers "unavailable", sessions stay intact.
    Unavailable(&'static str),
}

impl Psp {
    pub async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PspError> {
        match self {
            Self::Simulator(s) => s.charge(request).await,
            Self::Unavailable(why) => Err(PspError::Unavailable((*why).to_owned())),
        }
    }

    pub async fn void(&self, charge_id: &str) -> Result<(), PspError> {
        match self {
            Self::Simulator(s) => s.void(charge_id).await,
            Self::Unavailable(why) => Err(PspError::Unavailable((*why).to_owned())),
        }
    }
}
