//! The queue's Prometheus metrics, registered into the caller's registry (no global recorder).
//!
//! Counters and histograms move as batches are written and leases taken; the gauges (depth,
//! in flight, oldest age, pool use) are refreshed from Redis by [`crate::Queue::observe`] when
//! `/metrics` asks (readiness only pings).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// `lane="main"` or `lane="overflow"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabel {
    pub lane: &'static str,
}

/// `kind="connection"`, `"timeout"`, `"wrong_type"`, …: see `QueueError::kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Every metric of the queue.
#[derive(Debug)]
pub struct QueueMetrics {
    pub enqueued: Family<LaneLabel, Counter>,
    pub batch_events: Histogram,
    pub flush_seconds: Histogram,
    pub errors: Family<KindLabel, Counter>,
    pub overflow_trimmed: Counter,
    pub claimed: Counter,
    pub acked: Counter,
    pub requeued: Counter,
    pub dead_lettered: Counter,
    pub depth: Gauge,
    pub in_flight: Gauge,
    pub oldest_age_ms: Gauge,
    pub pool_max: Gauge,
    pub pool_open: Gauge,
    pub pool_idle: Gauge,
    pub pool_waiting: Gauge,
    pub spooled: Family<LaneLabel, Counter>,
    pub replayed: Counter,
    pub spool_damaged: Family<KindLabel, Counter>,
    pub spool_damaged_bytes: Counter,
    pub spool_unreadable: Counter,
    pub spool_bytes: Gauge,
    pub spool_segments: Gauge,
    pub shards_down: Gauge,
}

impl QueueMetrics {
    /// Creates the metrics and registers them under `pixelgate_`.
    pub fn new(registry: &mut Registry) -> Self {
        let sizes = [
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
        ];
        let seconds = [
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0,
        ];
        let m = Self {
            enqueued: Family::default(),
            batch_events: Histogram::new(sizes),
            flush_seconds: Histogram::new(seconds),
            errors: Family::default(),
            overflow_trimmed: Counter::default(),
            claimed: Counter::default(),
            acked: Counter::default(),
            requeued: Counter::default(),
            dead_lettered: Counter::default(),
            depth: Gauge::default(),
            in_flight: Gauge::default(),
            oldest_age_ms: Gauge::default(),
            pool_max: Gauge::default(),
            pool_open: Gauge::default(),
            pool_idle: Gauge::default(),
            pool_waiting: Gauge::default(),
            spooled: Family::default(),
            replayed: Counter::default(),
            spool_damaged: Family::default(),
            spool_damaged_bytes: Counter::default(),
            spool_unreadable: Counter::default(),
            spool_bytes: Gauge::default(),
            spool_segments: Gauge::default(),
            shards_down: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("pixelgate");
        r.register(
            "events_enqueued",
            "Events Redis acknowledged, by lane",
            m.enqueued.clone(),
        );
        r.register(
            "queue_batch_events",
            "Events per batch written to Redis",
            m.batch_events.clone(),
        );
        r.register(
            "queue_flush_seconds",
            "Time to store one batch: to Redis's reply or, when Redis did not take it, to the spool's sync",
            m.flush_seconds.clone(),
        );
        r.register(
            "queue_errors",
            "Failed Redis operations, by kind",
            m.errors.clone(),
        );
        r.register(
            "queue_overflow_trimmed",
            "Overflow events trimmed beyond queue.overflow_cap (dropped, oldest first)",
            m.overflow_trimmed.clone(),
        );
        r.register(
            "queue_claimed_events",
            "Events leased or read by drains",
            m.claimed.clone(),
        );
        r.register(
            "queue_acked_events",
            "Events acknowledged by drains after their sink committed",
            m.acked.clone(),
        );
        r.register(
            "queue_redelivered_events",
            "Events given back to the queue (expired or released leases, reclaimed stream entries)",
            m.requeued.clone(),
        );
        r.register(
            "queue_dead_lettered_events",
            "Stream entries moved to the dead-letter stream",
            m.dead_lettered.clone(),
        );
        r.register(
            "queue_depth_events",
            "Events waiting in Redis, all shards",
            m.depth.clone(),
        );
        r.register(
            "queue_in_flight_events",
            "Events claimed by drains and not yet acknowledged",
            m.in_flight.clone(),
        );
        r.register(
            "queue_oldest_age_milliseconds",
            "Age of the oldest waiting event (0 when empty)",
            m.oldest_age_ms.clone(),
        );
        r.register(
            "redis_pool_max_connections",
            "Configured pool size",
            m.pool_max.clone(),
        );
        r.register(
            "redis_pool_open_connections",
            "Open pooled connections",
            m.pool_open.clone(),
        );
        r.register(
            "redis_pool_idle_connections",
            "Open pooled connections not in use",
            m.pool_idle.clone(),
        );
        r.register(
            "redis_pool_waiting",
            "Tasks waiting for a pooled connection",
            m.pool_waiting.clone(),
        );
        r.register(
            "spool_events",
            "Events written to the disk spool because Redis did not take them in time, by lane",
            m.spooled.clone(),
        );
        r.register(
            "spool_replayed_events",
            "Spooled events Redis has since acknowledged",
            m.replayed.clone(),
        );
        r.register(
            "spool_damaged_regions",
            "Damaged parts of replayed spool segments, skipped: kind=corrupt (bad checksum, \
             length or lane) or kind=truncated_tail (a write cut short by a crash)",
            m.spool_damaged.clone(),
        );
        r.register(
            "spool_damaged_bytes",
            "Bytes of replayed spool segments skipped as damaged",
            m.spool_damaged_bytes.clone(),
        );
        r.register(
            "spool_unreadable_segments",
            "Spool segments that could not be read (gone, or an I/O error) and were set aside as NAME.unreadable so the rest replays",
            m.spool_unreadable.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes in the spool's segment files (spool.max_bytes is the cap)",
            m.spool_bytes.clone(),
        );
        r.register(
            "spool_segments",
            "Segment files in the spool, the one being written included",
            m.spool_segments.clone(),
        );
        r.register(
            "redis_shards_down",
            "Queue shards whose batches go to the spool until Redis answers again",
            m.shards_down.clone(),
        );
        m
    }

    /// Copies what the spool holds into the gauges.
    pub(crate) fn spool_gauges(&self, stats: &pixelgate_spool::SpoolStats) {
        self.spool_bytes
            .set(i64::try_from(stats.bytes()).unwrap_or(i64::MAX));
        self.spool_segments
            .set(i64::try_from(stats.segments()).unwrap_or(i64::MAX));
    }

    pub(crate) fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }
}
