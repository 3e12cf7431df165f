//! The drain loop: take a batch, write it in one transaction, acknowledge it, repeat.
//!
//! A batch is acknowledged only after its sink write returned `Ok`. A sink that fails is retried
//! with exponential back-off up to `drain.retry_max` (never a spin), while the lease is renewed so
//! no other drain takes the batch meanwhile. On shutdown a worker finishes the write it is in, or
//! gives its batch back to the queue if the sink is failing; it never acknowledges what was not
//! written.

use std::{sync::Arc, time::Duration};

use pixelgate_core::Event;
use pixelgate_queue::{Entry, Lease, Leases, StreamBatch, StreamConsumer};
use tokio::{sync::watch, time::Instant};

use crate::{config::DrainConfig, metrics::DrainMetrics, sink::Sink};

/// What every worker shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) config: DrainConfig,
    pub(crate) sink: Arc<Sink>,
    pub(crate) metrics: Arc<DrainMetrics>,
}

/// Exponential back-off between `retry_initial` and `retry_max`.
struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &DrainConfig) -> Self {
        Self {
            next: config.retry_initial,
            initial: config.retry_initial,
            max: config.retry_max,
        }
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Waits the current delay (or until stop) and doubles it; `false` when stopping.
    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        pause(delay, stop).await
    }
}

/// Sleeps `d` unless stop comes first; `false` when stopping.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !stopping(stop)
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Splits queue items into events (with the items they came from) and items that are not
/// events. `payload` gives an item's bytes: a list element, or a stream entry's `event` field.
fn parse<T>(items: Vec<T>, payload: impl Fn(&T) -> &[u8]) -> (Vec<Event>, Vec<T>, Vec<T>) {
    let mut events = Vec::with_capacity(items.len());
    let mut good = Vec::with_capacity(items.len());
    let mut poison = Vec::new();
    for item in items {
        match Event::from_json(payload(&item)) {
            Ok(e) => {
                events.push(e);
                good.push(item);
            }
            Err(_) => poison.push(item),
        }
    }
    (events, good, poison)
}

/// Writes `events`, retrying until it succeeds or the drain stops. `renew` runs before each
/// retry (to keep the batch's lease). Returns whether the write succeeded.
async fn write_with_retries<F, Fut>(
    ctx: &Ctx,
    events: &[Event],
    stop: &mut watch::Receiver<bool>,
    mut renew: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut backoff = Backoff::new(&ctx.config);
    loop {
        match ctx.sink.write(events).await {
            Ok(()) => return true,
            Err(error) => {
                ctx.metrics
                    .sink_errors
                    .get_or_create(&crate::metrics::KindLabel { kind: error.kind() })
                    .inc();
                tracing::warn!(%error, events = events.len(), "sink write failed; retrying");
                if !backoff.wait(stop).await {
                    return false;
                }
                renew().await;
            }
        }
    }
}

/// One list-mode worker, cycling over its shards starting at `first`.
pub(crate) async fn list_worker(
    ctx: Arc<Ctx>,
    leases: Leases,
    first: usize,
    mut stop: watch::Receiver<bool>,
) {
    let shards = leases.shards().len();
    let mut shard = first % shards;
    let mut empty = 0;
    let mut backoff = Backoff::new(&ctx.config);
    while !stopping(&stop) {
        match leases
            .claim(shard, ctx.config.batch_size.get(), ctx.config.lease)
            .await
        {
            Ok(Some(lease)) => {
                empty = 0;
                backoff.reset();
                drain_lease(&ctx, &leases, lease, &mut stop).await;
            }
            Ok(None) => {
                empty += 1;
                if empty >= shards {
                    empty = 0;
                    if !pause(ctx.config.idle_wait, &mut stop).await {
                        break;
                    }
                }
            }
            Err(error) => {
                ctx.metrics.redis_errors.inc();
                tracing::warn!(%error, shard, "claim failed; retrying");
                if !backoff.wait(&mut stop).await {
                    break;
                }
            }
        }
        shard = (shard + 1) % shards;
    }
}

async fn drain_lease(
    ctx: &Ctx,
    leases: &Leases,
    mut lease: Lease,
    stop: &mut watch::Receiver<bool>,
) {
    let started = Instant::now();
    let (events, _, poison) = parse(std::mem::take(&mut lease.events), |b: &Vec<u8>| {
        b.as_slice()
    });
    let lease_for = ctx.config.lease;
    let written = write_with_retries(ctx, &events, stop, || async {
        let _ = leases.renew(&lease, lease_for).await;
    })
    .await;
    if !written {
        // Stopping with a failing sink: give the batch back now rather than at lease expiry.
        if let Err(error) = leases.release(&lease).await {
            tracing::warn!(%error, "could not give a batch back; it returns when its lease expires");
        }
        return;
    }
    if !poison.is_empty() {
        ctx.metrics.poison.inc_by(poison.len() as u64);
        tracing::warn!(
            count = poison.len(),
            "queue elements that are not events moved to the dead-letter list"
        );
        if let Err(error) = leases.dead_letter(lease.shard, &poison).await {
            tracing::error!(%error, "dead-lettering failed; the batch will be delivered again");
            return;
        }
    }
    let mut backoff = Backoff::new(&ctx.config);
    for _ in 0..5 {
        match leases.ack(&lease).await {
            Ok(true) => {
                ctx.metrics.events.inc_by(events.len() as u64);
                ctx.metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                return;
            }
            Ok(false) => {
                // The lease expired and the events went back: they will be written again, and
                // the sink will ignore them by id.
                ctx.metrics.lost_leases.inc();
                return;
            }
            Err(error) => {
                ctx.metrics.redis_errors.inc();
                tracing::warn!(%error, "ack failed; retrying");
                // If this never succeeds the lease expires and the batch is written again.
                let _ = backoff.wait(stop).await;
            }
        }
    }
}

/// One stream-mode worker.
pub(crate) async fn stream_worker(
    ctx: Arc<Ctx>,
    consumer: StreamConsumer,
    shards: usize,
    first: usize,
    mut stop: watch::Receiver<bool>,
) {
    for shard in 0..shards {
        if let Err(error) = consumer.ensure_group(shard).await {
            tracing::warn!(%error, shard, "cannot create the consumer group yet");
        }
    }
    let mut shard = first % shards;
    let mut backoff = Backoff::new(&ctx.config);
    // Blocking reads wait on one shard at a time, so with several shards wait briefly.
    let block = if shards == 1 {
        ctx.config.idle_wait
    } else {
        ctx.config.idle_wait / shards as u32
    };
    while !stopping(&stop) {
        match consumer
            .read(shard, ctx.config.batch_size.get(), block)
            .await
        {
            Ok(batch) if batch.entries.is_empty() => {}
            Ok(batch) => {
                backoff.reset();
                drain_entries(&ctx, &consumer, batch, &mut stop).await;
            }
            Err(error) => {
                ctx.metrics.redis_errors.inc();
                tracing::warn!(%error, shard, "stream read failed; retrying");
                let _ = consumer.ensure_group(shard).await;
                if !backoff.wait(&mut stop).await {
                    break;
                }
            }
        }
        shard = (shard + 1) % shards;
    }
}

async fn drain_entries(
    ctx: &Ctx,
    consumer: &StreamConsumer,
    batch: StreamBatch,
    stop: &mut watch::Receiver<bool>,
) {
    let started = Instant::now();
    let (events, good, poison) = parse(batch.entries, |e: &Entry| e.payload.as_slice());
    // Unacknowledged entries stay pending for this consumer, which is the stream's lease.
    if !write_with_retries(ctx, &events, stop, || async {}).await {
        return;
    }
    if !poison.is_empty() {
        ctx.metrics.poison.inc_by(poison.len() as u64);
        if let Err(error) = consumer.dead_letter(batch.shard, &poison).await {
            tracing::error!(%error, "dead-lettering failed; the entries will be delivered again");
        }
    }
    let acked = StreamBatch {
        shard: batch.shard,
        entries: good,
    };
    let mut backoff = Backoff::new(&ctx.config);
    for _ in 0..5 {
        match consumer.ack(&acked).await {
            Ok(()) => {
                ctx.metrics.events.inc_by(events.len() as u64);
                ctx.metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                return;
            }
            Err(error) => {
                ctx.metrics.redis_errors.inc();
                tracing::warn!(%error, "ack failed; retrying");
                let _ = backoff.wait(stop).await;
            }
        }
    }
}
