//! Test harness: real servers on free ports in temporary directories, stopped on drop.
//!
//! - [`RedisServer`]: a `redis-server` of its own per test, with stop, kill, freeze and restart
//!   on the same port and data directory for failure tests.
//! - [`RedisCluster`]: a Redis Cluster of N masters (each a `RedisServer` node) joined by
//!   `redis-cli --cluster create`, with a node restart that waits for the cluster to heal.
//! - [`resp`]: a minimal RESP client, so assertions about Redis never go through the code under
//!   test.
//! - [`require_binary`]: a missing server binary is a loud failure with the install command,
//!   never a skipped test.
//!
//! - [`SqlServer`]: MariaDB or PostgreSQL with a database `pixelgate`, for the drain's sinks.
//! - [`load`]: an HTTP load generator that records which requests were answered, for fault
//!   tests that compare answers with what reached Redis.
//! - [`http`]: the one reader of HTTP/1.1 responses over raw TCP. [`events`]: the one maker of
//!   test events. [`RedisServer::config`]: the product's `[redis]` for a test server.

#![allow(clippy::expect_used, clippy::unwrap_used)] // A harness that cannot start must panic loudly.

pub mod cluster;
pub mod events;
pub mod http;
pub mod load;
pub mod redis;
pub mod resp;
pub mod sql;

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    time::{Duration, Instant},
};

pub use cluster::RedisCluster;
pub use redis::{RedisOptions, RedisServer};
pub use sql::{Flavor, SqlServer};

/// Finds `name` on `PATH` or panics with the command that installs it.
pub fn require_binary(name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH: install it with `{install}` (`make test` does this)")
        })
}

/// A port that was free a moment ago. Servers started on it must cope with losing the race
/// (see [`RedisServer::start`]).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Polls `check` until it returns `Some` or `timeout` passes; panics naming `what` on timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Polls the async `check` until it gives `Some`, at most `limit`; panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one sample line (`name{labels} value`) in Prometheus text.
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

/// `12345.6` as `12,346`: how the benchmarks print rates.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whether anything accepts TCP connections at `addr`.
pub fn is_listening(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
