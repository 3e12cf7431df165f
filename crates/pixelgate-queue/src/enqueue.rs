//! The enqueuer: group commit of events into Redis.
//!
//! The edge calls [`Enqueuer::enqueue`] once per event. A single writer task takes events from a
//! bounded channel and writes them in batches (one `RPUSH key e1 … eN`, or pipelined `XADD`s),
//! with up to `queue.max_in_flight` batches on their own pooled connections at once. While
//! batches are in flight new events gather, so batches grow with load and the number of Redis
//! commands stays small. Each caller's acknowledgement resolves only when its batch is in Redis.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use pixelgate_core::Event;
use redis::Pipeline;
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::{Instant, timeout, timeout_at},
};

use crate::{
    config::{QueueConfig, QueueMode},
    error::{BatchError, QueueError},
    layout::Layout,
    metrics::{LaneLabel, QueueMetrics},
    pool::Pool,
};

/// Which key an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The main queue.
    Main,
    /// The capped overflow list, for clients over their rate limit.
    Overflow,
}

impl Lane {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Overflow => "overflow",
        }
    }
}

/// Why an event was not acknowledged. The edge counts each as a drop reason (or spools it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnqueueError {
    #[error("the enqueue channel is full")]
    Full,
    #[error("the enqueuer has shut down")]
    Closed,
    #[error("redis did not acknowledge within queue.ack_timeout")]
    Timeout,
    #[error("the batch failed: {0}")]
    Failed(#[source] BatchError),
}

impl EnqueueError {
    /// The `reason` label this error is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Full => "queue_full",
            Self::Closed => "shutting_down",
            Self::Timeout => "ack_timeout",
            Self::Failed(_) => "redis_error",
        }
    }
}

struct Pending {
    payload: Vec<u8>,
    lane: Lane,
    ack: oneshot::Sender<Result<(), BatchError>>,
}

/// The handle the edge enqueues through. Cheap to clone.
#[derive(Clone)]
pub struct Enqueuer {
    tx: mpsc::Sender<Pending>,
    ack_timeout: Duration,
}

impl std::fmt::Debug for Enqueuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueuer")
            .field("capacity", &self.tx.capacity())
            .finish()
    }
}

impl Enqueuer {
    /// Queues one event and waits until its batch is in Redis, at most `queue.ack_timeout`.
    /// A full channel fails at once with [`EnqueueError::Full`]: the caller never waits for room.
    pub async fn enqueue(&self, event: &Event, lane: Lane) -> Result<(), EnqueueError> {
        self.enqueue_raw(event.to_json(), lane).await
    }

    /// As [`Enqueuer::enqueue`], for an event already serialised (a spool replay).
    pub async fn enqueue_raw(&self, payload: Vec<u8>, lane: Lane) -> Result<(), EnqueueError> {
        let (ack, acked) = oneshot::channel();
        self.tx
            .try_send(Pending { payload, lane, ack })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EnqueueError::Full,
                mpsc::error::TrySendError::Closed(_) => EnqueueError::Closed,
            })?;
        match timeout(self.ack_timeout, acked).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(EnqueueError::Failed(e)),
            Ok(Err(_)) => Err(EnqueueError::Closed),
            Err(_) => Err(EnqueueError::Timeout),
        }
    }
}

/// Starts the writer task; it runs until every [`Enqueuer`] is dropped and then flushes what
/// remains. The returned handle completes when the last batch has been written or has failed.
pub(crate) fn start(
    pool: Pool,
    layout: Arc<Layout>,
    config: &QueueConfig,
    metrics: Arc<QueueMetrics>,
) -> (Enqueuer, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.channel_capacity.get());
    let writer = Writer {
        pool,
        layout,
        mode: config.mode,
        batch_max: config.batch_max.get(),
        linger: config.linger,
        deadline: config.ack_timeout,
        overflow_cap: config.overflow_cap.get(),
        stream_maxlen: config.stream_maxlen.get(),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight.get())),
        max_in_flight: config.max_in_flight.get(),
        next_shard: AtomicUsize::new(0),
        metrics,
    };
    let handle = tokio::spawn(writer.run(rx));
    (
        Enqueuer {
            tx,
            ack_timeout: config.ack_timeout,
        },
        handle,
    )
}

struct Writer {
    pool: Pool,
    layout: Arc<Layout>,
    mode: QueueMode,
    batch_max: usize,
    linger: Duration,
    deadline: Duration,
    overflow_cap: u64,
    stream_maxlen: u64,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    next_shard: AtomicUsize,
    metrics: Arc<QueueMetrics>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Pending>) {
        let this = Arc::new(self);
        loop {
            // Take a write slot first: while every slot is busy, events gather in the channel
            // and the next batch takes them all. That is the group commit.
            let Ok(permit) = this.in_flight.clone().acquire_owned().await else {
                break;
            };
            let mut batch = Vec::with_capacity(this.batch_max);
            if rx.recv_many(&mut batch, this.batch_max).await == 0 {
                break; // every sender is gone and nothing is left
            }
            if !this.linger.is_zero() && batch.len() < this.batch_max {
                let until = Instant::now() + this.linger;
                while batch.len() < this.batch_max {
                    let room = this.batch_max - batch.len();
                    match timeout_at(until, rx.recv_many(&mut batch, room)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
            let writer = this.clone();
            tokio::spawn(async move {
                writer.write(batch).await;
                drop(permit);
            });
        }
        // Wait for the batches still in flight.
        let all = u32::try_from(this.max_in_flight).unwrap_or(u32::MAX);
        let _ = this.in_flight.acquire_many(all).await;
    }

    /// Writes one batch, retrying once on a new connection after a transient failure, and
    /// answers every event of it.
    async fn write(&self, batch: Vec<Pending>) {
        let started = Instant::now();
        let until = started + self.deadline;
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.layout.shards.len();
        let mut result = timeout_at(until, self.send(&batch, shard)).await;
        if matches!(&result, Ok(Err(e)) if e.is_transient()) {
            if let Ok(Err(e)) = &result {
                self.metrics.error(e.kind());
            }
            result = timeout_at(until, self.send(&batch, shard)).await;
        }
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(QueueError::Timeout(self.deadline)),
        };
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_events.observe(batch.len() as f64);
        let answer = match result {
            Ok(trimmed) => {
                self.metrics.overflow_trimmed.inc_by(trimmed);
                for lane in [Lane::Main, Lane::Overflow] {
                    let n = batch.iter().filter(|p| p.lane == lane).count() as u64;
                    if n > 0 {
                        self.metrics
                            .enqueued
                            .get_or_create(&LaneLabel {
                                lane: lane.as_str(),
                            })
                            .inc_by(n);
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.metrics.error(e.kind());
                Err(Arc::new(e))
            }
        };
        for pending in batch {
            let _ = pending.ack.send(answer.clone());
        }
    }

    /// Writes the batch: one command (or pipeline) for the main lane, and one atomic
    /// `RPUSH`+`LTRIM` for the overflow lane when the batch has any. Returns how many overflow
    /// events were trimmed beyond the cap (exact, since push and trim are one transaction).
    async fn send(&self, batch: &[Pending], shard: usize) -> Result<u64, QueueError> {
        let mut conn = self.pool.get().await?;
        let lane = |lane| batch.iter().filter(move |p: &&Pending| p.lane == lane);
        if lane(Lane::Main).next().is_some() {
            let queue = &self.layout.shards[shard].queue;
            let mut pipe = Pipeline::new();
            match self.mode {
                QueueMode::List => {
                    let cmd = pipe.cmd("RPUSH").arg(queue);
                    for p in lane(Lane::Main) {
                        cmd.arg(&p.payload);
                    }
                    pipe.ignore();
                }
                QueueMode::Stream => {
                    for p in lane(Lane::Main) {
                        pipe.cmd("XADD")
                            .arg(queue)
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(self.stream_maxlen);
                        pipe.arg("*").arg("event").arg(&p.payload).ignore();
                    }
                }
            }
            let sent: Result<(), _> = pipe.query_async(&mut conn).await;
            sent.map_err(|e| QueueError::from(e).on_key(queue))?;
        }
        if lane(Lane::Overflow).next().is_none() {
            return Ok(0);
        }
        let mut pipe = Pipeline::new();
        let cmd = pipe.atomic().cmd("RPUSH").arg(&self.layout.overflow);
        for p in lane(Lane::Overflow) {
            cmd.arg(&p.payload);
        }
        let keep = -i64::try_from(self.overflow_cap).unwrap_or(i64::MAX);
        pipe.cmd("LTRIM")
            .arg(&self.layout.overflow)
            .arg(keep)
            .arg(-1)
            .ignore();
        let sent: Result<(u64,), _> = pipe.query_async(&mut conn).await;
        let (len,) = sent.map_err(|e| QueueError::from(e).on_key(&self.layout.overflow))?;
        Ok(len.saturating_sub(self.overflow_cap))
    }
}
