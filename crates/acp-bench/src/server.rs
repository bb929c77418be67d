//! The acp-merchant release binary under test: built with `scripts/release-build` (or given), started with
//! `serve` pinned to its own CPUs, with a clean environment, and stopped with SIGTERM.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::process::{Child, Command};

use crate::{
    error::BenchError,
    procstat,
    shell::{output, pinned, visible},
};

/// What the results record about the binary measured.
#[derive(Debug, Clone, Serialize)]
pub struct ServerBuild {
    pub binary: PathBuf,
    pub version: String,
    /// The git commit it was built from, when known (`-dirty` when the tree had changes).
    pub commit: Option<String>,
}

/// Builds the release server into `<repo>/target/bench-server/` with the project's own release script.
pub async fn build(repo: &Path) -> Result<ServerBuild, BenchError> {
    let out = repo.join("target/bench-server");
    eprintln!("building the release server (scripts/release-build)…");
    visible(
        Command::new(repo.join("scripts/release-build"))
            .arg(&out)
            .current_dir(repo),
    )
    .await?;
    let commit = git_commit(repo).await;
    describe(out.join("acp-merchant"), commit).await
}

/// Version (and the commit, when the caller knows it) of an existing binary.
pub async fn describe(binary: PathBuf, commit: Option<String>) -> Result<ServerBuild, BenchError> {
    let version = output(Command::new(&binary).arg("--version")).await?.trim().to_owned();
    Ok(ServerBuild {
        binary,
        version,
        commit,
    })
}

async fn git_commit(repo: &Path) -> Option<String> {
    let head = output(Command::new("git").arg("-C").arg(repo).args(["rev-parse", "HEAD"]))
        .await
        .ok()?;
    let dirty = output(
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["status", "--porcelain", "--untracked-files=no"]),
    )
    .await
    .is_ok_and(|s| !s.trim().is_empty());
    Some(format!("{}{}", head.trim(), if dirty { "-dirty" } else { "" }))
}

pub struct Server {
    child: Child,
    pub pid: u32,
    pub base_url: String,
    log: PathBuf,
}

impl Server {
    /// Starts `acp-merchant serve` on a free loopback port with `env` only (no ACP_* or DATABASE_URL from our own
    /// environment), its output appended to `log`.
    pub async fn start(
        build: &ServerBuild,
        cpus: Option<&str>,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self, BenchError> {
        let port = free_port()?;
        let base_url = format!("http://127.0.0.1:{port}");
        let mut command = pinned(cpus, &build.binary);
        command.arg("serve");
        for (key, _) in std::env::vars() {
            if key.starts_with("ACP_") || key == "DATABASE_URL" {
                command.env_remove(key);
            }
        }
        command
            .env("ACP_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("ACP_PUBLIC_BASE_URL", &base_url)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let file = std::fs::File::create(log).map_err(BenchError::io(format!("cannot create {}", log.display())))?;
        let err_file = file
            .try_clone()
            .map_err(BenchError::io("cannot share the server log"))?;
        // Its own process group: a Ctrl-C at the terminal reaches us, and we stop the server in order.
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(BenchError::io(format!("cannot start {}", build.binary.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::Server("exited at once".to_owned()))?;
        Ok(Self {
            child,
            pid,
            base_url,
            log: log.to_owned(),
        })
    }

    /// Polls /readyz until it answers 200 (migrations applied, database reachable).
    pub async fn wait_ready(&mut self, client: &reqwest::Client, within: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Server(format!(
                    "exited ({status}); see {}",
                    self.log.display()
                )));
            }
            let ready = client.get(format!("{}/readyz", self.base_url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Server(format!(
                    "was not ready within {within:?}; see {}",
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn cpu_ticks(&self) -> Option<u64> {
        procstat::own_ticks(self.pid)
    }

    pub fn rss_bytes(&self) -> Option<u64> {
        procstat::status_bytes(self.pid, "VmRSS")
    }

    pub fn peak_rss_bytes(&self) -> Option<u64> {
        procstat::status_bytes(self.pid, "VmHWM")
    }

    pub fn cpus_allowed(&self) -> Option<String> {
        procstat::cpus_allowed(&self.pid.to_string())
    }

    /// SIGTERM, then up to 35 s for in-flight work (the server's own shutdown bound is 30 s), then SIGKILL.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(35), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A loopback port nobody listens on right now (the server binds it a moment later).
fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("cannot find a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(BenchError::io("cannot find a free port"))?
        .port())
}
