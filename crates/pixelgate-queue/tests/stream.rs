//! Stream mode, drain side, against a real redis-server: the consumer group, acknowledgement,
//! reclaiming a dead consumer's entries with XAUTOCLAIM, and the dead-letter stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use pixelgate_queue::{BatchSource, Holding, Lane, Queue, QueueConfig, QueueError, QueueMode};
use pixelgate_tests::{RedisServer, resp::Reply};

const NO_WAIT: Duration = Duration::from_millis(1);

async fn filled(server: &RedisServer, n: usize) -> Queue {
    let config = QueueConfig {
        mode: QueueMode::Stream,
        ..QueueConfig::default()
    };
    let (queue, _registry) = queue(server, config);
    let (enqueuer, writer) = queue.start_enqueuer(None);
    for i in 0..n {
        enqueuer.enqueue(&event(i), Lane::Main).await.unwrap();
    }
    drop(enqueuer);
    writer.flushed().await;
    queue
}

#[tokio::test]
async fn a_consumer_reads_acks_and_the_stream_empties() {
    let server = RedisServer::start();
    let queue = filled(&server, 7).await;
    let consumer = queue.stream_consumer("drain-1", &[], holding(Duration::from_secs(30)));
    consumer.ensure_group(0).await.unwrap();
    consumer.ensure_group(0).await.unwrap(); // idempotent
    let batch = consumer.read(0, 5, NO_WAIT).await.unwrap();
    assert_eq!(
        numbers(&batch.entries.iter().map(|e| &e.payload).collect::<Vec<_>>()),
        [0, 1, 2, 3, 4]
    );
    let stats = queue.observe().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (2, 5));
    assert!(stats.oldest_age.is_some());
    consumer.ack(&batch).await.unwrap();
    let rest = consumer.read(0, 5, NO_WAIT).await.unwrap();
    assert_eq!(rest.entries.len(), 2);
    consumer.ack(&rest).await.unwrap();
    assert!(
        consumer
            .read(0, 5, NO_WAIT)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert_eq!(
        server.call(&["XLEN", "pixelgate:events"]),
        Reply::Int(0),
        "drained entries are deleted"
    );
    let stats = queue.observe().await.unwrap();
    assert_eq!(
        (stats.depth, stats.in_flight, stats.oldest_age),
        (0, 0, None)
    );
}

#[tokio::test]
async fn a_blocked_read_returns_what_arrives() {
    let server = RedisServer::start();
    let queue = filled(&server, 0).await;
    let consumer = queue.stream_consumer("drain-1", &[], holding(Duration::from_secs(30)));
    consumer.ensure_group(0).await.unwrap();
    let reader = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.read(0, 10, Duration::from_secs(10)).await }
    });
    let (enqueuer, _writer) = queue.start_enqueuer(None);
    enqueuer.enqueue(&event(42), Lane::Main).await.unwrap();
    let batch = reader.await.unwrap().unwrap();
    assert_eq!(numbers(&[&batch.entries[0].payload]), [42]);
}

#[tokio::test]
async fn xautoclaim_recovers_a_dead_consumer_s_entries() {
    let server = RedisServer::start();
    let queue = filled(&server, 4).await;
    let dead = queue.stream_consumer("drain-dead", &[], holding(Duration::from_secs(30)));
    dead.ensure_group(0).await.unwrap();
    let taken = dead.read(0, 3, NO_WAIT).await.unwrap();
    assert_eq!(taken.entries.len(), 3);
    drop(dead); // dies without acknowledging

    let alive = queue.stream_consumer("drain-alive", &[], holding(Duration::from_millis(100)));
    // First the entry nobody read, then, once idle past the lease, the dead consumer's three.
    let fresh = alive.read(0, 10, NO_WAIT).await.unwrap();
    assert_eq!(fresh.entries.len(), 1);
    alive.ack(&fresh).await.unwrap();
    let recovered = eventually(
        "the dead consumer's entries",
        Duration::from_secs(10),
        || async {
            let b = alive.read(0, 10, NO_WAIT).await.unwrap();
            (!b.entries.is_empty()).then_some(b)
        },
    )
    .await;
    assert_eq!(recovered.entries, taken.entries);
    alive.ack(&recovered).await.unwrap();
    assert_eq!(server.call(&["XLEN", "pixelgate:events"]), Reply::Int(0));
}

/// What the drain's loop does with a batch it holds: keeping it keeps it from other consumers
/// for another lease, giving it back hands it to the next reader at once.
#[tokio::test]
async fn a_kept_batch_stays_and_a_given_back_one_goes_to_the_next_reader() {
    let server = RedisServer::start();
    let queue = filled(&server, 3).await;
    // Long enough that the margins below survive a loaded machine.
    let lease = Duration::from_secs(1);
    let a = queue.stream_consumer("drain-a", &[], holding(lease));
    let b = queue.stream_consumer("drain-b", &[], holding(lease));
    a.prepare(0).await.unwrap();
    let taken = a.take(0, 10, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(taken.entries.len(), 3);
    // Time itself is what is tested: idle times are Redis's clock, which no test can pause.
    tokio::time::sleep(lease * 7 / 10).await;
    a.keep(&taken).await.unwrap();
    tokio::time::sleep(lease * 7 / 10).await;
    assert!(
        b.take(0, 10, NO_WAIT).await.unwrap().is_none(),
        "kept past its first lease, still a's"
    );
    a.give_back(&taken).await.unwrap();
    let again = b.take(0, 10, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(again.entries, taken.entries);
    assert!(BatchSource::ack(&b, &again).await.unwrap());
    assert_eq!(server.call(&["XLEN", "pixelgate:events"]), Reply::Int(0));
}

#[tokio::test]
async fn entries_delivered_too_often_go_to_the_dead_letter_stream() {
    let server = RedisServer::start();
    let queue = filled(&server, 2).await;
    let consumer = queue.stream_consumer(
        "drain-1",
        &[],
        Holding {
            lease: Duration::from_millis(20),
            max_deliveries: 2,
        },
    );
    consumer.ensure_group(0).await.unwrap();
    // Read and "crash" until the entries exceed their deliveries.
    let first = consumer.read(0, 10, NO_WAIT).await.unwrap();
    assert_eq!(first.entries.len(), 2);
    let second = eventually("a redelivery", Duration::from_secs(10), || async {
        let b = consumer.read(0, 10, NO_WAIT).await.unwrap();
        (!b.entries.is_empty()).then_some(b)
    })
    .await;
    assert_eq!(second.entries, first.entries);
    eventually("the dead letters", Duration::from_secs(10), || async {
        let b = consumer.read(0, 10, NO_WAIT).await.unwrap();
        assert!(b.entries.is_empty(), "delivered a third time");
        (server.call(&["XLEN", "pixelgate:events:dead"]) == Reply::Int(2)).then_some(())
    })
    .await;
    assert_eq!(server.call(&["XLEN", "pixelgate:events"]), Reply::Int(0));
    let dead = server.call(&["XRANGE", "pixelgate:events:dead", "-", "+"]);
    let Reply::Array(Some(entries)) = dead else {
        panic!("{dead:?}")
    };
    let Reply::Array(Some(fields)) = &entries[0] else {
        panic!()
    };
    let fields = fields[1].texts();
    assert_eq!(
        (fields[0].as_str(), fields[1].as_str(), fields[2].as_str()),
        ("id", first.entries[0].id.as_str(), "event")
    );
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_a_clear_error() {
    let server = RedisServer::start();
    server.call(&["RPUSH", "pixelgate:events", "x"]);
    let config = QueueConfig {
        mode: QueueMode::Stream,
        ..QueueConfig::default()
    };
    let (queue, _registry) = queue(&server, config);
    let err = queue
        .stream_consumer("d", &[], holding(Duration::from_secs(30)))
        .ensure_group(0)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueueError::WrongType { key, .. } if key == "pixelgate:events"),
        "{err:?}"
    );
}

#[tokio::test]
async fn queue_round_trip_and_ping() {
    let server = RedisServer::start();
    let (queue, _registry) = queue(&server, QueueConfig::default());
    queue.ping().await.unwrap();
    assert_eq!(queue.round_trip("abc-123").await.unwrap(), "abc-123");
    let keys = server.call(&["KEYS", "pixelgate:test:*"]).texts();
    assert_eq!(keys.len(), 1);
    let Reply::Int(ttl) = server.call(&["TTL", &keys[0]]) else {
        panic!()
    };
    assert!((1..=10).contains(&ttl), "short TTL, got {ttl}");
    drop(server);
    assert!(queue.ping().await.is_err());
}
