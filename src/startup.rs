//! Building and running the service: bind, serve, run background workers, and shut down gracefully.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Settings,
    db,
    http::{self, AppState},
};

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
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
}

/// A bound, not yet running service. `build` then `run_until_stopped`, so tests can learn the port in between.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> Result<Self, StartupError> {
        let db = db::lazy_pool(&settings)?;
        let addr = settings.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let state = AppState {
            settings: Arc::new(settings),
            db,
            shutdown,
        };
        Ok(Self { listener, state })
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
        let Self { listener, state } = self;
        let shutdown = state.shutdown.clone();
        let workers = TaskTracker::new();
        if state.settings.migrate_on_start {
            workers.spawn(db::migrate_until_done(
                state.db.clone(),
                state.settings.db_retry_interval,
                shutdown.clone(),
            ));
        }
        let grace = state.settings.shutdown_timeout;
        let pool = state.db.clone();
        let app = http::router(state);
        tracing::info!(%addr, "listening");

        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut server = std::pin::pin!(server.into_future());
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
        workers.close();
        if tokio::time::timeout(grace, workers.wait()).await.is_err() {
            tracing::warn!("background workers did not stop within the shutdown timeout");
        }
        pool.close().await;
        tracing::info!("stopped");
        served.map_err(StartupError::Serve)
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
