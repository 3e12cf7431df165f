//! The queue on a real three-master Redis Cluster: one shard key per master, drains that work on
//! whole shards, and a master killed and restarted under load losing nothing acknowledged.
//!
//! Where events are is read through the harness (`CLUSTER KEYSLOT`/`CLUSTER SLOTS`, then `LLEN`
//! on the owning node), never through the code under test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU16,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::*;
use pixelgate_core::Event;
use pixelgate_queue::{Enqueuer, Lane, Queue, QueueConfig, RedisConfig, ShardKeys};
use pixelgate_tests::{RedisCluster, RedisServer, resp::Reply, wait_for};
use prometheus_client::registry::Registry;

const LONG: Duration = Duration::from_secs(60);

fn cluster_queue(cluster: &RedisCluster, config: QueueConfig) -> (Queue, Registry) {
    let redis = RedisConfig {
        cluster_nodes: cluster.urls().iter().map(|u| u.parse().unwrap()).collect(),
        ..RedisConfig::default()
    };
    let config = QueueConfig {
        shards: NonZeroU16::new(3).unwrap(),
        ..config
    };
    config.validate(&redis).unwrap();
    let mut registry = Registry::default();
    let queue = Queue::new(&redis, &config, &mut registry).unwrap();
    (queue, registry)
}

/// The event ids in the list `key` of `node`, in order.
fn ids_in(node: &RedisServer, key: &str) -> Vec<String> {
    node.call(&["LRANGE", key, "0", "-1"])
        .texts()
        .iter()
        .map(|t| id_of(t.as_bytes()))
        .collect()
}

fn id_of(payload: &[u8]) -> String {
    Event::from_json(payload).unwrap().id.to_string()
}

fn llen(node: &RedisServer, key: &str) -> i64 {
    match node.call(&["LLEN", key]) {
        Reply::Int(n) => n,
        other => panic!("LLEN {key} answered {other:?}"),
    }
}

/// `producers` tasks enqueueing `each` events; returns the ids of the acknowledged ones.
async fn produce(enqueuer: &Enqueuer, producers: usize, each: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let enqueuer = enqueuer.clone();
            tokio::spawn(async move {
                let mut acked = Vec::with_capacity(each);
                for i in 0..each {
                    let e = event(p * each + i);
                    enqueuer.enqueue(&e, Lane::Main).await.unwrap();
                    acked.push(e.id.to_string());
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_spread_over_one_shard_per_master() {
    let cluster = RedisCluster::start(3);
    let (queue, _registry) = cluster_queue(&cluster, QueueConfig::default());
    let (enqueuer, writer) = queue.start_enqueuer(None);
    let acked = produce(&enqueuer, 30, 100).await;
    drop(enqueuer);
    writer.flushed().await;

    let shards = &queue.layout().shards;
    assert_eq!(shards.len(), 3);
    let mut owners = HashSet::new();
    let mut stored = Vec::new();
    for shard in shards {
        let owner = cluster.node_for_key(&shard.queue);
        owners.insert(owner);
        let ids = ids_in(&cluster.nodes()[owner], &shard.queue);
        assert!(!ids.is_empty(), "shard {} holds no events", shard.queue);
        stored.extend(ids);
    }
    assert_eq!(owners.len(), 3, "the shards share masters: {owners:?}");
    assert_eq!(stored.len(), 3000);
    let stored: HashSet<_> = stored.into_iter().collect();
    assert_eq!(stored.len(), 3000, "an event was stored twice");
    assert_eq!(stored, acked.into_iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_works_on_whole_shards_and_sees_every_event_once() {
    let cluster = RedisCluster::start(3);
    let (queue, _registry) = cluster_queue(&cluster, QueueConfig::default());
    let (enqueuer, _writer) = queue.start_enqueuer(None);
    let acked = produce(&enqueuer, 9, 100).await;
    let shards = queue.layout().shards.clone();
    let owner: Vec<_> = shards
        .iter()
        .map(|s| &cluster.nodes()[cluster.node_for_key(&s.queue)])
        .collect();
    let len = |i: usize| llen(owner[i], &shards[i].queue);

    // A handle on one shard leases from that shard only. `claim` names a shard by its position
    // among the handle's shards, so 0 here is layout shard `i`.
    for i in 0..3 {
        let leases = queue.leases(&[i], holding(LONG));
        assert_eq!(leases.shards(), &shards[i..=i]);
        let before: Vec<_> = (0..3).map(len).collect();
        let lease = leases.claim(0, 5, LONG).await.unwrap().unwrap();
        assert_eq!(lease.shard, 0);
        assert_eq!(lease.events.len(), 5);
        let after: Vec<_> = (0..3).map(len).collect();
        for j in 0..3 {
            let taken = if i == j { 5 } else { 0 };
            assert_eq!(
                before[j] - after[j],
                taken,
                "claim on shard {i} took from {j}"
            );
        }
        assert!(
            leases.claim(1, 5, LONG).await.is_err(),
            "a handle on shard {i} claimed from a second shard"
        );
        assert!(leases.release(&lease).await.unwrap() == 5);
    }

    // One drain per shard, side by side, each acknowledging what it committed.
    let drains: Vec<_> = (0..3)
        .map(|i| {
            let leases = queue.leases(&[i], holding(LONG));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(lease) = leases.claim(0, 64, LONG).await.unwrap() {
                    seen.extend(lease.events.iter().map(|e| id_of(e)));
                    assert!(leases.ack(&lease).await.unwrap());
                }
                seen
            })
        })
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for d in drains {
        for id in d.await.unwrap() {
            *seen.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "drained more than once: {twice:?}");
    let seen: HashSet<_> = seen.into_keys().collect();
    assert_eq!(seen, acked.into_iter().collect::<HashSet<_>>());
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(len(i), 0);
        let inflight = owner[i].call(&["HGET", s.lease_data.as_str(), "inflight"]);
        assert_eq!(inflight.text().as_deref(), Some("0"), "shard {i} in flight");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_mid_run_loses_nothing_acknowledged() {
    let mut cluster = RedisCluster::start(3);
    let config = QueueConfig {
        ack_timeout: Duration::from_millis(500),
        ..QueueConfig::default()
    };
    let (queue, _registry) = cluster_queue(&cluster, config);
    let (enqueuer, writer) = queue.start_enqueuer(None);
    let shards = queue.layout().shards.clone();
    let victim = cluster.node_for_key(&shards[0].queue);

    let producers = Producers::start(&enqueuer);
    let (acked, failures) = (producers.acked.clone(), producers.failures.clone());
    let acked_now = || acked.lock().unwrap().len();

    // The harness blocks while it polls; `block_in_place` keeps the producers running.
    tokio::task::block_in_place(|| {
        wait_for("events before the crash", Duration::from_secs(10), || {
            (acked_now() > 500).then_some(())
        });
        cluster.kill_node(victim);
        wait_for("the producers to notice", Duration::from_secs(10), || {
            (!failures.lock().unwrap().is_empty()).then_some(())
        });
        cluster.restart_node(victim);
    });
    let restarted_with = llen(&cluster.nodes()[victim], &shards[0].queue);

    // The pool recovers: consecutive single events (one batch each, so they go round the
    // shards) all succeed, and the restarted master takes new events again.
    let mut in_a_row = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while in_a_row < 9 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "enqueue did not recover after the restart"
        );
        let e = event(9_000_000 + in_a_row);
        match enqueuer.enqueue(&e, Lane::Main).await {
            Ok(_) => {
                acked.lock().unwrap().push(e.id.to_string());
                in_a_row += 1;
            }
            Err(_) => in_a_row = 0,
        }
    }
    producers.stop().await;
    drop(enqueuer);
    writer.flushed().await;
    assert!(
        llen(&cluster.nodes()[victim], &shards[0].queue) > restarted_with,
        "the restarted master took no new events"
    );

    assert_nothing_lost(&cluster, &shards, &[], &acked.lock().unwrap());
    assert!(!failures.lock().unwrap().is_empty());
}

/// With a spool, a dead master costs nothing: its shard is skipped, batches that were on their
/// way to it are spooled, and after the restart the replay puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_spool_a_dead_master_fails_no_event() {
    let mut cluster = RedisCluster::start(3);
    let config = QueueConfig {
        ack_timeout: Duration::from_millis(300),
        ..QueueConfig::default()
    };
    let (queue, registry) = cluster_queue(&cluster, config);
    let dir = tempfile::tempdir().unwrap();
    let spool_config = pixelgate_spool::SpoolConfig {
        dir: dir.path().to_owned(),
        retry_interval: Duration::from_millis(100),
        ..pixelgate_spool::SpoolConfig::default()
    };
    let spool = Arc::new(pixelgate_spool::Spool::open(&spool_config).unwrap());
    let (enqueuer, writer) = queue.start_enqueuer(Some(spool.clone()));
    let shards = queue.layout().shards.clone();
    let victim = cluster.node_for_key(&shards[0].queue);

    let producers = Producers::start(&enqueuer);
    let (acked, failures) = (producers.acked.clone(), producers.failures.clone());
    let acked_now = || acked.lock().unwrap().len();
    let down = || sample(&metrics_text(&registry), "pixelgate_redis_shards_down");

    tokio::task::block_in_place(|| {
        wait_for("events before the crash", Duration::from_secs(10), || {
            (acked_now() > 500).then_some(())
        });
        cluster.kill_node(victim);
        wait_for(
            "the dead shard to be marked down",
            Duration::from_secs(10),
            || (down() == Some(1.0)).then_some(()),
        );
        let during = acked_now();
        wait_for(
            "events while the master is down",
            Duration::from_secs(10),
            || (acked_now() > during + 500).then_some(()),
        );
        cluster.restart_node(victim);
        wait_for("the shard to come back", Duration::from_secs(20), || {
            (down() == Some(0.0) && spool.stats().bytes() == 0).then_some(())
        });
    });
    producers.stop().await;
    drop(enqueuer);
    writer.flushed().await;
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..1]
    );

    // A batch can still time out while the cluster settles after the restart; it is then in the
    // spool, which a stopped writer leaves on disk for the next start to replay.
    drop(spool);
    let on_disk: Vec<String> = spooled(&spool_config).iter().map(|p| id_of(p)).collect();
    assert_nothing_lost(&cluster, &shards, &on_disk, &acked.lock().unwrap());
}

/// Eight tasks enqueueing distinct events until stopped: the ids acknowledged, and the errors.
struct Producers {
    acked: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Producers {
    fn start(enqueuer: &Enqueuer) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..8)
            .map(|p| {
                let (enqueuer, acked) = (enqueuer.clone(), acked.clone());
                let (failures, stop) = (failures.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let e = event(p * 1_000_000 + i);
                        match enqueuer.enqueue(&e, Lane::Main).await {
                            Ok(_) => acked.lock().unwrap().push(e.id.to_string()),
                            Err(error) => failures.lock().unwrap().push(error.to_string()),
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Self {
            acked,
            failures,
            stop,
            tasks,
        }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// Every acknowledged id is in one of the shards, or in `spooled`.
fn assert_nothing_lost(
    cluster: &RedisCluster,
    shards: &[ShardKeys],
    spooled: &[String],
    acked: &[String],
) {
    let stored: HashSet<String> = shards
        .iter()
        .flat_map(|s| ids_in(&cluster.nodes()[cluster.node_for_key(&s.queue)], &s.queue))
        .chain(spooled.iter().cloned())
        .collect();
    let lost = acked.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged events lost",
        acked.len()
    );
}
