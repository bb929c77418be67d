//! Child processes: optionally pinned with `taskset`, run to completion with their output captured.

use std::{ffi::OsStr, process::Stdio};

use tokio::process::Command;

use crate::error::BenchError;

/// `program` as a command, under `taskset -c <cpus>` when pinning.
pub fn pinned(cpus: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Runs `command` to completion; its stdout on success, stderr (and stdout) in the error otherwise.
pub async fn output(command: &mut Command) -> Result<String, BenchError> {
    let described = describe(command);
    let out = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(BenchError::io(format!("cannot run `{described}`")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(BenchError::Command {
        command: described,
        detail: format!("{}: {}{}", out.status, stderr.trim(), tail(&stdout)),
    })
}

/// Runs `command` with its output going to ours (long builds show their progress).
pub async fn visible(command: &mut Command) -> Result<(), BenchError> {
    let described = describe(command);
    let status = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(BenchError::io(format!("cannot run `{described}`")))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Command {
            command: described,
            detail: status.to_string(),
        })
    }
}

pub fn describe(command: &Command) -> String {
    let std = command.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn tail(stdout: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines.len().saturating_sub(5);
    if lines.is_empty() {
        String::new()
    } else {
        format!(" | {}", lines[start..].join(" | "))
    }
}
