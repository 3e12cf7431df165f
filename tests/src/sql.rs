//! Real SQL servers per test: MariaDB (`mariadb-install-db` + `mariadbd`) and PostgreSQL
//! (`initdb` + `postgres`), each on a free port in a temporary directory, stopped on drop.
//!
//! Assertions go through the servers' own command-line clients (`mariadb`, `psql`), never
//! through the code under test. Both can be killed and started again on the same port and
//! data directory, for outage tests.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use crate::{free_port, require_binary, wait_for};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    Postgres,
}

/// A running SQL server with an empty database `pixelgate`.
#[derive(Debug)]
pub struct SqlServer {
    flavor: Flavor,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl SqlServer {
    /// MariaDB, with user `root` (no password) and database `pixelgate`.
    pub fn mariadb() -> Self {
        require_binary("mariadbd", "apt-get install mariadb-server");
        require_binary("mariadb", "apt-get install mariadb-client");
        let dir = tempdir();
        let status = Command::new(require_binary(
            "mariadb-install-db",
            "apt-get install mariadb-server",
        ))
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.path().join("data").display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg(format!("--user={}", whoami()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run mariadb-install-db");
        assert!(status.success(), "mariadb-install-db failed");
        Self::start(Flavor::MariaDb, dir)
    }

    /// PostgreSQL, with user `postgres` (trust) and database `pixelgate`. As root, the server
    /// runs as the `postgres` user (it refuses root), which Debian's package creates.
    pub fn postgres() -> Self {
        let bin = postgres_bin();
        require_binary("psql", "apt-get install postgresql-client");
        let dir = tempdir();
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "chown postgres {}",
                dir.path().display()
            );
        }
        let status = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        Self::start(Flavor::Postgres, dir)
    }

    fn start(flavor: Flavor, dir: TempDir) -> Self {
        let mut server = Self {
            flavor,
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn_and_wait() {
                server.create_database();
                return server;
            }
        }
        panic!(
            "{flavor:?} did not start; see {}",
            server.dir.path().display()
        );
    }

    /// `mysql://root@127.0.0.1:PORT/pixelgate` or `postgres://postgres@127.0.0.1:PORT/pixelgate`.
    pub fn url(&self) -> String {
        match self.flavor {
            Flavor::MariaDb => format!("mysql://root@127.0.0.1:{}/pixelgate", self.port),
            Flavor::Postgres => format!("postgres://postgres@127.0.0.1:{}/pixelgate", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Runs `sql` in database `pixelgate` with the server's own client; the output, tab-separated,
    /// one row a line, no header. Panics when the client fails.
    pub fn query(&self, sql: &str) -> String {
        let out = self
            .client("pixelgate", sql)
            .output()
            .expect("run the SQL client");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 output")
            .trim_end()
            .to_owned()
    }

    /// As [`SqlServer::query`], but `None` when the client fails (a table not created yet).
    pub fn try_query(&self, sql: &str) -> Option<String> {
        let out = self.client("pixelgate", sql).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// `SELECT COUNT(*)` of a table.
    pub fn count(&self, table: &str) -> u64 {
        self.query(&format!("SELECT COUNT(*) FROM {table}"))
            .parse()
            .expect("a count")
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn_and_wait(),
            "{:?} did not restart on port {}",
            self.flavor,
            self.port
        );
    }

    fn client(&self, database: &str, sql: &str) -> Command {
        match self.flavor {
            Flavor::MariaDb => {
                let mut c = Command::new("mariadb");
                c.args(["--no-defaults", "-uroot", "-h127.0.0.1", "-N", "-B"])
                    .arg(format!("-P{}", self.port))
                    .arg(database)
                    .arg("-e")
                    .arg(sql);
                c
            }
            Flavor::Postgres => {
                let mut c = Command::new("psql");
                c.args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-AtF",
                    "\t",
                ])
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-d")
                .arg(database)
                .arg("-c")
                .arg(sql);
                c
            }
        }
    }

    fn create_database(&self) {
        let (db, sql) = match self.flavor {
            Flavor::MariaDb => ("mysql", "CREATE DATABASE pixelgate"),
            Flavor::Postgres => ("postgres", "CREATE DATABASE pixelgate"),
        };
        let out = self.client(db, sql).output().expect("run the SQL client");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn_and_wait(&mut self) -> bool {
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join("server.log")).expect("server log");
        let mut cmd = match self.flavor {
            Flavor::MariaDb => {
                let mut c = Command::new("mariadbd");
                c.arg("--no-defaults")
                    .arg(format!("--datadir={}", dir.join("data").display()))
                    .arg(format!("--port={}", self.port))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
                    .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
                    .arg(format!("--user={}", whoami()))
                    .args([
                        "--innodb-buffer-pool-size=256M",
                        "--max-connections=200",
                        "--skip-name-resolve",
                    ]);
                c
            }
            Flavor::Postgres => {
                let mut c = as_postgres(&postgres_bin().join("postgres"));
                c.arg("-D")
                    .arg(dir.join("data"))
                    .arg("-p")
                    .arg(self.port.to_string())
                    .args(["-c", "listen_addresses=127.0.0.1"])
                    .arg("-c")
                    .arg(format!("unix_socket_directories={}", dir.display()));
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn the SQL server");
        self.child = Some(child);
        let ready = wait_for("the SQL server to answer", START_TIMEOUT, || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return Some(false);
            }
            let db = if self.flavor == Flavor::MariaDb {
                "mysql"
            } else {
                "postgres"
            };
            let ok = self
                .client(db, "SELECT 1")
                .output()
                .is_ok_and(|o| o.status.success());
            ok.then_some(true)
        });
        if !ready {
            self.child = None;
        }
        ready
    }
}

impl Drop for SqlServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("pixelgate-sql-")
        .tempdir()
        .expect("tempdir")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Debian keeps the server binaries in /usr/lib/postgresql/VERSION/bin; the newest wins.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("postgres").is_file());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("postgres not found under /usr/lib/postgresql: install it with `apt-get install postgresql` (`make test` does this)")
    })
}

/// A command that runs as the `postgres` user when we are root (PostgreSQL refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}
