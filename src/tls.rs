//! Native HTTPS: TLS 1.3 only, with rustls and the crypto provider reqwest already brings (aws-lc-rs), so the
//! binary carries one TLS stack. The certificate is reloaded on SIGHUP and when its files change; a reload that
//! fails keeps the certificate in use.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use axum::{Router, extract::ConnectInfo};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        crypto::CryptoProvider,
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
    },
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Where the certificate chain and its private key are read from (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate or key that cannot be used; the message names the environment variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("configuration error: ACP_TLS_CERT: cannot use {path}: {problem}")]
    Cert { path: String, problem: String },
    #[error("configuration error: ACP_TLS_KEY: cannot use {path}: {problem}")]
    Key { path: String, problem: String },
    #[error("configuration error: ACP_TLS_KEY: the private key does not match the certificate in ACP_TLS_CERT")]
    Mismatch,
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

/// The crypto provider of the whole binary (the one reqwest's rustls uses).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks the certificate chain and key: both parse, and the key belongs to the first certificate.
pub fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert_path.clone(),
            problem: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path,
            problem: "no PEM CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: key_path.clone(),
        problem: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch,
        other => TlsError::Key {
            path: key_path,
            problem: other.to_string(),
        },
    })
}

/// Presents the current certificate on every handshake; [`ReloadingCert::reload`] swaps it for new connections.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let key = load_certified_key(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Reads the files again. On failure the certificate in use stays and the error is logged.
    pub fn reload(&self) -> bool {
        match load_certified_key(&self.files) {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(key);
                }
                tracing::info!("TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload failed; the previous certificate stays in use");
                false
            }
        }
    }

    /// The newest modification time of the two files (None when either cannot be read).
    fn modified(&self) -> Option<SystemTime> {
        let stamp = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Some(stamp(&self.files.cert)?.max(stamp(&self.files.key)?))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|key| key.clone())
    }
}

/// TLS 1.3 only, HTTP/1.1 only (the server speaks no HTTP/2), certificate from `resolver`.
pub fn server_config(resolver: Arc<ReloadingCert>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reloads the certificate on SIGHUP and whenever the files' modification time changes (checked every `poll`).
pub async fn watch_for_reload(cert: Arc<ReloadingCert>, poll: Duration, stop: CancellationToken) {
    let mut seen = cert.modified();
    let mut hangup = hangup_signal();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(poll) => {
                let now = cert.modified();
                if now.is_some() && now != seen {
                    seen = now;
                    cert.reload();
                }
            }
            () = next_hangup(&mut hangup) => {
                tracing::info!("SIGHUP received; reloading the TLS certificate");
                seen = cert.modified();
                cert.reload();
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(
            |e| tracing::warn!(error = %e, "cannot listen for SIGHUP; the certificate reloads on file change only"),
        )
        .ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    let Some(signal) = hangup else {
        return std::future::pending().await;
    };
    if signal.recv().await.is_none() {
        // The signal stream ended (the runtime is going away): never fire again.
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

/// Accepts connections until `stop` fires, then lets every open connection finish its request in flight (the
/// caller bounds that wait with the shutdown timeout). Each connection gets the peer address as `ConnectInfo`,
/// as `axum::serve` gives it on the plain listener.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    handshake_timeout: Duration,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let connection = Connection {
            acceptor: acceptor.clone(),
            app: app.clone(),
            peer,
            handshake_timeout,
            stop: stop.clone(),
        };
        let watcher = graceful.watcher();
        tokio::spawn(async move { connection.run(stream, watcher).await });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

struct Connection {
    acceptor: TlsAcceptor,
    app: Router,
    peer: SocketAddr,
    handshake_timeout: Duration,
    /// A handshake still under way when shutdown begins is dropped: it carries no request to finish.
    stop: CancellationToken,
}

impl Connection {
    async fn run(self, stream: TcpStream, watcher: hyper_util::server::graceful::Watcher) {
        let handshake = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream));
        let handshake = tokio::select! {
            () = self.stop.cancelled() => return,
            done = handshake => done,
        };
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                return;
            }
        };
        let (app, peer) = (self.app, self.peer);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new());
        let connection = http.serve_connection(TokioIo::new(tls), service);
        if let Err(e) = watcher.watch(connection).await {
            tracing::debug!(peer = %peer, error = %e, "HTTPS connection ended with an error");
        }
    }
}
