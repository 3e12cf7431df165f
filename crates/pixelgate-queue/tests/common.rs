//! Shared set-up for the queue's tests: a queue on a harness Redis, and events to put in it.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::{net::Ipv4Addr, time::SystemTime};

use pixelgate_core::{Claims, Event, Ids};
use pixelgate_queue::{Queue, QueueConfig, RedisConfig};
use pixelgate_spool::{Item, Records, Spool, SpoolConfig};
use pixelgate_tests::RedisServer;
pub use pixelgate_tests::{eventually, sample};
use prometheus_client::registry::Registry;

pub fn redis_config(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        url: server.url().parse().unwrap(),
        ..RedisConfig::default()
    }
}

pub fn queue(server: &RedisServer, config: QueueConfig) -> (Queue, Registry) {
    let mut registry = Registry::default();
    let queue = Queue::new(&redis_config(server), &config, &mut registry).unwrap();
    (queue, registry)
}

/// An open event whose message id is `msg-{n}`, so tests can tell events apart and order them.
pub fn event(n: usize) -> Event {
    let ids = Ids::new("acme", "spring", format!("msg-{n}"), "r-1").unwrap();
    Event::born(
        Claims::open(ids),
        Ipv4Addr::LOCALHOST.into(),
        "test",
        SystemTime::now(),
    )
}

/// The message numbers of serialised events, in order.
pub fn numbers<B: AsRef<[u8]>>(payloads: &[B]) -> Vec<usize> {
    payloads
        .iter()
        .map(|p| {
            let e = Event::from_json(p.as_ref()).unwrap();
            e.message.trim_start_matches("msg-").parse().unwrap()
        })
        .collect()
}

/// Every payload a closed spool holds on disk, oldest first; the segments are removed as read.
/// A spool written cleanly has no damage, so any is a panic.
pub fn spooled(config: &SpoolConfig) -> Vec<Vec<u8>> {
    let spool = Spool::open(config).unwrap();
    let mut on_disk = Vec::new();
    while let Some(segment) = spool.oldest() {
        let bytes = spool.read(&segment).unwrap();
        for item in Records::segment(&bytes) {
            let Item::Record { payload, .. } = item else {
                panic!("damage in a cleanly written spool: {item:?}");
            };
            on_disk.push(payload.to_vec());
        }
        spool.remove(&segment).unwrap();
    }
    on_disk
}

/// The Prometheus text of a registry.
pub fn metrics_text(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

/// `INFO commandstats` calls of one command.
pub fn calls(server: &RedisServer, command: &str) -> u64 {
    let info = server.call(&["INFO", "commandstats"]).text().unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}
