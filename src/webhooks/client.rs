//! The HTTP client that delivers webhooks, with the hygiene an outbound caller of customer-supplied URLs needs:
//! https only (unless allowed), the host resolved once and checked against private, loopback and link-local
//! ranges (unless allowed) and then pinned for the connection (no DNS rebinding between check and connect),
//! connect and total timeouts, no redirects, and at most `max_response_bytes` of the response read.

use std::{net::SocketAddr, time::Duration};

use reqwest::{Url, header::HeaderMap};

use crate::config::is_internal_ip;

#[derive(Debug, Clone)]
pub struct ClientPolicy {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// Development and `ACP_ALLOW_INSECURE_WEBHOOK_URLS`: http and internal addresses are allowed.
    pub allow_insecure: bool,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("refused by policy: {0}")]
    Refused(String),
    #[error("{0}")]
    Transport(String),
}

impl DeliveryError {
    /// Policy refusals do not get better with time.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

async fn resolve(url: &Url, policy: &ClientPolicy) -> Result<SocketAddr, DeliveryError> {
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_insecure => {}
        other => return Err(DeliveryError::Refused(format!("scheme {other} is not allowed"))),
    }
    let host = url.host_str().ok_or_else(|| DeliveryError::Refused("no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| DeliveryError::Transport(format!("cannot resolve {host}: {e}")))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| DeliveryError::Transport(format!("{host} has no address")))?;
    if !policy.allow_insecure && addrs.iter().any(|a| is_internal_ip(a.ip())) {
        return Err(DeliveryError::Refused(format!(
            "{host} resolves to a private, loopback or link-local address"
        )));
    }
    Ok(first)
}

/// POSTs `body` to `url` once.
pub async fn post(
    url: &Url,
    headers: HeaderMap,
    body: Vec<u8>,
    policy: &ClientPolicy,
) -> Result<Answer, DeliveryError> {
    let addr = resolve(url, policy).await?;
    let mut builder = reqwest::Client::builder()
        .connect_timeout(policy.connect_timeout)
        .timeout(policy.timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(domain) = url.domain() {
        // Connect to the address we checked, whatever DNS says a moment later.
        builder = builder.resolve(domain, addr);
    }
    let client = builder
        .build()
        .map_err(|e| DeliveryError::Transport(format!("client: {e}")))?;
    let mut response = client
        .post(url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            DeliveryError::Transport(if e.is_timeout() {
                "timed out".into()
            } else {
                format!("request failed: {e}")
            })
        })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read (and discard) at most the cap: a receiver cannot make us buffer or wait on an endless body.
    let mut read = 0usize;
    while read < policy.max_response_bytes {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
    if status.is_redirection() {
        return Err(DeliveryError::Transport(format!("redirect ({status}) refused")));
    }
    Ok(Answer {
        status: status.as_u16(),
        retry_after,
    })
}
