//! `make bench`, side by side: pixelgate, nginx + Lua + Redis, bare hyper, nginx's `empty_gif`.
//!
//! - [`servers`]: each server started fresh (its own `redis-server`, same settings), in one
//!   [`Placement`]: pinned (server and Redis on one core, load on another) or shared (nothing
//!   pinned); stopped on drop.
//! - [`floor`]: bare hyper answering pixelgate's pixel (`pixelgate-bench floor`).
//! - [`tokens`]: the request paths (opens, clicks, the mix with 10 % tampered) in each server's
//!   token format.
//! - [`measure`]: one run of wrk or of the fixed-rate load, with CPU and memory from [`procfs`].
//! - [`load`]: the fixed-rate load generator (`pixelgate-bench load`).
//! - [`report`], [`plot`]: the generated section of `docs/benchmarks.md` and its SVG plots.
//!
//! Invariant: every figure in the report comes from one run of [`run`], saved whole as JSON
//! (`target/bench/results.json`), so the report and plots can be redrawn without measuring again.

pub mod floor;
pub mod load;
pub mod measure;
pub mod plot;
pub mod procfs;
pub mod report;
pub mod servers;
pub mod tokens;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

pub use crate::servers::Placement;
use crate::{
    measure::{Load, Measured, Usage},
    servers::{Cores, Running, Server, Setup},
    tokens::Workload,
};

/// What to measure and where to write it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The release `pixelgate` binary.
    pub pixelgate: PathBuf,
    /// The repository's `bench/` folder.
    pub bench_dir: PathBuf,
    /// Where the path lists, results.json and logs go (`target/bench`).
    pub work_dir: PathBuf,
    pub servers: Vec<Server>,
    /// Where they run, each placement measuring every server.
    pub placements: Vec<Placement>,
    /// wrk connection counts.
    pub connections: Vec<u32>,
    /// Length of each wrk run.
    pub duration: Duration,
    /// Length of each fixed-rate run (at half of each server's peak opens/s, over the
    /// connection count of that peak).
    pub fixed_duration: Duration,
}

/// Everything one `make bench` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub info: RunInfo,
    pub runs: Vec<Run>,
}

/// Where and with what the figures were taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// Unix seconds at the start.
    pub started: u64,
    pub minutes: f64,
    pub machine: String,
    /// `(program, version)`.
    pub versions: Vec<(String, String)>,
    /// The pinned placement's cores.
    pub server_core: Option<usize>,
    pub load_core: Option<usize>,
    /// Every core the bench could use: what the shared placement spreads over.
    #[serde(default)]
    pub cores: Vec<usize>,
    pub load_average_before: String,
    pub load_average_after: String,
    pub duration_s: f64,
    pub fixed_duration_s: f64,
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub server: Server,
    #[serde(default)]
    pub placement: Placement,
    pub workload: Workload,
    pub connections: u32,
    /// The target rate of a fixed-rate run; `None` for wrk (closed loop).
    pub fixed_rate: Option<f64>,
    pub measured: Measured,
    pub usage: Usage,
    /// Events in Redis after the run, for the servers that record them.
    pub events: Option<u64>,
    /// `RPUSH` calls its Redis served during the run (`INFO commandstats`), for the servers
    /// that record events.
    #[serde(default)]
    pub rpush_calls: Option<u64>,
}

impl Run {
    /// Events each `RPUSH` carried, on average: how large the batches were.
    pub fn events_per_rpush(&self) -> Option<f64> {
        let (events, calls) = self.events.zip(self.rpush_calls)?;
        (calls > 0).then(|| events as f64 / calls as f64)
    }

    /// CPU seconds of server and Redis together.
    pub fn cpu_s(&self) -> f64 {
        self.usage.server_cpu_s + self.usage.redis_cpu_s.unwrap_or(0.0)
    }
}

impl Results {
    /// The runs of one placement, as results of their own: every other method then reads only
    /// that placement.
    pub fn placed(&self, placement: Placement) -> Self {
        Self {
            info: self.info.clone(),
            runs: self
                .runs
                .iter()
                .filter(|r| r.placement == placement)
                .cloned()
                .collect(),
        }
    }

    /// The placements measured, in the order of [`Placement::ALL`].
    pub fn placements(&self) -> Vec<Placement> {
        Placement::ALL
            .into_iter()
            .filter(|p| self.runs.iter().any(|r| r.placement == *p))
            .collect()
    }

    /// The closed-loop runs of one server and workload, by connection count.
    pub fn closed(&self, server: Server, workload: Workload) -> Vec<&Run> {
        self.runs
            .iter()
            .filter(|r| r.server == server && r.workload == workload && r.fixed_rate.is_none())
            .collect()
    }

    /// The fixed-rate run of a server.
    pub fn fixed(&self, server: Server) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.server == server && r.fixed_rate.is_some())
    }

    /// The best closed-loop rate of a server and workload, and the run that gave it.
    pub fn peak(&self, server: Server, workload: Workload) -> Option<&Run> {
        self.closed(server, workload)
            .into_iter()
            .max_by(|a, b| a.measured.per_second().total_cmp(&b.measured.per_second()))
    }

    /// The connection counts of the closed-loop runs, ascending.
    pub fn connections(&self) -> Vec<u32> {
        let mut connections: Vec<u32> = self
            .runs
            .iter()
            .filter(|r| r.fixed_rate.is_none())
            .map(|r| r.connections)
            .collect();
        connections.sort_unstable();
        connections.dedup();
        connections
    }

    /// The servers measured, in the order of [`Server::ALL`].
    pub fn servers(&self) -> Vec<Server> {
        Server::ALL
            .into_iter()
            .filter(|s| self.runs.iter().any(|r| r.server == *s))
            .collect()
    }
}

/// Measures every server in every placement, saves `results.json` in the work folder and
/// returns the results.
pub fn run(options: &Options) -> anyhow::Result<Results> {
    let started = SystemTime::now();
    let allowed = procfs::allowed_cores()?;
    fs::create_dir_all(&options.work_dir)?;
    let bench_dir = fs::canonicalize(&options.bench_dir)
        .with_context(|| format!("{}", options.bench_dir.display()))?;
    let pinned = Cores::place(Placement::Pinned, &allowed);
    let load_average_before = procfs::load_average();
    let mut runs = Vec::new();
    // Placement by placement, every server within one: the goals compare servers within a
    // placement, so each placement's servers are measured in one stretch of time, and a host
    // that turns faster or slower in between (a VM's neighbours) moves both sides of a ratio
    // alike. Interleaved, a pinned and a shared run of one server would be closer in time, but
    // no goal compares those.
    for &placement in &options.placements {
        let Some(cores) = Cores::place(placement, &allowed) else {
            eprintln!("{placement}: one core only, no server and load core apart; skipped");
            continue;
        };
        let setup = Setup {
            pixelgate: options.pixelgate.clone(),
            bench_dir: bench_dir.clone(),
            cores,
        };
        for &server in &options.servers {
            runs.extend(measure_server(server, &setup, options)?);
        }
    }
    let info = RunInfo {
        started: unix_seconds(started),
        minutes: started.elapsed().unwrap_or_default().as_secs_f64() / 60.0,
        machine: procfs::machine(),
        versions: versions(&options.pixelgate),
        server_core: pinned.as_ref().and_then(|c| c.server),
        load_core: pinned.as_ref().and_then(|c| c.load),
        cores: allowed,
        load_average_before,
        load_average_after: procfs::load_average(),
        duration_s: options.duration.as_secs_f64(),
        fixed_duration_s: options.fixed_duration.as_secs_f64(),
    };
    let results = Results { info, runs };
    let path = options.work_dir.join("results.json");
    fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    eprintln!("results in {}", path.display());
    Ok(results)
}

/// Every run of one server: warm-up, each workload at each connection count, then the fixed
/// rate at half of its peak opens/s.
fn measure_server(server: Server, setup: &Setup, options: &Options) -> anyhow::Result<Vec<Run>> {
    let running = Running::start(server, setup)?;
    let placement = setup.cores.placement;
    eprintln!("{server} ({placement}): serving on {}", running.addr);
    let mut paths = Vec::new();
    for &workload in server.workloads() {
        let file = options.work_dir.join(format!(
            "paths-{placement}-{}-{}.txt",
            slug(server.name()),
            slug(workload.name())
        ));
        fs::write(&file, running.signer.paths(workload)?.join("\n") + "\n")?;
        paths.push((workload, file));
    }
    check_answers(&running)?;
    let script = setup.bench_dir.join("wrk/urls.lua");
    let opens = &paths[0].1;
    let max_connections = options.connections.iter().copied().max().unwrap_or(64);
    let warm_up = Load::Wrk {
        script: &script,
        connections: max_connections,
        duration: Duration::from_secs(2),
    };
    measure::run(&running, &setup.cores, &warm_up, opens)?;

    let mut runs = Vec::new();
    for (workload, file) in &paths {
        for &connections in &options.connections {
            let load = Load::Wrk {
                script: &script,
                connections,
                duration: options.duration,
            };
            let run = one_run(
                &running,
                &setup.cores,
                &load,
                file,
                *workload,
                connections,
                None,
            )?;
            runs.push(run);
        }
    }
    // Half of the best opens/s, over as many connections as gave it: fewer could not carry
    // the rate if latency rose, and the run would measure the load generator's limit.
    let (peak, connections) = runs
        .iter()
        .filter(|r| r.workload == Workload::Opens)
        .map(|r| (r.measured.per_second(), r.connections))
        .fold((0.0, max_connections), |best, run| {
            if run.0 > best.0 { run } else { best }
        });
    let rate = (peak / 2.0).max(100.0);
    let load = Load::FixedRate {
        rate,
        connections,
        duration: options.fixed_duration,
    };
    let run = one_run(
        &running,
        &setup.cores,
        &load,
        opens,
        Workload::Opens,
        connections,
        Some(rate),
    )?;
    runs.push(run);
    Ok(runs)
}

fn one_run(
    running: &Running,
    cores: &Cores,
    load: &Load<'_>,
    paths: &Path,
    workload: Workload,
    connections: u32,
    fixed_rate: Option<f64>,
) -> anyhow::Result<Run> {
    running.clear_queue();
    let rpush_before = running.rpush_calls()?;
    let (measured, usage) = measure::run(running, cores, load, paths)?;
    let events = running
        .server
        .records()
        .then(|| running.queue_len())
        .transpose()?;
    let rpush_calls = running
        .rpush_calls()?
        .zip(rpush_before)
        .map(|(after, before)| after.saturating_sub(before));
    running.clear_queue();
    let run = Run {
        server: running.server,
        placement: cores.placement,
        workload,
        connections,
        fixed_rate,
        measured,
        usage,
        events,
        rpush_calls,
    };
    eprintln!("{}", report::summary(&run));
    Ok(run)
}

/// Before measuring: a valid open is a GIF and one event, a valid click a 302 and one event,
/// a tampered click a 404 and none (the servers that record nothing answer opens only, and
/// record none). A server that fails this would be measured doing the wrong thing.
fn check_answers(running: &Running) -> anyhow::Result<()> {
    let server = running.server;
    let mix = running.signer.paths(Workload::Mix)?;
    // The mix starts open, click, …; pair 4 (paths 8 and 9) is tampered.
    let mut cases = vec![(&mix[0], 200, 1)];
    if server.workloads().contains(&Workload::Clicks) {
        cases.extend([(&mix[1], 302, 1), (&mix[9], 404, 0), (&mix[8], 200, 0)]);
    }
    for (path, status, events) in cases {
        running.clear_queue();
        let reply = running.get(path)?;
        let got = reply.status.as_u16();
        let recorded = running.queue_len()?;
        let want_events = if server.records() { events } else { 0 };
        if got != status || recorded != want_events {
            bail!(
                "{server}: GET {path} gave {got} and {recorded} events, expected {status} and {want_events}"
            );
        }
        let is_open = path.starts_with("/o/");
        let gif =
            reply.header("content-type") == Some("image/gif") && reply.body.starts_with(b"GIF89a");
        if is_open && !gif {
            bail!(
                "{server}: GET {path} answered {:?} ({} bytes), not a GIF",
                reply.header("content-type"),
                reply.body.len()
            );
        }
    }
    running.clear_queue();
    Ok(())
}

/// The versions of what was measured.
fn versions(pixelgate: &Path) -> Vec<(String, String)> {
    let first_line = |program: &Path, args: &[&str]| -> String {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|| "not found".into())
    };
    let package =
        |name: &str| first_line(Path::new("dpkg-query"), &["-W", "-f", "${Version}", name]);
    let commit = first_line(Path::new("git"), &["rev-parse", "--short", "HEAD"]);
    vec![
        (
            "pixelgate".into(),
            format!(
                "{} (commit {commit})",
                first_line(pixelgate, &["--version"])
            ),
        ),
        ("nginx".into(), first_line(Path::new("nginx"), &["-v"])),
        (
            "libnginx-mod-http-lua".into(),
            package("libnginx-mod-http-lua"),
        ),
        ("lua-nginx-redis".into(), package("lua-nginx-redis")),
        (
            "redis-server".into(),
            first_line(Path::new("redis-server"), &["--version"]),
        ),
        ("wrk".into(), first_line(Path::new("wrk"), &["-v"])),
        (
            "rustc".into(),
            first_line(Path::new("rustc"), &["--version"]),
        ),
    ]
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A name as a file-name part: `nginx + Lua + Redis` → `nginx-lua-redis`.
fn slug(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}
