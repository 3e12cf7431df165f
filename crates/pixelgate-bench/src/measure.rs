//! One measured run: a load generator against a running server, and what `/proc` says meanwhile.
//!
//! The load is wrk (closed loop: each connection sends its next request when the last is
//! answered, so it finds the peak) or `pixelgate-bench load` (fixed rate, for latency below the
//! peak). Both print one `bench-json {…}` line, read here into [`Measured`]. While the load runs,
//! the server's memory is sampled every 50 ms; its CPU time, its Redis's and the busy time of
//! the cores they run on are read before and after, the load generator's when it has exited.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{
    procfs,
    servers::{Cores, Running},
};

/// The percentiles reported; `bench/wrk/urls.lua` prints the same ones, then 100 (the maximum).
pub const PERCENTILES: [f64; 16] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99,
    99.999,
];

/// What a load generator reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Requests answered.
    pub requests: u64,
    pub duration_us: u64,
    /// Connect, read, write and timeout errors.
    pub errors: u64,
    /// Answers other than 2xx and 3xx (the tampered clicks' 404s in the mix).
    pub non_2xx_3xx: u64,
    /// `(percentile, latency in µs)`, ascending, ending with `(100, maximum)`.
    pub percentiles: Vec<(f64, u64)>,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    /// The latency at a reported percentile, in milliseconds.
    pub fn latency_ms(&self, percentile: f64) -> f64 {
        self.percentiles
            .iter()
            .find(|(p, _)| (p - percentile).abs() < 1e-9)
            .map_or(f64::NAN, |&(_, us)| us as f64 / 1000.0)
    }

    /// From latencies in µs (any order).
    pub fn from_latencies(
        mut latencies: Vec<u64>,
        duration: Duration,
        errors: u64,
        non_2xx_3xx: u64,
    ) -> Self {
        latencies.sort_unstable();
        let at = |p: f64| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            // The smallest latency at or above which p % of them lie; the epsilon keeps
            // 99.9 % of 1000 at rank 999 despite rounding.
            let rank = (p / 100.0 * latencies.len() as f64 - 1e-9).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1]
        };
        let mut percentiles: Vec<(f64, u64)> = PERCENTILES.iter().map(|&p| (p, at(p))).collect();
        percentiles.push((100.0, latencies.last().copied().unwrap_or(0)));
        Self {
            requests: latencies.len() as u64,
            duration_us: duration.as_micros() as u64,
            errors,
            non_2xx_3xx,
            percentiles,
        }
    }

    /// The `bench-json` line of a load generator's output.
    pub fn parse(output: &str) -> anyhow::Result<Self> {
        let line = output
            .lines()
            .find_map(|l| l.strip_prefix(BENCH_JSON))
            .context("no bench-json line in the load generator's output")?;
        serde_json::from_str(line).context("bench-json line")
    }

    /// The line a load generator prints.
    pub fn line(&self) -> anyhow::Result<String> {
        Ok(format!("{BENCH_JSON}{}", serde_json::to_string(self)?))
    }
}

const BENCH_JSON: &str = "bench-json ";

/// What the server did during a run, besides answering.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    /// Wall time from the load's start to its end.
    pub wall_s: f64,
    /// Peak resident memory of the server's processes together, KiB.
    pub rss_peak_kib: u64,
    /// CPU seconds of the server's processes.
    pub server_cpu_s: f64,
    /// CPU seconds of its `redis-server`.
    pub redis_cpu_s: Option<f64>,
    /// CPU seconds of the load generator; `None` when they could not be read.
    #[serde(default)]
    pub load_cpu_s: Option<f64>,
    /// Busy time of the server's cores taken by anything but the server and its Redis (and,
    /// when the load shares those cores, the load generator), as a share of one core.
    pub others_on_server_core: Option<f64>,
    /// Busy share of the load core (near 1.0: the load generator may be the limit); `None`
    /// when the load has no core of its own.
    pub load_core_busy: Option<f64>,
}

/// A load generator's command line, not yet started.
#[derive(Debug, Clone)]
pub enum Load<'a> {
    /// `wrk -t1 -cN -dD -s bench/wrk/urls.lua`.
    Wrk {
        script: &'a Path,
        connections: u32,
        duration: Duration,
    },
    /// `pixelgate-bench load`: a fixed rate over N connections.
    FixedRate {
        rate: f64,
        connections: u32,
        duration: Duration,
    },
}

impl Load<'_> {
    fn spawn(&self, cores: &Cores, addr: SocketAddr, paths: &Path) -> anyhow::Result<Child> {
        let mut cmd = match self {
            Self::Wrk {
                script,
                connections,
                duration,
            } => {
                let mut cmd = Cores::command(cores.load, "wrk");
                cmd.args(["-t1", &format!("-c{connections}")])
                    // wrk takes whole seconds (s, m, h).
                    .arg(format!("-d{}s", duration.as_secs().max(1)))
                    .args(["--timeout", "5s", "-s"])
                    .arg(script)
                    .arg(format!("http://{addr}"))
                    .arg("--")
                    .arg(paths);
                cmd
            }
            Self::FixedRate {
                rate,
                connections,
                duration,
            } => {
                let exe = std::env::current_exe().context("the bench binary's path")?;
                let mut cmd = Cores::command(cores.load, exe);
                cmd.arg("load")
                    .args(["--addr", &addr.to_string()])
                    .arg("--paths")
                    .arg(paths)
                    .args(["--rate", &format!("{rate:.0}")])
                    .args(["--connections", &connections.to_string()])
                    .args(["--duration", &format!("{}ms", duration.as_millis())]);
                cmd
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start the load generator (wrk comes from `make bench-deps`)")
    }
}

/// Runs one load against the server and watches it.
pub fn run(
    running: &Running,
    cores: &Cores,
    load: &Load<'_>,
    paths: &Path,
) -> anyhow::Result<(Measured, Usage)> {
    let before = Snapshot::take(running, cores)?;
    let started = Instant::now();
    let child = load.spawn(cores, running.addr, paths)?;
    let mut rss_peak_kib = 0;
    // Not `try_wait`, which would reap it: an exited load generator is read as a zombie, whose
    // `/proc` entry still holds all its CPU time (it was born after `before`, so that is all of
    // it during the run). Its output is a few lines, so its pipes never fill meanwhile.
    let pid = child.id();
    while !procfs::has_exited(pid) {
        let rss: u64 = running
            .pids()
            .iter()
            .filter_map(|&pid| procfs::rss_kib(pid).ok())
            .sum();
        rss_peak_kib = rss_peak_kib.max(rss);
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed().as_secs_f64();
    let after = Snapshot::take(running, cores)?;
    let load_ticks = procfs::cpu_ticks(pid).ok();
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "load generator failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let measured = Measured::parse(&stdout)?;
    let ticks = |t: u64| t as f64 / procfs::TICKS_PER_SECOND;
    let server_cpu_s = ticks(after.server.saturating_sub(before.server));
    let redis_cpu_s = after
        .redis
        .zip(before.redis)
        .map(|(a, b)| ticks(a.saturating_sub(b)));
    let load_cpu_s = load_ticks.map(ticks);
    // The load generator is someone else on the server's cores only when it has none its own.
    let load_there = match cores.load {
        Some(_) => Some(0.0),
        None => load_cpu_s,
    };
    let ours = server_cpu_s + redis_cpu_s.unwrap_or(0.0);
    let busy = ticks(after.server_cores.saturating_sub(before.server_cores));
    let others_on_server_core = load_there.map(|load| ((busy - ours - load) / wall).max(0.0));
    let load_core_busy = after
        .load_core
        .zip(before.load_core)
        .map(|(a, b)| ticks(a.saturating_sub(b)) / wall);
    Ok((
        measured,
        Usage {
            wall_s: wall,
            rss_peak_kib,
            server_cpu_s,
            redis_cpu_s,
            load_cpu_s,
            others_on_server_core,
            load_core_busy,
        },
    ))
}

/// CPU counters at one instant, in ticks.
struct Snapshot {
    server: u64,
    redis: Option<u64>,
    /// Busy ticks of the server's cores together.
    server_cores: u64,
    load_core: Option<u64>,
}

impl Snapshot {
    fn take(running: &Running, cores: &Cores) -> anyhow::Result<Self> {
        let mut server = 0;
        for &pid in running.pids() {
            server += procfs::cpu_ticks(pid)?;
        }
        let mut server_cores = 0;
        for core in cores.server_cores() {
            server_cores += procfs::core_busy_ticks(core)?;
        }
        Ok(Self {
            server,
            redis: running.redis_pid().map(procfs::cpu_ticks).transpose()?,
            server_cores,
            load_core: cores.load.map(procfs::core_busy_ticks).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_rank() {
        let m = Measured::from_latencies((1..=1000).rev().collect(), Duration::from_secs(2), 0, 0);
        assert_eq!(m.requests, 1000);
        assert_eq!(m.per_second(), 500.0);
        assert_eq!(m.latency_ms(50.0), 0.5);
        assert_eq!(m.latency_ms(99.0), 0.99);
        assert_eq!(m.latency_ms(99.9), 0.999);
        assert_eq!(m.latency_ms(100.0), 1.0);
        assert!(m.latency_ms(42.0).is_nan());
    }

    #[test]
    fn the_line_round_trips_and_wrk_output_parses() {
        let m = Measured::from_latencies(vec![5, 7], Duration::from_secs(1), 1, 2);
        let back = Measured::parse(&format!("noise\n{}\n", m.line().unwrap())).unwrap();
        assert_eq!((back.requests, back.errors, back.non_2xx_3xx), (2, 1, 2));
        let wrk = "Running 1s test\n  1 threads\nbench-json {\"requests\":10,\"duration_us\":1000000,\"errors\":0,\"non_2xx_3xx\":0,\"percentiles\":[[50,120],[99.9,900],[100,1000]]}\n";
        let parsed = Measured::parse(wrk).unwrap();
        assert_eq!(parsed.latency_ms(99.9), 0.9);
        assert_eq!(parsed.per_second(), 10.0);
    }
}
