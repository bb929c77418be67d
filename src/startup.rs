//! Building and running the service: bind, serve, run background workers, and shut down gracefully.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use serde_json::{Value, json};

use crate::{
    checkout::{
        compute::default_rules,
        service::{Checkout, PaymentTiming},
    },
    config::{PspKind, Settings},
    db,
    http::extract::ENV_AGENT_ID,
    http::{self, AppState},
    pricing::store::RulesCache,
    protocol::{CARD_HANDLER_ID, WireContext},
    psp::{Psp, simulator::Simulator, stripe::Stripe},
    webhooks::worker::WorkerConfig,
};

fn card_handler(settings: &Settings) -> Value {
    let environment = if settings.psp == PspKind::Simulator {
        "sandbox"
    } else {
        "production"
    };
    json!({
        "id": CARD_HANDLER_ID,
        "name": "dev.acp.tokenized.card",
        "display_name": "Credit Card",
        "version": "2026-01-22",
        "spec": "https://acp.dev/handlers/tokenized.card",
        "requires_delegate_payment": true,
        "requires_pci_compliance": false,
        "psp": "stripe",
        "config_schema": "https://acp.dev/schemas/handlers/tokenized.card/config.json",
        "instrument_schemas": ["https://acp.dev/schemas/handlers/tokenized.card/instrument.json"],
        "config": {
            "merchant_id": settings.payment_merchant_id,
            "psp": "stripe",
            "accepted_brands": ["visa", "mastercard", "amex", "discover"],
            "supports_3ds": true,
            "environment": environment,
        },
        "display_order": 0,
    })
}

fn wire_context(settings: &Settings) -> WireContext {
    WireContext {
        payment_handlers: vec![card_handler(settings)],
        seller_interventions: vec!["3ds".to_owned()],
        required_interventions: settings.required_interventions.clone(),
        links: settings
            .policy_links
            .iter()
            .map(|(kind, url)| json!({"type": kind, "url": url.as_str()}))
            .collect(),
        authentication_metadata: json!({
            "acquirer_details": {
                "acquirer_bin": settings.three_ds.acquirer_bin,
                "acquirer_country": settings.three_ds.acquirer_country,
                "acquirer_merchant_id": settings.three_ds.acquirer_merchant_id,
                "merchant_name": settings.three_ds.merchant_name,
            },
            "directory_server": settings.three_ds.directory_server,
        }),
    }
}

/// Marks sessions whose TTL ran out as expired, every `every`, until shutdown.
async fn sweep_expired_sessions(
    checkout: Arc<Checkout>,
    pool: sqlx::PgPool,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match checkout.sweep_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired checkout sessions"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Db(#[from] db::DbError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("payment provider: {0}")]
    Psp(String),
    #[error("{0}")]
    Protocol(#[from] crate::protocol::schema::SchemaError),
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
    #[error("webhook client: {0}")]
    Webhooks(#[from] crate::webhooks::client::DeliveryError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The checkout use cases as configured (`simulator` is the simulator PSP when that is the configured one).
pub fn checkout(settings: &Settings, simulator: Option<Simulator>) -> Result<Checkout, StartupError> {
    let psp = match simulator {
        Some(s) => Psp::Simulator(s),
        None => Psp::Stripe(Stripe::new(settings).map_err(|e| StartupError::Psp(e.to_string()))?),
    };
    Ok(Checkout {
        rules: RulesCache::new(default_rules(
            &settings.ship_to_countries,
            settings.shipping_standard_amount,
            settings.shipping_express_amount,
        )),
        session_ttl: chrono::Duration::from_std(settings.session_ttl).unwrap_or(chrono::Duration::hours(6)),
        order_links: crate::order_page::OrderLinks::new(&settings.order_page, &settings.public_base_url),
        psp,
        handler_ids: vec![CARD_HANDLER_ID.to_owned()],
        wire: Arc::new(wire_context(settings)),
        payments: PaymentTiming {
            lease: settings.idempotency_lease,
            heartbeat: settings.idempotency_heartbeat,
            lookup_grace: settings.psp_lookup_grace,
            reconcile_after: settings.reconcile_after,
        },
        funnel: crate::analytics::Recorder::new(settings.analytics_salt.clone()),
        webhooks_queued: crate::webhooks::Wakeup::default(),
    })
}

/// A bound, not yet running service. `build` then `run_until_stopped`, so tests can learn the port in between.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// The delivery worker's configuration (its HTTP client built once here), when the worker runs in-process.
    webhook_worker: Option<WorkerConfig>,
    /// The certificate presented when serving HTTPS natively (`ACP_TLS_CERT` / `ACP_TLS_KEY`).
    tls: Option<Arc<crate::tls::ReloadingCert>>,
    /// The unauthenticated metrics listener (`ACP_METRICS_ADDR`), when configured.
    metrics_listener: Option<TcpListener>,
    /// The background workers' own pool (see [`db::lazy_background_pool`]).
    background_db: sqlx::PgPool,
}

impl Application {
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> Result<Self, StartupError> {
        let db = db::lazy_pool(&settings)?;
        let background_db = db::lazy_background_pool(&settings)?;
        // A certificate that cannot be used stops start-up before the port is taken.
        let tls = match &settings.tls {
            Some(files) => Some(Arc::new(crate::tls::ReloadingCert::load(files.clone())?)),
            None => None,
        };
        let addr = settings.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            ),
            None => None,
        };
        crate::observability::metrics::install();
        let simulator = (settings.psp == PspKind::Simulator).then(|| Simulator::new(db.clone()));
        let checkout = checkout(&settings, simulator.clone())?;
        let settings_versions = settings.api_versions.clone();
        let wire = checkout.wire.clone();
        let keyring = settings.secrets_keys.clone();
        let webhook_worker = settings
            .webhook_worker_enabled
            .then(|| WorkerConfig::from_settings(&settings, ENV_AGENT_ID))
            .transpose()?
            .map(|config| WorkerConfig {
                wakeup: checkout.webhooks_queued.clone(),
                ..config
            });
        let rate_limits = Arc::new(crate::rate_limit::RateLimits::new(settings.rate_limits.clone()));
        let kept = crate::db::kept::KeptConnections::new(db::lazy_read_pool(&settings)?, crate::db::kept::MAX_IDLE);
        let state = AppState::new(crate::http::SharedState {
            rate_limits,
            settings: Arc::new(settings),
            kept,
            db,
            shutdown,
            checkout: Arc::new(checkout),
            wire,
            simulator,
            tasks: TaskTracker::new(),
            protocol: Arc::new(crate::protocol::Protocol::new(&settings_versions)?),
            keyring,
        });
        Ok(Self {
            listener,
            state,
            webhook_worker,
            tls,
            metrics_listener,
            background_db,
        })
    }

    /// The bound address of the metrics listener, when `ACP_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.settings.listen_addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the shutdown token fires, then stops accepting, gives in-flight requests up to
    /// `shutdown_timeout` to finish, and waits for background workers.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let addr = self.local_addr();
        let Self {
            listener,
            state,
            webhook_worker,
            tls,
            metrics_listener,
            background_db,
        } = self;
        let shutdown = state.shutdown.clone();
        let workers = TaskTracker::new();
        // Workers that read the database start once it is prepared, so their first poll never meets a schema that
        // is still being migrated (which would log a spurious error).
        let prepared = CancellationToken::new();
        workers.spawn(prepare_then_limit(state.clone(), prepared.clone(), shutdown.clone()));
        if let Some(cert) = &tls {
            let poll = state.settings.tls_reload_poll;
            workers.spawn(crate::tls::watch_for_reload(cert.clone(), poll, shutdown.clone()));
        }
        workers.spawn(once_prepared(
            prepared.clone(),
            shutdown.clone(),
            sweep_expired_sessions(
                state.checkout.clone(),
                background_db.clone(),
                state.settings.expiry_sweep_interval,
                shutdown.clone(),
            ),
        ));
        if let Some(config) = webhook_worker {
            workers.spawn(once_prepared(
                prepared.clone(),
                shutdown.clone(),
                crate::webhooks::worker::run(background_db.clone(), config, shutdown.clone()),
            ));
        }
        let reads = state.clone();
        let stop = shutdown.clone();
        workers.spawn(async move { reads.kept.upkeep(stop).await });
        workers.spawn(crate::observability::metrics::upkeep(
            std::time::Duration::from_secs(5),
            shutdown.clone(),
        ));
        workers.spawn(once_prepared(
            prepared.clone(),
            shutdown.clone(),
            sweep_idempotency_keys(
                background_db.clone(),
                state.settings.idempotency_sweep_interval,
                shutdown.clone(),
            ),
        ));
        workers.spawn(once_prepared(
            prepared.clone(),
            shutdown.clone(),
            crate::checkout::reconcile::run(
                state.checkout.clone(),
                background_db.clone(),
                state.settings.reconcile_interval,
                shutdown.clone(),
            ),
        ));
        // Issue 14: the pricing rules cache follows changes (LISTEN/NOTIFY, with a fallback poll).
        workers.spawn(once_prepared(
            prepared.clone(),
            shutdown.clone(),
            crate::pricing::listener::run(
                state.checkout.rules.clone(),
                state.db.clone(),
                state.settings.rules_poll,
                shutdown.clone(),
            ),
        ));
        if let Some(listener) = metrics_listener {
            workers.spawn(http::metrics::serve_standalone(
                listener,
                state.clone(),
                shutdown.clone(),
            ));
        }
        let grace = state.settings.shutdown_timeout;
        let handshake_timeout = state.settings.tls_handshake_timeout;
        let pool = state.db.clone();
        let sagas = state.tasks.clone();
        let after_serve = state.clone();
        let app = http::router(state);
        let server = match tls {
            Some(cert) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(crate::tls::server_config(cert)?));
                tracing::info!(%addr, tls = "1.3", "listening");
                Box::pin(crate::tls::serve(
                    listener,
                    acceptor,
                    app,
                    handshake_timeout,
                    shutdown.clone(),
                )) as std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>
            }
            None => {
                tracing::info!(%addr, "listening");
                // The peer address reaches the per-address rate limit as `ConnectInfo`.
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                Box::pin(
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                        .into_future(),
                )
            }
        };
        let mut server = server;
        let served = tokio::select! {
            result = &mut server => result,
            () = shutdown.cancelled() => {
                tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down; draining in-flight requests");
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("in-flight requests did not finish within the shutdown timeout");
                        Ok(())
                    }
                }
            }
        };
        shutdown.cancel();
        // Payments under way finish (their grace is covered by the configuration check) before the pool closes.
        sagas.close();
        if tokio::time::timeout(grace, sagas.wait()).await.is_err() {
            tracing::warn!(
                "payments under way did not finish within the shutdown timeout; the reconciler settles them"
            );
        }
        workers.close();
        if tokio::time::timeout(grace, workers.wait()).await.is_err() {
            tracing::warn!("background workers did not stop within the shutdown timeout");
        }
        pool.close().await;
        after_serve.kept.close().await;
        background_db.close().await;
        tracing::info!("stopped");
        served.map_err(StartupError::Serve)
    }
}

/// Runs `work` once the database is prepared ([`prepare_database`]); a shutdown before then skips it.
async fn once_prepared(prepared: CancellationToken, stop: CancellationToken, work: impl Future<Output = ()>) {
    tokio::select! {
        () = prepared.cancelled() => work.await,
        () = stop.cancelled() => {}
    }
}

/// Migrates (when configured to) and seals the secrets still stored in clear, then applies the settings that
/// Prepares the database, then (rate limits on) keeps the buckets bounded and the agents' overrides fresh: the
/// overrides are read once the migrations that create their table have run.
async fn prepare_then_limit(state: AppState, prepared: CancellationToken, stop: CancellationToken) {
    prepare_database(state.clone(), stop.clone()).await;
    prepared.cancel();
    if state.rate_limits.enabled() {
        crate::rate_limit::maintain(state.rate_limits.clone(), state.db.clone(), stop).await;
    }
}

/// Migrates (when configured to) and seals the secrets still stored in clear, then applies the settings that
/// live in the database: the environment agent's webhook version.
async fn prepare_database(state: AppState, stop: CancellationToken) {
    if state.settings.migrate_on_start {
        db::migrate_until_done(state.db.clone(), state.settings.db_retry_interval, stop).await;
        seal_clear_secrets(&state).await;
    }
    if let Some(version) = &state.settings.agent_webhook_api_version {
        let applied = async {
            let mut conn = state.db.acquire().await?;
            crate::webhooks::outbox::set_agent_version(&mut conn, ENV_AGENT_ID, Some(version)).await
        }
        .await;
        if let Err(e) = applied {
            tracing::warn!(error = %e, "could not apply ACP_AGENT_WEBHOOK_API_VERSION");
        }
    }
}

/// The start-up step that follows the migrations: SQL cannot know the key, so secrets stored in clear (by an
/// older version) are sealed here, in one transaction; sealed rows are left alone.
async fn seal_clear_secrets(state: &AppState) {
    match crate::secrets::store::seal_clear_rows(&state.db, &state.keyring).await {
        Ok(done) if done.sealed_from_clear > 0 => {
            tracing::info!(sealed = done.sealed_from_clear, "stored secrets sealed");
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "could not seal the secrets stored in clear"),
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown signal received");
        token.cancel();
    });
}

/// Deletes idempotency records past their retention, every `every`, until shutdown.
async fn sweep_idempotency_keys(pool: sqlx::PgPool, every: std::time::Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match crate::idempotency::sweep_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired idempotency keys swept"),
            Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
        }
    }
}
