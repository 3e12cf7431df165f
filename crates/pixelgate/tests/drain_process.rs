//! `pixelgate drain` as a process: killed with SIGKILL mid-run and started again, it leaves
//! every event in the table exactly once; SIGTERM stops it cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use pixelgate_tests::{RedisServer, SqlServer, events::event, resp::Reply, wait_for};

const EVENTS: usize = 30_000;

fn drain(redis: &RedisServer, db: &SqlServer, config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pixelgate"))
        .args(["drain", "-c"])
        .arg(config)
        .env("PIXELGATE_REDIS_URL", redis.url())
        .env("PIXELGATE_SINK_URL", db.url())
        .env_remove("PIXELGATE_QUEUE_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn queued(redis: &RedisServer) -> i64 {
    let Reply::Int(n) = redis.call(&["LLEN", "pixelgate:events"]) else {
        panic!()
    };
    n
}

#[test]
fn a_drain_killed_mid_run_and_restarted_leaves_every_event_exactly_once() {
    let redis = RedisServer::start();
    let db = SqlServer::mariadb();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pixelgate.toml");
    std::fs::write(
        &config,
        "[drain]\nbatch_size = 200\nconcurrency = 2\nlease = \"1s\"\nidle_wait = \"20ms\"\nadmin_listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut ids = std::collections::HashSet::new();
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(1000) {
        let mut args: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"pixelgate:events".to_vec()];
        for &n in chunk {
            let e = event(n);
            ids.insert(e.id);
            args.push(e.to_json());
        }
        redis.call(&args);
    }
    assert_eq!(queued(&redis), EVENTS as i64);

    let mut first = drain(&redis, &db, &config);
    // Kill it once it is well into the work: some rows written, some still queued.
    wait_for(
        "the drain to write some rows",
        Duration::from_secs(60),
        || {
            let rows = db
                .try_query("SELECT COUNT(*) FROM pixelgate_events")
                .and_then(|r| r.parse::<usize>().ok())
                .unwrap_or(0);
            (rows > 0).then_some(())
        },
    );
    first.kill().unwrap();
    let _ = first.wait();
    let rows_at_kill = db.count("pixelgate_events");
    let Reply::Int(leased) = redis.call(&["ZCARD", "pixelgate:events:leases"]) else {
        panic!()
    };
    assert!(leased > 0, "killed between batches: no lease was in flight");
    assert!(
        rows_at_kill < EVENTS as u64,
        "killed too late to mean anything: all {rows_at_kill} rows were in"
    );

    let mut second = drain(&redis, &db, &config);
    wait_for(
        "the restarted drain to finish",
        Duration::from_secs(120),
        || {
            let leases = redis.call(&["ZCARD", "pixelgate:events:leases"]);
            (queued(&redis) == 0 && leases == Reply::Int(0)).then_some(())
        },
    );
    // SIGTERM: it stops cleanly, with exit status 0.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(second.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = second.wait().unwrap();
    assert!(exit.success(), "drain exited with {exit}");

    assert_eq!(
        db.count("pixelgate_events"),
        EVENTS as u64,
        "every event exactly once"
    );
    let distinct: u64 = db
        .query("SELECT COUNT(DISTINCT id) FROM pixelgate_events")
        .parse()
        .unwrap();
    assert_eq!(distinct, EVENTS as u64);
    let sample = ids.iter().next().unwrap();
    assert_eq!(
        db.query(&format!(
            "SELECT COUNT(*) FROM pixelgate_events WHERE id = UNHEX('{}')",
            sample.simple()
        )),
        "1"
    );
}

#[test]
fn drain_refuses_to_start_without_a_sink_and_migrate_runs_alone() {
    let redis = RedisServer::start();
    let out = Command::new(env!("CARGO_BIN_EXE_pixelgate"))
        .args(["drain", "-c", "/dev/null"])
        .env("PIXELGATE_REDIS_URL", redis.url())
        .env_remove("PIXELGATE_SINK_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("pixelgate: no sink: set drain.sink_url or PIXELGATE_SINK_URL"),
        "{err}"
    );

    let db = SqlServer::postgres();
    let out = Command::new(env!("CARGO_BIN_EXE_pixelgate"))
        .args(["drain", "--migrate", "-c", "/dev/null"])
        .env("PIXELGATE_SINK_URL", db.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "migrations applied to the postgres sink\n"
    );
    assert_eq!(db.count("pixelgate_events"), 0);
    assert_eq!(
        db.query("SELECT version FROM pixelgate_schema ORDER BY version"),
        "1\n2"
    );
}
