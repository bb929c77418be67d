//! SIGTERM stops accepting new work but lets in-flight requests finish.

use std::time::Duration;

use crate::helpers::{ChildServer, TestDb};

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_complete() {
    let db = TestDb::migrated().await;
    let mut server = ChildServer::start(
        &["serve"],
        &[
            ("ACP_ENV", "development"),
            ("ACP_PSP", "simulator"),
            ("DATABASE_URL", &db.url),
            ("ACP_DEBUG_ROUTES", "true"),
        ],
    )
    .await;
    let slow = tokio::spawn(reqwest::get(server.url("/debug/sleep?ms=1200")));
    // Let the request reach the handler before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");

    let response = slow.await.unwrap().expect("in-flight request completed");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slept");
    assert_eq!(server.wait(Duration::from_secs(10)).await, Some(0));
    let output = server.output().join("\n");
    assert!(output.contains("shutting down"), "{output}");
}
