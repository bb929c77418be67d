//! The README's first command: `acp-merchant demo` provisions PostgreSQL itself and becomes ready.

use std::time::Duration;

use crate::helpers::ChildServer;

#[tokio::test]
async fn demo_provisions_its_database_and_becomes_ready() {
    // No DATABASE_URL: the demo must provision the local `dev` cluster on its own.
    let mut server = ChildServer::start(&["demo"], &[]).await;
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let output = server.output().join("\n");
    assert!(output.contains("demo agent key"), "{output}");
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(10)).await, Some(0));
}
