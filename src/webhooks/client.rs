//! The HTTP client that delivers webhooks, with the hygiene an outbound caller of customer-supplied URLs needs:
//! https only (unless allowed), no proxy (reqwest would otherwise honour `HTTP(S)_PROXY`/`ALL_PROXY` from the
//! environment and send every delivery through it), no redirects, connect and total timeouts, at most
//! `max_response_bytes` of the response read, and a DNS resolver of our own that refuses special-purpose
//! addresses (unless allowed). Because reqwest connects to exactly the addresses that resolver returns, the
//! address checked is the address connected to: no DNS rebinding between check and connect.
//!
//! One [`WebhookClient`] is built at start-up and shared by every delivery, so connections and TLS sessions are
//! reused.

use std::{error::Error as StdError, net::SocketAddr, sync::Arc, time::Duration};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    header::HeaderMap,
};

use crate::config::is_internal_ip;

#[derive(Debug, Clone)]
pub struct ClientPolicy {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// Development and `ACP_ALLOW_INSECURE_WEBHOOK_URLS`: http and internal addresses are allowed.
    pub allow_insecure: bool,
    /// Internal addresses this client may reach anyway (the merchant endpoints' allow-listed networks; empty
    /// for the agents' client).
    pub allowed_networks: Vec<ipnet::IpNet>,
}

impl ClientPolicy {
    /// Whether `ip` may be connected to: not a special-purpose address, or one of the allowed networks.
    fn reachable(&self, ip: std::net::IpAddr) -> bool {
        self.allow_insecure || !is_internal_ip(ip) || self.allowed_networks.iter().any(|n| n.contains(&ip))
    }
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

/// The resolver's refusal, found again in the error chain to report it as a policy refusal.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to a special-purpose address ({address}): loopback, private, link-local or reserved")]
struct SpecialAddress {
    host: String,
    address: std::net::IpAddr,
}

#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("resolving {0} timed out")]
    Timeout(String),
    #[error("{0} has no address")]
    NoAddress(String),
}

/// Resolves with the system resolver (bounded by the connect timeout) and refuses any answer holding a
/// special-purpose address, unless internal addresses are allowed.
struct GuardedResolver {
    timeout: Duration,
    policy: ClientPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let (timeout, policy) = (self.timeout, self.policy.clone());
        Box::pin(async move {
            let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), 0)))
                .await
                .map_err(|_| boxed(LookupError::Timeout(host.clone())))?
                .map_err(boxed)?;
            let addrs: Vec<SocketAddr> = found.collect();
            if addrs.is_empty() {
                return Err(boxed(LookupError::NoAddress(host)));
            }
            if let Some(special) = addrs.iter().find(|a| !policy.reachable(a.ip())) {
                return Err(boxed(SpecialAddress {
                    host,
                    address: special.ip(),
                }));
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

fn boxed(e: impl StdError + Send + Sync + 'static) -> Box<dyn StdError + Send + Sync> {
    Box::new(e)
}

/// The webhook HTTP client: built once, reused for every delivery.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: ClientPolicy,
}

impl WebhookClient {
    pub fn new(policy: ClientPolicy) -> Result<Self, DeliveryError> {
        let resolver = GuardedResolver {
            timeout: policy.connect_timeout,
            policy: policy.clone(),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.timeout)
            .dns_resolver(Arc::new(resolver))
            .build()
            .map_err(|e| DeliveryError::Transport(format!("cannot build the webhook HTTP client: {e}")))?;
        Ok(Self { http, policy })
    }

    pub fn policy(&self) -> &ClientPolicy {
        &self.policy
    }

    /// POSTs `body` to `url` once.
    pub async fn post(&self, url: &Url, headers: HeaderMap, body: Vec<u8>) -> Result<Answer, DeliveryError> {
        self.check_url(url)?;
        let mut response = self
            .http
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read (and discard) at most the cap: a receiver cannot make us buffer or wait on an endless body.
        let mut read = 0usize;
        while read < self.policy.max_response_bytes {
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

    /// The scheme, and literal IP hosts (they never reach a resolver).
    fn check_url(&self, url: &Url) -> Result<(), DeliveryError> {
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_insecure => {}
            other => return Err(DeliveryError::Refused(format!("scheme {other} is not allowed"))),
        }
        let literal = match url.host() {
            None => return Err(DeliveryError::Refused("no host".into())),
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
        };
        if literal.is_some_and(|ip| !self.policy.reachable(ip)) {
            return Err(DeliveryError::Refused(
                "the URL points at a special-purpose address: loopback, private, link-local or reserved".into(),
            ));
        }
        Ok(())
    }
}

/// The resolver's refusal is a policy refusal (permanent); anything else is a transport failure (retried).
fn classify(e: reqwest::Error) -> DeliveryError {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(cause) = source {
        if let Some(special) = cause.downcast_ref::<SpecialAddress>() {
            return DeliveryError::Refused(special.to_string());
        }
        source = cause.source();
    }
    DeliveryError::Transport(if e.is_timeout() {
        "timed out".into()
    } else {
        format!("request failed: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(allow_internal: bool) -> GuardedResolver {
        GuardedResolver {
            timeout: Duration::from_secs(2),
            policy: ClientPolicy {
                connect_timeout: Duration::from_secs(2),
                timeout: Duration::from_secs(2),
                max_response_bytes: 16,
                allow_insecure: allow_internal,
                allowed_networks: Vec::new(),
            },
        }
    }

    fn name(host: &str) -> Name {
        host.parse().expect("a valid DNS name")
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_special_purpose_addresses_unless_allowed() {
        let refused = match resolver(false).resolve(name("localhost")).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        assert!(refused.downcast_ref::<SpecialAddress>().is_some(), "{refused}");
        let allowed: Vec<SocketAddr> = resolver(true)
            .resolve(name("localhost"))
            .await
            .expect("allowed in development")
            .collect();
        assert!(allowed.iter().all(|a| a.ip().is_loopback()) && !allowed.is_empty());
        // An allow-listed network opens exactly its addresses.
        let mut listed = resolver(false);
        listed.policy.allowed_networks = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let listed: Vec<SocketAddr> = listed.resolve(name("localhost")).await.expect("allow-listed").collect();
        assert!(!listed.is_empty());
    }

    #[tokio::test]
    async fn literal_special_addresses_and_plain_http_are_refused_before_connecting() {
        let client = WebhookClient::new(ClientPolicy {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_response_bytes: 16,
            allow_insecure: false,
            allowed_networks: Vec::new(),
        })
        .expect("client");
        for url in [
            "https://10.0.0.1/h",
            "https://[::ffff:127.0.0.1]/h",
            "https://[fe80::1]/h",
            "http://example.com/h",
        ] {
            let result = client
                .post(&Url::parse(url).unwrap(), HeaderMap::new(), Vec::new())
                .await;
            assert!(matches!(result, Err(DeliveryError::Refused(_))), "{url}: {result:?}");
        }
    }

    #[test]
    fn allowed_networks_open_only_their_own_private_addresses() {
        let policy = ClientPolicy {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_response_bytes: 16,
            allow_insecure: false,
            allowed_networks: vec!["10.20.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()],
        };
        for (ip, reachable) in [
            ("10.20.3.4", true),
            ("fd12::1", true),
            ("10.21.0.1", false),
            ("192.168.1.1", false),
            ("127.0.0.1", false),
            ("93.184.216.34", true),
        ] {
            assert_eq!(policy.reachable(ip.parse().unwrap()), reachable, "{ip}");
        }
        let agents = ClientPolicy {
            allowed_networks: Vec::new(),
            ..policy
        };
        assert!(
            !agents.reachable("10.20.3.4".parse().unwrap()),
            "the agents' client allows no private network"
        );
    }
}
