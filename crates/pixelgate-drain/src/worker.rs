//! The drain loop, one for both queue modes: take a batch, write it in one transaction,
//! dead-letter what is not an event, acknowledge, repeat.
//!
//! A batch is acknowledged only after its sink write returned `Ok` and its poison was
//! dead-lettered; if dead-lettering fails, nothing of it is acknowledged and it comes back when
//! its lease runs out. A failing sink is retried with back-off up to `drain.retry_max` (never a
//! spin) while the batch is kept from other drains. On shutdown a worker finishes the write it is
//! in, or gives its batch back if the sink is failing: never is anything acknowledged that was
//! not written.

use std::sync::Arc;

use pixelgate_core::{Event, config::Chain};
use pixelgate_queue::{BatchSource, Taken};
use tokio::{sync::watch, time::Instant};

use crate::{
    backoff::{Backoff, pause, stopping},
    config::DrainConfig,
    metrics::DrainMetrics,
    sink::Sink,
};

/// What every worker shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) config: DrainConfig,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) metrics: Arc<DrainMetrics>,
}

/// One worker, cycling over its source's shards starting at `first`.
pub(crate) async fn worker<S: BatchSource>(
    ctx: Arc<Ctx>,
    source: S,
    first: usize,
    mut stop: watch::Receiver<bool>,
) {
    let shards = source.shards().max(1);
    for shard in 0..shards {
        if let Err(error) = source.prepare(shard).await {
            tracing::warn!(error = %Chain(&error), shard, "cannot prepare the shard yet");
        }
    }
    let mut shard = first % shards;
    let mut backoff = Backoff::new(&ctx.config);
    // An empty shard waits its share of `idle_wait`, so a round of empty shards waits it all.
    let wait = ctx.config.idle_wait / u32::try_from(shards).unwrap_or(u32::MAX);
    while !stopping(&stop) {
        match source.take(shard, ctx.config.batch_size.get(), wait).await {
            Ok(Some(batch)) => {
                backoff.reset();
                drain(&ctx, &source, batch, &mut stop).await;
            }
            Ok(None) => {
                if !S::WAITS && !pause(wait, &mut stop).await {
                    break;
                }
            }
            Err(error) => {
                ctx.metrics.redis_errors.inc();
                tracing::warn!(error = %Chain(&error), shard, "taking a batch failed; retrying");
                let _ = source.prepare(shard).await;
                if !backoff.wait(&mut stop).await {
                    break;
                }
            }
        }
        shard = (shard + 1) % shards;
    }
}

/// Writes one batch, dead-letters its poison, and acknowledges it, or gives it back.
async fn drain<S: BatchSource>(
    ctx: &Ctx,
    source: &S,
    batch: S::Batch,
    stop: &mut watch::Receiver<bool>,
) {
    let started = Instant::now();
    let (events, poison) = parse(batch.payloads());
    let written = write_with_retries(ctx, &events, stop, || async {
        if let Err(error) = source.keep(&batch).await {
            tracing::warn!(error = %Chain(&error), "could not keep the batch; another drain may take it");
        }
    })
    .await;
    if !written {
        // Stopping with a failing sink: give the batch back now rather than at lease expiry.
        if let Err(error) = source.give_back(&batch).await {
            tracing::warn!(error = %Chain(&error), "could not give a batch back; it returns when its lease expires");
        }
        return;
    }
    if !poison.is_empty() {
        ctx.metrics.poison.inc_by(poison.len() as u64);
        tracing::warn!(
            count = poison.len(),
            shard = batch.shard(),
            "queue elements that are not events go to the dead-letter key"
        );
        if let Err(error) = source.dead_letter(&batch, &poison).await {
            // Its events are written: when the lease runs out it is delivered again, and the
            // sink ignores them by id.
            tracing::error!(error = %Chain(&error), "dead-lettering failed; the batch is not acknowledged");
            return;
        }
    }
    let mut backoff = Backoff::new(&ctx.config);
    for _ in 0..5 {
        match source.ack(&batch).await {
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
                tracing::warn!(error = %Chain(&error), "ack failed; retrying");
                // If this never succeeds the lease expires and the batch is written again.
                let _ = backoff.wait(stop).await;
            }
        }
    }
}

/// The events of a batch, and the positions of the payloads that are not events.
fn parse<'a>(payloads: impl Iterator<Item = &'a [u8]>) -> (Vec<Event>, Vec<usize>) {
    let mut events = Vec::new();
    let mut poison = Vec::new();
    for (i, payload) in payloads.enumerate() {
        match Event::from_json(payload) {
            Ok(e) => events.push(e),
            Err(_) => poison.push(i),
        }
    }
    (events, poison)
}

/// Writes `events`, retrying until it succeeds or the drain stops. `keep` runs before each
/// retry (to keep the batch's lease). Returns whether the write succeeded.
async fn write_with_retries<F, Fut>(
    ctx: &Ctx,
    events: &[Event],
    stop: &mut watch::Receiver<bool>,
    mut keep: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    if events.is_empty() {
        return true;
    }
    let mut backoff = Backoff::new(&ctx.config);
    loop {
        match ctx.sink.write(events).await {
            Ok(()) => return true,
            Err(error) => {
                ctx.metrics.sink_error(error.kind());
                tracing::warn!(error = %Chain(&error), events = events.len(), "sink write failed; retrying");
                if !backoff.wait(stop).await {
                    return false;
                }
                keep().await;
            }
        }
    }
}

/// `HOST-PID-SLOT`: unique per worker of a process, and readable in `XINFO CONSUMERS`.
pub(crate) fn consumer_name(configured: Option<&str>, slot: usize) -> String {
    let name = configured.map_or_else(
        || {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        },
        str::to_owned,
    );
    format!("{name}-{slot}")
}
