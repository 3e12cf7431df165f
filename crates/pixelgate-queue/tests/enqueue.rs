//! The enqueuer against a real redis-server: group commit, acknowledgements, back-pressure,
//! failures and recovery.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashSet, num::NonZeroUsize, sync::Arc, time::Duration};

use common::*;
use pixelgate_queue::{
    EnqueueError, Enqueuer, Lane, QueueConfig, QueueError, QueueMode, WriterHandle,
};
use pixelgate_tests::{RedisOptions, RedisServer, resp::Reply};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_become_few_commands() {
    let server = RedisServer::start();
    let (queue, registry) = queue(&server, QueueConfig::default());
    let (enqueuer, writer) = queue.start_enqueuer(None);
    let before = calls(&server, "rpush");
    let producers = 256;
    let per_producer = 40;
    let mut tasks = Vec::new();
    for p in 0..producers {
        let enqueuer = enqueuer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_producer {
                enqueuer
                    .enqueue(&event(p * per_producer + i), Lane::Main)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = producers * per_producer;
    assert_eq!(
        server.call(&["LLEN", "pixelgate:events"]),
        Reply::Int(total as i64)
    );
    let commands = calls(&server, "rpush") - before;
    assert!(
        commands * 10 <= total as u64,
        "{total} events took {commands} RPUSH commands"
    );
    let text = metrics_text(&registry);
    assert_eq!(
        sample(&text, "pixelgate_events_enqueued_total{lane=\"main\"}"),
        Some(total as f64)
    );
    assert_eq!(
        sample(&text, "pixelgate_queue_batch_events_count"),
        Some(commands as f64)
    );
    drop(enqueuer);
    writer.flushed().await;
}

#[tokio::test]
async fn an_acknowledged_event_is_already_in_redis() {
    let server = RedisServer::start();
    let (queue, _registry) = queue(&server, QueueConfig::default());
    let (enqueuer, _writer) = queue.start_enqueuer(None);
    for n in 0..20 {
        let e = event(n);
        enqueuer.enqueue(&e, Lane::Main).await.unwrap();
        // Read through the harness's own client, not the code under test.
        let last = server
            .call(&["LINDEX", "pixelgate:events", "-1"])
            .text()
            .unwrap();
        assert!(
            last.contains(&e.id.to_string()),
            "event {n} not in Redis when acknowledged"
        );
    }
}

#[tokio::test]
async fn events_keep_the_id_they_were_born_with() {
    let server = RedisServer::start();
    let (queue, _registry) = queue(&server, QueueConfig::default());
    let (enqueuer, _writer) = queue.start_enqueuer(None);
    let e = event(1);
    enqueuer.enqueue(&e, Lane::Main).await.unwrap();
    let stored = server.call(&["LPOP", "pixelgate:events"]).text().unwrap();
    assert_eq!(
        pixelgate_core::Event::from_json(stored.as_bytes()).unwrap(),
        e
    );
}

#[tokio::test]
async fn stream_mode_writes_one_entry_per_event() {
    let server = RedisServer::start();
    let config = QueueConfig {
        mode: QueueMode::Stream,
        ..QueueConfig::default()
    };
    let (queue, _registry) = queue(&server, config);
    let (enqueuer, _writer) = queue.start_enqueuer(None);
    let events: Vec<_> = (0..50).map(event).collect();
    let mut waits = Vec::new();
    for e in &events {
        let enqueuer = enqueuer.clone();
        let e = e.clone();
        waits.push(tokio::spawn(async move {
            enqueuer.enqueue(&e, Lane::Main).await
        }));
    }
    for w in waits {
        w.await.unwrap().unwrap();
    }
    assert_eq!(server.call(&["XLEN", "pixelgate:events"]), Reply::Int(50));
    let Reply::Array(Some(entries)) = server.call(&["XRANGE", "pixelgate:events", "-", "+"]) else {
        panic!("no entries")
    };
    let ids: HashSet<String> = entries
        .iter()
        .map(|entry| {
            let Reply::Array(Some(parts)) = entry else {
                panic!("{entry:?}")
            };
            let fields = parts[1].texts();
            assert_eq!(fields[0], "event");
            pixelgate_core::Event::from_json(fields[1].as_bytes())
                .unwrap()
                .id
                .to_string()
        })
        .collect();
    assert_eq!(ids, events.iter().map(|e| e.id.to_string()).collect());
}

#[tokio::test]
async fn the_overflow_lane_is_capped_and_counts_what_it_trims() {
    let server = RedisServer::start();
    let config = QueueConfig {
        overflow_cap: 10.try_into().unwrap(),
        ..QueueConfig::default()
    };
    let (queue, registry) = queue(&server, config);
    let (enqueuer, _writer) = queue.start_enqueuer(None);
    for n in 0..25 {
        enqueuer.enqueue(&event(n), Lane::Overflow).await.unwrap();
    }
    enqueuer.enqueue(&event(99), Lane::Main).await.unwrap();
    let kept = server
        .call(&["LRANGE", "pixelgate:overflow", "0", "-1"])
        .texts();
    assert_eq!(
        numbers(&kept),
        (15..25).collect::<Vec<_>>(),
        "the newest are kept"
    );
    assert_eq!(server.call(&["LLEN", "pixelgate:events"]), Reply::Int(1));
    let text = metrics_text(&registry);
    assert_eq!(
        sample(&text, "pixelgate_queue_overflow_trimmed_total"),
        Some(15.0)
    );
    assert_eq!(
        sample(&text, "pixelgate_events_enqueued_total{lane=\"overflow\"}"),
        Some(25.0)
    );
}

#[tokio::test]
async fn a_full_channel_answers_at_once_with_its_own_error() {
    let server = RedisServer::start();
    let config = QueueConfig {
        channel_capacity: nz(2),
        batch_max: nz(2),
        max_in_flight: nz(1),
        linger: Duration::ZERO,
        ack_timeout: Duration::from_secs(3),
        ..QueueConfig::default()
    };
    let (queue, _registry) = queue(&server, config);
    let (enqueuer, _writer) = queue.start_enqueuer(None);
    server.freeze(true);
    // One batch of two hangs on the frozen Redis, the next two gather behind it, two more wait
    // in the channel; the rest bounce. What is held is bounded by the channel and two batches.
    let mut waits = Vec::new();
    for n in 0..12 {
        let enqueuer = enqueuer.clone();
        waits.push(tokio::spawn(async move {
            enqueuer.enqueue(&event(n), Lane::Main).await
        }));
        tokio::task::yield_now().await;
    }
    let mut full = 0;
    for w in waits {
        if let Err(EnqueueError::Full) = w.await.unwrap() {
            full += 1;
        }
    }
    server.freeze(false);
    assert!(full >= 1, "no enqueue saw a full channel");
    assert_eq!(EnqueueError::Full.reason(), "queue_full");
}

#[tokio::test]
async fn a_wrong_key_type_is_a_clear_error() {
    let server = RedisServer::start();
    server.call(&["SET", "pixelgate:events", "not a list"]);
    let (queue, registry) = queue(&server, QueueConfig::default());
    let (enqueuer, _writer) = queue.start_enqueuer(None);
    let err = enqueuer.enqueue(&event(1), Lane::Main).await.unwrap_err();
    let EnqueueError::Failed(cause) = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(&**cause, QueueError::WrongType { key, .. } if key == "pixelgate:events"),
        "{cause:?}"
    );
    let said = pixelgate_core::config::chain(&err);
    assert!(said.contains("wrong type"), "{said}");
    let text = metrics_text(&registry);
    assert_eq!(
        sample(&text, "pixelgate_queue_errors_total{kind=\"wrong_type\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_loses_nothing_acknowledged() {
    let mut server = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    });
    let config = QueueConfig {
        ack_timeout: Duration::from_millis(300),
        ..QueueConfig::default()
    };
    let (queue, _registry) = queue(&server, config);
    let (enqueuer, writer) = queue.start_enqueuer(None);
    let enqueuer = Arc::new(enqueuer);
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut producers = Vec::new();
    for p in 0..8 {
        let (enqueuer, acked) = (enqueuer.clone(), acked.clone());
        producers.push(tokio::spawn(async move {
            let mut failures = 0;
            for i in 0..300 {
                let e = event(p * 1000 + i);
                match enqueuer.enqueue(&e, Lane::Main).await {
                    Ok(_) => acked.lock().unwrap().push(e.id.to_string()),
                    Err(_) => failures += 1,
                }
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            failures
        }));
    }
    // Kill Redis while the producers run, then bring it back with its append-only file.
    pixelgate_tests::wait_for("some events in Redis", Duration::from_secs(10), || {
        (acked.lock().unwrap().len() > 200).then_some(())
    });
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart();
    let mut failures = 0;
    for p in producers {
        failures += p.await.unwrap();
    }
    // The pool recovered: a new event goes through.
    queue.ping().await.unwrap();
    enqueuer.enqueue(&event(9_999), Lane::Main).await.unwrap();
    let stored: HashSet<String> = server
        .call(&["LRANGE", "pixelgate:events", "0", "-1"])
        .texts()
        .iter()
        .map(|t| {
            pixelgate_core::Event::from_json(t.as_bytes())
                .unwrap()
                .id
                .to_string()
        })
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost", lost.len());
    assert!(
        failures > 0,
        "the outage went unnoticed: kill happened after the run"
    );
    drop(enqueuer);
    writer.flushed().await;
}

/// An enqueuer with 4 write slots and a long `ack_timeout` whose first event is already in
/// Redis (connected first, so the frozen server holds a batch, not a connection attempt), then
/// the server frozen; with the `RPUSH` calls served so far.
async fn frozen_after_one(
    server: &RedisServer,
    config: QueueConfig,
) -> (Enqueuer, WriterHandle, u64) {
    let config = QueueConfig {
        max_in_flight: nz(4),
        ack_timeout: Duration::from_secs(60),
        ..config
    };
    let (queue, _registry) = queue(server, config);
    let (enqueuer, writer) = queue.start_enqueuer(None);
    enqueuer.enqueue(&event(0), Lane::Main).await.unwrap();
    let before = calls(server, "rpush");
    server.freeze(true);
    (enqueuer, writer, before)
}

/// Batches grow with the load, not with the write slots: while one batch is in flight, what
/// arrives gathers into the next, which goes when the first lands; a whole batch waiting goes
/// out beside it at once, as many as `queue.max_in_flight` (a Redis across a network keeps its
/// batches in flight). `queue.patience` is set longer than the test, which the next one tries.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_is_what_gathered_while_the_last_one_was_written() {
    for (batch_max, more, rpush) in [(512, 50, 2), (10, 30, 4)] {
        let server = RedisServer::start();
        let config = QueueConfig {
            batch_max: nz(batch_max),
            patience: Duration::from_secs(30),
            ..QueueConfig::default()
        };
        let (enqueuer, writer, before) = frozen_after_one(&server, config).await;
        // One thread: a yield lets every spawned producer hand its event over, and the writer
        // take what is handed over.
        let taken = |enqueuer: &Enqueuer| {
            let enqueuer = enqueuer.clone();
            async move {
                while enqueuer.waiting() > 0 {
                    tokio::task::yield_now().await;
                }
            }
        };
        let mut waits = Vec::new();
        let spawn = |n: usize| {
            let enqueuer = enqueuer.clone();
            tokio::spawn(async move { enqueuer.enqueue(&event(n), Lane::Main).await })
        };
        waits.push(spawn(1));
        tokio::task::yield_now().await;
        taken(&enqueuer).await;
        // One at a time, each taken by the writer before the next comes: arrivals spread over
        // the first batch's flight, as under moderate load.
        for n in 0..more {
            waits.push(spawn(2 + n));
            tokio::task::yield_now().await;
            taken(&enqueuer).await;
        }
        server.freeze(false);
        for w in waits {
            w.await.unwrap().unwrap();
        }
        assert_eq!(
            calls(&server, "rpush") - before,
            rpush,
            "batch_max {batch_max}"
        );
        drop(enqueuer);
        writer.flushed().await;
    }
}

/// A stalled write holds the batch behind it only for `queue.patience`: events arriving 3 ms
/// apart while a frozen Redis holds the first batch go out in batches of their own, one each
/// time the patience (5 ms) of the gathering one runs out, until every write slot is taken.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_batch_holds_the_next_only_for_queue_patience() {
    let server = RedisServer::start();
    let config = QueueConfig {
        patience: Duration::from_millis(5),
        ..QueueConfig::default()
    };
    let (enqueuer, writer, before) = frozen_after_one(&server, config).await;
    let mut waits = Vec::new();
    for n in 1..=30 {
        let enqueuer = enqueuer.clone();
        waits.push(tokio::spawn(async move {
            enqueuer.enqueue(&event(n), Lane::Main).await
        }));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    server.freeze(false);
    for w in waits {
        w.await.unwrap().unwrap();
    }
    let rpush = calls(&server, "rpush") - before;
    assert!(
        rpush >= 4,
        "{rpush} RPUSH for 30 events spread over 90 ms behind a stalled one: the batch behind waited for it"
    );
    drop(enqueuer);
    writer.flushed().await;
}
