//! The drain's own metrics, registered beside the queue's in the drain's registry.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Every metric of the drain.
#[derive(Debug)]
pub struct DrainMetrics {
    pub events: Counter,
    pub batch_seconds: Histogram,
    pub sink_errors: Family<KindLabel, Counter>,
    pub redis_errors: Counter,
    pub poison: Counter,
    pub lost_leases: Counter,
}

impl DrainMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            events: Counter::default(),
            batch_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            sink_errors: Family::default(),
            redis_errors: Counter::default(),
            poison: Counter::default(),
            lost_leases: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("pixelgate_drain");
        r.register(
            "events",
            "Events written to the sink and acknowledged in Redis",
            m.events.clone(),
        );
        r.register(
            "batch_seconds",
            "Time from taking a batch to acknowledging it, sink write and retries included",
            m.batch_seconds.clone(),
        );
        r.register(
            "sink_errors",
            "Failed sink writes, by kind (each retried)",
            m.sink_errors.clone(),
        );
        r.register(
            "redis_errors",
            "Failed claims, reads and acks (each retried)",
            m.redis_errors.clone(),
        );
        r.register(
            "poison_events",
            "Queue elements that are not events, moved to the dead-letter key",
            m.poison.clone(),
        );
        r.register(
            "lost_leases",
            "Batches whose lease expired before their ack (written again later; sinks ignore the duplicates)",
            m.lost_leases.clone(),
        );
        m
    }

    /// Counts a failed sink write by the sink's kind of error.
    pub fn sink_error(&self, kind: &'static str) {
        self.sink_errors.get_or_create(&KindLabel { kind }).inc();
    }
}
