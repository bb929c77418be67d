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

    // The README's curl walk-through, against this demo server and its demo catalog.
    let script = tokio::process::Command::new("scripts/demo-checkout")
        .arg(format!("http://{}", server.addr))
        .arg(acp_merchant::config::DEMO_AGENT_API_KEY)
        .output()
        .await
        .expect("run scripts/demo-checkout");
    let stdout = String::from_utf8_lossy(&script.stdout);
    assert!(
        script.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&script.stderr)
    );
    assert!(stdout.contains("status: completed"), "{stdout}");
    assert!(stdout.contains("/orders/ord_"), "{stdout}");
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(10)).await, Some(0));
}
