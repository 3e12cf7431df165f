//! A real `redis-server` per test: free port, temporary directory, stopped on drop.
//!
//! The server can be stopped, killed, frozen (SIGSTOP) and restarted on the same port and data
//! directory, which is what failure tests need. With `appendonly` on, a restart keeps every
//! write Redis acknowledged (`appendfsync always`). With `cluster` on, it is a Redis Cluster node
//! whose bus port (port + 10000) was free too; [`crate::cluster`] joins such nodes.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use crate::{
    free_port, require_binary,
    resp::{Connection, Reply},
    wait_for,
};

const INSTALL: &str = "apt-get install redis-server";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start the server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Persist every write to an append-only file, fsynced before the reply.
    pub appendonly: bool,
    /// Run as a Redis Cluster node: `cluster-enabled`, its `nodes.conf` in the data directory,
    /// on a port at most 55535 whose cluster bus port (port + 10000) is free as well.
    pub cluster: bool,
    /// More `--name value` settings, e.g. `("maxmemory", "1mb")`.
    pub extra: Vec<(String, String)>,
}

/// A running `redis-server` owned by one test.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    options: RedisOptions,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with default options (no persistence).
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server, retrying on another port if the chosen one was taken meanwhile.
    pub fn start_with(options: RedisOptions) -> Self {
        require_binary("redis-server", INSTALL);
        let dir = tempfile::Builder::new()
            .prefix("pixelgate-redis-")
            .tempdir()
            .expect("tempdir");
        let mut server = Self {
            dir,
            port: 0,
            options,
            child: None,
        };
        for _ in 0..5 {
            server.port = server.pick_port();
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!(
            "redis-server did not start; see {}",
            server.log_path().display()
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The product's `[redis]` section for this server, defaults otherwise.
    pub fn config(&self) -> pixelgate_queue::RedisConfig {
        pixelgate_queue::RedisConfig {
            url: self.url().parse().unwrap(),
            ..pixelgate_queue::RedisConfig::default()
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (AOF, RDB, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A new connection for assertions.
    pub fn connect(&self) -> Connection {
        Connection::open(self.addr()).expect("connect to redis-server")
    }

    /// Runs one command on a fresh connection and returns the reply.
    pub fn call<A: AsRef<[u8]>>(&self, args: &[A]) -> Reply {
        self.connect().call(args).expect("redis command")
    }

    /// Makes the server refuse every write with `OOM`, as a full Redis does: `maxmemory` below
    /// what it already uses, with `noeviction`. `refuse_writes(false)` lifts the limit.
    pub fn refuse_writes(&self, refuse: bool) {
        if !refuse {
            self.call(&["CONFIG", "SET", "maxmemory", "0"]);
            return;
        }
        let info = self.call(&["INFO", "memory"]).text().expect("INFO memory");
        let used: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO memory");
        self.call(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
        self.call(&["CONFIG", "SET", "maxmemory", &(used / 2).to_string()]);
    }

    /// Stops the server cleanly (SIGTERM, as `systemctl stop` would) and waits for it.
    pub fn stop(&mut self) {
        self.signal("TERM");
        self.reap();
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
        }
        self.reap();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: it keeps its sockets but answers nothing.
    pub fn freeze(&self, frozen: bool) {
        self.signal(if frozen { "STOP" } else { "CONT" });
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        let started = self.spawn_and_wait();
        assert!(
            started,
            "redis-server did not restart on port {}",
            self.port
        );
    }

    fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(pid.to_string())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "kill -{name} {pid} failed"
            );
        }
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.log")
    }

    /// A free port; for a cluster node one whose bus port (port + 10000) is free as well.
    fn pick_port(&self) -> u16 {
        if !self.options.cluster {
            return free_port();
        }
        (0..100)
            .map(|_| free_port())
            .find(|&port| {
                port <= 55_535 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok()
            })
            .expect("no free port with a free cluster bus port after 100 tries")
    }

    /// Starts the process and waits until it answers PING; false if it exited first.
    fn spawn_and_wait(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .args([
                "--appendonly",
                if self.options.appendonly { "yes" } else { "no" },
            ])
            .args(["--appendfsync", "always"]);
        if self.options.cluster {
            // Relative to `--dir`, so a restart finds the node's identity and slots again.
            cmd.args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"]);
        }
        for (name, value) in &self.options.extra {
            cmd.arg(format!("--{name}")).arg(value);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let addr = self.addr();
        let ready = wait_for("redis-server to answer PING", START_TIMEOUT, || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return Some(false); // exited: most likely the port was taken
            }
            let pong = Connection::open(addr).and_then(|mut c| c.call(&["PING"]));
            matches!(pong, Ok(Reply::Status(s)) if s == "PONG").then_some(true)
        });
        if !ready {
            self.child = None;
        }
        ready
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.freeze(false);
        self.kill();
    }
}
