//! Shared set-up for the queue's tests: a queue on a harness Redis, what its events are
//! numbered, and what a closed spool holds.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use pixelgate_queue::{Queue, QueueConfig};
use pixelgate_spool::{Item, Records, Spool, SpoolConfig};
use pixelgate_tests::RedisServer;
pub use pixelgate_tests::{
    events::{event, number},
    eventually, sample,
};
use prometheus_client::registry::Registry;

pub fn queue(server: &RedisServer, config: QueueConfig) -> (Queue, Registry) {
    let mut registry = Registry::default();
    let queue = Queue::new(&server.config(), &config, &mut registry).unwrap();
    (queue, registry)
}

/// A drain's hold on what it takes: `lease`, and five deliveries before the dead letters.
pub fn holding(lease: std::time::Duration) -> pixelgate_queue::Holding {
    pixelgate_queue::Holding {
        lease,
        max_deliveries: 5,
    }
}

/// The message numbers of serialised events, in order.
pub fn numbers<B: AsRef<[u8]>>(payloads: &[B]) -> Vec<usize> {
    payloads.iter().map(|p| number(p.as_ref())).collect()
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
