//! pixelgate's Redis queue: where events stop being in flight.
//!
//! - [`config`]: `[redis]` and `[queue]` of the configuration.
//! - [`pool`]: deadpool-redis over one server or a cluster, timeouts always set.
//! - [`layout`]: the key names, with hash-tagged shards on a cluster.
//! - [`enqueue`]: the edge's side, group commit: many events, few commands, each caller
//!   acknowledged only once its batch is in Redis or, past `queue.ack_timeout`, in the disk
//!   spool (`pixelgate_spool`); `replay.rs` moves spooled events back once Redis answers.
//! - [`lease`]: list mode, drain side: Lua leases, so a crashed drain loses nothing.
//! - [`stream`]: stream mode, drain side: the consumer group `pixelgate-drain`.
//! - [`source`]: [`BatchSource`], what both drain sides are to the drain: take, keep,
//!   dead-letter, acknowledge, give back.
//! - [`metrics`]: counters, histograms and gauges for `/metrics`.
//!
//! Invariant: this crate knows nothing of HTTP; the edge and the drain use Redis only through
//! [`Queue`] and the handles it gives out.

pub mod config;
pub mod enqueue;
pub mod error;
pub mod layout;
pub mod lease;
pub mod metrics;
pub mod pool;
mod replay;
pub mod source;
pub mod stream;

use std::{sync::Arc, time::Duration};

use pixelgate_core::Timestamp;
use pixelgate_spool::Spool;
use prometheus_client::registry::Registry;
use tokio::time::timeout;

pub use crate::{
    config::{QueueConfig, QueueMode, RedisConfig},
    enqueue::{EnqueueError, Enqueuer, Lane, Stored},
    error::QueueError,
    layout::{Layout, ShardKeys},
    lease::{Lease, Leases},
    metrics::QueueMetrics,
    pool::{Pool, PoolStatus},
    source::{BatchSource, Holding, Taken},
    stream::{Entry, StreamBatch, StreamConsumer},
};

/// What `/metrics` reports about the queue, read from Redis when it is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Events waiting in Redis, all shards.
    pub depth: u64,
    /// Events claimed by drains and not yet acknowledged.
    pub in_flight: u64,
    /// Age of the oldest waiting event; `None` when nothing waits.
    pub oldest_age: Option<Duration>,
}

/// The queue: a pool, a key layout and the metrics. Hands out the enqueuer and drain handles.
#[derive(Debug, Clone)]
pub struct Queue {
    pool: Pool,
    layout: Arc<Layout>,
    config: QueueConfig,
    metrics: Arc<QueueMetrics>,
    command_timeout: Duration,
}

/// The running enqueuer's writer task (and replayer). [`WriterHandle::flushed`] completes
/// after every [`Enqueuer`] clone is dropped, the last batch has been answered and the
/// replayer has stopped.
#[derive(Debug)]
pub struct WriterHandle(tokio::task::JoinHandle<()>);

impl WriterHandle {
    pub async fn flushed(self) {
        let _ = self.0.await;
    }
}

impl Queue {
    /// Builds the pool and registers the metrics; opens no connection yet.
    pub fn new(
        redis: &RedisConfig,
        queue: &QueueConfig,
        registry: &mut Registry,
    ) -> Result<Self, QueueError> {
        Ok(Self {
            pool: Pool::new(redis)?,
            layout: Arc::new(Layout::new(queue, redis)),
            config: queue.clone(),
            metrics: Arc::new(QueueMetrics::new(registry)),
            command_timeout: redis.command_timeout,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Starts the group-commit writer and returns the handle to enqueue through. With a
    /// spool, batches Redis does not take in time go there, and a replayer moves them back.
    pub fn start_enqueuer(&self, spool: Option<Arc<Spool>>) -> (Enqueuer, WriterHandle) {
        let (enqueuer, done) = enqueue::start(
            self.pool.clone(),
            self.layout.clone(),
            &self.config,
            self.metrics.clone(),
            spool,
        );
        (enqueuer, WriterHandle(tokio::spawn(done)))
    }

    /// Leasing access to the given shards (list mode); all when `shards` is empty.
    pub fn leases(&self, shards: &[usize], holding: Holding) -> Leases {
        Leases::new(
            self.pool.clone(),
            self.pick(shards),
            self.metrics.clone(),
            self.command_timeout,
            holding,
        )
    }

    /// A consumer named `name` of the group `pixelgate-drain` on the given shards (stream
    /// mode); all when `shards` is empty.
    pub fn stream_consumer(
        &self,
        name: &str,
        shards: &[usize],
        holding: Holding,
    ) -> StreamConsumer {
        StreamConsumer::new(
            self.pool.clone(),
            self.pick(shards),
            name.to_owned(),
            self.metrics.clone(),
            self.command_timeout,
            holding,
        )
    }

    fn pick(&self, shards: &[usize]) -> Vec<ShardKeys> {
        let all = &self.layout.shards;
        if shards.is_empty() {
            return all.clone();
        }
        shards.iter().filter_map(|&i| all.get(i).cloned()).collect()
    }

    /// `PING`, bounded by `redis.command_timeout`: is Redis answering?
    pub async fn ping(&self) -> Result<(), QueueError> {
        self.bounded(async {
            let mut conn = self.pool.get().await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// Writes `value` to a fresh key with a 10 s TTL, reads it back and returns what Redis held.
    pub async fn round_trip(&self, value: &str) -> Result<String, QueueError> {
        let key = format!("pixelgate:test:{}", uuid::Uuid::now_v7());
        self.bounded(async {
            let mut conn = self.pool.get().await?;
            let () = redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("EX")
                .arg(10)
                .query_async(&mut conn)
                .await?;
            let back: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            back.ok_or_else(|| QueueError::Reply(format!("{key} vanished before it was read back")))
        })
        .await
    }

    /// Reads depth, in-flight count and oldest age from Redis, updates the gauges (pool use
    /// included) and returns them.
    pub async fn observe(&self) -> Result<QueueStats, QueueError> {
        self.update_pool_gauges();
        let stats = self.bounded(self.read_stats()).await?;
        let m = &self.metrics;
        m.depth.set(i64::try_from(stats.depth).unwrap_or(i64::MAX));
        m.in_flight
            .set(i64::try_from(stats.in_flight).unwrap_or(i64::MAX));
        let age = stats.oldest_age.map_or(0, |a| a.as_millis());
        m.oldest_age_ms.set(i64::try_from(age).unwrap_or(i64::MAX));
        Ok(stats)
    }

    fn update_pool_gauges(&self) {
        let s = self.pool.status();
        let g = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.pool_max.set(g(s.max_size));
        self.metrics.pool_open.set(g(s.size));
        self.metrics.pool_idle.set(g(s.available));
        self.metrics.pool_waiting.set(g(s.waiting));
    }

    async fn read_stats(&self) -> Result<QueueStats, QueueError> {
        let mut conn = self.pool.get().await?;
        let now = std::time::SystemTime::now();
        let mut stats = QueueStats::default();
        for shard in self.layout.shards.iter() {
            let oldest = match self.config.mode {
                QueueMode::List => {
                    let (depth, in_flight, head): (u64, Option<u64>, Option<Vec<u8>>) =
                        redis::pipe()
                            .cmd("LLEN")
                            .arg(&shard.queue)
                            .cmd("HGET")
                            .arg(&shard.lease_data)
                            .arg("inflight")
                            .cmd("LINDEX")
                            .arg(&shard.queue)
                            .arg(0)
                            .query_async(&mut conn)
                            .await?;
                    stats.depth += depth;
                    stats.in_flight += in_flight.unwrap_or(0);
                    head.and_then(|h| event_time(&h))
                }
                QueueMode::Stream => {
                    let (depth, first): (u64, redis::Value) = redis::pipe()
                        .cmd("XLEN")
                        .arg(&shard.queue)
                        .cmd("XRANGE")
                        .arg(&shard.queue)
                        .arg("-")
                        .arg("+")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut conn)
                        .await?;
                    let pending: redis::Value = redis::cmd("XPENDING")
                        .arg(&shard.queue)
                        .arg(stream::GROUP)
                        .query_async(&mut conn)
                        .await
                        .unwrap_or(redis::Value::Nil);
                    let in_flight = match pending {
                        redis::Value::Array(v) => match v.first() {
                            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                            _ => 0,
                        },
                        _ => 0,
                    };
                    // Drained entries are deleted, so the stream holds waiting and pending ones.
                    stats.depth += depth.saturating_sub(in_flight);
                    stats.in_flight += in_flight;
                    stream_first_time(&first)
                }
            };
            if let Some(t) = oldest {
                let age = now.duration_since(t).unwrap_or_default();
                stats.oldest_age = Some(stats.oldest_age.map_or(age, |a| a.max(age)));
            }
        }
        Ok(stats)
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        let result = match timeout(self.command_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Timeout(self.command_timeout)),
        };
        if let Err(e) = &result {
            self.metrics.error(e.kind());
        }
        result
    }
}

/// The `ts` of a queued event, if it has one.
fn event_time(json: &[u8]) -> Option<std::time::SystemTime> {
    #[derive(serde::Deserialize)]
    struct Ts {
        ts: Timestamp,
    }
    serde_json::from_slice::<Ts>(json)
        .ok()
        .map(|t| t.ts.to_system_time())
}

/// The time in the id (`ms-seq`) of the first entry of an `XRANGE` reply.
fn stream_first_time(reply: &redis::Value) -> Option<std::time::SystemTime> {
    let redis::Value::Array(entries) = reply else {
        return None;
    };
    let redis::Value::Array(entry) = entries.first()? else {
        return None;
    };
    let redis::Value::BulkString(id) = entry.first()? else {
        return None;
    };
    let ms: u64 = std::str::from_utf8(id)
        .ok()?
        .split('-')
        .next()?
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_millis(ms))
}
