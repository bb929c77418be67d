//! Configuration: embedded defaults (`config/default.toml`) → optional file (`--config` / `ACP_CONFIG`) →
//! environment (`ACP_<KEY>`, plus `DATABASE_URL`), then one validation pass that turns the raw layers into typed
//! [`Settings`]. Every failure is reported as one line naming the setting's environment variable and the problem,
//! because that is the name operators deploy with.

use std::{fmt, net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use reqwest::Url;
use serde::Deserialize;

/// The embedded defaults; the README's configuration table mirrors this file.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Keys read from `ACP_<KEY>`. Other `ACP_*` variables (for example `ACP_SPEC_DIR`, used by the tests) are not
/// settings and are ignored rather than refused.
const KEYS: &[&str] = &[
    "env",
    "listen_addr",
    "public_base_url",
    "agent_api_key",
    "agent_webhook_url",
    "agent_webhook_secret",
    "admin_token",
    "psp",
    "stripe_secret_key",
    "stripe_api_base",
    "log_format",
    "log_level",
    "migrate_on_start",
    "db_max_connections",
    "db_cores",
    "db_background_connections",
    "db_read_connections",
    "db_acquire_timeout_ms",
    "db_retry_interval_ms",
    "shutdown_timeout_ms",
    "max_body_bytes",
    "max_header_bytes",
    "request_timeout_ms",
    "tls_terminated_by_proxy",
    "allow_simulator_in_production",
    "allow_insecure_webhook_urls",
    "merchant_webhook_allowed_cidrs",
    "debug_routes",
    "session_ttl_secs",
    "expiry_sweep_interval_ms",
    "ship_to_countries",
    "shipping_standard_amount",
    "shipping_express_amount",
    "payment_merchant_id",
    "terms_of_use_url",
    "privacy_policy_url",
    "return_policy_url",
    "stripe_api_version",
    "stripe_token_param",
    "stripe_capture_method",
    "stripe_connect_timeout_ms",
    "stripe_timeout_ms",
    "stripe_max_retries",
    "stripe_retry_backoff_ms",
    "threeds_acquirer_bin",
    "threeds_acquirer_country",
    "threeds_acquirer_merchant_id",
    "threeds_merchant_name",
    "threeds_directory_server",
    "webhook_worker_enabled",
    "webhook_poll_interval_ms",
    "webhook_wake_gather_ms",
    "webhook_retry_schedule_ms",
    "webhook_max_age_secs",
    "webhook_connect_timeout_ms",
    "webhook_timeout_ms",
    "webhook_max_response_bytes",
    "idempotency_lease_ms",
    "idempotency_retention_secs",
    "idempotency_sweep_interval_ms",
    "idempotency_heartbeat_ms",
    "reconcile_interval_ms",
    "reconcile_after_ms",
    "psp_lookup_grace_secs",
    "stripe_webhook_secrets",
    "stripe_webhook_tolerance_secs",
    "api_versions",
    "agent_webhook_api_version",
    // Secrets at rest (src/secrets).
    "secrets_keys",
    // Request signatures (issue 12).
    "signature_tolerance_secs",
    "agent_signature_mode",
    "agent_signature_algorithm",
    "agent_signature_key",
    "agent_signature_covers",
    // Native TLS and rate limits (issue 12).
    "tls_cert",
    "tls_key",
    "tls_reload_poll_ms",
    "tls_handshake_timeout_ms",
    "rate_limit_enabled",
    "rate_limit_agent_per_sec",
    "rate_limit_agent_burst",
    "rate_limit_ip_per_sec",
    // Funnel analytics (issue 13).
    "analytics_salt",
    "rate_limit_ip_burst",
    "rate_limit_sweep_interval_ms",
    "trusted_proxies",
    // Discovery and capability negotiation (issue 13).
    "required_interventions",
    "supported_locales",
    "documentation_url",
    // The buyer's order page (issue 13).
    "order_page_key",
    "order_page_url_template",
    "support_email",
    "support_url",
    // Metrics and traces (issue 13).
    "metrics_addr",
    "otel_enabled",
    "otel_endpoint",
    "otel_service_name",
    "otel_sample_ratio",
    "otel_export_timeout_ms",
    // The merchant dashboard (issue 13).
    "dashboard_session_ttl_secs",
    // Round trips (issue 14, helper C): the rules cache's fallback poll.
    "rules_poll_ms",
    // Webhook delivery in leased batches (issue 14).
    "webhook_batch_size",
    "webhook_concurrency",
    "webhook_per_destination",
    "webhook_lease_ms",
];

/// The agent key used in development when none is configured; printed by `demo`, refused in production.
pub const DEMO_AGENT_API_KEY: &str = "demo_agent_key_do_not_use_in_production";

/// Shortest bearer secret production accepts: long enough that guessing is hopeless.
const MIN_PRODUCTION_SECRET_LEN: usize = 24;

/// A configuration problem, rendered as the single line the process prints before exiting.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>) -> Self {
        Self {
            setting: env_name(key),
            problem: problem.into(),
        }
    }
}

/// The environment variable that sets `key`.
pub fn env_name(key: &str) -> String {
    match key {
        "database_url" => "DATABASE_URL".to_owned(),
        other => format!("ACP_{}", other.to_ascii_uppercase()),
    }
}

/// A secret string that cannot be printed, logged or serialized by accident: `Debug` and `Display` redact it and
/// it implements no `Serialize`. Reading it takes an explicit [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        lenient_string(deserializer).map(Secret)
    }
}

/// Environment values are parsed loosely (`ACP_X=600` arrives as a number), so text settings accept numbers and
/// booleans and keep their text form: a numeric token or BIN stays what the operator typed.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Flag(bool),
}

fn lenient_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Text(s) => s,
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Signed(n) => n.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Flag(b) => b.to_string(),
    })
}

fn lenient_opt_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    lenient_string(deserializer).map(Some)
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Development,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PspKind {
    Stripe,
    Simulator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StripeTokenParam {
    PaymentMethodData,
    TopLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    Automatic,
    Manual,
}

#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub api_version: String,
    pub token_param: StripeTokenParam,
    pub capture_method: CaptureMethod,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_retries: u32,
    pub retry_backoff: Duration,
}

/// What goes into `authentication_metadata` when a payment needs 3-D Secure.
#[derive(Debug, Clone)]
pub struct ThreeDsSettings {
    pub acquirer_bin: String,
    pub acquirer_country: String,
    pub acquirer_merchant_id: String,
    pub merchant_name: String,
    pub directory_server: String,
}

/// The layers as read, before validation. Strings stay strings here so that validation can word its own errors.
#[derive(Debug, Deserialize)]
struct RawSettings {
    env: Environment,
    database_url: Option<Secret>,
    #[serde(deserialize_with = "lenient_string")]
    listen_addr: String,
    #[serde(deserialize_with = "lenient_string")]
    public_base_url: String,
    agent_api_key: Option<Secret>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    agent_webhook_url: Option<String>,
    agent_webhook_secret: Option<Secret>,
    admin_token: Option<Secret>,
    psp: PspKind,
    stripe_secret_key: Option<Secret>,
    #[serde(deserialize_with = "lenient_string")]
    stripe_api_base: String,
    log_format: LogFormat,
    #[serde(deserialize_with = "lenient_string")]
    log_level: String,
    migrate_on_start: bool,
    /// Unset: derived from `db_cores` (see [`pool_size_for`]).
    #[serde(default)]
    db_max_connections: Option<u32>,
    /// Unset: this machine's available parallelism.
    #[serde(default)]
    db_cores: Option<u32>,
    db_background_connections: u32,
    db_read_connections: u32,
    db_acquire_timeout_ms: u64,
    db_retry_interval_ms: u64,
    shutdown_timeout_ms: u64,
    max_body_bytes: usize,
    max_header_bytes: usize,
    request_timeout_ms: u64,
    tls_terminated_by_proxy: bool,
    allow_simulator_in_production: bool,
    allow_insecure_webhook_urls: bool,
    #[serde(deserialize_with = "lenient_string")]
    merchant_webhook_allowed_cidrs: String,
    debug_routes: bool,
    session_ttl_secs: u64,
    expiry_sweep_interval_ms: u64,
    #[serde(deserialize_with = "lenient_string")]
    ship_to_countries: String,
    shipping_standard_amount: u32,
    shipping_express_amount: u32,
    #[serde(deserialize_with = "lenient_string")]
    payment_merchant_id: String,
    #[serde(deserialize_with = "lenient_string")]
    terms_of_use_url: String,
    #[serde(deserialize_with = "lenient_string")]
    privacy_policy_url: String,
    #[serde(deserialize_with = "lenient_string")]
    return_policy_url: String,
    #[serde(deserialize_with = "lenient_string")]
    stripe_api_version: String,
    stripe_token_param: StripeTokenParam,
    stripe_capture_method: CaptureMethod,
    stripe_connect_timeout_ms: u64,
    stripe_timeout_ms: u64,
    stripe_max_retries: u32,
    stripe_retry_backoff_ms: u64,
    #[serde(deserialize_with = "lenient_string")]
    threeds_acquirer_bin: String,
    #[serde(deserialize_with = "lenient_string")]
    threeds_acquirer_country: String,
    #[serde(deserialize_with = "lenient_string")]
    threeds_acquirer_merchant_id: String,
    #[serde(deserialize_with = "lenient_string")]
    threeds_merchant_name: String,
    #[serde(deserialize_with = "lenient_string")]
    threeds_directory_server: String,
    webhook_worker_enabled: bool,
    webhook_poll_interval_ms: u64,
    webhook_wake_gather_ms: u64,
    #[serde(deserialize_with = "lenient_string")]
    webhook_retry_schedule_ms: String,
    webhook_max_age_secs: u64,
    webhook_connect_timeout_ms: u64,
    webhook_timeout_ms: u64,
    webhook_max_response_bytes: usize,
    idempotency_lease_ms: u64,
    idempotency_retention_secs: u64,
    idempotency_sweep_interval_ms: u64,
    idempotency_heartbeat_ms: u64,
    reconcile_interval_ms: u64,
    reconcile_after_ms: u64,
    psp_lookup_grace_secs: u64,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    stripe_webhook_secrets: Option<String>,
    stripe_webhook_tolerance_secs: u64,
    #[serde(deserialize_with = "lenient_string")]
    api_versions: String,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    agent_webhook_api_version: Option<String>,
    #[serde(default)]
    secrets_keys: Option<Secret>,
    // Request signatures (issue 12).
    signature_tolerance_secs: u64,
    #[serde(deserialize_with = "lenient_string")]
    agent_signature_mode: String,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    agent_signature_algorithm: Option<String>,
    agent_signature_key: Option<Secret>,
    #[serde(deserialize_with = "lenient_string")]
    agent_signature_covers: String,
    // Native TLS and rate limits (issue 12).
    #[serde(default, deserialize_with = "lenient_opt_string")]
    tls_cert: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    tls_key: Option<String>,
    tls_reload_poll_ms: u64,
    tls_handshake_timeout_ms: u64,
    rate_limit_enabled: bool,
    rate_limit_agent_per_sec: u32,
    rate_limit_agent_burst: u32,
    // Funnel analytics (issue 13).
    #[serde(default)]
    analytics_salt: Option<Secret>,
    rate_limit_ip_per_sec: u32,
    rate_limit_ip_burst: u32,
    rate_limit_sweep_interval_ms: u64,
    #[serde(deserialize_with = "lenient_string")]
    trusted_proxies: String,
    #[serde(deserialize_with = "lenient_string")]
    required_interventions: String,
    #[serde(deserialize_with = "lenient_string")]
    supported_locales: String,
    #[serde(deserialize_with = "lenient_string")]
    documentation_url: String,
    // The buyer's order page (issue 13).
    #[serde(default)]
    order_page_key: Option<Secret>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    order_page_url_template: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    support_email: String,
    #[serde(deserialize_with = "lenient_string")]
    support_url: String,
    // Metrics and traces (issue 13).
    #[serde(default, deserialize_with = "lenient_opt_string")]
    metrics_addr: Option<String>,
    otel_enabled: bool,
    otel_endpoint: String,
    otel_service_name: String,
    otel_sample_ratio: f64,
    otel_export_timeout_ms: u64,
    // The merchant dashboard (issue 13).
    dashboard_session_ttl_secs: u64,
    rules_poll_ms: u64,
    // Webhook delivery in leased batches (issue 14).
    webhook_batch_size: u32,
    webhook_concurrency: u32,
    webhook_per_destination: u32,
    webhook_lease_ms: u64,
}

/// ACP requires idempotency keys to be honoured for at least 24 hours.
const MIN_PRODUCTION_RETENTION_SECS: u64 = 86_400;

/// Validated settings. Construct with [`Settings::load`] (the process) or [`Settings::from_pairs`] (tests).
#[derive(Debug, Clone)]
pub struct Settings {
    pub env: Environment,
    pub database_url: Option<Secret>,
    pub listen_addr: SocketAddr,
    pub public_base_url: Url,
    pub agent_api_key: Secret,
    pub agent_webhook_url: Option<Url>,
    pub agent_webhook_secret: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub psp: PspKind,
    pub stripe_secret_key: Option<Secret>,
    pub stripe_api_base: Url,
    pub log_format: LogFormat,
    pub log_level: String,
    pub migrate_on_start: bool,
    pub db_max_connections: u32,
    /// The background pool (webhook worker, sweepers, reconciler): apart from the request pool, so a burst of
    /// requests queued for a connection never delays webhooks, and background work never takes a request's slot.
    pub db_background_connections: u32,
    /// The read pool (single-statement GETs), whose connections go back without sqlx's release ping.
    pub db_read_connections: u32,
    pub db_acquire_timeout: Duration,
    pub db_retry_interval: Duration,
    pub shutdown_timeout: Duration,
    pub max_body_bytes: usize,
    /// The most header bytes (names and values) a request may carry; more is 431.
    pub max_header_bytes: usize,
    /// How long a request may take before it is answered 503 (a payment under way continues on its own).
    pub request_timeout: Duration,
    pub tls_terminated_by_proxy: bool,
    pub allow_simulator_in_production: bool,
    pub allow_insecure_webhook_urls: bool,
    /// Private networks merchant webhook endpoints may target (`ACP_MERCHANT_WEBHOOK_ALLOWED_CIDRS`).
    pub merchant_webhook_allowed_cidrs: Vec<ipnet::IpNet>,
    pub debug_routes: bool,
    pub session_ttl: Duration,
    pub expiry_sweep_interval: Duration,
    pub ship_to_countries: Vec<String>,
    pub shipping_standard_amount: i64,
    pub shipping_express_amount: i64,
    pub payment_merchant_id: String,
    /// (ACP link type, URL) pairs, in the order they are returned.
    pub policy_links: Vec<(&'static str, Url)>,
    pub stripe: StripeSettings,
    pub three_ds: ThreeDsSettings,
    pub webhook_worker_enabled: bool,
    pub webhook_poll_interval: Duration,
    /// How long a woken worker gathers further events before it claims (see `webhooks::Wakeup`).
    pub webhook_wake_gather: Duration,
    pub webhook_retry_schedule: Vec<Duration>,
    pub webhook_max_age: Duration,
    pub webhook_connect_timeout: Duration,
    pub webhook_timeout: Duration,
    pub webhook_max_response_bytes: usize,
    pub idempotency_lease: Duration,
    pub idempotency_retention: Duration,
    pub idempotency_sweep_interval: Duration,
    /// How often running requests and payment attempts renew their lease (less than half of it).
    pub idempotency_heartbeat: Duration,
    pub reconcile_interval: Duration,
    pub reconcile_after: Duration,
    pub psp_lookup_grace: Duration,
    pub stripe_webhook_secrets: Vec<Secret>,
    pub stripe_webhook_tolerance: Duration,
    /// The ACP versions served (`API-Version` values), newest first.
    pub api_versions: Vec<String>,
    /// The version the environment agent's order webhooks are rendered in (default: the complete call's).
    pub agent_webhook_api_version: Option<String>,
    /// Keys sealing stored secrets (`ACP_SECRETS_KEYS`); the first seals, all open.
    pub secrets_keys: crate::secrets::Keyring,
    /// How far a request's `Timestamp` may be from the server's clock, either way.
    pub signature_tolerance: Duration,
    /// The environment agent's request-signature policy (`ACP_AGENT_SIGNATURE_*`).
    pub agent_signature: crate::signatures::AgentSignature,
    /// Native HTTPS (TLS 1.3) when both `ACP_TLS_CERT` and `ACP_TLS_KEY` are set.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Salt of the buyer hash in funnel events (`ACP_ANALYTICS_SALT`).
    pub analytics_salt: Secret,
    /// How often the certificate files are checked for a change.
    pub tls_reload_poll: Duration,
    /// How long a client may take to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    pub rate_limits: crate::rate_limit::RateLimitSettings,
    /// A second, unauthenticated listener serving only `GET /metrics` (`ACP_METRICS_ADDR`); none when empty.
    pub metrics_addr: Option<SocketAddr>,
    /// OpenTelemetry trace export (`ACP_OTEL_*`).
    pub otel: crate::observability::traces::OtelSettings,
    /// The buyer's order page: token key, the merchant's own page, support contacts (issue 13).
    pub order_page: crate::order_page::OrderPageSettings,
    /// How long a dashboard login cookie stays valid (`ACP_DASHBOARD_SESSION_TTL_SECS`).
    pub dashboard_session_ttl: Duration,
    /// How often the pricing rules' version is polled, in case a change notification was lost (issue 14).
    pub rules_poll: Duration,
    /// Interventions negotiating agents must support (`ACP_REQUIRED_INTERVENTIONS`).
    pub required_interventions: Vec<String>,
    /// What `/.well-known/acp.json` advertises beyond the served versions and the catalog.
    pub discovery: DiscoverySettings,
    /// Webhook delivery in leased batches (`ACP_WEBHOOK_BATCH_SIZE`, `_CONCURRENCY`, `_PER_DESTINATION`, `_LEASE_MS`).
    pub webhook_delivery: WebhookDeliverySettings,
}

/// How the webhook worker claims and delivers: events claimed per batch, deliveries in flight in total and per
/// destination (host and port), and how long a claim is held before another worker may take the event over.
#[derive(Debug, Clone)]
pub struct WebhookDeliverySettings {
    pub batch_size: u32,
    pub concurrency: u32,
    pub per_destination: u32,
    /// Longer than the client timeout (checked here), and renewed every third of it while held.
    pub lease: Duration,
}

/// The discovery document's configurable parts.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// BCP 47 tags (`ACP_SUPPORTED_LOCALES`); empty: not advertised.
    pub supported_locales: Vec<String>,
    /// `protocol.documentation_url` (`ACP_DOCUMENTATION_URL`); unset: omitted.
    pub documentation_url: Option<Url>,
}

/// Where the configuration comes from besides the embedded defaults and the process environment.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `--config` / `ACP_CONFIG`.
    pub file: Option<PathBuf>,
    /// Defaults of the running command, above the embedded ones but below the file and the environment:
    /// `serve` defaults `env` to production, `demo` to development with the simulator PSP.
    pub command_defaults: &'static [(&'static str, &'static str)],
    /// Used when nothing else sets `database_url` (the demo's self-provisioned database).
    pub database_url_fallback: Option<String>,
}

/// `serve`, `migrate` and `worker` are production unless told otherwise.
pub const SERVE_DEFAULTS: &[(&str, &str)] = &[("env", "production")];
/// The demo runs in development with the built-in simulator PSP.
pub const DEMO_DEFAULTS: &[(&str, &str)] = &[
    ("env", "development"),
    ("psp", "simulator"),
    ("terms_of_use_url", "https://demo.trailhead.example/legal/terms"),
    ("privacy_policy_url", "https://demo.trailhead.example/legal/privacy"),
    ("return_policy_url", "https://demo.trailhead.example/legal/returns"),
];

impl Settings {
    /// Reads defaults, the optional file and the process environment, then validates.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = with_pairs(base_figment(), sources.command_defaults);
        if let Some(url) = &sources.database_url_fallback {
            figment = figment.merge(Serialized::default("database_url", url.as_str()));
        }
        if let Some(file) = &sources.file {
            if !file.is_file() {
                return Err(ConfigError {
                    setting: "ACP_CONFIG".into(),
                    problem: format!("no readable file at {}", file.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let figment = figment
            .merge(Env::prefixed("ACP_").only(KEYS))
            .merge(Env::raw().only(&["DATABASE_URL"]));
        Self::from_figment(&figment)
    }

    /// Embedded defaults overridden by explicit `(key, value)` pairs, ignoring the process environment: for
    /// tests and for embedding. `env` must be among the pairs.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::from_figment(&with_pairs(base_figment(), pairs))
    }

    fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let raw: RawSettings = figment.extract_lossy().map_err(first_figment_error)?;
        raw.validate()
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }
}

fn base_figment() -> Figment {
    Figment::from(Toml::string(DEFAULT_TOML))
}

fn with_pairs(mut figment: Figment, pairs: &[(&str, &str)]) -> Figment {
    for (key, value) in pairs {
        // String values go through the same lossy parsing as environment values ("true", "25").
        figment = figment.merge(Serialized::default(key, figment::value::Value::from(*value)));
    }
    figment
}

fn first_figment_error(err: figment::Error) -> ConfigError {
    let first = err.into_iter().next();
    match first {
        Some(e) => {
            let key = e.path.last().cloned().unwrap_or_default();
            let problem = match &e.kind {
                figment::error::Kind::MissingField(field) => {
                    return ConfigError::new(field, "required but not set");
                }
                kind => kind.to_string(),
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            ConfigError::new(&key, format!("{problem}{source}"))
        }
        None => ConfigError::new("config", "unreadable configuration"),
    }
}

impl RawSettings {
    /// Batch, concurrency and lease of the webhook worker. The lease must outlast one attempt (the client timeout)
    /// so that an attempt under way still holds its event even when one renewal is late.
    fn webhook_delivery_settings(&self) -> Result<WebhookDeliverySettings, ConfigError> {
        check_positive("webhook_batch_size", u64::from(self.webhook_batch_size))?;
        check_positive("webhook_concurrency", u64::from(self.webhook_concurrency))?;
        check_positive("webhook_per_destination", u64::from(self.webhook_per_destination))?;
        if self.webhook_lease_ms <= self.webhook_timeout_ms {
            return Err(ConfigError::new(
                "webhook_lease_ms",
                format!(
                    "must be longer than ACP_WEBHOOK_TIMEOUT_MS ({} ms), so a claim outlasts the attempt it covers",
                    self.webhook_timeout_ms
                ),
            ));
        }
        Ok(WebhookDeliverySettings {
            batch_size: self.webhook_batch_size,
            concurrency: self.webhook_concurrency,
            per_destination: self.webhook_per_destination,
            lease: Duration::from_millis(self.webhook_lease_ms),
        })
    }

    fn validate(self) -> Result<Settings, ConfigError> {
        let production = self.env == Environment::Production;
        let three_ds = self.three_ds_settings()?;
        let webhook_delivery = self.webhook_delivery_settings()?;
        let agent_signature = self.agent_signature()?;
        check_positive("signature_tolerance_secs", self.signature_tolerance_secs)?;
        let tls = parse_tls_files(self.tls_cert.as_deref(), self.tls_key.as_deref())?;
        check_positive("tls_reload_poll_ms", self.tls_reload_poll_ms)?;
        check_positive("tls_handshake_timeout_ms", self.tls_handshake_timeout_ms)?;
        let rate_limits = self.rate_limit_settings()?;
        let required_interventions = parse_required_interventions(&self.required_interventions)?;
        let discovery = self.discovery_settings()?;
        let order_page = crate::order_page::OrderPageSettings::parse(
            self.order_page_key.clone(),
            self.order_page_url_template.as_deref(),
            &self.support_email,
            &self.support_url,
            production,
        )
        .map_err(|(key, problem)| ConfigError::new(key, problem))?;
        let (metrics_addr, otel) = self.observability_settings()?;
        let listen_addr = parse_listen_addr(&self.listen_addr)?;
        let public_base_url = parse_http_url("public_base_url", &self.public_base_url)?;
        let stripe_api_base = parse_http_url("stripe_api_base", &self.stripe_api_base)?;
        let agent_webhook_url = self
            .agent_webhook_url
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| parse_http_url("agent_webhook_url", s))
            .transpose()?;
        let database_url = non_empty(self.database_url);
        if let Some(url) = &database_url {
            check_database_url(url)?;
        }
        let agent_api_key = non_empty(self.agent_api_key);
        let admin_token = non_empty(self.admin_token);
        let stripe_secret_key = non_empty(self.stripe_secret_key);
        check_log_level(&self.log_level)?;
        let db_max_connections = pool_size(self.db_max_connections, self.db_cores)?;
        check_positive("db_background_connections", u64::from(self.db_background_connections))?;
        check_positive("db_read_connections", u64::from(self.db_read_connections))?;
        for (key, ms) in [
            ("db_acquire_timeout_ms", self.db_acquire_timeout_ms),
            ("db_retry_interval_ms", self.db_retry_interval_ms),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
        ] {
            check_positive(key, ms)?;
        }
        check_positive("max_body_bytes", self.max_body_bytes as u64)?;
        check_positive("max_header_bytes", self.max_header_bytes as u64)?;
        check_positive("request_timeout_ms", self.request_timeout_ms)?;
        check_positive("session_ttl_secs", self.session_ttl_secs)?;
        check_positive("expiry_sweep_interval_ms", self.expiry_sweep_interval_ms)?;
        check_positive("idempotency_lease_ms", self.idempotency_lease_ms)?;
        check_positive("idempotency_retention_secs", self.idempotency_retention_secs)?;
        check_positive("idempotency_sweep_interval_ms", self.idempotency_sweep_interval_ms)?;
        check_positive("dashboard_session_ttl_secs", self.dashboard_session_ttl_secs)?;
        check_positive("rules_poll_ms", self.rules_poll_ms)?;
        check_positive("idempotency_heartbeat_ms", self.idempotency_heartbeat_ms)?;
        if self.idempotency_heartbeat_ms.saturating_mul(2) >= self.idempotency_lease_ms {
            return Err(ConfigError::new(
                "idempotency_heartbeat_ms",
                format!(
                    "must be less than half of ACP_IDEMPOTENCY_LEASE_MS ({} ms), so one late renewal never loses a lease",
                    self.idempotency_lease_ms
                ),
            ));
        }
        check_positive("reconcile_interval_ms", self.reconcile_interval_ms)?;
        check_positive("stripe_webhook_tolerance_secs", self.stripe_webhook_tolerance_secs)?;
        if production && self.idempotency_retention_secs < MIN_PRODUCTION_RETENTION_SECS {
            return Err(ConfigError::new(
                "idempotency_retention_secs",
                format!("ACP requires at least {MIN_PRODUCTION_RETENTION_SECS} seconds (24 h) in production"),
            ));
        }
        let ship_to_countries = parse_countries(&self.ship_to_countries)?;
        let merchant_webhook_allowed_cidrs = parse_cidrs(&self.merchant_webhook_allowed_cidrs)?;
        if self.payment_merchant_id.is_empty() || self.payment_merchant_id.len() > 256 {
            return Err(ConfigError::new("payment_merchant_id", "must be 1 to 256 characters"));
        }
        for (key, ms) in [
            ("stripe_connect_timeout_ms", self.stripe_connect_timeout_ms),
            ("stripe_timeout_ms", self.stripe_timeout_ms),
        ] {
            check_positive(key, ms)?;
        }
        if self.stripe_api_version.trim().is_empty() {
            return Err(ConfigError::new("stripe_api_version", "must name a Stripe API version"));
        }
        let stripe = StripeSettings {
            api_version: self.stripe_api_version.clone(),
            token_param: self.stripe_token_param,
            capture_method: self.stripe_capture_method,
            connect_timeout: Duration::from_millis(self.stripe_connect_timeout_ms),
            timeout: Duration::from_millis(self.stripe_timeout_ms),
            max_retries: self.stripe_max_retries,
            retry_backoff: Duration::from_millis(self.stripe_retry_backoff_ms),
        };
        if self.psp == PspKind::Stripe {
            check_shutdown_covers_psp(&stripe, Duration::from_millis(self.shutdown_timeout_ms))?;
        }
        let stripe_webhook_secrets = parse_secret_list(self.stripe_webhook_secrets.as_deref().unwrap_or(""));
        let api_versions = parse_api_versions(&self.api_versions)?;
        let agent_webhook_api_version = self.agent_webhook_api_version.filter(|v| !v.is_empty());
        if let Some(v) = &agent_webhook_api_version
            && crate::protocol::adapter(v).is_none()
        {
            return Err(ConfigError::new(
                "agent_webhook_api_version",
                format!("`{v}` is not an ACP version this build knows ({})", known_versions()),
            ));
        }
        if self.webhook_wake_gather_ms >= self.webhook_poll_interval_ms {
            return Err(ConfigError::new(
                "webhook_wake_gather_ms",
                format!(
                    "must be less than ACP_WEBHOOK_POLL_INTERVAL_MS ({} ms): gathering is meant to be shorter than polling",
                    self.webhook_poll_interval_ms
                ),
            ));
        }
        for (key, value) in [
            ("webhook_poll_interval_ms", self.webhook_poll_interval_ms),
            ("webhook_max_age_secs", self.webhook_max_age_secs),
            ("webhook_connect_timeout_ms", self.webhook_connect_timeout_ms),
            ("webhook_timeout_ms", self.webhook_timeout_ms),
            ("webhook_max_response_bytes", self.webhook_max_response_bytes as u64),
        ] {
            check_positive(key, value)?;
        }
        let webhook_retry_schedule = parse_schedule(&self.webhook_retry_schedule_ms)?;
        let mut policy_links = Vec::new();
        for (key, kind, value) in [
            ("terms_of_use_url", "terms_of_use", &self.terms_of_use_url),
            ("privacy_policy_url", "privacy_policy", &self.privacy_policy_url),
            ("return_policy_url", "return_policy", &self.return_policy_url),
        ] {
            if !value.is_empty() {
                policy_links.push((kind, parse_http_url(key, value)?));
            }
        }
        if self.psp == PspKind::Stripe && stripe_secret_key.is_none() {
            return Err(ConfigError::new(
                "stripe_secret_key",
                "required when ACP_PSP=stripe (or choose ACP_PSP=simulator outside production)",
            ));
        }

        let agent_api_key = match (agent_api_key, production) {
            (Some(key), _) => key,
            (None, true) => return Err(ConfigError::new("agent_api_key", "required in production")),
            (None, false) => Secret::new(DEMO_AGENT_API_KEY),
        };
        // One secret for both would let every agent administer the store (and the admin reach checkout as an agent).
        if admin_token
            .as_ref()
            .is_some_and(|t| crate::http::extract::secrets_equal(t.expose(), agent_api_key.expose()))
        {
            return Err(ConfigError::new(
                "admin_token",
                "must differ from ACP_AGENT_API_KEY: the admin token and an agent key are never the same secret",
            ));
        }

        let secrets_keys = parse_secrets_keys(non_empty(self.secrets_keys), production)?;
        let analytics_salt = analytics_salt(non_empty(self.analytics_salt), production)?;
        let settings = Settings {
            env: self.env,
            database_url,
            listen_addr,
            public_base_url,
            agent_api_key,
            agent_webhook_url,
            agent_webhook_secret: non_empty(self.agent_webhook_secret),
            admin_token,
            psp: self.psp,
            stripe_secret_key,
            stripe_api_base,
            log_format: self.log_format,
            log_level: self.log_level,
            migrate_on_start: self.migrate_on_start,
            db_max_connections,
            db_background_connections: self.db_background_connections,
            db_read_connections: self.db_read_connections,
            db_acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            db_retry_interval: Duration::from_millis(self.db_retry_interval_ms),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            tls_terminated_by_proxy: self.tls_terminated_by_proxy,
            allow_simulator_in_production: self.allow_simulator_in_production,
            allow_insecure_webhook_urls: self.allow_insecure_webhook_urls,
            merchant_webhook_allowed_cidrs,
            debug_routes: self.debug_routes,
            session_ttl: Duration::from_secs(self.session_ttl_secs),
            expiry_sweep_interval: Duration::from_millis(self.expiry_sweep_interval_ms),
            ship_to_countries,
            shipping_standard_amount: i64::from(self.shipping_standard_amount),
            shipping_express_amount: i64::from(self.shipping_express_amount),
            payment_merchant_id: self.payment_merchant_id,
            policy_links,
            stripe,
            three_ds,
            webhook_worker_enabled: self.webhook_worker_enabled,
            webhook_poll_interval: Duration::from_millis(self.webhook_poll_interval_ms),
            webhook_wake_gather: Duration::from_millis(self.webhook_wake_gather_ms),
            webhook_retry_schedule,
            webhook_max_age: Duration::from_secs(self.webhook_max_age_secs),
            webhook_connect_timeout: Duration::from_millis(self.webhook_connect_timeout_ms),
            webhook_timeout: Duration::from_millis(self.webhook_timeout_ms),
            webhook_max_response_bytes: self.webhook_max_response_bytes,
            idempotency_lease: Duration::from_millis(self.idempotency_lease_ms),
            idempotency_retention: Duration::from_secs(self.idempotency_retention_secs),
            idempotency_sweep_interval: Duration::from_millis(self.idempotency_sweep_interval_ms),
            idempotency_heartbeat: Duration::from_millis(self.idempotency_heartbeat_ms),
            reconcile_interval: Duration::from_millis(self.reconcile_interval_ms),
            reconcile_after: Duration::from_millis(self.reconcile_after_ms),
            psp_lookup_grace: Duration::from_secs(self.psp_lookup_grace_secs),
            stripe_webhook_secrets,
            stripe_webhook_tolerance: Duration::from_secs(self.stripe_webhook_tolerance_secs),
            api_versions,
            agent_webhook_api_version,
            secrets_keys,
            signature_tolerance: Duration::from_secs(self.signature_tolerance_secs),
            agent_signature,
            tls,
            tls_reload_poll: Duration::from_millis(self.tls_reload_poll_ms),
            tls_handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            rate_limits,
            analytics_salt,
            required_interventions,
            discovery,
            order_page,
            metrics_addr,
            otel,
            dashboard_session_ttl: Duration::from_secs(self.dashboard_session_ttl_secs),
            rules_poll: Duration::from_millis(self.rules_poll_ms),
            webhook_delivery,
        };
        if production {
            check_production(&settings)?;
        } else if let Some(url) = &settings.agent_webhook_url {
            // Development still refuses nonsense schemes, but accepts http and loopback receivers.
            check_webhook_scheme(url, true)?;
        }
        Ok(settings)
    }
}

impl RawSettings {
    /// The 3-D Secure acquirer details, checked against the limits the ACP schema puts on them.
    fn three_ds_settings(&self) -> Result<ThreeDsSettings, ConfigError> {
        let checks: [(&str, &str, usize); 4] = [
            ("threeds_acquirer_bin", &self.threeds_acquirer_bin, 11),
            ("threeds_acquirer_merchant_id", &self.threeds_acquirer_merchant_id, 35),
            ("threeds_merchant_name", &self.threeds_merchant_name, 40),
            ("threeds_acquirer_country", &self.threeds_acquirer_country, 2),
        ];
        for (key, value, max) in checks {
            if value.is_empty() || value.chars().count() > max {
                return Err(ConfigError::new(key, format!("must be 1 to {max} characters")));
            }
        }
        if self.threeds_acquirer_country.len() != 2
            || !self.threeds_acquirer_country.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(ConfigError::new(
                "threeds_acquirer_country",
                "must be an ISO 3166-1 alpha-2 code",
            ));
        }
        if !["american_express", "mastercard", "visa"].contains(&self.threeds_directory_server.as_str()) {
            return Err(ConfigError::new(
                "threeds_directory_server",
                "must be american_express, mastercard or visa",
            ));
        }
        Ok(ThreeDsSettings {
            acquirer_bin: self.threeds_acquirer_bin.clone(),
            acquirer_country: self.threeds_acquirer_country.clone(),
            acquirer_merchant_id: self.threeds_acquirer_merchant_id.clone(),
            merchant_name: self.threeds_merchant_name.clone(),
            directory_server: self.threeds_directory_server.clone(),
        })
    }
}

impl RawSettings {
    /// The environment agent's request-signature policy: known words, an algorithm unless the mode is `off`, and
    /// a key that parses for it (public key as PEM or base64url, or the HMAC secret).
    fn agent_signature(&self) -> Result<crate::signatures::AgentSignature, ConfigError> {
        use crate::signatures::{AgentSignature, Algorithm, Covers, Mode, VerifyKey};
        let mode = Mode::parse(self.agent_signature_mode.trim())
            .ok_or_else(|| ConfigError::new("agent_signature_mode", "must be off, optional or required"))?;
        let covers = Covers::parse(self.agent_signature_covers.trim())
            .ok_or_else(|| ConfigError::new("agent_signature_covers", "must be body or method_path_body"))?;
        let algorithm = match self.agent_signature_algorithm.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(Algorithm::parse(text).ok_or_else(|| {
                ConfigError::new("agent_signature_algorithm", "must be ed25519, es256 or hmac-sha256")
            })?),
        };
        let key = match (algorithm, non_empty(self.agent_signature_key.clone())) {
            (None, _) if mode == Mode::Off => None,
            (None, _) => {
                return Err(ConfigError::new(
                    "agent_signature_algorithm",
                    "required when ACP_AGENT_SIGNATURE_MODE is optional or required",
                ));
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "agent_signature_key",
                    "required when ACP_AGENT_SIGNATURE_ALGORITHM is set",
                ));
            }
            (Some(algorithm), Some(key)) => Some(
                VerifyKey::parse(algorithm, key.expose()).map_err(|e| ConfigError::new("agent_signature_key", e.0))?,
            ),
        };
        Ok(AgentSignature { mode, covers, key })
    }
}

/// Production refuses every unsafe choice unless that choice's own explicit setting allows it.
fn check_production(settings: &Settings) -> Result<(), ConfigError> {
    let raw = settings;
    if settings.database_url.is_none() {
        return Err(ConfigError::new("database_url", "required in production"));
    }
    if raw.psp == PspKind::Simulator && !raw.allow_simulator_in_production {
        return Err(ConfigError::new(
            "psp",
            "the simulator PSP charges no one and is refused in production \
             (set ACP_ALLOW_SIMULATOR_IN_PRODUCTION=true to allow it)",
        ));
    }
    if !settings.listen_addr.ip().is_loopback() && !raw.tls_terminated_by_proxy && settings.tls.is_none() {
        return Err(ConfigError::new(
            "listen_addr",
            format!(
                "plain HTTP on non-loopback address {} is refused in production; \
                 put a TLS-terminating proxy in front and set ACP_TLS_TERMINATED_BY_PROXY=true \
                 (or serve HTTPS natively with ACP_TLS_CERT and ACP_TLS_KEY)",
                settings.listen_addr
            ),
        ));
    }
    check_secret_strength("agent_api_key", &settings.agent_api_key)?;
    match &settings.admin_token {
        Some(token) => check_secret_strength("admin_token", token)?,
        None => return Err(ConfigError::new("admin_token", "required in production")),
    }
    if raw.debug_routes {
        return Err(ConfigError::new(
            "debug_routes",
            "diagnostic routes are refused in production",
        ));
    }
    if let Some(url) = &settings.agent_webhook_url {
        check_webhook_scheme(url, raw.allow_insecure_webhook_urls)?;
        if !raw.allow_insecure_webhook_urls && host_is_internal(url) {
            return Err(ConfigError::new(
                "agent_webhook_url",
                "points at a loopback, private or link-local host, refused in production \
                 (set ACP_ALLOW_INSECURE_WEBHOOK_URLS=true to allow it)",
            ));
        }
    }
    Ok(())
}

fn check_secret_strength(key: &str, secret: &Secret) -> Result<(), ConfigError> {
    if secret.expose() == DEMO_AGENT_API_KEY {
        return Err(ConfigError::new(key, "the published demo key is refused in production"));
    }
    if secret.expose().len() < MIN_PRODUCTION_SECRET_LEN {
        return Err(ConfigError::new(
            key,
            format!("must be at least {MIN_PRODUCTION_SECRET_LEN} characters in production"),
        ));
    }
    Ok(())
}

fn check_webhook_scheme(url: &Url, allow_http: bool) -> Result<(), ConfigError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => Err(ConfigError::new(
            "agent_webhook_url",
            "must be https in production (set ACP_ALLOW_INSECURE_WEBHOOK_URLS=true to allow http)",
        )),
        other => Err(ConfigError::new(
            "agent_webhook_url",
            format!("unsupported scheme `{other}`"),
        )),
    }
}

/// True when the URL's host is a literal loopback/private/link-local address or `localhost`. Names that resolve
/// to such addresses are caught again at delivery time, where the resolved address is known.
pub fn host_is_internal(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_internal_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_internal_ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => true,
    }
}

/// IPv4 special-purpose ranges (IANA registry, RFC 6890 and successors) a public webhook receiver never lives in:
/// "this network", private, CGNAT, loopback, link-local, IETF protocol assignments, documentation, 6to4 relay
/// anycast, benchmarking, multicast, reserved and broadcast.
const SPECIAL_V4: &[(u32, u32)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8
    (0x0a00_0000, 8),  // 10.0.0.0/8
    (0x6440_0000, 10), // 100.64.0.0/10
    (0x7f00_0000, 8),  // 127.0.0.0/8
    (0xa9fe_0000, 16), // 169.254.0.0/16
    (0xac10_0000, 12), // 172.16.0.0/12
    (0xc000_0000, 24), // 192.0.0.0/24
    (0xc000_0200, 24), // 192.0.2.0/24
    (0xc058_6300, 24), // 192.88.99.0/24
    (0xc0a8_0000, 16), // 192.168.0.0/16
    (0xc612_0000, 15), // 198.18.0.0/15
    (0xc633_6400, 24), // 198.51.100.0/24
    (0xcb00_7100, 24), // 203.0.113.0/24
    (0xe000_0000, 4),  // 224.0.0.0/4 (multicast)
    (0xf000_0000, 4),  // 240.0.0.0/4 (reserved, broadcast included)
];

/// IPv6 special-purpose ranges. `::ffff:0:0/96` (IPv4-mapped) is not here: its embedded IPv4 address decides.
const SPECIAL_V6: &[(u128, u32)] = &[
    (0, 96),                                         // ::/96: unspecified, loopback, IPv4-compatible ::a.b.c.d
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96), // 64:ff9b::/96 (NAT64)
    (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48), // 64:ff9b:1::/48 (local NAT64)
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // 100::/64 (discard)
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 23), // 2001::/23 (IETF protocols, Teredo 2001::/32 included)
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // 2001:db8::/32 (documentation)
    (0x2002_0000_0000_0000_0000_0000_0000_0000, 16), // 2002::/16 (6to4)
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // fc00::/7 (unique local)
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // fe80::/10 (link-local)
    (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10), // fec0::/10 (site-local, deprecated)
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // ff00::/8 (multicast)
];

/// Whether `ip` is in a special-purpose range (see [`SPECIAL_V4`] and [`SPECIAL_V6`]): loopback, private,
/// link-local, documentation, multicast, reserved, translation prefixes... Webhook URLs and the addresses they
/// resolve to are refused there unless insecure URLs are allowed.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            SPECIAL_V4
                .iter()
                .any(|&(net, len)| bits >> (32 - len) == net >> (32 - len))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_ip(IpAddr::V4(v4));
            }
            let bits = u128::from(v6);
            SPECIAL_V6
                .iter()
                .any(|&(net, len)| bits >> (128 - len) == net >> (128 - len))
        }
    }
}

fn parse_listen_addr(value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            "listen_addr",
            format!("`{value}` is not an IP socket address (expected host:port such as 127.0.0.1:8080)"),
        )
    })
}

fn parse_http_url(key: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::new(key, format!("`{value}` is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::new(
            key,
            format!("`{value}` must be an http(s) URL with a host"),
        ));
    }
    Ok(url)
}

fn parse_schedule(value: &str) -> Result<Vec<Duration>, ConfigError> {
    let delays: Result<Vec<u64>, _> = value.split(',').map(|d| d.trim().parse::<u64>()).collect();
    match delays {
        Ok(d) if !d.is_empty() && d.iter().all(|ms| *ms > 0) => Ok(d.into_iter().map(Duration::from_millis).collect()),
        _ => Err(ConfigError::new(
            "webhook_retry_schedule_ms",
            "must be comma-separated positive milliseconds, e.g. 5000,30000,120000",
        )),
    }
}

fn parse_countries(value: &str) -> Result<Vec<String>, ConfigError> {
    let countries: Vec<String> = value
        .split(',')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    match countries
        .iter()
        .find(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        Some(bad) => Err(ConfigError::new(
            "ship_to_countries",
            format!("`{bad}` is not an ISO 3166-1 alpha-2 code (expected e.g. US,CA)"),
        )),
        None => Ok(countries),
    }
}

fn parse_cidrs(value: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<ipnet::IpNet>().map_err(|_| {
                ConfigError::new(
                    "merchant_webhook_allowed_cidrs",
                    format!("`{c}` is not a CIDR (expected e.g. 10.20.0.0/16,fd00::/8)"),
                )
            })
        })
        .collect()
}

fn check_database_url(url: &Secret) -> Result<(), ConfigError> {
    let url = url.expose();
    let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let parsed: Result<sqlx::postgres::PgConnectOptions, _> = url.parse();
    // The URL may carry a password: the message never repeats it.
    match (scheme_ok, parsed) {
        (true, Ok(_)) => Ok(()),
        _ => Err(ConfigError::new(
            "database_url",
            "not a valid postgres:// connection URL",
        )),
    }
}

fn check_log_level(value: &str) -> Result<(), ConfigError> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| ())
        .map_err(|e| ConfigError::new("log_level", format!("`{value}` is not a valid filter ({e})")))
}

/// Native TLS needs both files; one without the other is a mistake, not a choice.
fn parse_tls_files(cert: Option<&str>, key: Option<&str>) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
    let cert = cert.map(str::trim).filter(|s| !s.is_empty());
    let key = key.map(str::trim).filter(|s| !s.is_empty());
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        })),
        (Some(_), None) => Err(ConfigError::new(
            "tls_key",
            "required when ACP_TLS_CERT is set (native TLS needs both the certificate and its key)",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "tls_cert",
            "required when ACP_TLS_KEY is set (native TLS needs both the certificate and its key)",
        )),
    }
}

impl RawSettings {
    /// Token-bucket rates and the trusted proxies, each refused with its own variable's name when unusable.
    fn rate_limit_settings(&self) -> Result<crate::rate_limit::RateLimitSettings, ConfigError> {
        let positive = |key: &str, value: u32| {
            std::num::NonZeroU32::new(value).ok_or_else(|| ConfigError::new(key, "must be greater than zero"))
        };
        check_positive("rate_limit_sweep_interval_ms", self.rate_limit_sweep_interval_ms)?;
        let trusted_proxies = crate::rate_limit::parse_cidrs(&self.trusted_proxies).map_err(|bad| {
            ConfigError::new("trusted_proxies", format!("`{bad}` is not an IP address or CIDR range"))
        })?;
        Ok(crate::rate_limit::RateLimitSettings {
            enabled: self.rate_limit_enabled,
            agent: crate::rate_limit::Rate {
                per_sec: positive("rate_limit_agent_per_sec", self.rate_limit_agent_per_sec)?,
                burst: positive("rate_limit_agent_burst", self.rate_limit_agent_burst)?,
            },
            address: crate::rate_limit::Rate {
                per_sec: positive("rate_limit_ip_per_sec", self.rate_limit_ip_per_sec)?,
                burst: positive("rate_limit_ip_burst", self.rate_limit_ip_burst)?,
            },
            sweep_interval: Duration::from_millis(self.rate_limit_sweep_interval_ms),
            trusted_proxies,
        })
    }
}

impl RawSettings {
    /// The metrics listener and the trace export (issue 13).
    fn observability_settings(
        &self,
    ) -> Result<(Option<SocketAddr>, crate::observability::traces::OtelSettings), ConfigError> {
        let metrics_addr = match self.metrics_addr.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            Some(value) => Some(value.parse().map_err(|_| {
                ConfigError::new("metrics_addr", format!("`{value}` is not a socket address (host:port)"))
            })?),
            None => None,
        };
        if !(0.0..=1.0).contains(&self.otel_sample_ratio) {
            return Err(ConfigError::new("otel_sample_ratio", "must be between 0 and 1"));
        }
        check_positive("otel_export_timeout_ms", self.otel_export_timeout_ms)?;
        if self.otel_service_name.trim().is_empty() {
            return Err(ConfigError::new("otel_service_name", "must not be empty"));
        }
        let endpoint = parse_http_url("otel_endpoint", &self.otel_endpoint)?;
        // Settings are printed in `Debug` output and the endpoint is logged: it must not hold a secret.
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(ConfigError::new("otel_endpoint", "must not carry credentials"));
        }
        let otel = crate::observability::traces::OtelSettings {
            enabled: self.otel_enabled,
            endpoint,
            service_name: self.otel_service_name.clone(),
            sample_ratio: self.otel_sample_ratio,
            export_timeout: Duration::from_millis(self.otel_export_timeout_ms),
        };
        Ok((metrics_addr, otel))
    }

    fn discovery_settings(&self) -> Result<DiscoverySettings, ConfigError> {
        let documentation_url = match self.documentation_url.trim() {
            "" => None,
            url => Some(parse_http_url("documentation_url", url)?),
        };
        let supported_locales = comma_list(&self.supported_locales);
        if let Some(bad) = supported_locales.iter().find(|l| !looks_like_language_tag(l)) {
            return Err(ConfigError::new(
                "supported_locales",
                format!("`{bad}` is not a BCP 47 language tag (expected tags such as en-US,fr-FR)"),
            ));
        }
        Ok(DiscoverySettings {
            supported_locales,
            documentation_url,
        })
    }
}

fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A primary language subtag of 2 or 3 letters, then subtags of 1 to 8 letters or digits.
fn looks_like_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    primary_ok && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Only interventions this server performs can be required: requiring another would block every session.
fn parse_required_interventions(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut required = Vec::new();
    for name in comma_list(value) {
        if !crate::checkout::negotiation::PERFORMED_INTERVENTIONS.contains(&name.as_str()) {
            return Err(ConfigError::new(
                "required_interventions",
                format!(
                    "`{name}` is not an intervention this server performs (known: {})",
                    crate::checkout::negotiation::PERFORMED_INTERVENTIONS.join(", ")
                ),
            ));
        }
        if !required.contains(&name) {
            required.push(name);
        }
    }
    Ok(required)
}

/// The pool's size: `ACP_DB_MAX_CONNECTIONS` when set, else [`pool_size_for`] the database's cores
/// (`ACP_DB_CORES`, defaulting to this machine's, which is right when PostgreSQL runs beside the server).
fn pool_size(max_connections: Option<u32>, db_cores: Option<u32>) -> Result<u32, ConfigError> {
    if let Some(cores) = db_cores {
        check_positive("db_cores", u64::from(cores))?;
    }
    if let Some(max) = max_connections {
        check_positive("db_max_connections", u64::from(max))?;
        return Ok(max);
    }
    let cores = db_cores.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
    });
    Ok(pool_size_for(cores))
}

/// `2 × cores + 4`: PostgreSQL runs at most one statement per core at a time, and a connection spends part of each
/// transaction waiting for the network or the disk; more connections than this only queue inside the database.
pub fn pool_size_for(db_cores: u32) -> u32 {
    db_cores.saturating_mul(2).saturating_add(4)
}

fn check_positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(key, "must be greater than 0"));
    }
    Ok(())
}

/// A payment under way must never be abandoned by a shutdown: the grace covers the PSP's worst case.
fn check_shutdown_covers_psp(stripe: &StripeSettings, grace: Duration) -> Result<(), ConfigError> {
    let worst = crate::psp::stripe::worst_case(stripe);
    if grace < worst {
        return Err(ConfigError::new(
            "shutdown_timeout_ms",
            format!(
                "{} ms is shorter than a Stripe charge can take ({} ms: (ACP_STRIPE_MAX_RETRIES + 1) × \
                 ACP_STRIPE_TIMEOUT_MS plus backoffs); raise it or lower those",
                grace.as_millis(),
                worst.as_millis()
            ),
        ));
    }
    Ok(())
}

fn known_versions() -> String {
    crate::protocol::ADAPTERS
        .iter()
        .map(|a| a.version())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `released` (every released version) or a comma-separated list of versions this build knows.
fn parse_api_versions(value: &str) -> Result<Vec<String>, ConfigError> {
    let trimmed = value.trim();
    if trimmed.eq_ignore_ascii_case("released") {
        return Ok(crate::protocol::SUPPORTED_VERSIONS
            .iter()
            .map(|v| (*v).to_owned())
            .collect());
    }
    let versions: Vec<String> = trimmed
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if versions.is_empty() {
        return Err(ConfigError::new(
            "api_versions",
            "must name at least one ACP version (or `released`)",
        ));
    }
    if let Some(unknown) = versions.iter().find(|v| crate::protocol::adapter(v).is_none()) {
        return Err(ConfigError::new(
            "api_versions",
            format!(
                "`{unknown}` is not an ACP version this build knows ({})",
                known_versions()
            ),
        ));
    }
    Ok(versions)
}

/// `ACP_SECRETS_KEYS`: required in production; development falls back to the published `dev` key.
/// The published development salt of the buyer hash (hashes made with it are not private).
pub const DEV_ANALYTICS_SALT: &str = "acp-dev-analytics-salt";

/// The buyer-hash salt: required in production (at least 16 characters, not the development one).
fn analytics_salt(value: Option<Secret>, production: bool) -> Result<Secret, ConfigError> {
    match (value, production) {
        (Some(salt), true) if salt.expose().chars().count() < 16 || salt.expose() == DEV_ANALYTICS_SALT => {
            Err(ConfigError::new(
                "analytics_salt",
                "must be at least 16 characters and not the development salt",
            ))
        }
        (Some(salt), _) => Ok(salt),
        (None, true) => Err(ConfigError::new("analytics_salt", "required in production")),
        (None, false) => Ok(Secret::new(DEV_ANALYTICS_SALT)),
    }
}

fn parse_secrets_keys(value: Option<Secret>, production: bool) -> Result<crate::secrets::Keyring, ConfigError> {
    match value {
        Some(keys) => {
            crate::secrets::Keyring::parse(keys.expose()).map_err(|e| ConfigError::new("secrets_keys", e.to_string()))
        }
        None if production => Err(ConfigError::new(
            "secrets_keys",
            "required in production: key_id:base64-32-bytes (generate with `openssl rand -base64 32`)",
        )),
        None => Ok(crate::secrets::Keyring::development()),
    }
}

fn parse_secret_list(value: &str) -> Vec<Secret> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect()
}

fn non_empty(secret: Option<Secret>) -> Option<Secret> {
    secret.filter(|s| !s.expose().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut all = vec![("env", "development"), ("psp", "simulator")];
        all.extend_from_slice(pairs);
        Settings::from_pairs(&all)
    }

    #[test]
    fn merchant_webhook_networks_are_cidrs() {
        assert!(dev(&[]).expect("valid").merchant_webhook_allowed_cidrs.is_empty());
        let settings = dev(&[("merchant_webhook_allowed_cidrs", " 10.20.0.0/16, fd00::/8 ")]).expect("valid");
        assert_eq!(settings.merchant_webhook_allowed_cidrs.len(), 2);
        let err = dev(&[("merchant_webhook_allowed_cidrs", "10.20.0.0")]).unwrap_err();
        assert!(err.to_string().contains("ACP_MERCHANT_WEBHOOK_ALLOWED_CIDRS"), "{err}");
    }

    #[test]
    fn the_read_pool_needs_a_connection() {
        assert_eq!(dev(&[]).expect("valid").db_read_connections, 4);
        let err = dev(&[("db_read_connections", "0")]).unwrap_err();
        assert!(err.to_string().contains("ACP_DB_READ_CONNECTIONS"), "{err}");
    }

    fn prod(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut all = vec![
            ("env", "production"),
            ("database_url", "postgres://u@db.example.com/acp"),
            ("agent_api_key", "agent-key-0123456789abcdefghij"),
            ("admin_token", "admin-token-0123456789abcdefghij"),
            ("stripe_secret_key", "sk_test_123"),
            ("secrets_keys", "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ("analytics_salt", "analytics-salt-0123456789"),
            ("order_page_key", "order-page-key-0123456789abcdefghij"),
        ];
        all.extend_from_slice(pairs);
        Settings::from_pairs(&all)
    }

    #[test]
    fn development_defaults_are_valid() {
        let s = dev(&[]).expect("valid");
        assert_eq!(s.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.agent_api_key.expose(), DEMO_AGENT_API_KEY);
    }

    #[test]
    fn the_admin_token_cannot_be_an_agent_key() {
        let same = "shared-secret-0123456789abcdefghij";
        for result in [
            dev(&[("agent_api_key", same), ("admin_token", same)]),
            prod(&[("agent_api_key", same), ("admin_token", same)]),
        ] {
            let err = result.unwrap_err();
            assert_eq!(err.setting, "ACP_ADMIN_TOKEN");
            assert!(err.to_string().contains("must differ"), "{err}");
            assert!(!err.to_string().contains(same), "the secret is never printed");
        }
    }

    #[test]
    fn malformed_listen_addr_names_the_variable() {
        let err = dev(&[("listen_addr", "not-an-addr")]).unwrap_err();
        assert_eq!(err.setting, "ACP_LISTEN_ADDR");
        assert!(err.to_string().contains("not an IP socket address"), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn malformed_number_names_the_variable() {
        let err = dev(&[("db_max_connections", "lots")]).unwrap_err();
        assert_eq!(err.setting, "ACP_DB_MAX_CONNECTIONS", "{err}");
    }

    #[test]
    fn the_pool_size_follows_the_database_cores_unless_set() {
        assert_eq!(dev(&[("db_cores", "8")]).expect("valid").db_max_connections, 20);
        let both = dev(&[("db_cores", "8"), ("db_max_connections", "3")]).expect("valid");
        assert_eq!(both.db_max_connections, 3, "an explicit size wins");
        let here = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        assert_eq!(dev(&[]).expect("valid").db_max_connections, 2 * here + 4);
        assert_eq!(dev(&[("db_cores", "0")]).unwrap_err().setting, "ACP_DB_CORES");
        assert_eq!(
            dev(&[("db_max_connections", "0")]).unwrap_err().setting,
            "ACP_DB_MAX_CONNECTIONS"
        );
        assert_eq!(dev(&[("db_cores", "many")]).unwrap_err().setting, "ACP_DB_CORES");
    }

    #[test]
    fn production_accepts_a_complete_safe_configuration() {
        let s = prod(&[]).expect("valid");
        assert!(s.is_production());
    }

    #[test]
    fn production_refuses_the_simulator_unless_allowed() {
        let err = prod(&[("psp", "simulator")]).unwrap_err();
        assert_eq!(err.setting, "ACP_PSP");
        assert!(prod(&[("psp", "simulator"), ("allow_simulator_in_production", "true")]).is_ok());
    }

    #[test]
    fn production_refuses_plain_http_on_public_addresses_unless_behind_a_proxy() {
        let err = prod(&[("listen_addr", "0.0.0.0:8080")]).unwrap_err();
        assert_eq!(err.setting, "ACP_LISTEN_ADDR");
        assert!(prod(&[("listen_addr", "0.0.0.0:8080"), ("tls_terminated_by_proxy", "true")]).is_ok());
    }

    #[test]
    fn production_refuses_insecure_or_internal_webhook_urls() {
        for url in [
            "http://agent.example.com/hooks",
            "https://127.0.0.1/hooks",
            "https://10.1.2.3/hooks",
            "https://[::1]/hooks",
            "https://localhost/hooks",
            "https://169.254.169.254/latest",
        ] {
            let err = prod(&[("agent_webhook_url", url)]).unwrap_err();
            assert_eq!(err.setting, "ACP_AGENT_WEBHOOK_URL", "{url}");
        }
        assert!(prod(&[("agent_webhook_url", "https://agent.example.com/hooks")]).is_ok());
        assert!(
            prod(&[
                ("agent_webhook_url", "http://127.0.0.1:9/h"),
                ("allow_insecure_webhook_urls", "true")
            ])
            .is_ok()
        );
    }

    #[test]
    fn production_requires_strong_secrets() {
        let err = prod(&[("agent_api_key", "short")]).unwrap_err();
        assert_eq!(err.setting, "ACP_AGENT_API_KEY");
        let err = prod(&[("agent_api_key", DEMO_AGENT_API_KEY)]).unwrap_err();
        assert_eq!(err.setting, "ACP_AGENT_API_KEY");
    }

    #[test]
    fn production_keeps_idempotency_keys_at_least_a_day() {
        let err = prod(&[("idempotency_retention_secs", "3600")]).unwrap_err();
        assert_eq!(err.setting, "ACP_IDEMPOTENCY_RETENTION_SECS");
        assert!(dev(&[("idempotency_retention_secs", "1")]).is_ok());
    }

    #[test]
    fn stripe_needs_its_secret_key() {
        let err = Settings::from_pairs(&[("env", "development")]).unwrap_err();
        assert_eq!(err.setting, "ACP_STRIPE_SECRET_KEY");
    }

    #[test]
    fn bad_database_url_does_not_echo_the_password() {
        let err = dev(&[("database_url", "mysql://user:hunter2@x/db")]).unwrap_err();
        assert_eq!(err.setting, "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn numeric_looking_text_settings_keep_their_text() {
        let s = dev(&[
            ("admin_token", "123456789012345678901234567890"),
            ("threeds_acquirer_bin", "424242"),
            ("webhook_retry_schedule_ms", "600"),
            ("payment_merchant_id", "42"),
        ])
        .expect("numbers are fine where text is expected");
        assert_eq!(s.admin_token.unwrap().expose(), "123456789012345678901234567890");
        assert_eq!(s.three_ds.acquirer_bin, "424242");
        assert_eq!(s.webhook_retry_schedule, vec![Duration::from_millis(600)]);
        assert_eq!(s.payment_merchant_id, "42");
    }

    #[test]
    fn the_wake_gather_must_be_under_the_poll_interval() {
        let err = dev(&[("webhook_poll_interval_ms", "100"), ("webhook_wake_gather_ms", "100")]).unwrap_err();
        assert_eq!(err.setting, "ACP_WEBHOOK_WAKE_GATHER_MS");
        let s = dev(&[("webhook_poll_interval_ms", "100"), ("webhook_wake_gather_ms", "0")]).expect("0 is at once");
        assert_eq!(s.webhook_wake_gather, Duration::ZERO);
    }

    #[test]
    fn the_heartbeat_must_be_under_half_the_lease() {
        let err = dev(&[("idempotency_lease_ms", "2000"), ("idempotency_heartbeat_ms", "1000")]).unwrap_err();
        assert_eq!(err.setting, "ACP_IDEMPOTENCY_HEARTBEAT_MS");
        assert!(dev(&[("idempotency_lease_ms", "2001"), ("idempotency_heartbeat_ms", "1000")]).is_ok());
    }

    #[test]
    fn the_shutdown_grace_must_cover_a_stripe_charge() {
        let err = prod(&[("shutdown_timeout_ms", "20000")]).unwrap_err();
        assert_eq!(err.setting, "ACP_SHUTDOWN_TIMEOUT_MS");
        assert!(err.problem.contains("24874 ms"), "{err}");
        assert!(prod(&[("shutdown_timeout_ms", "20000"), ("stripe_timeout_ms", "5000")]).is_ok());
        // The simulator answers at once: no constraint.
        assert!(dev(&[("shutdown_timeout_ms", "100")]).is_ok());
    }

    #[test]
    fn stripe_webhook_secrets_are_a_list() {
        let s = dev(&[("stripe_webhook_secrets", " whsec_a , whsec_b ,")]).unwrap();
        let listed: Vec<&str> = s.stripe_webhook_secrets.iter().map(Secret::expose).collect();
        assert_eq!(listed, ["whsec_a", "whsec_b"]);
        assert!(dev(&[]).unwrap().stripe_webhook_secrets.is_empty());
    }

    #[test]
    fn analytics_salt_is_required_in_production_and_never_printed() {
        let err = prod(&[("analytics_salt", "")]).unwrap_err();
        assert_eq!(err.setting, "ACP_ANALYTICS_SALT");
        assert!(err.problem.contains("required in production"), "{err}");
        let err = prod(&[("analytics_salt", DEV_ANALYTICS_SALT)]).unwrap_err();
        assert_eq!(err.setting, "ACP_ANALYTICS_SALT");
        assert!(
            !err.to_string().contains(DEV_ANALYTICS_SALT),
            "the salt is never printed"
        );
        assert_eq!(dev(&[]).unwrap().analytics_salt.expose(), DEV_ANALYTICS_SALT);
        let s = prod(&[]).unwrap();
        assert!(
            !format!("{s:?}").contains("analytics-salt-0123456789"),
            "Debug hides the salt"
        );
    }

    #[test]
    fn secrets_keys_are_required_in_production_and_validated() {
        let err = prod(&[("secrets_keys", "")]).unwrap_err();
        assert_eq!(err.setting, "ACP_SECRETS_KEYS");
        assert!(err.problem.contains("required in production"), "{err}");
        assert_eq!(dev(&[]).unwrap().secrets_keys.key_ids(), ["dev"]);
        let material = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        for (value, problem) in [
            ("k1:not base64!", "not valid base64"),
            ("k1:AAAA", "exactly 32"),
            (&*format!("k1:{material},k1:{material}"), "more than once"),
        ] {
            let err = dev(&[("secrets_keys", value)]).unwrap_err();
            assert_eq!(err.setting, "ACP_SECRETS_KEYS", "{value}");
            assert!(err.problem.contains(problem), "{value}: {err}");
            assert!(!err.to_string().contains(material), "key material is never printed");
        }
        let s = prod(&[("secrets_keys", &format!("new:{material}, old:{material}"))]).unwrap();
        assert_eq!(s.secrets_keys.key_ids(), ["new", "old"]);
    }

    #[test]
    fn every_special_purpose_range_is_internal() {
        let refused = [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::808:808",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378::1",
            "2001:1ff::1",
            "2001:db8::1",
            "2002:c000:0204::1",
            "fc00::1",
            "fdff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
        ];
        for ip in refused {
            assert!(is_internal_ip(ip.parse().unwrap()), "{ip} must be refused");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "126.255.255.255",
            "169.253.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.0.3.1",
            "192.88.98.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "198.51.101.1",
            "203.0.114.1",
            "223.255.255.255",
            "93.184.216.34",
            "::ffff:8.8.8.8",
            "2001:200::1",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "2a00:1450::1",
            "64:ff9b:2::1",
            "100:0:0:1::1",
            "2003::1",
            "fbff::1",
        ];
        for ip in public {
            assert!(!is_internal_ip(ip.parse().unwrap()), "{ip} must be accepted");
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk_live_abc");
        assert!(!format!("{s:?} {s}").contains("sk_live_abc"));
    }

    // Issue 13: the order page.
    #[test]
    fn order_page_settings_are_checked_and_named_by_their_variables() {
        let err = prod(&[("order_page_key", "")]).unwrap_err();
        assert_eq!(err.setting, "ACP_ORDER_PAGE_KEY");
        let template = "http://shop.example.com/orders/{order_id}?t={token}";
        let err = prod(&[("order_page_url_template", template)]).unwrap_err();
        assert_eq!(err.setting, "ACP_ORDER_PAGE_URL_TEMPLATE");
        assert!(dev(&[("order_page_url_template", template)]).is_ok());
        let err = dev(&[("support_email", "nobody")]).unwrap_err();
        assert_eq!(err.setting, "ACP_SUPPORT_EMAIL");
    }

    // Metrics and traces (issue 13).
    #[test]
    fn observability_settings_name_their_variables() {
        let s = dev(&[]).expect("valid");
        assert!(s.metrics_addr.is_none() && !s.otel.enabled);
        assert_eq!(s.otel.endpoint.as_str(), "http://127.0.0.1:4318/v1/traces");
        let s = dev(&[("metrics_addr", "127.0.0.1:9464"), ("otel_sample_ratio", "0.25")]).expect("valid");
        assert_eq!(s.metrics_addr.map(|a| a.port()), Some(9464));
        assert!((s.otel.sample_ratio - 0.25).abs() < f64::EPSILON);
        let cases = [
            ("metrics_addr", "nowhere", "ACP_METRICS_ADDR"),
            ("otel_sample_ratio", "1.5", "ACP_OTEL_SAMPLE_RATIO"),
            ("otel_endpoint", "ftp://collector", "ACP_OTEL_ENDPOINT"),
            (
                "otel_endpoint",
                "https://user:pw@collector/v1/traces",
                "ACP_OTEL_ENDPOINT",
            ),
            ("otel_export_timeout_ms", "0", "ACP_OTEL_EXPORT_TIMEOUT_MS"),
            ("otel_service_name", " ", "ACP_OTEL_SERVICE_NAME"),
        ];
        for (key, value, variable) in cases {
            let err = dev(&[(key, value)]).unwrap_err();
            assert_eq!(err.setting, variable, "{key}={value}: {err}");
            assert!(!err.to_string().contains("pw@"), "credentials are never printed: {err}");
        }
    }

    #[test]
    fn the_dashboard_session_lifetime_defaults_to_twelve_hours_and_must_be_positive() {
        assert_eq!(dev(&[]).unwrap().dashboard_session_ttl, Duration::from_secs(43_200));
        let s = dev(&[("dashboard_session_ttl_secs", "900")]).unwrap();
        assert_eq!(s.dashboard_session_ttl, Duration::from_secs(900));
        let err = dev(&[("dashboard_session_ttl_secs", "0")]).unwrap_err();
        assert_eq!(err.setting, "ACP_DASHBOARD_SESSION_TTL_SECS");
    }

    #[test]
    fn the_rules_poll_defaults_to_five_seconds_and_must_be_positive() {
        assert_eq!(dev(&[]).unwrap().rules_poll, Duration::from_millis(5000));
        assert_eq!(
            dev(&[("rules_poll_ms", "250")]).unwrap().rules_poll,
            Duration::from_millis(250)
        );
        let err = dev(&[("rules_poll_ms", "0")]).unwrap_err();
        assert_eq!(err.setting, "ACP_RULES_POLL_MS");
    }
}
