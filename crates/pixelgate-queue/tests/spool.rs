//! The enqueuer with its disk spool, against a real redis-server that is killed, frozen,
//! paused and out of memory: every acknowledged event ends up in Redis, in order, and nothing
//! is acknowledged that is not in Redis or on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeSet, num::NonZeroU64, path::Path, sync::Arc, time::Duration};

use common::*;
use pixelgate_queue::{EnqueueError, Enqueuer, Lane, QueueConfig, Stored};
use pixelgate_spool::{Item, Records, Spool, SpoolConfig};
use pixelgate_tests::{RedisOptions, RedisServer, resp::Reply};

const KEY: &str = "pixelgate:events";

fn spool_config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        retry_interval: Duration::from_millis(50),
        ..SpoolConfig::default()
    }
}

fn config() -> QueueConfig {
    QueueConfig {
        ack_timeout: Duration::from_millis(300),
        ..QueueConfig::default()
    }
}

/// Enqueues events `range` from 32 tasks at once; returns each one's answer, by number.
async fn enqueue_all(
    enqueuer: &Enqueuer,
    range: std::ops::Range<usize>,
) -> Vec<(usize, Result<Stored, EnqueueError>)> {
    let numbers: Vec<usize> = range.collect();
    let mut tasks = Vec::new();
    for chunk in numbers.chunks(numbers.len().div_ceil(32).max(1)) {
        let (enqueuer, chunk) = (enqueuer.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for n in chunk {
                out.push((n, enqueuer.enqueue(&event(n), Lane::Main).await));
            }
            out
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap());
    }
    out
}

fn queued(server: &RedisServer) -> Vec<usize> {
    numbers(&server.call(&["LRANGE", KEY, "0", "-1"]).texts())
}

/// Waits until Redis holds `count` events and the spool is empty; returns the numbers queued.
fn replayed(server: &RedisServer, spool: &Spool, count: usize) -> Vec<usize> {
    pixelgate_tests::wait_for(
        "the spool to be replayed into redis",
        Duration::from_secs(20),
        || {
            let q = queued(server);
            (q.len() >= count && spool.stats().bytes() == 0).then_some(q)
        },
    )
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_events_are_spooled_then_replayed_in_order() {
    let mut server = RedisServer::start();
    let (queue, registry) = queue(&server, config());
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(&spool_config(dir.path())).unwrap());
    let (enqueuer, writer) = queue.start_enqueuer(Some(spool.clone()));
    server.kill();

    // One at a time, so the spool's order is the events' order.
    for n in 0..200 {
        let stored = enqueuer.enqueue(&event(n), Lane::Main).await.unwrap();
        assert_eq!(stored, Stored::Spool, "event {n}");
    }
    assert!(spool.stats().bytes() > 0);
    let text = metrics_text(&registry);
    assert_eq!(
        sample(&text, "pixelgate_spool_events_total{lane=\"main\"}"),
        Some(200.0)
    );
    assert_eq!(sample(&text, "pixelgate_redis_shards_down"), Some(1.0));

    server.restart();
    assert_eq!(replayed(&server, &spool, 200), (0..200).collect::<Vec<_>>());
    // Live events go to Redis again once the replayer has seen it answer.
    let stored = enqueuer.enqueue(&event(200), Lane::Main).await.unwrap();
    assert_eq!(stored, Stored::Redis);
    let text = metrics_text(&registry);
    assert_eq!(
        sample(&text, "pixelgate_spool_replayed_events_total"),
        Some(200.0)
    );
    assert_eq!(sample(&text, "pixelgate_spool_bytes"), Some(0.0));
    assert_eq!(sample(&text, "pixelgate_redis_shards_down"), Some(0.0));
    drop(enqueuer);
    writer.flushed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_waited_for_ack_timeout_then_spooled() {
    let server = RedisServer::start();
    let (queue, _registry) = queue(&server, config());
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(&spool_config(dir.path())).unwrap());
    let (enqueuer, _writer) = queue.start_enqueuer(Some(spool.clone()));
    enqueuer.enqueue(&event(0), Lane::Main).await.unwrap(); // connections open

    server.freeze(true);
    let answers = enqueue_all(&enqueuer, 1..500).await;
    for (n, answer) in &answers {
        assert!(answer.is_ok(), "event {n}: {answer:?}");
    }
    assert!(
        answers.iter().any(|(_, a)| matches!(a, Ok(Stored::Spool))),
        "some events were spooled"
    );
    server.freeze(false);
    // Batches already sent before the freeze may land too, and a spooled batch whose command
    // Redis had already read lands twice: every event is there at least once.
    let all: BTreeSet<usize> = replayed(&server, &spool, 500).into_iter().collect();
    assert_eq!(all, (0..500).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_writes_and_a_full_redis_are_spooled_then_replayed() {
    let server = RedisServer::start();
    let (queue, _registry) = queue(&server, config());
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(&spool_config(dir.path())).unwrap());
    let (enqueuer, _writer) = queue.start_enqueuer(Some(spool.clone()));
    enqueuer.enqueue(&event(0), Lane::Main).await.unwrap();

    // CLIENT PAUSE WRITE: PING still answers, RPUSH waits.
    server.call(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    for (n, answer) in enqueue_all(&enqueuer, 1..100).await {
        assert!(answer.is_ok(), "event {n}: {answer:?}");
    }
    let all = replayed(&server, &spool, 100);
    assert_eq!(
        all.iter().copied().collect::<BTreeSet<_>>(),
        (0..100).collect()
    );

    // maxmemory with noeviction: Redis refuses every write with OOM.
    server.refuse_writes(true);
    for (n, answer) in enqueue_all(&enqueuer, 100..200).await {
        assert_eq!(answer.unwrap(), Stored::Spool, "event {n}");
    }
    assert_eq!(queued(&server).len(), all.len(), "nothing got in");
    server.refuse_writes(false);
    let all = replayed(&server, &spool, all.len() + 100);
    assert_eq!(
        all.iter().copied().collect::<BTreeSet<_>>(),
        (0..200).collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_with_its_own_reason() {
    let mut server = RedisServer::start();
    let (queue, _registry) = queue(&server, config());
    let dir = tempfile::tempdir().unwrap();
    let small = NonZeroU64::new(64 * 1024).unwrap();
    let spool = Arc::new(
        Spool::open(&SpoolConfig {
            segment_bytes: small,
            max_bytes: small,
            ..spool_config(dir.path())
        })
        .unwrap(),
    );
    let (enqueuer, _writer) = queue.start_enqueuer(Some(spool.clone()));
    server.kill();
    let mut spooled = 0;
    let refused = loop {
        match enqueuer.enqueue(&event(spooled), Lane::Main).await {
            Ok(Stored::Spool) => spooled += 1,
            other => break other.unwrap_err(),
        }
    };
    assert_eq!(refused.reason(), "spool_full", "{refused}");
    assert!(spool.is_full() || spool.stats().bytes() + 300 > small.get());
    server.restart();
    assert_eq!(
        replayed(&server, &spool, spooled),
        (0..spooled).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_from_a_previous_run_replays_what_is_intact() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // A previous run spooled 100 events, then the disk damaged one and a crash cut the tail.
    {
        let spool = Spool::open(&spool_config(dir.path())).unwrap();
        let payloads: Vec<_> = (0..100).map(|n| event(n).to_json()).collect();
        spool
            .append(payloads.iter().map(|p| (Lane::Main, p.as_slice())))
            .unwrap();
    }
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let second = Records::segment(&bytes)
        .find_map(|i| match i {
            Item::Record { offset, .. } if offset > 8 => Some(offset as usize),
            _ => None,
        })
        .unwrap();
    bytes[second + 20] ^= 0x10;
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&segment, &bytes).unwrap();

    let (queue, registry) = queue(&server, config());
    let spool = Arc::new(Spool::open(&spool_config(dir.path())).unwrap());
    let (_enqueuer, _writer) = queue.start_enqueuer(Some(spool.clone()));
    let all = replayed(&server, &spool, 98);
    let expected: Vec<usize> = (0..99).filter(|&n| n != 1).collect();
    assert_eq!(all, expected);
    let text = metrics_text(&registry);
    assert_eq!(
        sample(
            &text,
            "pixelgate_spool_damaged_regions_total{kind=\"corrupt\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "pixelgate_spool_damaged_regions_total{kind=\"truncated_tail\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_with_redis_down_leaves_every_event_on_disk() {
    let server = RedisServer::start_with(RedisOptions::default());
    let (queue, _registry) = queue(&server, config());
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(&spool_config(dir.path())).unwrap());
    let (enqueuer, writer) = queue.start_enqueuer(Some(spool.clone()));
    drop(server);
    let answers = enqueue_all(&enqueuer, 0..300).await;
    drop(enqueuer);
    writer.flushed().await;
    let acked: Vec<usize> = answers
        .iter()
        .filter(|(_, a)| a.is_ok())
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(acked.len(), 300);
    // Everything acknowledged is in the spool's files.
    drop(spool);
    let on_disk = spooled(&spool_config(dir.path()));
    assert_eq!(sorted(numbers(&on_disk)), (0..300).collect::<Vec<_>>());
}

/// A segment that cannot be read (here removed under the running edge) is set aside and
/// counted, and the segments after it are replayed: one bad file never holds up the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_segment_is_set_aside_and_the_rest_replayed() {
    let mut server = RedisServer::start();
    let (queue, registry) = queue(&server, config());
    let dir = tempfile::tempdir().unwrap();
    let spool_config = SpoolConfig {
        segment_bytes: NonZeroU64::new(64 * 1024).unwrap(),
        ..spool_config(dir.path())
    };
    let spool = Arc::new(Spool::open(&spool_config).unwrap());
    let (enqueuer, writer) = queue.start_enqueuer(Some(spool.clone()));
    server.kill();
    let mut n = 0;
    while spool.stats().segments() < 3 {
        let stored = enqueuer.enqueue(&event(n), Lane::Main).await.unwrap();
        assert_eq!(stored, Stored::Spool);
        n += 1;
    }
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    // The oldest segment vanishes: its events are lost with it, the others are not.
    let lost: Vec<usize> = pixelgate_spool::Records::segment(&std::fs::read(&files[0]).unwrap())
        .filter_map(|item| match item {
            Item::Record { payload, .. } => Some(number(payload)),
            _ => None,
        })
        .collect();
    std::fs::remove_file(&files[0]).unwrap();

    server.restart();
    let rest = n - lost.len();
    assert_eq!(
        sorted(replayed(&server, &spool, rest)),
        (lost.len()..n).collect::<Vec<_>>()
    );
    let text = metrics_text(&registry);
    assert_eq!(
        sample(&text, "pixelgate_spool_unreadable_segments_total"),
        Some(1.0)
    );
    drop(enqueuer);
    writer.flushed().await;
}

/// Stream mode never trims an answered event: past `queue.stream_maxlen` batches go to the
/// spool, and once a drain makes room they are replayed. Every event is drained exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_spools_instead_of_trimming_and_every_event_is_drained() {
    let server = RedisServer::start();
    let config = QueueConfig {
        mode: pixelgate_queue::QueueMode::Stream,
        stream_maxlen: NonZeroU64::new(1000).unwrap(),
        ..config()
    };
    let (queue, registry) = queue(&server, config);
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(&spool_config(dir.path())).unwrap());
    let (enqueuer, writer) = queue.start_enqueuer(Some(spool.clone()));
    let answers = enqueue_all(&enqueuer, 0..3000).await;
    assert!(answers.iter().all(|(_, a)| a.is_ok()), "every event stored");
    let Reply::Int(len) = server.call(&["XLEN", KEY]) else {
        panic!()
    };
    assert!(len <= 1000, "the stream holds at most its cap: {len}");
    let text = metrics_text(&registry);
    let spooled = sample(&text, "pixelgate_spool_events_total{lane=\"main\"}").unwrap_or(0.0);
    assert_eq!(len as f64 + spooled, 3000.0, "{text}");
    assert!(
        sample(&text, "pixelgate_queue_errors_total{kind=\"stream_full\"}")
            .is_some_and(|n| n > 0.0)
    );

    // A drain makes room; the replayer fills it from the spool until every event is through.
    let consumer = queue.stream_consumer("drain-1", &[], holding(Duration::from_secs(30)));
    consumer.ensure_group(0).await.unwrap();
    let mut drained = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while drained.len() < 3000 || spool.stats().bytes() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 3000 drained in time",
            drained.len()
        );
        // A read waits up to 20 ms for entries: this loop polls at that pace.
        let batch = consumer
            .read(0, 500, Duration::from_millis(20))
            .await
            .unwrap();
        drained.extend(batch.entries.iter().map(|e| number(&e.payload)));
        consumer.ack(&batch).await.unwrap();
    }
    assert_eq!(sorted(drained), (0..3000).collect::<Vec<_>>());
    drop(enqueuer);
    writer.flushed().await;
}
