//! The enqueuer: group commit of events into Redis, with the disk spool behind it.
//!
//! The edge calls [`Enqueuer::enqueue_raw`] once per event, with its JSON. A single writer task takes events from a
//! bounded channel and writes them in batches (one `RPUSH key e1 … eN`, or pipelined `XADD`s),
//! with up to `queue.max_in_flight` batches on their own pooled connections at once. While
//! batches are in flight new events gather, so batches grow with load and the number of Redis
//! commands stays small. Each caller's acknowledgement resolves only when its batch is in Redis
//! or, when Redis did not take it within `queue.ack_timeout` of its oldest event, in the spool
//! on disk. A shard that failed is skipped until the replayer (`replay.rs`) finds Redis
//! answering again; with every shard down, batches go straight to the spool.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use pixelgate_core::Event;
pub use pixelgate_spool::Lane;
use pixelgate_spool::{Spool, SpoolError};
use redis::Pipeline;
use tokio::{
    sync::{Semaphore, mpsc, oneshot, watch},
    time::{Instant, timeout, timeout_at},
};

use crate::{
    config::{QueueConfig, QueueMode},
    error::{BatchError, QueueError},
    layout::Layout,
    metrics::{LaneLabel, QueueMetrics},
    pool::{Detached, Pool},
};

/// Why an event was not acknowledged. The edge counts each as a drop reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnqueueError {
    #[error("the enqueue channel is full")]
    Full,
    #[error("the enqueuer has shut down")]
    Closed,
    #[error("redis did not acknowledge within queue.ack_timeout")]
    Timeout,
    #[error("the batch failed")]
    Failed(#[source] BatchError),
    #[error("redis did not take the batch and the spool refused it")]
    Spool(#[source] Arc<SpoolError>),
}

impl EnqueueError {
    /// Every `reason` an event can be dropped for, so callers can create their counters up front.
    pub const REASONS: [&'static str; 7] = [
        "queue_full",
        "shutting_down",
        "ack_timeout",
        "redis_error",
        "spool_full",
        "spool_frame",
        "spool_error",
    ];

    /// The `reason` label this error is counted under; one of [`Self::REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Full => "queue_full",
            Self::Closed => "shutting_down",
            Self::Timeout => "ack_timeout",
            Self::Failed(_) => "redis_error",
            Self::Spool(e) => e.reason(),
        }
    }
}

/// Where an acknowledged event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Redis,
    Spool,
}

type Ack = Result<Stored, EnqueueError>;

pub(crate) struct Pending {
    payload: Vec<u8>,
    lane: Lane,
    /// When the event was handed over: its batch must be stored by `at + ack_timeout`.
    at: Instant,
    ack: oneshot::Sender<Ack>,
}

/// The handle the edge enqueues through. Cheap to clone.
#[derive(Clone)]
pub struct Enqueuer {
    tx: mpsc::Sender<Pending>,
    /// How long a caller waits for the writer: `queue.ack_timeout` without a spool. With one the
    /// writer itself answers every event by then (Redis or spool), so the caller just waits.
    wait: Option<Duration>,
}

impl std::fmt::Debug for Enqueuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueuer")
            .field("capacity", &self.tx.capacity())
            .finish()
    }
}

impl Enqueuer {
    /// Queues one event and waits until its batch is in Redis or the spool. Without a spool
    /// the wait is at most `queue.ack_timeout`; with one, `ack_timeout` plus the disk write.
    /// A full channel fails at once with [`EnqueueError::Full`]: the caller never waits for room.
    pub async fn enqueue(&self, event: &Event, lane: Lane) -> Result<Stored, EnqueueError> {
        self.enqueue_raw(event.to_json(), lane).await
    }

    /// Events handed over and not yet taken into a batch by the writer.
    pub fn waiting(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// As [`Enqueuer::enqueue`], for an event already serialised.
    pub async fn enqueue_raw(&self, payload: Vec<u8>, lane: Lane) -> Result<Stored, EnqueueError> {
        let (ack, acked) = oneshot::channel();
        let pending = Pending {
            payload,
            lane,
            at: Instant::now(),
            ack,
        };
        self.tx.try_send(pending).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EnqueueError::Full,
            mpsc::error::TrySendError::Closed(_) => EnqueueError::Closed,
        })?;
        let answer = match self.wait {
            Some(wait) => timeout(wait, acked)
                .await
                .map_err(|_| EnqueueError::Timeout)?,
            None => acked.await,
        };
        answer.unwrap_or(Err(EnqueueError::Closed))
    }
}

/// Starts the writer task (and, with a spool, its replayer); they run until every [`Enqueuer`]
/// is dropped, then the writer flushes what remains and the replayer stops between batches.
/// The returned future completes when the last batch has been stored or has failed.
pub(crate) fn start(
    pool: Pool,
    layout: Arc<Layout>,
    config: &QueueConfig,
    metrics: Arc<QueueMetrics>,
    spool: Option<Arc<Spool>>,
) -> (Enqueuer, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel(config.channel_capacity.get());
    let shards = layout.shards.len();
    let writer = Arc::new(Writer {
        pool,
        layout,
        mode: config.mode,
        batch_max: config.batch_max.get(),
        linger: config.linger,
        patience: config.patience,
        deadline: config.ack_timeout,
        overflow_cap: config.overflow_cap.get(),
        stream_maxlen: config.stream_maxlen.get(),
        append: redis::Script::new(include_str!("lua/append.lua")),
        near_cap_warned: std::sync::atomic::AtomicU64::new(u64::MAX),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight.get())),
        max_in_flight: config.max_in_flight.get(),
        landed: tokio::sync::Notify::new(),
        conns: (0..shards).map(|_| std::sync::Mutex::new(None)).collect(),
        next_shard: AtomicUsize::new(0),
        down: (0..shards).map(|_| AtomicBool::new(false)).collect(),
        spool,
        metrics,
    });
    let (stop, stopped) = watch::channel(false);
    let replayer = writer
        .spool
        .clone()
        .map(|spool| tokio::spawn(writer.clone().replay(spool, stopped)));
    let writing = tokio::spawn(writer.clone().run(rx));
    let wait = writer.spool.is_none().then_some(config.ack_timeout);
    let done = async move {
        let _ = writing.await;
        let _ = stop.send(true);
        if let Some(replayer) = replayer {
            let _ = replayer.await;
        }
    };
    (Enqueuer { tx, wait }, done)
}

pub(crate) struct Writer {
    pub(crate) pool: Pool,
    layout: Arc<Layout>,
    mode: QueueMode,
    pub(crate) batch_max: usize,
    linger: Duration,
    /// `queue.patience`: how long a gathering batch waits for the one in flight.
    patience: Duration,
    pub(crate) deadline: Duration,
    overflow_cap: u64,
    stream_maxlen: u64,
    /// Stream mode's write (`lua/append.lua`), refused whole past `stream_maxlen`.
    append: redis::Script,
    /// The minute of the last "stream nearly full" warning.
    near_cap_warned: std::sync::atomic::AtomicU64,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Told each time a batch lands, so the one gathering knows to go.
    landed: tokio::sync::Notify,
    /// The writer's own multiplexed connection for each shard, shared by the batches in flight
    /// to it. One per shard, so a cluster connection stalled by a dead master (it holds its
    /// requests while it finds the slots again) holds only that shard's batches.
    conns: Box<[std::sync::Mutex<Option<Detached>>]>,
    next_shard: AtomicUsize,
    /// Shards whose last write failed; skipped until the replayer sees Redis answer. Only set
    /// when there is a spool to take their batches.
    pub(crate) down: Box<[AtomicBool]>,
    pub(crate) spool: Option<Arc<Spool>>,
    pub(crate) metrics: Arc<QueueMetrics>,
}

impl Writer {
    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Pending>) {
        loop {
            let mut batch = Vec::with_capacity(self.batch_max);
            if rx.recv_many(&mut batch, self.batch_max).await == 0 {
                break; // every sender is gone and nothing is left
            }
            self.gather(&mut rx, &mut batch).await;
            // At most `queue.max_in_flight` batches at once.
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                break;
            };
            let writer = self.clone();
            tokio::spawn(async move {
                writer.write(batch).await;
                drop(permit);
                writer.landed.notify_waiters();
            });
        }
        // Wait for the batches still in flight.
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        let _ = self.in_flight.acquire_many(all).await;
    }

    /// Lets a batch grow before it is sent: for `queue.linger` after its first event, then for
    /// as long as another batch is in flight, until that one lands, this one is full, or its
    /// first event has waited `queue.patience`. So a batch is what queued while the last one was
    /// written (smart batching): it grows with the load, not with the number of write slots,
    /// and a second batch goes out beside the first once a whole one is waiting (a Redis across
    /// a network still gets them in flight) or the first is slow (a stalled shard does not hold
    /// the next batch, bound for another, until both deadlines are spent).
    async fn gather(&self, rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) {
        if !self.linger.is_zero() && batch.len() < self.batch_max {
            let until = Instant::now() + self.linger;
            while batch.len() < self.batch_max {
                let room = self.batch_max - batch.len();
                match timeout_at(until, rx.recv_many(batch, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let Some(first) = batch.first().map(|p| p.at) else {
            return;
        };
        let patience = tokio::time::sleep_until(first + self.patience);
        tokio::pin!(patience);
        while batch.len() < self.batch_max {
            // Listening before looking, so a batch that lands in between is not missed.
            let landed = self.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if self.in_flight.available_permits() == self.max_in_flight {
                return; // nothing in flight: go now
            }
            let room = self.batch_max - batch.len();
            tokio::select! {
                biased;
                () = &mut landed => {}
                () = &mut patience => return, // the one in flight is slow: go beside it
                n = rx.recv_many(batch, room) => {
                    if n == 0 {
                        return; // closed: what is here goes
                    }
                }
            }
        }
    }

    /// Stores one batch and answers every event of it: in Redis (retrying once on a new
    /// connection after a transient failure) by the deadline of its oldest event, or else in
    /// the spool.
    async fn write(&self, batch: Vec<Pending>) {
        let started = Instant::now();
        let until = batch.first().map_or(started, |p| p.at) + self.deadline;
        let events: Vec<(Lane, &[u8])> = batch.iter().map(|p| (p.lane, &p.payload[..])).collect();
        let answer = match self.pick_shard() {
            Some(shard) => match self.send_until(&events, shard, until).await {
                Ok(()) => Ok(Stored::Redis),
                Err(e) if self.spool.is_some() => {
                    self.mark_down(shard, &e);
                    self.spool_batch(&events).await
                }
                Err(QueueError::Timeout(_)) => Err(EnqueueError::Timeout),
                Err(e) => Err(EnqueueError::Failed(Arc::new(e))),
            },
            None => self.spool_batch(&events).await,
        };
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_events.observe(batch.len() as f64);
        drop(events);
        for pending in batch {
            let _ = pending.ack.send(answer.clone());
        }
    }

    /// Writes `events` to Redis by `until`, retrying once on a new connection after a
    /// transient failure; counts what Redis took by lane and what failed by kind.
    pub(crate) async fn send_until(
        &self,
        events: &[(Lane, &[u8])],
        shard: usize,
        until: Instant,
    ) -> Result<(), QueueError> {
        let mut result = timeout_at(until, self.send(events, shard)).await;
        if let Ok(Err(e)) = &result
            && e.is_transient()
        {
            self.metrics.error(e.kind());
            result = timeout_at(until, self.send(events, shard)).await;
        }
        let result = result.unwrap_or_else(|_| {
            // A connection that did not answer in time is not trusted with the next batch.
            self.forget_connection(shard);
            Err(QueueError::Timeout(self.deadline))
        });
        match &result {
            Ok(trimmed) => {
                self.metrics.overflow_trimmed.inc_by(*trimmed);
                count_by_lane(events, &self.metrics.enqueued);
            }
            Err(e) => self.metrics.error(e.kind()),
        }
        result.map(|_| ())
    }

    /// The next shard in turn that is not marked down; `None` when all are.
    pub(crate) fn pick_shard(&self) -> Option<usize> {
        let n = self.down.len();
        let start = self.next_shard.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&s| !self.down[s].load(Ordering::Relaxed))
    }

    pub(crate) fn mark_down(&self, shard: usize, error: &QueueError) {
        if !self.down[shard].swap(true, Ordering::Relaxed) {
            self.metrics.shards_down.inc();
            let full = error.kind() == "stream_full";
            let error = pixelgate_core::config::Chain(error);
            if full {
                tracing::warn!(%error, shard, "the stream holds queue.stream_maxlen entries: spooling this shard's batches until the drain makes room");
            } else {
                tracing::warn!(%error, shard, "redis did not take a batch: spooling this shard's batches until it answers");
            }
        }
    }

    /// Warns, at most once a minute, when the stream passes four fifths of its cap: the drain
    /// is falling behind, and past the cap batches go to the spool.
    fn near_cap(&self, len: u64) {
        if len.saturating_mul(5) < self.stream_maxlen.saturating_mul(4) {
            return;
        }
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60);
        if self.near_cap_warned.swap(minute, Ordering::Relaxed) != minute {
            tracing::warn!(
                len,
                cap = self.stream_maxlen,
                "the stream is past four fifths of queue.stream_maxlen: is the drain keeping up?"
            );
        }
    }

    /// Appends the batch to the spool on a blocking thread (one write, one `fdatasync`).
    async fn spool_batch(&self, events: &[(Lane, &[u8])]) -> Ack {
        let Some(spool) = self.spool.clone() else {
            return Err(EnqueueError::Closed);
        };
        let owned: Vec<(Lane, Vec<u8>)> = events.iter().map(|&(l, p)| (l, p.to_vec())).collect();
        let appending = spool.clone();
        let appended = tokio::task::spawn_blocking(move || {
            appending.append(owned.iter().map(|(lane, payload)| (*lane, &payload[..])))
        })
        .await;
        // A panic in the blocking task acknowledged nothing: report the batch as not stored.
        let Ok(result) = appended else {
            return Err(EnqueueError::Closed);
        };
        self.metrics.spool_gauges(spool.stats());
        match result {
            Ok(()) => {
                count_by_lane(events, &self.metrics.spooled);
                Ok(Stored::Spool)
            }
            Err(e) => Err(EnqueueError::Spool(Arc::new(e))),
        }
    }

    /// Writes the batch: one command (or pipeline) for the main lane, and one atomic
    /// `RPUSH`+`LTRIM` for the overflow lane when the batch has any. Returns how many overflow
    /// events were trimmed beyond the cap (exact, since push and trim are one transaction).
    async fn send(&self, batch: &[(Lane, &[u8])], shard: usize) -> Result<u64, QueueError> {
        let mut conn = self.connection(shard).await?;
        let sent = self.send_on(&mut conn, batch, shard).await;
        if let Err(e) = &sent
            && e.is_transient()
        {
            // A broken socket: the next batch (or the retry) takes a fresh connection.
            self.forget_connection(shard);
        }
        sent
    }

    /// The writer's connection for `shard`, taken from the pool the first time and after a
    /// failure.
    async fn connection(&self, shard: usize) -> Result<Detached, QueueError> {
        if let Some(conn) = self.lock_connection(shard).clone() {
            return Ok(conn);
        }
        let fresh = self.pool.detached().await?;
        *self.lock_connection(shard) = Some(fresh.clone());
        Ok(fresh)
    }

    fn forget_connection(&self, shard: usize) {
        self.lock_connection(shard).take();
    }

    fn lock_connection(&self, shard: usize) -> std::sync::MutexGuard<'_, Option<Detached>> {
        // Nothing panics while holding it; a poisoned lock still holds a good connection.
        self.conns[shard]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`Writer::send`] on `conn`.
    async fn send_on(
        &self,
        conn: &mut Detached,
        batch: &[(Lane, &[u8])],
        shard: usize,
    ) -> Result<u64, QueueError> {
        let lane = |lane| {
            batch
                .iter()
                .filter(move |(l, _)| *l == lane)
                .map(|&(_, payload)| payload)
        };
        if lane(Lane::Main).next().is_some() {
            let queue = &self.layout.shards[shard].queue;
            match self.mode {
                QueueMode::List => {
                    let mut cmd = redis::cmd("RPUSH");
                    cmd.arg(queue);
                    for payload in lane(Lane::Main) {
                        cmd.arg(payload);
                    }
                    let sent: Result<u64, _> = cmd.query_async(&mut *conn).await;
                    sent.map_err(|e| QueueError::from(e).on_key(queue))?;
                }
                QueueMode::Stream => {
                    let mut append = self.append.prepare_invoke();
                    append.key(queue).arg(self.stream_maxlen);
                    for payload in lane(Lane::Main) {
                        append.arg(payload);
                    }
                    let sent: Result<u64, _> = append.invoke_async(&mut *conn).await;
                    let len = sent.map_err(|e| QueueError::from(e).on_key(queue))?;
                    self.near_cap(len);
                }
            }
        }
        if lane(Lane::Overflow).next().is_none() {
            return Ok(0);
        }
        let mut pipe = Pipeline::new();
        let cmd = pipe.atomic().cmd("RPUSH").arg(&self.layout.overflow);
        for payload in lane(Lane::Overflow) {
            cmd.arg(payload);
        }
        let keep = -i64::try_from(self.overflow_cap).unwrap_or(i64::MAX);
        pipe.cmd("LTRIM")
            .arg(&self.layout.overflow)
            .arg(keep)
            .arg(-1)
            .ignore();
        let sent: Result<(u64,), _> = pipe.query_async(&mut *conn).await;
        let (len,) = sent.map_err(|e| QueueError::from(e).on_key(&self.layout.overflow))?;
        Ok(len.saturating_sub(self.overflow_cap))
    }
}

/// Adds each lane's count of `events` to `counter`.
fn count_by_lane(
    events: &[(Lane, &[u8])],
    counter: &prometheus_client::metrics::family::Family<
        LaneLabel,
        prometheus_client::metrics::counter::Counter,
    >,
) {
    for lane in [Lane::Main, Lane::Overflow] {
        let n = events.iter().filter(|(l, _)| *l == lane).count() as u64;
        if n > 0 {
            counter
                .get_or_create(&LaneLabel {
                    lane: lane.as_str(),
                })
                .inc_by(n);
        }
    }
}
