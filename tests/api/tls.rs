//! Native HTTPS: TLS 1.3 only, the certificate reloaded on file change and on SIGHUP, configuration mistakes
//! refused at start-up, and the healthcheck probing over HTTPS. Certificates are made here with `rcgen`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use reqwest::{Certificate, StatusCode, tls::Version};

use crate::helpers::{ChildServer, TestDb, binary, eventually, logged, spawn_app_with};

/// A certificate authority of the test's own.
struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A `localhost` server certificate and its key, as PEM.
    fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory of the test's own for the PEM files, removed afterwards.
struct PemDir(PathBuf);

impl PemDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("acp-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create PEM dir");
        Self(dir)
    }

    fn cert(&self) -> PathBuf {
        self.0.join("server.crt")
    }

    fn key(&self) -> PathBuf {
        self.0.join("server.key")
    }

    /// Replaces the files the way a deployment does: write aside, then rename over.
    fn install(&self, (cert, key): &(String, String)) {
        for (path, text) in [(self.cert(), cert), (self.key(), key)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).expect("write PEM");
            std::fs::rename(&aside, &path).expect("install PEM");
        }
    }

    fn str(path: &Path) -> &str {
        path.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for PemDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client that trusts only `ca`, reaching `localhost` at `addr`; `max` caps the TLS version it offers.
fn client(ca: &TestCa, addr: SocketAddr, max: Option<Version>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([Certificate::from_pem(ca.cert_pem.as_bytes()).expect("CA PEM")])
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(5));
    if let Some(max) = max {
        builder = builder.max_tls_version(max);
    }
    builder.build().expect("TLS client")
}

fn healthz(addr: SocketAddr) -> String {
    format!("https://localhost:{}/healthz", addr.port())
}

/// A new connection trusting `ca` is answered 200 (so the server presents a certificate `ca` issued).
async fn served_with(ca: &TestCa, addr: SocketAddr) -> bool {
    matches!(client(ca, addr, None).get(healthz(addr)).send().await, Ok(r) if r.status() == StatusCode::OK)
}

#[tokio::test]
async fn tls13_is_served_and_a_tls12_client_is_refused() {
    let ca = TestCa::new("Test CA one");
    let pem = PemDir::new();
    pem.install(&ca.server_cert());
    let app = spawn_app_with(&[
        ("tls_cert", PemDir::str(&pem.cert())),
        ("tls_key", PemDir::str(&pem.key())),
    ])
    .await;

    let response = client(&ca, app.addr, None)
        .get(healthz(app.addr))
        .header("Request-Id", "req_over_tls")
        .send()
        .await
        .expect("a TLS 1.3 client is served");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    // The layers run as over plain HTTP: the request id is echoed.
    assert_eq!(response.headers()["request-id"], "req_over_tls");

    let refused = client(&ca, app.addr, Some(Version::TLS_1_2))
        .get(healthz(app.addr))
        .send()
        .await;
    assert!(refused.is_err(), "a TLS 1.2-only client must be refused: {refused:?}");
    // Plain HTTP on the TLS port gets no answer.
    let plain = app.client.get(app.url("/healthz")).send().await;
    assert!(
        plain.is_err(),
        "plain HTTP must not be served on the TLS port: {plain:?}"
    );
    // And the server still serves TLS 1.3 afterwards.
    assert!(served_with(&ca, app.addr).await);
}

#[tokio::test]
async fn a_changed_certificate_is_presented_on_the_next_connection_and_a_broken_one_is_not() {
    let (old_ca, new_ca) = (TestCa::new("Old CA"), TestCa::new("New CA"));
    let pem = PemDir::new();
    pem.install(&old_ca.server_cert());
    let app = spawn_app_with(&[
        ("tls_cert", PemDir::str(&pem.cert())),
        ("tls_key", PemDir::str(&pem.key())),
        ("tls_reload_poll_ms", "50"),
    ])
    .await;
    assert!(served_with(&old_ca, app.addr).await);
    assert!(!served_with(&new_ca, app.addr).await);

    // File timestamps may have a coarse resolution: the new files must carry a later one.
    tokio::time::sleep(Duration::from_millis(20)).await;
    pem.install(&new_ca.server_cert());
    assert!(
        eventually(Duration::from_secs(2), || served_with(&new_ca, app.addr)).await,
        "the new certificate was not presented after the files changed"
    );
    assert!(!served_with(&old_ca, app.addr).await);

    // A certificate that does not parse is logged and the one in use stays.
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(pem.cert(), "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    assert!(
        eventually(Duration::from_secs(2), || async {
            logged(&["TLS certificate reload failed", "ACP_TLS_CERT"])
        })
        .await,
        "the failed reload was not logged"
    );
    assert!(served_with(&new_ca, app.addr).await);
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_shutdown_drains_over_tls() {
    let (old_ca, new_ca) = (TestCa::new("Old CA"), TestCa::new("New CA"));
    let pem = PemDir::new();
    pem.install(&old_ca.server_cert());
    let db = TestDb::migrated().await;
    let mut server = ChildServer::start(
        &["serve"],
        &[
            ("ACP_ENV", "development"),
            ("ACP_PSP", "simulator"),
            ("DATABASE_URL", &db.url),
            ("ACP_DEBUG_ROUTES", "true"),
            ("ACP_TLS_CERT", PemDir::str(&pem.cert())),
            ("ACP_TLS_KEY", PemDir::str(&pem.key())),
            // Polling effectively off: only the signal can reload.
            ("ACP_TLS_RELOAD_POLL_MS", "600000"),
        ],
    )
    .await;
    let addr = server.addr;
    assert!(served_with(&old_ca, addr).await);
    pem.install(&new_ca.server_cert());
    server.signal("HUP");
    assert!(
        eventually(Duration::from_secs(2), || served_with(&new_ca, addr)).await,
        "SIGHUP did not reload the certificate; output:\n{}",
        server.output().join("\n")
    );

    // The healthcheck subcommand probes the HTTPS listener.
    let address = addr.to_string();
    let cert_path = pem.cert();
    let probe = |tls: bool| {
        let mut env = vec![("ACP_LISTEN_ADDR", address.as_str())];
        if tls {
            env.push(("ACP_TLS_CERT", PemDir::str(&cert_path)));
        }
        binary(&["healthcheck"], &env).output()
    };
    assert_eq!(probe(true).await.unwrap().status.code(), Some(0));
    assert_eq!(
        probe(false).await.unwrap().status.code(),
        Some(1),
        "plain HTTP probe of a TLS port"
    );

    // SIGTERM lets a request in flight over TLS finish.
    let slow = tokio::spawn(
        client(&new_ca, addr, None)
            .get(format!("https://localhost:{}/debug/sleep?ms=1000", addr.port()))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    let response = slow.await.unwrap().expect("in-flight TLS request completed");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "slept");
    assert_eq!(server.wait(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn tls_configuration_mistakes_stop_start_up_naming_the_variable() {
    let unused_db = "postgres://unused@127.0.0.1/none";
    let base = [
        ("env", "development"),
        ("psp", "simulator"),
        ("database_url", unused_db),
    ];
    for (key, missing) in [("tls_cert", "ACP_TLS_KEY"), ("tls_key", "ACP_TLS_CERT")] {
        let mut pairs = base.to_vec();
        pairs.push((key, "/some/file.pem"));
        let err = acp_merchant::config::Settings::from_pairs(&pairs).expect_err(key);
        assert!(err.to_string().contains(missing), "{err}");
    }

    let ca = TestCa::new("Test CA");
    let pem = PemDir::new();
    pem.install(&ca.server_cert());
    let other = PemDir::new();
    other.install(&ca.server_cert());
    let garbage = pem.0.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file").unwrap();
    let missing = pem.0.join("absent.pem");
    let env_for = |cert: &Path, key: &Path| {
        vec![
            ("ACP_ENV", "development".to_owned()),
            ("ACP_PSP", "simulator".to_owned()),
            ("DATABASE_URL", unused_db.to_owned()),
            ("ACP_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("ACP_TLS_CERT", PemDir::str(cert).to_owned()),
            ("ACP_TLS_KEY", PemDir::str(key).to_owned()),
        ]
    };
    for (cert, key, variable) in [
        (missing.clone(), pem.key(), "ACP_TLS_CERT"),
        (garbage.clone(), pem.key(), "ACP_TLS_CERT"),
        (pem.cert(), garbage.clone(), "ACP_TLS_KEY"),
        // A key that belongs to another certificate.
        (pem.cert(), other.key(), "ACP_TLS_KEY"),
    ] {
        let env = env_for(&cert, &key);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let output = tokio::time::timeout(Duration::from_secs(30), binary(&["serve"], &env).output())
            .await
            .expect("serve stopped")
            .expect("serve ran");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{cert:?} {key:?}: {stderr}");
        assert!(stderr.contains(variable), "{cert:?} {key:?}: {stderr}");
    }

    // Production accepts a public listen address when it serves TLS itself.
    let production = acp_merchant::config::Settings::from_pairs(&[
        ("env", "production"),
        ("psp", "stripe"),
        ("stripe_secret_key", "sk_test_0123456789abcdef0123456789"),
        ("database_url", unused_db),
        ("agent_api_key", "prod_agent_key_0123456789abcdef"),
        ("admin_token", "prod_admin_token_0123456789abcdef"),
        ("listen_addr", "0.0.0.0:8443"),
        ("public_base_url", "https://shop.example.com"),
        ("tls_cert", PemDir::str(&pem.cert())),
        ("tls_key", PemDir::str(&pem.key())),
        ("secrets_keys", crate::helpers::PROD_SECRETS_KEYS),
        ("analytics_salt", crate::helpers::PROD_ANALYTICS_SALT),
        ("order_page_key", crate::helpers::PROD_ORDER_PAGE_KEY),
    ]);
    assert!(production.is_ok(), "{:?}", production.err());
}
