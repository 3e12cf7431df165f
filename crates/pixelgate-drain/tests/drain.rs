//! The drain against real servers: Redis, MariaDB, PostgreSQL and a JSON-lines file. Rows equal
//! distinct events; duplicates make one row; an outage of the sink is waited out; elements that
//! are not events are set aside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, num::NonZeroUsize, time::Duration};

use pixelgate_core::Event;
use pixelgate_drain::{Drain, DrainConfig, Settings, SinkUrl};
use pixelgate_queue::{Lane, Queue, QueueConfig, QueueMode};
use pixelgate_tests::{RedisServer, SqlServer, events::event, resp::Reply};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

/// A queue on `redis` in `mode`, holding `events` (each enqueued once).
async fn queue_with(redis: &RedisServer, mode: QueueMode, events: &[Event]) -> Queue {
    let queue_config = QueueConfig {
        mode,
        ..QueueConfig::default()
    };
    let queue = Queue::new(&redis.config(), &queue_config, &mut Registry::default()).unwrap();
    let (enqueuer, writer) = queue.start_enqueuer(None);
    let mut waits = Vec::new();
    for e in events {
        let (enqueuer, e) = (enqueuer.clone(), e.clone());
        waits.push(tokio::spawn(async move {
            enqueuer.enqueue(&e, Lane::Main).await
        }));
    }
    for w in waits {
        w.await.unwrap().unwrap();
    }
    drop(enqueuer);
    writer.flushed().await;
    queue
}

fn drain_config(sink: &str) -> DrainConfig {
    DrainConfig {
        sink_url: Some(sink.parse().unwrap()),
        batch_size: NonZeroUsize::new(500).unwrap(),
        idle_wait: Duration::from_millis(20),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        lease: Duration::from_secs(30),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ..DrainConfig::default()
    }
}

/// A drain running in the background until the handle is stopped, opened and run as
/// `pixelgate drain` does.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    admin: std::net::SocketAddr,
}

impl Running {
    async fn start(config: DrainConfig, mode: QueueMode, redis: &RedisServer) -> Self {
        let settings = Settings {
            drain: config,
            redis: redis.config(),
            queue: QueueConfig {
                mode,
                ..QueueConfig::default()
            },
        };
        settings.validate().unwrap();
        let drain = Drain::open(&settings).unwrap();
        let admin = drain.admin_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(drain.run(async {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
            admin,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().unwrap();
    }

    /// GET on the drain's admin listener: the status line's code and the body.
    async fn admin_get(&self, path: &str) -> String {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let reply = pixelgate_tests::http::read(&mut s, &mut Vec::new())
            .await
            .unwrap();
        format!("{} {}", reply.status.as_u16(), reply.text())
    }
}

/// Waits until `check` holds, polling every 20 ms for at most `limit`.
async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn queue_empty(redis: &RedisServer, mode: QueueMode) -> bool {
    match mode {
        QueueMode::List => {
            redis.call(&["LLEN", "pixelgate:events"]) == Reply::Int(0)
                && redis.call(&["ZCARD", "pixelgate:events:leases"]) == Reply::Int(0)
        }
        QueueMode::Stream => redis.call(&["XLEN", "pixelgate:events"]) == Reply::Int(0),
    }
}

/// Rows equal the distinct events, fields intact, for a SQL sink in `mode`.
async fn rows_equal_distinct_events(db: SqlServer, mode: QueueMode) {
    let redis = RedisServer::start();
    let events: Vec<Event> = (0..3000).map(event).collect();
    let _queue = queue_with(&redis, mode, &events).await;
    // The same events again, as a replay after an ambiguous timeout would queue them.
    for e in &events[..200] {
        match mode {
            QueueMode::List => {
                drop(redis.call(&["RPUSH".as_bytes(), b"pixelgate:events", &e.to_json()]))
            }
            QueueMode::Stream => drop(redis.call(&[
                "XADD".as_bytes(),
                b"pixelgate:events",
                b"*",
                b"event",
                &e.to_json(),
            ])),
        }
    }
    let drain = Running::start(drain_config(&db.url()), mode, &redis).await;
    until("the queue to empty", Duration::from_secs(60), || {
        queue_empty(&redis, mode)
    })
    .await;
    let metrics = drain.admin_get("/metrics").await;
    assert!(
        metrics.contains("pixelgate_drain_events_total 3200"),
        "{metrics}"
    );
    assert!(
        drain
            .admin_get("/readyz")
            .await
            .contains(r#""status":"ready""#)
    );
    drain.stop().await;
    assert_eq!(
        db.count("pixelgate_events"),
        3000,
        "one row per distinct event"
    );
    let e = &events[3];
    let row = match db.flavor() {
        pixelgate_tests::Flavor::MariaDb => db.query(&format!(
            "SELECT kind, DATE_FORMAT(ts, '%Y-%m-%dT%H:%i:%s.%fZ'), account, campaign, message, recipient, url, ip, ua, limited \
             FROM pixelgate_events WHERE id = UNHEX('{}')",
            e.id.simple()
        )),
        pixelgate_tests::Flavor::Postgres => db.query(&format!(
            "SELECT kind, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), account, campaign, message, recipient, url, host(ip), ua, limited::int \
             FROM pixelgate_events WHERE id = '{}'",
            e.id
        )),
    };
    let millis = e.ts.to_string();
    let want_ts = format!("{}000Z", millis.trim_end_matches('Z'));
    let want = format!(
        "click\t{want_ts}\tacme\tspring\tmsg-3\tr-3\thttps://example.com/p/3?utm=mail\t203.0.113.3\tMozilla/5.0 'quoted' \"ua\"\t0"
    );
    assert_eq!(row, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_rows_equal_distinct_events() {
    rows_equal_distinct_events(SqlServer::mariadb(), QueueMode::List).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_equal_distinct_events_from_a_stream() {
    rows_equal_distinct_events(SqlServer::postgres(), QueueMode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_is_waited_out_and_nothing_is_lost() {
    let redis = RedisServer::start();
    let mut db = SqlServer::mariadb();
    let first: Vec<Event> = (0..1000).map(event).collect();
    let queue = queue_with(&redis, QueueMode::List, &first).await;
    let drain = Running::start(drain_config(&db.url()), QueueMode::List, &redis).await;
    until(
        "the first events in the table",
        Duration::from_secs(30),
        || queue_empty(&redis, QueueMode::List),
    )
    .await;
    db.kill();
    // Events keep arriving while the database is down: they wait in Redis.
    let (enqueuer, writer) = queue.start_enqueuer(None);
    let second: Vec<Event> = (1000..2000).map(event).collect();
    for e in &second {
        enqueuer.enqueue(e, Lane::Main).await.unwrap();
    }
    drop(enqueuer);
    writer.flushed().await;
    until(
        "the drain to notice the outage",
        Duration::from_secs(30),
        || {
            let m = futures_block(drain.admin_get("/metrics"));
            m.lines()
                .any(|l| l.starts_with("pixelgate_drain_sink_errors_total{") && !l.ends_with(" 0"))
        },
    )
    .await;
    assert!(
        futures_block(drain.admin_get("/readyz")).contains("503"),
        "not ready without its sink"
    );
    let waiting = match redis.call(&["HGET", "pixelgate:events:lease-data", "inflight"]) {
        Reply::Bulk(Some(n)) => String::from_utf8(n).unwrap().parse::<usize>().unwrap(),
        _ => 0,
    };
    let queued = match redis.call(&["LLEN", "pixelgate:events"]) {
        Reply::Int(n) => n as usize,
        _ => 0,
    };
    assert_eq!(
        waiting + queued,
        1000,
        "nothing acknowledged while the sink is down"
    );
    db.restart();
    until("the rest to drain", Duration::from_secs(60), || {
        queue_empty(&redis, QueueMode::List)
    })
    .await;
    drain.stop().await;
    assert_eq!(db.count("pixelgate_events"), 2000);
}

/// Runs a future to completion from a sync closure (the polling helpers are sync).
fn futures_block<F: Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elements_that_are_not_events_go_to_the_dead_letter_list() {
    let redis = RedisServer::start();
    let db = SqlServer::postgres();
    let events: Vec<Event> = (0..10).map(event).collect();
    let _queue = queue_with(&redis, QueueMode::List, &events).await;
    redis.call(&["RPUSH", "pixelgate:events", "not json", "{\"v\":1}"]);
    let drain = Running::start(drain_config(&db.url()), QueueMode::List, &redis).await;
    until("the queue to empty", Duration::from_secs(30), || {
        queue_empty(&redis, QueueMode::List)
    })
    .await;
    drain.stop().await;
    assert_eq!(db.count("pixelgate_events"), 10);
    assert_eq!(
        redis
            .call(&["LRANGE", "pixelgate:events:dead", "0", "-1"])
            .texts(),
        ["not json", "{\"v\":1}"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_are_appended_synced_and_rotated() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let events: Vec<Event> = (0..2000).map(event).collect();
    let _queue = queue_with(&redis, QueueMode::List, &events).await;
    let mut config = drain_config(&format!("jsonl://{}", path.display()));
    config.jsonl_rotate_bytes = std::num::NonZeroU64::new(100_000).unwrap();
    let drain = Running::start(config, QueueMode::List, &redis).await;
    until("the queue to empty", Duration::from_secs(30), || {
        queue_empty(&redis, QueueMode::List)
    })
    .await;
    drain.stop().await;
    let mut ids = HashSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        files += 1;
        let text = std::fs::read_to_string(entry.path()).unwrap();
        assert!(
            entry.metadata().unwrap().len() <= 100_000 + 500 * 400,
            "rotated by size"
        );
        for line in text.lines() {
            ids.insert(Event::from_json(line.as_bytes()).unwrap().id);
        }
    }
    assert!(files > 1, "the file was rotated");
    assert_eq!(ids.len(), 2000);
    assert_eq!(ids, events.iter().map(|e| e.id).collect());
}

#[tokio::test]
async fn sink_urls_name_their_kind_and_hide_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let file = format!("jsonl://{}/x.jsonl", dir.path().display());
    for (url, name) in [
        ("mariadb://u:secret@db:3306/x", "mysql"),
        ("mysql://u@db/x", "mysql"),
        ("postgresql://u@db/x", "postgres"),
        ("postgres://u@db/x", "postgres"),
        (file.as_str(), "jsonl"),
    ] {
        let parsed: SinkUrl = url.parse().unwrap();
        assert!(!format!("{parsed:?}").contains("secret"), "{parsed:?}");
        let options = DrainConfig::default().sink_options();
        let sink = pixelgate_drain::sink::open(&parsed, &options).unwrap();
        assert_eq!(sink.name(), name, "{url}");
    }
    for bad in [
        "sqlite:///x",
        "jsonl://host/x",
        "mysql:///nohost",
        "nonsense",
    ] {
        assert!(bad.parse::<SinkUrl>().is_err(), "{bad}");
    }
}

/// Nothing is acknowledged that was neither written nor dead-lettered, in either mode: when the
/// dead-letter key cannot take a batch's poison, the whole batch stays in Redis (stream mode
/// used to acknowledge the batch's events anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_poison_cannot_be_dead_lettered_is_not_acknowledged() {
    for mode in [QueueMode::List, QueueMode::Stream] {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let events: Vec<Event> = (0..10).map(event).collect();
        let _queue = queue_with(&redis, mode, &events).await;
        match mode {
            QueueMode::List => drop(redis.call(&["RPUSH", "pixelgate:events", "not json"])),
            QueueMode::Stream => {
                drop(redis.call(&["XADD", "pixelgate:events", "*", "event", "not json"]))
            }
        }
        // A dead-letter key of the wrong type: moving the poison there fails.
        redis.call(&["SET", "pixelgate:events:dead", "in the way"]);
        let drain = Running::start(
            drain_config(&format!("jsonl://{}", path.display())),
            mode,
            &redis,
        )
        .await;
        until("the events to be written", Duration::from_secs(30), || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 10)
        })
        .await;
        until("the poison to be seen", Duration::from_secs(30), || {
            futures_block(drain.admin_get("/metrics"))
                .contains("pixelgate_drain_poison_events_total 1")
        })
        .await;
        drain.stop().await;
        let int = |reply: Reply| match reply {
            Reply::Int(n) => n,
            Reply::Bulk(Some(b)) => String::from_utf8(b).unwrap().parse().unwrap(),
            other => panic!("{other:?}"),
        };
        let held = match mode {
            QueueMode::List => {
                int(redis.call(&["LLEN", "pixelgate:events"]))
                    + int(redis.call(&["HGET", "pixelgate:events:lease-data", "inflight"]))
            }
            QueueMode::Stream => int(redis.call(&["XLEN", "pixelgate:events"])),
        };
        assert_eq!(held, 11, "{mode:?}: every element is still in Redis");
        assert_eq!(
            redis.call(&["GET", "pixelgate:events:dead"]),
            Reply::Bulk(Some(b"in the way".to_vec()))
        );
    }
}

/// A database the first release migrated (MariaDB's table had its index inline at version 1)
/// takes the migrations as they are now, twice, and keeps one index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_take_a_first_release_database_and_run_twice() {
    let db = SqlServer::mariadb();
    db.query(
        "CREATE TABLE pixelgate_schema (version BIGINT NOT NULL PRIMARY KEY, applied_at VARCHAR(40) NOT NULL)",
    );
    db.query(
        "CREATE TABLE pixelgate_events (id BINARY(16) NOT NULL PRIMARY KEY, kind VARCHAR(8) NOT NULL, \
         ts DATETIME(3) NOT NULL, account VARCHAR(128) NOT NULL, campaign VARCHAR(128) NOT NULL, \
         message VARCHAR(128) NOT NULL, recipient VARCHAR(128) NOT NULL, url VARCHAR(2048) NULL, \
         ip VARCHAR(45) NOT NULL, ua VARCHAR(512) NOT NULL, limited BOOLEAN NOT NULL DEFAULT FALSE, \
         KEY pixelgate_events_account_campaign_ts (account, campaign, ts)) ENGINE=InnoDB",
    );
    db.query("INSERT INTO pixelgate_schema VALUES (1, '2026-11-01T00:00:00.000Z')");
    let redis = RedisServer::start();
    let settings = Settings {
        drain: drain_config(&db.url()),
        redis: redis.config(),
        queue: QueueConfig::default(),
    };
    let drain = Drain::open(&settings).unwrap();
    drain.migrate().await.unwrap();
    drain.migrate().await.unwrap();
    assert_eq!(
        db.query("SELECT GROUP_CONCAT(version ORDER BY version) FROM pixelgate_schema"),
        "1,2"
    );
    assert_eq!(
        db.query(
            "SELECT COUNT(DISTINCT index_name) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = 'pixelgate_events' \
             AND index_name = 'pixelgate_events_account_campaign_ts'"
        ),
        "1"
    );
}
