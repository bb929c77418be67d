//! Proxy variables in the environment are ignored by the webhook client: a delivery goes straight to the
//! receiver, never through `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`. A binary of its own, because environment
//! variables are process-wide and would reroute the other tests' HTTP clients.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use acp_merchant::webhooks::{
    client::{ClientPolicy, WebhookClient},
    signer,
};
use reqwest::{
    Url,
    header::{HeaderMap, HeaderValue},
};
use serde_json::Value;
use test_support::webhook_receiver::WebhookReceiver;

const SECRET: &str = "whsec_proxy_test_0123456789";
const PROXY_VARIABLES: &[&str] = &[
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "https_proxy",
    "http_proxy",
    "all_proxy",
];

/// A TCP listener standing in for a proxy: it counts connections and answers none.
fn counting_proxy(listener: std::net::TcpListener) -> Arc<AtomicUsize> {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    connections
}

fn signed_headers(body: &[u8]) -> HeaderMap {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "merchant-signature",
        HeaderValue::from_str(&signer::sign(SECRET, now, body)).unwrap(),
    );
    headers
}

#[test]
fn proxy_variables_in_the_environment_are_ignored() {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    // SAFETY: set before the runtime starts, by this binary's only test: no other thread reads the environment.
    unsafe {
        for name in PROXY_VARIABLES {
            std::env::set_var(name, &proxy_url);
        }
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let proxy_connections = counting_proxy(proxy);

        // Control: a client that honours the environment does go to the proxy, so the variables are effective.
        let receiver = WebhookReceiver::start(SECRET, Arc::new(|_: &Value| Ok(()))).await;
        let honouring = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let _ = honouring.post(receiver.url()).body("{}").send().await;
        assert!(
            proxy_connections.load(Ordering::SeqCst) > 0,
            "the proxy variables should reroute a default client"
        );
        let before = proxy_connections.load(Ordering::SeqCst);
        assert!(receiver.deliveries().is_empty());

        let client = WebhookClient::new(ClientPolicy {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            max_response_bytes: 1024,
            allow_insecure: true,
            allowed_networks: Vec::new(),
        })
        .unwrap();
        let body = br#"{"type":"order_create","data":{"id":"ord_proxy"}}"#.to_vec();
        let answer = client
            .post(&Url::parse(&receiver.url()).unwrap(), signed_headers(&body), body)
            .await
            .expect("delivered directly");
        assert_eq!(answer.status, 200);
        let deliveries = receiver.deliveries();
        assert_eq!(deliveries.len(), 1, "the receiver got the webhook");
        assert!(deliveries[0].signature_valid);
        assert_eq!(
            proxy_connections.load(Ordering::SeqCst),
            before,
            "the webhook client never connected to the proxy"
        );
    });
}
