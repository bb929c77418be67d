//! The database's own limits on the same cluster, in the same run, with the same pinning: L1, one ~500-byte row
//! insert per transaction (a durable commit each, like a checkout POST), and L2, pgbench's select-only workload
//! (like a session GET).

use std::{path::Path, time::Duration};

use serde::Serialize;

use crate::{
    cluster::Cluster,
    error::BenchError,
    shell::{describe, output, pinned},
};

/// The L1 table: a bigserial key (one index to maintain, as every real table has) and a ~512-byte payload.
const L1_TABLE: &str = "create table if not exists bench_l1 (id bigserial primary key, payload text not null)";
/// 16 × md5 = 512 bytes that vary per row (not compressed: below the TOAST threshold anyway).
const L1_SCRIPT: &str = "insert into bench_l1 (payload) values (repeat(md5(random()::text), 16));\n";

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub name: &'static str,
    pub clients: usize,
    pub tps: f64,
    pub latency_avg_ms: Option<f64>,
    pub command: String,
}

pub struct Pgbench<'a> {
    pub cluster: &'a Cluster,
    pub db: &'a str,
    pub cpus: Option<&'a str>,
    pub jobs: usize,
    pub duration: Duration,
}

impl Pgbench<'_> {
    /// L1: `clients` clients each inserting one row per transaction, from a custom script (`pgbench -f`).
    pub async fn l1(&self, clients: usize, scratch: &Path) -> Result<Baseline, BenchError> {
        self.cluster.psql(Some(self.db), L1_TABLE).await?;
        let script = scratch.join("acp-bench-l1.sql");
        tokio::fs::write(&script, L1_SCRIPT)
            .await
            .map_err(|source| BenchError::Write {
                path: script.clone(),
                source,
            })?;
        let mut args = vec!["-n".to_owned(), "-f".to_owned(), script.display().to_string()];
        args.extend(self.load_args(clients));
        let result = self.run("L1 insert", clients, &args).await;
        let _ = tokio::fs::remove_file(&script).await;
        result
    }

    /// L2: `pgbench -i -s scale` then `clients` clients of `pgbench -S` (select-only).
    pub async fn l2(&self, clients: usize, scale: u32) -> Result<Baseline, BenchError> {
        let mut init = pinned(self.cpus, "pgbench");
        init.args(["-i", "-q", "-s", &scale.to_string()])
            .args(self.connection_args());
        output(&mut init).await?;
        let mut args = vec!["-S".to_owned()];
        args.extend(self.load_args(clients));
        self.run("L2 select-only", clients, &args).await
    }

    fn connection_args(&self) -> Vec<String> {
        vec![
            "-h".to_owned(),
            self.cluster.host.clone(),
            "-p".to_owned(),
            self.cluster.port.to_string(),
            "-U".to_owned(),
            "postgres".to_owned(),
            self.db.to_owned(),
        ]
    }

    fn load_args(&self, clients: usize) -> Vec<String> {
        let mut args = vec![
            "-c".to_owned(),
            clients.to_string(),
            "-j".to_owned(),
            self.jobs.min(clients).max(1).to_string(),
            "-T".to_owned(),
            self.duration.as_secs().max(1).to_string(),
        ];
        args.extend(self.connection_args());
        args
    }

    async fn run(&self, name: &'static str, clients: usize, args: &[String]) -> Result<Baseline, BenchError> {
        let mut command = pinned(self.cpus, "pgbench");
        command.args(args);
        let described = describe(&command);
        eprintln!("pgbench {name}: {clients} clients…");
        let text = output(&mut command).await?;
        let tps = parse_tps(&text).ok_or_else(|| BenchError::Command {
            command: described.clone(),
            detail: format!("no tps in its output: {text}"),
        })?;
        Ok(Baseline {
            name,
            clients,
            tps,
            latency_avg_ms: parse_latency_ms(&text),
            command: described,
        })
    }
}

/// `tps = 12495.123456 (without initial connection time)`.
pub fn parse_tps(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `latency average = 5.122 ms`.
pub fn parse_latency_ms(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("latency average = "))
        .and_then(|rest| rest.strip_suffix(" ms"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "transaction type: <builtin: select only>\nscaling factor: 1\nnumber of clients: 16\n\
        latency average = 0.474 ms\ninitial connection time = 12.001 ms\n\
        tps = 33735.118233 (without initial connection time)\n";

    #[test]
    fn tps_and_latency_are_read_from_pgbench_output() {
        assert_eq!(parse_tps(OUTPUT), Some(33735.118233));
        assert_eq!(parse_latency_ms(OUTPUT), Some(0.474));
        assert_eq!(parse_tps("nothing"), None);
    }
}
