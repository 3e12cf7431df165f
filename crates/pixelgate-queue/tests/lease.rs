//! List mode, drain side, against a real redis-server: claims, acks, expired leases given back
//! in order, scripts surviving `SCRIPT FLUSH` and restarts, guarded inputs and key types.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use pixelgate_queue::{Lane, Leases, QueueConfig, QueueError};
use pixelgate_tests::{RedisOptions, RedisServer, resp::Reply, wait_for};

const LONG: Duration = Duration::from_secs(60);

/// A queue holding events `0..n` and leasing access to its one shard.
async fn filled(server: &RedisServer, n: usize) -> (pixelgate_queue::Queue, Leases) {
    let (queue, _registry) = queue(server, QueueConfig::default());
    let (enqueuer, writer) = queue.start_enqueuer(None);
    for i in 0..n {
        enqueuer.enqueue(&event(i), Lane::Main).await.unwrap();
    }
    drop(enqueuer);
    writer.flushed().await;
    let leases = queue.leases(&[], holding(LONG));
    leases.load_scripts().await.unwrap();
    (queue, leases)
}

#[tokio::test]
async fn claims_take_batches_from_the_head_and_acks_forget_them() {
    let server = RedisServer::start();
    let (queue, leases) = filled(&server, 10).await;
    let a = leases.claim(0, 4, LONG).await.unwrap().unwrap();
    let b = leases.claim(0, 4, LONG).await.unwrap().unwrap();
    assert_eq!(numbers(&a.events), [0, 1, 2, 3]);
    assert_eq!(numbers(&b.events), [4, 5, 6, 7]);
    assert_ne!(a.id, b.id);
    assert_eq!(server.call(&["LLEN", "pixelgate:events"]), Reply::Int(2));
    let stats = queue.observe().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (2, 8));
    assert!(leases.ack(&a).await.unwrap());
    assert!(leases.ack(&b).await.unwrap());
    assert!(!leases.ack(&a).await.unwrap(), "a second ack finds nothing");
    let rest = leases.claim(0, 100, LONG).await.unwrap().unwrap();
    assert_eq!(numbers(&rest.events), [8, 9]);
    leases.ack(&rest).await.unwrap();
    assert_eq!(leases.claim(0, 100, LONG).await.unwrap(), None);
    let stats = queue.observe().await.unwrap();
    assert_eq!(
        (stats.depth, stats.in_flight, stats.oldest_age),
        (0, 0, None)
    );
    // Nothing is left behind in the lease structures.
    assert_eq!(
        server.call(&["ZCARD", "pixelgate:events:leases"]),
        Reply::Int(0)
    );
    let fields = server
        .call(&["HKEYS", "pixelgate:events:lease-data"])
        .texts();
    assert_eq!(fields.len(), 2, "only seq and inflight remain: {fields:?}");
}

#[tokio::test]
async fn a_dropped_consumer_s_events_come_back_in_order_after_the_lease() {
    let server = RedisServer::start();
    let (_queue, leases) = filled(&server, 12).await;
    // Two consumers claim and die without acknowledging.
    let short = Duration::from_millis(150);
    let first = leases.claim(0, 3, short).await.unwrap().unwrap();
    let second = leases.claim(0, 3, short).await.unwrap().unwrap();
    assert_eq!(numbers(&first.events), [0, 1, 2]);
    assert_eq!(numbers(&second.events), [3, 4, 5]);
    drop((first, second));
    // A live consumer takes and finishes the rest meanwhile.
    let rest = leases.claim(0, 100, LONG).await.unwrap().unwrap();
    assert_eq!(numbers(&rest.events), (6..12).collect::<Vec<_>>());
    assert!(leases.ack(&rest).await.unwrap());
    // Once the leases expire, the dead consumers' events come back first and in order.
    // The two leases expire a moment apart: each comes back whole, the older one first.
    let mut back = Vec::new();
    while back.len() < 6 {
        let lease = eventually(
            "the expired leases to come back",
            Duration::from_secs(10),
            || async { leases.claim(0, 1, LONG).await.unwrap() },
        )
        .await;
        assert!(
            lease.events.len() >= 3,
            "a given-back lease is claimed whole"
        );
        back.extend(numbers(&lease.events));
    }
    assert_eq!(back, [0, 1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_go_back_to_the_head_ahead_of_newer_events() {
    let server = RedisServer::start();
    let (_queue, leases) = filled(&server, 6).await;
    let short = Duration::from_millis(100);
    let a = leases.claim(0, 2, short).await.unwrap().unwrap();
    let b = leases.claim(0, 2, short).await.unwrap().unwrap();
    assert_eq!(
        (numbers(&a.events), numbers(&b.events)),
        (vec![0, 1], vec![2, 3])
    );
    // Wait until Redis's clock is past both deadlines, then reap.
    let deadline_ms = server
        .call(&[
            "ZRANGE",
            "pixelgate:events:leases",
            "-1",
            "-1",
            "WITHSCORES",
        ])
        .texts()[1]
        .parse::<u64>()
        .unwrap();
    wait_for("the leases to expire", Duration::from_secs(10), || {
        let now = server.call(&["TIME"]).texts();
        let ms = now[0].parse::<u64>().unwrap() * 1000 + now[1].parse::<u64>().unwrap() / 1000;
        (ms > deadline_ms).then_some(())
    });
    assert_eq!(leases.reap(0).await.unwrap(), 4);
    assert!(
        !leases.ack(&a).await.unwrap(),
        "an expired and given-back lease cannot be acked"
    );
    let again = leases.claim(0, 100, LONG).await.unwrap().unwrap();
    assert_eq!(numbers(&again.events), [0, 1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn renew_keeps_a_lease_and_release_gives_it_back_at_once() {
    let server = RedisServer::start();
    let (_queue, leases) = filled(&server, 5).await;
    let lease = leases
        .claim(0, 3, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(leases.renew(&lease, LONG).await.unwrap());
    assert_eq!(leases.release(&lease).await.unwrap(), 3);
    assert!(
        !leases.renew(&lease, LONG).await.unwrap(),
        "a released lease is gone"
    );
    let again = leases.claim(0, 100, LONG).await.unwrap().unwrap();
    assert_eq!(numbers(&again.events), [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn script_flush_mid_run_is_survived() {
    let server = RedisServer::start();
    let (_queue, leases) = filled(&server, 6).await;
    let a = leases.claim(0, 3, LONG).await.unwrap().unwrap();
    assert_eq!(
        server.call(&["SCRIPT", "FLUSH"]),
        Reply::Status("OK".into())
    );
    assert!(leases.ack(&a).await.unwrap());
    assert_eq!(
        server.call(&["SCRIPT", "FLUSH"]),
        Reply::Status("OK".into())
    );
    let b = leases.claim(0, 3, LONG).await.unwrap().unwrap();
    assert_eq!(numbers(&b.events), [3, 4, 5]);
    assert!(calls(&server, "evalsha") >= 2, "scripts run by EVALSHA");
}

#[tokio::test]
async fn leases_survive_a_redis_restart() {
    let mut server = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    });
    let (_queue, leases) = filled(&server, 4).await;
    let a = leases.claim(0, 2, LONG).await.unwrap().unwrap();
    server.kill();
    assert!(leases.ack(&a).await.is_err(), "Redis is down");
    server.restart();
    let ack = eventually("the pool to reconnect", Duration::from_secs(10), || async {
        leases.ack(&a).await.ok()
    })
    .await;
    assert!(ack, "the lease survived the restart");
    let b = leases.claim(0, 10, LONG).await.unwrap().unwrap();
    assert_eq!(numbers(&b.events), [2, 3]);
}

#[tokio::test]
async fn wrong_key_types_and_bad_arguments_are_refused_before_any_write() {
    let server = RedisServer::start();
    let (_queue, leases) = filled(&server, 3).await;
    server.call(&["SET", "pixelgate:events:leases", "oops"]);
    let err = leases.claim(0, 2, LONG).await.unwrap_err();
    let QueueError::WrongType { key, detail } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(key, "pixelgate:events:leases");
    assert!(detail.contains("is a string, expected a zset"), "{detail}");
    assert_eq!(
        server.call(&["LLEN", "pixelgate:events"]),
        Reply::Int(3),
        "nothing moved"
    );
    server.call(&["DEL", "pixelgate:events:leases"]);

    let err = leases.claim(0, 200_000, LONG).await.unwrap_err();
    let said = pixelgate_core::config::chain(&err);
    assert!(
        said.contains("pixelgate: argument 1 must be a whole number from 0 to 100000"),
        "{said}"
    );
    assert_eq!(
        server.call(&["LLEN", "pixelgate:events"]),
        Reply::Int(3),
        "nothing moved"
    );
    assert!(leases.claim(0, 2, LONG).await.unwrap().is_some());
}
