//! What Linux's /proc says about a process: CPU time (utime + stime, and the reaped children's), memory high-water
//! mark and CPU affinity. Used for the server and for the PostgreSQL processes of the cluster.

use std::{fs, time::Duration};

/// The fields of /proc/<pid>/stat this benchmark reads, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
}

/// Parses /proc/<pid>/stat. The command name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A value in kB of /proc/<pid>/status (`VmRSS`, `VmHWM`), in bytes.
pub fn parse_status_kb(text: &str, key: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    let number = line[key.len() + 1..].split_whitespace().next()?;
    number.parse::<u64>().ok().map(|kb| kb * 1024)
}

pub fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    parse_status_kb(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?, key)
}

/// The CPUs a process may run on, as /proc/<pid>/status lists them (e.g. "0", "0-1").
pub fn cpus_allowed(pid: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
    Some(line["Cpus_allowed_list:".len()..].trim().to_owned())
}

/// CPU time one process used itself (user + system).
pub fn own_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.utime + s.stime)
}

/// CPU time of a process tree one level deep: the parent, its reaped children (cutime/cstime, where exited
/// PostgreSQL backends end up) and its live children. Deltas of this stay right while backends come and go.
pub fn family_ticks(parent: u32) -> Option<u64> {
    let root = stat(parent)?;
    let mut total = root.utime + root.stime + root.cutime + root.cstime;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(child) = stat(pid).filter(|s| s.ppid == parent) {
            total += child.utime + child.stime;
        }
    }
    Some(total)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Share of one core used over `wall`, in percent, from two tick readings.
pub fn cpu_percent(before: Option<u64>, after: Option<u64>, wall: Duration, ticks_per_second: u64) -> Option<f64> {
    let used = after?.checked_sub(before?)? as f64 / ticks_per_second as f64;
    let wall = wall.as_secs_f64();
    (wall > 0.0).then(|| 100.0 * used / wall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (post gres: (x)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 12 3 20 0 1 0 1 1 1";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ppid: 17,
                utime: 250,
                stime: 75,
                cutime: 12,
                cstime: 3
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn status_values_are_read_in_bytes() {
        let text = "Name:\tacp-merchant\nVmHWM:\t   61234 kB\nVmRSS:\t   13000 kB\n";
        assert_eq!(parse_status_kb(text, "VmHWM"), Some(61234 * 1024));
        assert_eq!(parse_status_kb(text, "VmRSS"), Some(13000 * 1024));
        assert_eq!(parse_status_kb(text, "VmSwap"), None);
    }

    #[test]
    fn cpu_percent_is_ticks_over_wall_time() {
        let pct = cpu_percent(Some(100), Some(250), Duration::from_secs(3), 100);
        assert_eq!(pct, Some(50.0));
        assert_eq!(cpu_percent(None, Some(1), Duration::from_secs(1), 100), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let me = std::process::id();
        assert!(own_ticks(me).is_some());
        assert!(status_bytes(me, "VmHWM").is_some_and(|b| b > 0));
        assert!(cpus_allowed("self").is_some());
    }
}
