//! Headless Chromium for the HTML pages (the order page, the admin dashboard), driven without DevTools:
//! `chromium --headless --dump-dom URL` for the rendered DOM and `--screenshot=PATH --window-size=1280,2000 URL`
//! for a picture kept as a test artifact in `target/test-artifacts/<name>.png`.
//!
//! Chromium is Debian's `chromium` package, installed by `scripts/test` (through `scripts/ensure-chromium`) when
//! absent; `ACP_CHROMIUM` names another binary. Without it the browser tests skip loudly, except in CI
//! (`ACP_SPEC_DIR` set), where a missing browser fails them.
//!
//! Cookies (for the dashboard, whose login form sets a `Secure; HttpOnly; SameSite=Strict` cookie): log in with
//! the HTTP client (asserting the Set-Cookie flags there), then pass the cookie's `name=value` to [`render_dom`] /
//! [`screenshot_with_cookie`]. Chromium then talks to the server through a loopback proxy started for that one run
//! (`--proxy-server`, with `--proxy-bypass-list=<-loopback>` so 127.0.0.1 goes through it), which adds the
//! `Cookie` header to every request: the page sees exactly what a logged-in browser sends, no DevTools, no
//! prepared profile, no test-only login route in the app.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    process::Command,
};

/// How long one Chromium run may take (a cold start on a busy 2-core machine included).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium binary: `ACP_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ACP_CHROMIUM")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        return Some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Whether the browser tests can run. In CI (`ACP_SPEC_DIR` set) a missing Chromium fails the test; elsewhere
/// the test says loudly that it skips.
pub fn available() -> bool {
    if chromium().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("ACP_SPEC_DIR").is_none(),
        "chromium is required in CI: scripts/test installs Debian's chromium package when run as root"
    );
    eprintln!("WARNING: SKIPPING a headless-browser test: chromium is not installed (apt-get install chromium)");
    false
}

/// Where screenshots are kept: `target/test-artifacts` (`CARGO_TARGET_DIR/test-artifacts` when that is set).
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artifacts")
}

/// The DOM of `url` after Chromium loaded it, serialized. `cookie` (`name=value`) is sent with every request.
pub async fn render_dom(url: &str, cookie: Option<&str>) -> String {
    let output = run(&["--dump-dom", url], cookie).await;
    String::from_utf8_lossy(&output).into_owned()
}

/// A 1280×2000 screenshot of `url` in `target/test-artifacts/<name>.png`; returns its path.
pub async fn screenshot(url: &str, name: &str) -> PathBuf {
    screenshot_with_cookie(url, name, None).await
}

/// [`screenshot`] with a cookie (`name=value`) sent with every request.
pub async fn screenshot_with_cookie(url: &str, name: &str, cookie: Option<&str>) -> PathBuf {
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    let path = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    let flag = format!("--screenshot={}", path.display());
    run(&[&flag, "--window-size=1280,2000", url], cookie).await;
    assert!(path.is_file(), "chromium wrote no screenshot at {}", path.display());
    path
}

/// One headless run with a private, throw-away profile (concurrent runs never share one); returns stdout.
async fn run(args: &[&str], cookie: Option<&str>) -> Vec<u8> {
    let binary = chromium().expect("chromium (check browser::available() first)");
    let profile = std::env::temp_dir().join(format!("acp-chromium-{}", uuid::Uuid::new_v4().simple()));
    let mut cmd = Command::new(binary);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
    ])
    .arg("--disable-dev-shm-usage")
    .arg("--hide-scrollbars")
    .arg(format!("--user-data-dir={}", profile.display()));
    if let Some(cookie) = cookie {
        let proxy = CookieProxy::start(cookie).await;
        cmd.arg(format!("--proxy-server=http://{}", proxy))
            .arg("--proxy-bypass-list=<-loopback>");
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .expect("chromium finished in time")
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A forward proxy for plain-HTTP loopback targets that adds one `Cookie` header to every request.
struct CookieProxy;

impl CookieProxy {
    /// Listens on 127.0.0.1 and serves until the test process ends; returns its address.
    async fn start(cookie: &str) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind cookie proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cookie = cookie.to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cookie = cookie.clone();
                tokio::spawn(async move {
                    let _ = forward(client, &cookie).await;
                });
            }
        });
        addr
    }
}

/// Reads one request head in absolute form (`GET http://127.0.0.1:port/path HTTP/1.1`), rewrites it to origin
/// form with the cookie and `Connection: close`, and relays both ways.
async fn forward(mut client: TcpStream, cookie: &str) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let Some((target, rewritten)) = rewrite_head(&head, cookie) else {
        return client
            .write_all(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n")
            .await;
    };
    let mut upstream = TcpStream::connect(target).await?;
    upstream.write_all(rewritten.as_bytes()).await?;
    upstream.write_all(&buffer[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The upstream address and the rewritten head; `None` for anything but an http:// URL on a loopback address.
fn rewrite_head(head: &str, cookie: &str) -> Option<(std::net::SocketAddr, String)> {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, uri, version) = (request_line.next()?, request_line.next()?, request_line.next()?);
    let url = reqwest::Url::parse(uri).ok().filter(|u| u.scheme() == "http")?;
    let target = url
        .socket_addrs(|| Some(80))
        .ok()?
        .into_iter()
        .find(|a| a.ip().is_loopback())?;
    let authority_and_path = uri.get("http://".len()..)?;
    let path = authority_and_path.find('/').map_or("/", |i| &authority_and_path[i..]);
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if !matches!(name.as_str(), "cookie" | "connection" | "proxy-connection") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("Cookie: {cookie}\r\nConnection: close\r\n\r\n"));
    Some((target, out))
}

#[tokio::test]
async fn the_cookie_proxy_hands_the_page_its_cookie() {
    if !available() {
        return;
    }
    // A one-route server echoing the Cookie header it received into the page.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let cookie = request
                    .lines()
                    .find_map(|l| l.strip_prefix("Cookie: ").or_else(|| l.strip_prefix("cookie: ")))
                    .unwrap_or("none")
                    .to_owned();
                let body = format!("<html><body><p id=\"c\">{cookie}</p></body></html>");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    let url = format!("http://{addr}/page");
    let with = render_dom(&url, Some("acp_dashboard=s3cr3t")).await;
    assert!(with.contains("<p id=\"c\">acp_dashboard=s3cr3t</p>"), "{with}");
    let without = render_dom(&url, None).await;
    assert!(without.contains("<p id=\"c\">none</p>"), "{without}");
}
