//! The replayer: moves spooled events back into Redis, oldest segment first.
//!
//! Every `spool.retry_interval`, when the spool holds anything or a shard is marked down, it
//! sends `PING`. Once Redis answers it clears the down marks (live batches go to Redis again),
//! seals the segment being written and replays the sealed ones in order, `queue.batch_max`
//! records at a time, each acknowledged by Redis before the next. A segment file is deleted
//! only after all of it is in Redis; a replay cut short (a crash, a failed batch) starts that
//! segment again, and the events' ids make the repeats duplicates that sinks ignore.

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use pixelgate_spool::{Item, Lane, Records, Segment, Spool, SpoolError};
use tokio::{sync::watch, time::Instant};

use crate::{enqueue::Writer, metrics::KindLabel};

/// Why a replay round ended early. Either way the segment stays and the next round retries.
enum Stop {
    Stopping,
    Spool(SpoolError),
}

impl Writer {
    /// Runs until `stop` turns true (or its sender is gone).
    pub(crate) async fn replay(
        self: Arc<Self>,
        spool: Arc<Spool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let interval = spool.retry_interval();
        self.metrics.spool_gauges(spool.stats());
        loop {
            if stopping(&mut stop, interval).await {
                return;
            }
            let anything_down = self.down.iter().any(|d| d.load(Ordering::Relaxed));
            if spool.stats().bytes() == 0 && !anything_down {
                continue;
            }
            if !self.redis_answers().await {
                continue;
            }
            self.clear_down();
            match self.replay_sealed(&spool, &mut stop).await {
                Ok(()) | Err(Stop::Stopping) => {}
                Err(Stop::Spool(error)) => {
                    tracing::error!(error = %pixelgate_core::config::Chain(&error), "cannot replay the spool; trying again");
                }
            }
        }
    }

    /// Replays every sealed segment, oldest first, the current one sealed first.
    async fn replay_sealed(
        &self,
        spool: &Arc<Spool>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let sealing = spool.clone();
        blocking(move || Ok(sealing.seal())).await?;
        while let Some(segment) = spool.oldest() {
            let reading = spool.clone();
            let at = segment.clone();
            let bytes = match blocking(move || reading.read(&at)).await {
                Ok(bytes) => bytes,
                Err(Stop::Spool(error)) => {
                    // One segment that cannot be read must not hold up the ones after it.
                    self.set_aside(spool, &segment, &error).await;
                    continue;
                }
                Err(stop) => return Err(stop),
            };
            let mut records = Vec::new();
            let mut damage = Vec::new();
            for item in Records::segment(&bytes) {
                match item {
                    Item::Record { lane, payload, .. } => records.push((lane, payload)),
                    damaged => damage.push(damaged),
                }
            }
            for chunk in records.chunks(self.batch_max) {
                self.replay_batch(chunk, stop).await?;
            }
            let removing = spool.clone();
            let gone = segment.clone();
            blocking(move || removing.remove(&gone)).await?;
            self.metrics.spool_gauges(spool.stats());
            self.count_damage(&segment, &damage);
            tracing::info!(
                segment = %segment.path.display(),
                events = records.len(),
                "replayed a spool segment into redis"
            );
        }
        Ok(())
    }

    /// Takes an unreadable segment out of the replay, counted and logged with where it went.
    async fn set_aside(&self, spool: &Arc<Spool>, segment: &Segment, error: &SpoolError) {
        let setting = spool.clone();
        let at = segment.clone();
        let kept = tokio::task::spawn_blocking(move || setting.set_aside(&at))
            .await
            .ok()
            .flatten();
        self.metrics.spool_unreadable.inc();
        self.metrics.spool_gauges(spool.stats());
        tracing::error!(
            error = %pixelgate_core::config::Chain(error),
            kept = %kept.as_ref().map_or_else(|| "nowhere: it is gone".into(), |p| p.display().to_string()),
            bytes = segment.len,
            "a spool segment cannot be read; set aside, the ones after it are replayed"
        );
    }

    /// Sends one batch of spooled records, retrying every `retry_interval` until Redis takes
    /// it or the replayer is stopped.
    async fn replay_batch(
        &self,
        chunk: &[(Lane, &[u8])],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let interval = self
            .spool
            .as_ref()
            .map_or(Duration::from_secs(1), |s| s.retry_interval());
        loop {
            if *stop.borrow() {
                return Err(Stop::Stopping);
            }
            if let Some(shard) = self.pick_shard() {
                let until = Instant::now() + self.deadline;
                match self.send_until(chunk, shard, until).await {
                    Ok(()) => {
                        self.metrics.replayed.inc_by(chunk.len() as u64);
                        return Ok(());
                    }
                    Err(error) => self.mark_down(shard, &error),
                }
            }
            if stopping(stop, interval).await {
                return Err(Stop::Stopping);
            }
            if self.redis_answers().await {
                self.clear_down();
            }
        }
    }

    async fn redis_answers(&self) -> bool {
        let ping = async {
            let mut conn = self.pool.get().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        };
        matches!(tokio::time::timeout(self.deadline, ping).await, Ok(Some(_)))
    }

    fn clear_down(&self) {
        let mut cleared = 0;
        for down in self.down.iter() {
            if down.swap(false, Ordering::Relaxed) {
                cleared += 1;
            }
        }
        if cleared > 0 {
            self.metrics.shards_down.dec_by(cleared);
            tracing::info!(shards = cleared, "redis answers again: batches go to redis");
        }
    }

    /// Counts and logs the damaged parts of a replayed segment (once, as it is removed).
    fn count_damage(&self, segment: &Segment, damage: &[Item<'_>]) {
        for item in damage {
            let (kind, offset, bytes) = match *item {
                Item::Corrupt { offset, skipped } => ("corrupt", offset, skipped),
                Item::TruncatedTail { offset, len } => ("truncated_tail", offset, len),
                Item::Record { .. } => continue,
            };
            self.metrics
                .spool_damaged
                .get_or_create(&KindLabel { kind })
                .inc();
            self.metrics.spool_damaged_bytes.inc_by(bytes);
            tracing::warn!(
                segment = %segment.path.display(),
                kind,
                offset,
                bytes,
                "skipped a damaged part of a spool segment"
            );
        }
    }
}

/// Waits `after`; true when the replayer should stop instead.
async fn stopping(stop: &mut watch::Receiver<bool>, after: Duration) -> bool {
    let stopped = tokio::time::timeout(after, stop.wait_for(|s| *s)).await;
    // Ok: told to stop, or the sender is gone (the writer has finished); Err: time is up.
    stopped.is_ok()
}

/// Runs spool file I/O on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, Stop> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Stop::Spool),
        // A panic in file I/O: leave the segment for the next round.
        Err(_) => Err(Stop::Stopping),
    }
}
