//! The fault suite: `pixelgate serve` as a process under load while Redis is killed, frozen,
//! paused or full, while the edge itself is killed holding a spool, and on SIGTERM.
//!
//! Each case asserts the two halves of the durability promise with an exact comparison: every
//! request got its answer (200 GIF for pixels, 302 for clicks; none failed), and every answered
//! request's event is in Redis once it has recovered. The load generator numbers requests, and
//! request n carries message id `msg-n`, so "answered" and "stored" are the same set of numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use pixelgate_core::{Claims, Destination, Ids, KeyId, Keyring, Secret};
use pixelgate_tests::{
    RedisOptions, RedisServer,
    events::{self, event},
    free_port,
    load::{Load, Outcome, Report},
    wait_for,
};

const CONNECTIONS: usize = 16;
const LOAD_BEFORE: Duration = Duration::from_millis(700);
const LOAD_AFTER: Duration = Duration::from_millis(700);

/// How long each fault lasts: 1.5 s in `make test`; `make soak` sets
/// `PIXELGATE_FAULT_SECONDS` for long outages under load.
fn fault_duration() -> Duration {
    std::env::var("PIXELGATE_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_millis(1500), Duration::from_secs_f64)
}

/// `pixelgate serve` on free ports with its own spool directory.
struct Edge {
    child: Child,
    public: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Edge {
    /// An edge whose key is `secret` (`PIXELGATE_SIGNING_KEY`).
    fn start(redis: &RedisServer, dir: &Path, secret: &str) -> Self {
        Self::start_with(redis, dir, "", Some(secret))
    }

    /// An edge with `more` appended to its configuration, and its key from the environment
    /// when `secret` is given.
    fn start_with(redis: &RedisServer, dir: &Path, more: &str, secret: Option<&str>) -> Self {
        let config = dir.join("pixelgate.toml");
        std::fs::write(
            &config,
            format!(
                "[queue]\nack_timeout = \"300ms\"\n\
                 [spool]\ndir = \"spool\"\nretry_interval = \"100ms\"\n\
                 [log]\nlevel = \"warn\"\n{more}"
            ),
        )
        .unwrap();
        let public: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join(format!("edge-{}.log", public.port()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_pixelgate"));
        command
            .args(["serve", "-c"])
            .arg(&config)
            .env("PIXELGATE_LISTEN", public.to_string())
            .env("PIXELGATE_ADMIN_LISTEN", admin.to_string())
            .env("PIXELGATE_REDIS_URL", redis.url())
            .env_remove("PIXELGATE_SIGNING_KEY")
            .env_remove("PIXELGATE_QUEUE_KEY");
        if let Some(secret) = secret {
            command.env("PIXELGATE_SIGNING_KEY", secret);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let edge = Self {
            child,
            public,
            admin,
            log,
        };
        wait_for(
            "the edge to serve /healthz",
            Duration::from_secs(20),
            || (get(edge.admin, "/healthz").0 == 200).then_some(()),
        );
        edge
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the exit status once the edge has flushed and stopped.
    fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        wait_for("the edge to exit", Duration::from_secs(30), || {
            self.child.try_wait().unwrap()
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `GET` on a fresh connection: the status and the body (`0` when nothing answered).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    pixelgate_tests::http::get(addr, path)
        .map_or((0, String::new()), |r| (r.status.as_u16(), r.text()))
}

/// A signing secret for the edge (`PIXELGATE_SIGNING_KEY`, key id 0) and the keyring that
/// seals the load's tokens with it.
fn keys() -> (String, Keyring) {
    let secret = Secret::generate().unwrap();
    let text = secret.to_string();
    (text, Keyring::new([(KeyId(0), secret)]).unwrap())
}

/// Request n: a click when n is a multiple of 4, else a pixel; message id `msg-n`.
fn path(keys: &Keyring, n: usize) -> String {
    let ids = Ids::new("acme", "faults", format!("msg-{n}"), "r-1").unwrap();
    if n.is_multiple_of(4) {
        let dest = Destination::parse("https://example.com/landing").unwrap();
        format!("/c/{}", keys.seal(&Claims::click(ids, dest)))
    } else {
        format!("/o/{}.gif", keys.seal(&Claims::open(ids)))
    }
}

fn expected_status(n: usize) -> u16 {
    if n.is_multiple_of(4) { 302 } else { 200 }
}

fn start_load(edge: &Edge, keys: Keyring) -> Load {
    Load::start(edge.public, CONNECTIONS, move |n| path(&keys, n))
}

/// The request numbers answered with their right status; panics on any other answer.
fn answered(report: &Report, edge_log: &str) -> BTreeSet<usize> {
    let wrong: Vec<_> = report
        .outcomes
        .iter()
        .filter_map(|&(n, o)| match o {
            Outcome::Answered(s) if s != expected_status(n) => Some((n, s)),
            _ => None,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} requests got a wrong answer, e.g. {:?}\n{edge_log}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    // Every answer had its right status, so the answered requests are all that matter now.
    let ok: BTreeSet<usize> = report
        .outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Answered(_)))
        .map(|&(n, _)| n)
        .collect();
    assert!(
        ok.len() > 100,
        "too little load to prove anything: {}",
        ok.len()
    );
    ok
}

/// The message numbers of the events in Redis.
fn stored(redis: &RedisServer) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for key in ["pixelgate:events", "pixelgate:overflow"] {
        for json in redis.call(&["LRANGE", key, "0", "-1"]).texts() {
            out.insert(events::number(json.as_bytes()));
        }
    }
    out
}

/// Waits until every answered request's event is in Redis.
fn all_stored(redis: &RedisServer, answered: &BTreeSet<usize>, edge_log: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored = stored(redis);
        let missing: Vec<_> = answered.difference(&stored).take(10).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} answered events are not in redis, e.g. {missing:?}\n{edge_log}",
            answered.difference(&stored).count()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the load around `fault` (and `recover`), then checks every answer and every event.
fn under_load(
    redis: &mut RedisServer,
    fault: impl FnOnce(&mut RedisServer),
    recover: impl FnOnce(&mut RedisServer),
) {
    let dir = tempfile::tempdir().unwrap();
    let (secret, keys) = keys();
    let edge = Edge::start(redis, dir.path(), &secret);
    let load = start_load(&edge, keys);
    std::thread::sleep(LOAD_BEFORE);
    fault(redis);
    std::thread::sleep(fault_duration());
    recover(redis);
    std::thread::sleep(LOAD_AFTER);
    let report = load.stop();
    assert_eq!(report.unanswered(), 0, "requests failed\n{}", edge.log());
    let answered = answered(&report, &edge.log());
    all_stored(redis, &answered, &edge.log());
    let status = edge.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn redis_killed_under_load_and_restarted() {
    let mut redis = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    });
    under_load(&mut redis, RedisServer::kill, RedisServer::restart);
}

#[test]
fn redis_frozen_under_load() {
    let mut redis = RedisServer::start();
    under_load(&mut redis, |r| r.freeze(true), |r| r.freeze(false));
}

#[test]
fn redis_pausing_writes_under_load() {
    let mut redis = RedisServer::start();
    let millis = fault_duration().as_millis().to_string();
    under_load(
        &mut redis,
        |r| {
            r.call(&["CLIENT", "PAUSE", &millis, "WRITE"]);
        },
        |_| {},
    );
}

#[test]
fn redis_refusing_writes_under_load() {
    let mut redis = RedisServer::start();
    under_load(
        &mut redis,
        |r| r.refuse_writes(true),
        |r| r.refuse_writes(false),
    );
}

#[test]
fn the_edge_killed_holding_a_spool_replays_it_after_a_restart() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (secret, keys) = keys();
    let edge = Edge::start(&redis, dir.path(), &secret);
    redis.kill();
    let load = start_load(&edge, keys);
    wait_for("the spool to fill", Duration::from_secs(20), || {
        (load.answered() > 500).then_some(())
    });
    let mut edge = edge;
    edge.child.kill().unwrap(); // SIGKILL, requests in flight
    edge.child.wait().unwrap();
    let log = edge.log();
    let report = load.stop();
    let answered = answered(&report, &log);
    let segments = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(segments > 0, "the killed edge left its spool");

    redis.restart();
    let edge = Edge::start(&redis, dir.path(), &secret);
    all_stored(&redis, &answered, &edge.log());
    let (status, body) = get(edge.admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    let status = edge.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_under_load_stores_every_answered_event_before_exit() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (secret, keys) = keys();
    let edge = Edge::start(&redis, dir.path(), &secret);
    let load = start_load(&edge, keys);
    std::thread::sleep(LOAD_BEFORE);
    edge.signal("TERM");
    let mut edge = edge;
    let status = wait_for("the edge to exit", Duration::from_secs(30), || {
        edge.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}\n{}", edge.log());
    let report = load.stop();
    let answered = answered(&report, &edge.log());
    // No waiting: the edge flushed before it exited.
    let stored = stored(&redis);
    let missing: Vec<_> = answered.difference(&stored).take(10).collect();
    assert!(missing.is_empty(), "answered but not stored: {missing:?}");
}

#[test]
fn a_damaged_spool_is_replayed_as_far_as_it_is_intact_and_counted() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    // A spool as a bad disk and a crash could leave it: garbage, an empty file, a file with
    // only a header, and a real segment with a flipped bit and a torn tail.
    let events: Vec<Vec<u8>> = (0..50).map(|n| event(n).to_json()).collect();
    let mut segment = pixelgate_spool::frame::MAGIC.to_vec();
    for e in &events {
        pixelgate_spool::frame::encode(pixelgate_spool::Lane::Main, e, &mut segment).unwrap();
    }
    let second = pixelgate_spool::frame::MAGIC.len() + 9 + events[0].len();
    segment[second + 30] ^= 0x04;
    segment.truncate(segment.len() - 3);
    std::fs::write(spool.join(format!("{:020}.seg", 1)), &segment).unwrap();
    std::fs::write(
        spool.join(format!("{:020}.seg", 2)),
        b"\x00garbage\xffnot a spool",
    )
    .unwrap();
    std::fs::write(spool.join(format!("{:020}.seg", 3)), b"").unwrap();
    std::fs::write(
        spool.join(format!("{:020}.seg", 4)),
        pixelgate_spool::frame::MAGIC,
    )
    .unwrap();

    let (secret, _) = keys();
    let edge = Edge::start(&redis, dir.path(), &secret);
    let expected: BTreeSet<usize> = (0..49).filter(|&n| n != 1).collect();
    wait_for("the spool to be replayed", Duration::from_secs(20), || {
        (stored(&redis) == expected).then_some(())
    });
    let (status, metrics) = get(edge.admin, "/metrics");
    assert_eq!(status, 200);
    let count = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    assert_eq!(
        count("pixelgate_spool_damaged_regions_total{kind=\"corrupt\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        count("pixelgate_spool_damaged_regions_total{kind=\"truncated_tail\"}"),
        Some(1.0)
    );
    assert_eq!(count("pixelgate_spool_replayed_events_total"), Some(48.0));
    let (status, body) = get(edge.admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"spool_bytes\":0"), "{body}");
    assert!(
        edge.log()
            .contains("skipped a damaged part of a spool segment")
    );
}

#[test]
fn a_second_edge_on_the_same_spool_refuses_to_start() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (secret, _) = keys();
    let _first = Edge::start(&redis, dir.path(), &secret);
    let output = Command::new(env!("CARGO_BIN_EXE_pixelgate"))
        .args(["serve", "-c"])
        .arg(dir.path().join("pixelgate.toml"))
        .env("PIXELGATE_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            "PIXELGATE_ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("PIXELGATE_REDIS_URL", redis.url())
        .env("PIXELGATE_SIGNING_KEY", &secret)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is in use by another process"), "{stderr}");
}

/// A reload that cannot read a key file (here a FIFO nobody writes; a hung mount does the same)
/// never freezes the edge: both listeners keep answering, the old keys stay, the log says why,
/// and `SIGTERM` still stops it.
#[test]
fn a_reload_that_cannot_read_its_files_keeps_the_edge_serving() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = keys.join("1.key");
    std::fs::write(&key, Secret::generate().unwrap().to_string()).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let edge = Edge::start_with(&redis, dir.path(), "[signing]\nkey_dir = \"keys\"\n", None);
    let fifo = Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(keys.join("3.key"))
        .status()
        .unwrap();
    assert!(fifo.success());
    edge.signal("HUP");
    wait_for("the reload to be refused", Duration::from_secs(10), || {
        edge.log()
            .contains("signing keys not reloaded")
            .then_some(())
    });
    assert!(
        edge.log().contains("3.key: not a regular file"),
        "{}",
        edge.log()
    );
    assert_eq!(get(edge.admin, "/healthz").0, 200);
    assert_eq!(get(edge.public, "/healthz").0, 200);
    let started = std::time::Instant::now();
    assert_eq!(edge.terminate().code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(15));
}
