//! The four servers under test, each started fresh in a temporary folder and stopped on drop.
//!
//! In the pinned placement every server process, and the `redis-server` of those that record
//! events, runs on one core (the server core), the load generator on another; in the shared one
//! nothing is pinned. Each Redis is started by the test harness with the same settings (no
//! persistence), and each server gets as many workers as CPUs, so they differ only in themselves.

use std::{
    fmt, fs,
    io::Write as _,
    net::SocketAddr,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pixelgate_core::{KeyId, Keyring, Secret};
use pixelgate_tests::{
    RedisServer, free_port,
    http::{self, Reply},
    resp,
};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use crate::{
    procfs,
    tokens::{Signer, Workload},
};

/// The Redis key both recording servers push events to (pixelgate's default `queue.key`).
pub const QUEUE_KEY: &str = "pixelgate:events";

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One of the servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Server {
    /// `pixelgate serve`, release build.
    Pixelgate,
    /// nginx answering `empty_gif`: records nothing, the ceiling.
    EmptyGif,
    /// nginx + ngx_lua + lua-resty-redis: checks an HMAC, one `RPUSH` per event.
    NginxLua,
    /// `pixelgate-bench floor`: bare hyper answering pixelgate's pixel, the framework's floor.
    BareHyper,
}

impl Server {
    /// In the order of the report: pixelgate, then what it is compared with.
    pub const ALL: [Self; 4] = [
        Self::Pixelgate,
        Self::NginxLua,
        Self::BareHyper,
        Self::EmptyGif,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pixelgate => "pixelgate",
            Self::EmptyGif => "nginx empty_gif",
            Self::NginxLua => "nginx + Lua + Redis",
            Self::BareHyper => "bare hyper",
        }
    }

    /// What this server is driven with: the two that record nothing have no clicks and check
    /// no token.
    pub fn workloads(self) -> &'static [Workload] {
        match self {
            Self::Pixelgate | Self::NginxLua => &Workload::ALL,
            Self::EmptyGif | Self::BareHyper => &[Workload::Opens],
        }
    }

    /// Whether it records events in Redis.
    pub fn records(self) -> bool {
        match self {
            Self::Pixelgate | Self::NginxLua => true,
            Self::EmptyGif | Self::BareHyper => false,
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the servers, their Redis and the load generator run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
// Lowercase, as `--placements` spells them.
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Each server and its Redis pinned to one core, the load to another; one worker each. A
    /// run saved before placements existed was pinned.
    #[default]
    Pinned,
    /// Nothing pinned: servers, Redis and load share every core; one worker per core.
    Shared,
}

impl Placement {
    pub const ALL: [Self; 2] = [Self::Pinned, Self::Shared];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::Shared => "shared",
        }
    }

    /// What this placement's plot files end with, before `.svg`: nothing for the pinned one,
    /// whose plots kept their names when the shared one came.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Pinned => "",
            Self::Shared => "-shared",
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One placement on this machine's cores.
#[derive(Debug, Clone)]
pub struct Cores {
    pub placement: Placement,
    /// Every core this process may use.
    pub allowed: Vec<usize>,
    /// Where the servers and their Redis are pinned; `None`: not pinned.
    pub server: Option<usize>,
    /// Where the load generator is pinned; `None`: not pinned.
    pub load: Option<usize>,
}

impl Cores {
    /// `placement` on the `allowed` cores: pinned takes the first two, so it needs two.
    pub fn place(placement: Placement, allowed: &[usize]) -> Option<Self> {
        let (server, load) = match (placement, allowed) {
            (Placement::Pinned, [server, load, ..]) => (Some(*server), Some(*load)),
            (Placement::Pinned, _) => return None,
            (Placement::Shared, _) => (None, None),
        };
        Some(Self {
            placement,
            allowed: allowed.to_vec(),
            server,
            load,
        })
    }

    /// The workers a server is given (nginx's processes, pixelgate's accept loops): one per
    /// CPU it may use, as pixelgate's and bare hyper's runtimes size themselves.
    pub fn workers(&self) -> usize {
        match self.placement {
            Placement::Pinned => 1,
            Placement::Shared => self.allowed.len().max(1),
        }
    }

    /// The cores the servers run on, whose busy time is read to see what else ran there.
    pub fn server_cores(&self) -> Vec<usize> {
        match self.server {
            Some(core) => vec![core],
            None => self.allowed.clone(),
        }
    }

    /// `program`, run through `taskset` on `core` when there is one.
    pub fn command(core: Option<usize>, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match core {
            Some(core) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(core.to_string()).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// Moves every thread of a running process to the server core.
    fn pin_to_server(&self, pid: u32) -> anyhow::Result<()> {
        let Some(core) = self.server else {
            return Ok(());
        };
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
            .stdout(Stdio::null())
            .status()
            .context("run taskset")?;
        if !status.success() {
            bail!("taskset -a -p -c {core} {pid} failed");
        }
        Ok(())
    }
}

/// What starting a server needs.
#[derive(Debug)]
pub struct Setup {
    /// The release `pixelgate` binary.
    pub pixelgate: PathBuf,
    /// The repository's `bench/` folder (nginx templates, Lua, wrk scripts), absolute.
    pub bench_dir: PathBuf,
    /// The placement measured.
    pub cores: Cores,
}

/// A started server. Dropping it stops the server, then its Redis.
#[derive(Debug)]
pub struct Running {
    pub server: Server,
    /// Where it answers pixels and clicks.
    pub addr: SocketAddr,
    /// Makes the tokens it accepts.
    pub signer: Signer,
    child: Child,
    /// The server's processes (nginx: master and worker).
    pids: Vec<u32>,
    redis: Option<RedisServer>,
    dir: TempDir,
}

impl Running {
    pub fn start(server: Server, setup: &Setup) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pixelgate-bench-")
            .tempdir()
            .context("make a temporary folder")?;
        let redis = if server.records() {
            let redis = RedisServer::start();
            let pid = redis.pid().context("redis-server has no pid")?;
            setup.cores.pin_to_server(pid)?;
            Some(redis)
        } else {
            None
        };
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let secret = Secret::generate()?;
        let (child, signer) = match server {
            Server::Pixelgate => {
                let redis_url = redis.as_ref().map(RedisServer::url).unwrap_or_default();
                let child = start_pixelgate(setup, dir.path(), port, &redis_url, &secret)?;
                let keys = Keyring::new([(KeyId(1), secret)])?;
                (child, Signer::Sealed(keys))
            }
            Server::NginxLua | Server::EmptyGif => {
                let redis_port = redis.as_ref().map_or(0, RedisServer::port);
                let key = secret.to_string();
                let child = start_nginx(server, setup, dir.path(), port, redis_port, &key)?;
                let signer = match server {
                    Server::NginxLua => Signer::Hmac(key.into_bytes()),
                    // empty_gif answers any /o/ path: give it pixelgate's.
                    _ => Signer::Sealed(Keyring::new([(KeyId(1), secret)])?),
                };
                (child, signer)
            }
            Server::BareHyper => {
                let child = start_floor(setup, dir.path(), port)?;
                // The floor answers any path: give it pixelgate's.
                (child, Signer::Sealed(Keyring::new([(KeyId(1), secret)])?))
            }
        };
        let mut running = Self {
            server,
            addr,
            signer,
            pids: vec![child.id()],
            child,
            redis,
            dir,
        };
        running.wait_until_serving(setup.cores.workers())?;
        Ok(running)
    }

    /// The server's processes.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    pub fn redis_pid(&self) -> Option<u32> {
        self.redis.as_ref().and_then(RedisServer::pid)
    }

    /// Events in the queue.
    pub fn queue_len(&self) -> anyhow::Result<u64> {
        let Some(redis) = &self.redis else {
            return Ok(0);
        };
        match redis.call(&["LLEN", QUEUE_KEY]) {
            resp::Reply::Int(n) => Ok(u64::try_from(n)?),
            other => bail!("LLEN {QUEUE_KEY}: {other:?}"),
        }
    }

    /// `RPUSH` calls its Redis has served since it started; `None` without a Redis.
    pub fn rpush_calls(&self) -> anyhow::Result<Option<u64>> {
        let Some(redis) = &self.redis else {
            return Ok(None);
        };
        let info = redis
            .call(&["INFO", "commandstats"])
            .text()
            .context("INFO commandstats: no text")?;
        rpush_calls(&info).map(Some)
    }

    /// Empties the queue (between runs, so Redis's memory stays small).
    pub fn clear_queue(&self) {
        if let Some(redis) = &self.redis {
            redis.call(&["DEL", QUEUE_KEY]);
        }
    }

    /// Asks `path` once on a fresh connection; the whole answer.
    pub fn get(&self, path: &str) -> anyhow::Result<Reply> {
        http::get(self.addr, path).with_context(|| format!("GET {path} from {}", self.server))
    }

    /// The server's log, for error messages.
    fn log(&self) -> String {
        let name = match self.server {
            Server::Pixelgate => "pixelgate.log",
            Server::EmptyGif | Server::NginxLua => "error.log",
            Server::BareHyper => "floor.log",
        };
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits until a pixel is answered; for nginx, also until all its workers are there, so
    /// their CPU and memory are counted from the first run.
    fn wait_until_serving(&mut self, workers: usize) -> anyhow::Result<()> {
        let children = match self.server {
            Server::EmptyGif | Server::NginxLua => workers,
            Server::Pixelgate | Server::BareHyper => 0,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited at start ({status}): {}", self.server, self.log());
            }
            let answered = http::get(self.addr, "/o/x.gif").is_ok();
            let found = procfs::children(self.child.id());
            if answered && found.len() >= children {
                self.pids.extend(found);
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer within {START_TIMEOUT:?}: {}",
                    self.server,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pixelgate serve` with a key of its own, logging warnings only, rate limits out of the way
/// (every request comes from 127.0.0.1), one accept loop per worker (its default, written out).
fn start_pixelgate(
    setup: &Setup,
    dir: &Path,
    port: u16,
    redis_url: &str,
    secret: &Secret,
) -> anyhow::Result<Child> {
    let keys = dir.join("keys");
    fs::create_dir(&keys)?;
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o700))?;
    let mut key = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(keys.join("1.key"))?;
    writeln!(key, "{secret}")?;
    let admin = free_port();
    let accept_loops = setup.cores.workers();
    let config = format!(
        r#"# Written by pixelgate-bench.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{port}"
accept_loops = {accept_loops}

[rate_limit]
# The limiter still checks every request; no request is over the limit.
per_second = 1000000000
burst = 1000000000

[signing]
key_dir = "keys"

[redis]
url = "{redis_url}"

[spool]
# Relative to this file: the temporary folder.
dir = "spool"

[log]
level = "warn"
"#
    );
    let config_path = dir.join("pixelgate.toml");
    fs::write(&config_path, config)?;
    let log = fs::File::create(dir.join("pixelgate.log"))?;
    Cores::command(setup.cores.server, &setup.pixelgate)
        .arg("serve")
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", setup.pixelgate.display()))
}

/// `pixelgate-bench floor` on `port`: this same binary.
fn start_floor(setup: &Setup, dir: &Path, port: u16) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("the bench binary's path")?;
    let log = fs::File::create(dir.join("floor.log"))?;
    Cores::command(setup.cores.server, &exe)
        .arg("floor")
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {} floor", exe.display()))
}

/// nginx from the template `bench/nginx/{empty_gif,lua}.conf`, its placeholders filled in.
fn start_nginx(
    server: Server,
    setup: &Setup,
    dir: &Path,
    port: u16,
    redis_port: u16,
    secret: &str,
) -> anyhow::Result<Child> {
    let template = match server {
        Server::NginxLua => "lua.conf",
        _ => "empty_gif.conf",
    };
    let template_path = setup.bench_dir.join("nginx").join(template);
    let text = fs::read_to_string(&template_path)
        .with_context(|| format!("read {}", template_path.display()))?;
    let config = fill(
        &text,
        &[
            ("@PORT@", &port.to_string()),
            ("@DIR@", &dir.display().to_string()),
            ("@BENCH@", &setup.bench_dir.display().to_string()),
            ("@REDIS_PORT@", &redis_port.to_string()),
            ("@SECRET@", secret),
            ("@WORKERS@", &setup.cores.workers().to_string()),
        ],
    )
    .with_context(|| template_path.display().to_string())?;
    let config_path = dir.join("nginx.conf");
    fs::write(&config_path, config)?;
    let nginx = |cmd: &mut Command| {
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
    };
    let mut check = Command::new("nginx");
    nginx(&mut check);
    let out = check
        .arg("-t")
        .stderr(Stdio::piped())
        .output()
        .context("run nginx -t")?;
    if !out.status.success() {
        bail!("nginx -t: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut cmd = Cores::command(setup.cores.server, "nginx");
    nginx(&mut cmd);
    cmd.stderr(Stdio::null()).spawn().context("start nginx")
}

/// The template with every placeholder replaced; an unknown placeholder left is an error.
fn fill(template: &str, values: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(name, value);
    }
    let left = text
        .split('@')
        .skip(1)
        .step_by(2)
        .find(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
    if let Some(name) = left {
        bail!("placeholder @{name}@ has no value");
    }
    Ok(text)
}

/// The `calls` of `cmdstat_rpush` in an `INFO commandstats` answer; 0 before the first `RPUSH`,
/// when Redis lists no such line.
fn rpush_calls(info: &str) -> anyhow::Result<u64> {
    let Some(stats) = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("cmdstat_rpush:"))
    else {
        return Ok(0);
    };
    let calls = stats
        .split(',')
        .find_map(|field| field.strip_prefix("calls="))
        .with_context(|| format!("cmdstat_rpush without calls: {stats}"))?;
    calls
        .parse()
        .with_context(|| format!("cmdstat_rpush calls: {calls}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_completely() {
        assert_eq!(fill("a @X@ b", &[("@X@", "1")]).unwrap(), "a 1 b");
        assert!(fill("listen @PORT@; @REDIS_PORT@", &[("@PORT@", "1")]).is_err());
        // An e-mail address is no placeholder.
        assert!(fill("a@example.com", &[]).is_ok());
    }

    #[test]
    fn every_template_has_values_for_its_placeholders() {
        let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/nginx");
        for name in ["empty_gif.conf", "lua.conf"] {
            let text = fs::read_to_string(bench.join(name)).unwrap();
            let values = [
                ("@PORT@", "1"),
                ("@DIR@", "/d"),
                ("@BENCH@", "/b"),
                ("@REDIS_PORT@", "2"),
                ("@SECRET@", "s"),
                ("@WORKERS@", "2"),
            ];
            let config = fill(&text, &values).unwrap();
            assert!(config.contains("\nworker_processes 2;\n"), "{name}");
            assert!(config.contains("listen 127.0.0.1:1 "), "{name}");
        }
    }

    #[test]
    fn placements_give_cores_and_workers() {
        let pinned = Cores::place(Placement::Pinned, &[0, 1]).unwrap();
        assert_eq!(
            (pinned.server, pinned.load, pinned.workers()),
            (Some(0), Some(1), 1)
        );
        assert_eq!(pinned.server_cores(), [0]);
        let shared = Cores::place(Placement::Shared, &[0, 1]).unwrap();
        assert_eq!(
            (shared.server, shared.load, shared.workers()),
            (None, None, 2)
        );
        assert_eq!(shared.server_cores(), [0, 1]);
        // One core cannot be split between server and load.
        assert!(Cores::place(Placement::Pinned, &[3]).is_none());
        assert_eq!(Cores::place(Placement::Shared, &[3]).unwrap().workers(), 1);
    }

    #[test]
    fn rpush_calls_come_from_commandstats() {
        let info = "# Commandstats\r\ncmdstat_del:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\ncmdstat_rpush:calls=1234,usec=5678,usec_per_call=4.60,rejected_calls=0,failed_calls=0\r\n";
        assert_eq!(rpush_calls(info).unwrap(), 1234);
        assert_eq!(rpush_calls("# Commandstats\r\n").unwrap(), 0);
        assert!(rpush_calls("cmdstat_rpush:usec=1").is_err());
    }
}
