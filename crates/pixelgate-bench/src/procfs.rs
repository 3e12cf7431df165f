//! What the benchmark reads from `/proc`: CPU time and memory of processes, busy time of cores.
//!
//! CPU time is counted in clock ticks (`USER_HZ`, 100 a second on Linux), so a figure is only
//! as fine as 10 ms of CPU over a run; runs last seconds and use seconds of CPU, so that is
//! below one percent.

use std::{fs, path::Path};

use anyhow::Context as _;

/// Clock ticks per second in `/proc/*/stat` and `/proc/stat`: `USER_HZ`, 100 on Linux.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time of a process (all its threads), in ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let fields = stat_fields(pid)?;
    // After the command name: state is field 3, utime 14 and stime 15 (man 5 proc).
    let number = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i - 3)
            .with_context(|| format!("/proc/{pid}/stat: no field {i}"))?
            .parse()
            .with_context(|| format!("/proc/{pid}/stat: field {i}"))
    };
    Ok(number(14)? + number(15)?)
}

/// Whether a process has exited: a zombie (exited, not yet reaped, its `/proc` entry still
/// holding all of its CPU time, which waiting for it would take away) or gone.
pub fn has_exited(pid: u32) -> bool {
    stat_fields(pid)
        .ok()
        .and_then(|f| f.into_iter().next())
        .is_none_or(|state| state == "Z" || state == "X")
}

/// The parent of a process.
fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid).ok()?.get(1)?.parse().ok()
}

/// `/proc/PID/stat` from the state field on: the command name may hold spaces and parentheses,
/// so everything up to its last `)` is skipped.
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no command name"))?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// Resident memory of a process, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    kib_field(Path::new(&path), "VmRSS:").with_context(|| format!("{path}: no VmRSS"))
}

/// A `Name:   1234 kB` line of `/proc/PID/status` or `/proc/meminfo`.
fn kib_field(path: &Path, field: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The processes whose parent is `pid` (nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent(child) == Some(pid))
        .collect()
}

/// Busy (not idle, not waiting for I/O) ticks of one core since boot, from `/proc/stat`.
pub fn core_busy_ticks(core: usize) -> anyhow::Result<u64> {
    let text = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let name = format!("cpu{core}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("/proc/stat: no {name}"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is counted in user already).
    const BUSY: [usize; 6] = [0, 1, 2, 5, 6, 7];
    Ok(BUSY.iter().filter_map(|&i| ticks.get(i)).sum())
}

/// The cores this process may run on (`Cpus_allowed_list`, e.g. `0-1` or `0,2-3`).
pub fn allowed_cores() -> anyhow::Result<Vec<usize>> {
    let text = fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let list = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .context("/proc/self/status: no Cpus_allowed_list")?;
    let mut cores = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => cores.extend(a.parse::<usize>()?..=b.parse::<usize>()?),
            None => cores.push(part.parse()?),
        }
    }
    Ok(cores)
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The machine in one line: CPU model, cores, memory.
pub fn machine() -> String {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = kib_field(Path::new("/proc/meminfo"), "MemTotal:")
        .map_or_else(|| "unknown".into(), |k| format!("{} GiB", k / 1024 / 1024));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, {memory}, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        cpu_ticks(me).unwrap();
        assert!(!has_exited(me));
        let parent = parent(me).unwrap();
        assert!(children(parent).contains(&me));
        assert!(!allowed_cores().unwrap().is_empty());
        core_busy_ticks(allowed_cores().unwrap()[0]).unwrap();
    }

    #[test]
    fn an_exited_child_is_read_until_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        pixelgate_tests::wait_for(
            "the child to exit",
            std::time::Duration::from_secs(10),
            || has_exited(pid).then_some(()),
        );
        // Not reaped yet: still there to be read.
        cpu_ticks(pid).unwrap();
        child.wait().unwrap();
        assert!(cpu_ticks(pid).is_err());
    }
}
