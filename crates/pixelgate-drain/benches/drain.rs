//! `make bench`: 1,000,000 events from Redis into MariaDB and into PostgreSQL, end to end.
//!
//! Each run starts its own redis-server and SQL server (the test harness), fills the queue with
//! one million events and migrates the sink (not timed), then times `Drain::run` from start
//! until the queue is empty and every lease acknowledged, and checks the row count. Prints a
//! markdown table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    net::Ipv4Addr,
    num::NonZeroUsize,
    time::{Duration, Instant, SystemTime},
};

use pixelgate_core::{Claims, Destination, Event, Ids, Observed};
use pixelgate_drain::{Drain, DrainConfig, Settings};
use pixelgate_queue::QueueConfig;
use pixelgate_tests::{RedisServer, SqlServer, resp::Reply};

const EVENTS: usize = 1_000_000;

fn fill(redis: &RedisServer) {
    let mut conn = redis.connect();
    let now = SystemTime::now();
    for start in (0..EVENTS).step_by(10_000) {
        let mut args: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"pixelgate:events".to_vec()];
        for n in start..start + 10_000 {
            let ids = Ids::new(
                "acct-0000001",
                format!("camp-{:04}", n % 50),
                format!("msg-{n:012}"),
                format!("rcpt-{n:09}"),
            )
            .unwrap();
            let claims = if n % 5 == 0 {
                Claims::click(
                    ids,
                    Destination::parse("https://shop.example.com/spring/landing?utm_source=mail")
                        .unwrap(),
                )
            } else {
                Claims::open(ids)
            };
            let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
            let e = Event::born(Observed {
                claims,
                ip: Ipv4Addr::new(198, 51, (n >> 8) as u8, n as u8).into(),
                user_agent: ua,
                at: now,
                limited: false,
            });
            args.push(e.to_json());
        }
        conn.call(&args).unwrap();
    }
}

fn drained(redis: &RedisServer) -> bool {
    redis.call(&["LLEN", "pixelgate:events"]) == Reply::Int(0)
        && redis.call(&["ZCARD", "pixelgate:events:leases"]) == Reply::Int(0)
}

/// Where a run writes: a SQL server, or a JSON-lines file in memory (the pipeline's ceiling).
enum Target {
    Sql(SqlServer),
    JsonLines(tempfile::TempDir),
}

impl Target {
    fn url(&self) -> String {
        match self {
            Self::Sql(db) => db.url(),
            Self::JsonLines(dir) => format!("jsonl://{}/events.jsonl", dir.path().display()),
        }
    }

    fn rows(&self) -> u64 {
        match self {
            Self::Sql(db) => db.count("pixelgate_events"),
            Self::JsonLines(dir) => std::fs::read_to_string(dir.path().join("events.jsonl"))
                .unwrap()
                .lines()
                .count() as u64,
        }
    }
}

async fn run(target: Target, name: &str, concurrency: usize, batch: usize) -> (String, f64) {
    let redis = RedisServer::start();
    fill(&redis);
    let config = DrainConfig {
        sink_url: Some(target.url().parse().unwrap()),
        jsonl_rotate_bytes: std::num::NonZeroU64::new(u64::MAX).unwrap(),
        batch_size: NonZeroUsize::new(batch).unwrap(),
        concurrency: NonZeroUsize::new(concurrency).unwrap(),
        idle_wait: Duration::from_millis(5),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ..DrainConfig::default()
    };
    let settings = Settings {
        drain: config,
        redis: redis.config(),
        queue: QueueConfig::default(),
    };
    let drain = Drain::open(&settings).unwrap();
    drain.migrate().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(drain.run(async {
        let _ = stopped.await;
    }));
    while !drained(&redis) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let rows = target.rows();
    assert_eq!(rows, EVENTS as u64, "{name}: every event, once");
    let line = format!(
        "| {name} | {concurrency} × {batch} | {seconds:.2} s | {:.0} | {rows} |",
        EVENTS as f64 / seconds
    );
    (line, seconds)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| sink | workers × batch | 1,000,000 events | events/s | rows |");
    println!("|---|---|---|---|---|");
    let shm = || tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let (line, _) = runtime.block_on(run(
        Target::JsonLines(shm()),
        "JSON lines (tmpfs): the pipeline's ceiling",
        2,
        5000,
    ));
    println!("{line}");
    for (concurrency, batch) in [(2, 5000), (4, 5000)] {
        let (line, _) = runtime.block_on(run(
            Target::Sql(SqlServer::mariadb()),
            "MariaDB 10.11",
            concurrency,
            batch,
        ));
        println!("{line}");
    }
    for (concurrency, batch) in [(2, 5000), (4, 5000)] {
        let (line, _) = runtime.block_on(run(
            Target::Sql(SqlServer::postgres()),
            "PostgreSQL 15",
            concurrency,
            batch,
        ));
        println!("{line}");
    }
}
