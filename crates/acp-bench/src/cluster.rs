//! The durable PostgreSQL cluster, provisioned with the project's own `scripts/pg-local` (the helper the tests
//! use), restarted under the load CPUs' pinning, with one fresh database per run.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    error::BenchError,
    procstat,
    shell::{output, pinned},
};

/// The settings that decide how fast a durable commit can be; recorded with every result.
const RECORDED_SETTINGS: &[&str] = &[
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "wal_level",
    "wal_buffers",
    "commit_delay",
    "shared_buffers",
    "max_connections",
    "max_wal_size",
    "checkpoint_timeout",
    "effective_io_concurrency",
    "jit",
];

pub struct Cluster {
    name: String,
    repo: PathBuf,
    /// postgres://postgres@127.0.0.1:PORT/postgres
    admin_url: String,
    data_dir: PathBuf,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct PgFacts {
    pub version: String,
    pub settings: BTreeMap<String, String>,
    pub cpus_allowed: Option<String>,
}

impl Cluster {
    /// Starts cluster `name` (creating it when missing) pinned to `cpus`: a running one is stopped first, since a
    /// process's CPU affinity is set when it starts.
    pub async fn provision(repo: &Path, name: &str, cpus: Option<&str>) -> Result<Self, BenchError> {
        let script = repo.join("scripts/pg-local");
        output(tokio::process::Command::new(&script).args(["stop", name])).await?;
        let url = output(pinned(cpus, &script).args(["url", name]))
            .await?
            .trim()
            .to_owned();
        let dir = output(tokio::process::Command::new(&script).args(["dir", name])).await?;
        let (host, port) = host_port(&url).ok_or_else(|| BenchError::Setup(format!("unexpected URL {url}")))?;
        Ok(Self {
            name: name.to_owned(),
            repo: repo.to_owned(),
            admin_url: url,
            data_dir: PathBuf::from(dir.trim()).join("data"),
            host,
            port,
        })
    }

    pub async fn stop(&self) -> Result<(), BenchError> {
        let script = self.repo.join("scripts/pg-local");
        output(tokio::process::Command::new(script).args(["stop", &self.name]))
            .await
            .map(drop)
    }

    /// URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}:{}/{db}", self.host, self.port)
    }

    /// Runs SQL through psql on the maintenance database (or `db`); returns the unaligned, tuples-only output.
    pub async fn psql(&self, db: Option<&str>, sql: &str) -> Result<String, BenchError> {
        let url = db.map_or_else(|| self.admin_url.clone(), |db| self.url(db));
        output(
            tokio::process::Command::new("psql")
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(url)
                .arg("-c")
                .arg(sql),
        )
        .await
    }

    pub async fn create_database(&self, db: &str) -> Result<(), BenchError> {
        self.psql(None, &format!("create database {db}")).await.map(drop)
    }

    pub async fn drop_database(&self, db: &str) -> Result<(), BenchError> {
        self.psql(None, &format!("drop database if exists {db} with (force)"))
            .await
            .map(drop)
    }

    /// Version and durability settings; refuses a cluster that does not flush commits to disk.
    pub async fn facts(&self) -> Result<PgFacts, BenchError> {
        let version = self.psql(None, "show server_version").await?.trim().to_owned();
        let names = RECORDED_SETTINGS
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(",");
        let rows = self
            .psql(
                None,
                &format!("select name, setting || coalesce(' ' || unit, '') from pg_settings where name in ({names})"),
            )
            .await?;
        let settings: BTreeMap<String, String> = rows
            .lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for durable in ["fsync", "synchronous_commit"] {
            if settings.get(durable).map(String::as_str) != Some("on") {
                return Err(BenchError::Setup(format!(
                    "cluster {} has {durable} = {:?}; the benchmark needs a durable cluster",
                    self.name,
                    settings.get(durable)
                )));
            }
        }
        let cpus_allowed = self
            .postmaster_pid()
            .and_then(|pid| procstat::cpus_allowed(&pid.to_string()));
        Ok(PgFacts {
            version,
            settings,
            cpus_allowed,
        })
    }

    /// The postmaster's pid: the first line of postmaster.pid.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// CPU ticks of every process of the cluster so far (postmaster, backends, background processes).
    pub fn cpu_ticks(&self) -> Option<u64> {
        procstat::family_ticks(self.postmaster_pid()?)
    }
}

fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("postgres://")?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = host_port.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_come_from_the_pg_local_url() {
        assert_eq!(
            host_port("postgres://postgres@127.0.0.1:54931/postgres"),
            Some(("127.0.0.1".to_owned(), 54931))
        );
        assert_eq!(host_port("mysql://x"), None);
    }
}
