//! The three servers under test, each started fresh in a temporary folder and stopped on drop.
//!
//! Every server process, and the `redis-server` of those that record events, is pinned to the
//! same core (the server core); the load generator gets the other one. Each Redis is started by
//! the test harness with the same settings (no persistence), so the servers differ only in
//! themselves.

use std::{
    fmt, fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pixelgate_core::{KeyId, Keyring, Secret};
use pixelgate_tests::{RedisServer, free_port, resp::Reply};
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
}

impl Server {
    pub const ALL: [Self; 3] = [Self::Pixelgate, Self::NginxLua, Self::EmptyGif];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pixelgate => "pixelgate",
            Self::EmptyGif => "nginx empty_gif",
            Self::NginxLua => "nginx + Lua + Redis",
        }
    }

    /// What this server is driven with: `empty_gif` has no clicks and checks no token.
    pub fn workloads(self) -> &'static [Workload] {
        match self {
            Self::Pixelgate | Self::NginxLua => &Workload::ALL,
            Self::EmptyGif => &[Workload::Opens],
        }
    }

    /// Whether it records events in Redis.
    pub fn records(self) -> bool {
        !matches!(self, Self::EmptyGif)
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which core runs the servers (and their Redis) and which the load; none on a one-core machine.
#[derive(Debug, Clone, Copy)]
pub struct Cores {
    pub server: Option<usize>,
    pub load: Option<usize>,
}

impl Cores {
    /// The first two cores this process may use.
    pub fn detect() -> anyhow::Result<Self> {
        let cores = procfs::allowed_cores()?;
        Ok(match cores.as_slice() {
            [server, load, ..] => Self {
                server: Some(*server),
                load: Some(*load),
            },
            _ => Self {
                server: None,
                load: None,
            },
        })
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
            Server::EmptyGif | Server::NginxLua => {
                let redis_port = redis.as_ref().map_or(0, RedisServer::port);
                let key = secret.to_string();
                let child = start_nginx(server, setup, dir.path(), port, redis_port, &key)?;
                let signer = match server {
                    // empty_gif answers any /o/ path: give it pixelgate's.
                    Server::EmptyGif => Signer::Sealed(Keyring::new([(KeyId(1), secret)])?),
                    _ => Signer::Hmac(key.into_bytes()),
                };
                (child, signer)
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
        running.wait_until_serving()?;
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
            Reply::Int(n) => Ok(u64::try_from(n)?),
            other => bail!("LLEN {QUEUE_KEY}: {other:?}"),
        }
    }

    /// Empties the queue (between runs, so Redis's memory stays small).
    pub fn clear_queue(&self) {
        if let Some(redis) = &self.redis {
            redis.call(&["DEL", QUEUE_KEY]);
        }
    }

    /// Asks `path` once on a fresh connection; the status code.
    pub fn status_of(&self, path: &str) -> anyhow::Result<u16> {
        http_status(self.addr, path).with_context(|| format!("GET {path} from {}", self.server))
    }

    /// The server's log, for error messages.
    fn log(&self) -> String {
        let name = match self.server {
            Server::Pixelgate => "pixelgate.log",
            Server::EmptyGif | Server::NginxLua => "error.log",
        };
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits until a pixel is answered; for nginx, also until its worker is there.
    fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited at start ({status}): {}", self.server, self.log());
            }
            let answered = http_status(self.addr, "/o/x.gif").is_ok();
            let workers = procfs::children(self.child.id());
            if answered && (self.server == Server::Pixelgate || !workers.is_empty()) {
                self.pids.extend(workers);
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
/// (every request comes from 127.0.0.1), one accept loop.
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
    let config = format!(
        r#"# Written by pixelgate-bench.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{port}"
accept_loops = 1

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

/// One request on a fresh connection; the status code of the answer.
fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let code = std::str::from_utf8(&head[9..12])?;
    Ok(code.parse()?)
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
            ];
            fill(&text, &values).unwrap();
        }
    }
}
