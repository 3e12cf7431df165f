//! What the handlers share, built once from the configuration and the opened parts.
//!
//! State is immutable after start; what changes lives behind the type that owns it: the keys
//! behind an `ArcSwap` (swapped on `SIGHUP`), the limiter's sharded map, the enqueuer's channel,
//! the spool's lock. Nothing here is a global, so two edges run side by side in one test.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use pixelgate_core::Keyring;
use pixelgate_queue::{EnqueueError, Enqueuer, Queue, WriterHandle};
use pixelgate_spool::Spool;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::{
    allowlist::Allowlist, client_ip::ClientIp, config::EdgeConfig, metrics::EdgeMetrics,
    ratelimit::RateLimiter,
};

/// The parts the edge is built from besides its configuration, each opened by [`crate::Edge`].
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) keys: Arc<ArcSwap<Keyring>>,
    pub(crate) queue: Queue,
    pub(crate) registry: Registry,
    pub(crate) spool: Arc<Spool>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) keys: Arc<ArcSwap<Keyring>>,
    pub(crate) enqueuer: Enqueuer,
    pub(crate) queue: Queue,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) client_ip: ClientIp,
    pub(crate) allowlist: Allowlist,
    pub(crate) metrics: Arc<EdgeMetrics>,
    pub(crate) registry: Registry,
    /// The disk spool, for `/readyz` (the enqueuer writes and replays it).
    pub(crate) spool: Arc<Spool>,
    /// Whether Redis answers, asked at most once a second however often `/readyz` is.
    pub(crate) redis: RedisCheck,
    shutting_down: AtomicBool,
    /// When an answered event was last stored nowhere (Unix ms; 0: never), and why (an index
    /// into `EnqueueError::REASONS`): readiness follows it, and the warning is once a second.
    last_drop: AtomicU64,
    last_drop_reason: AtomicUsize,
}

/// How long after a dropped event `/readyz` answers `503`: long enough for a load balancer's
/// probes to see it, short enough to come back as soon as events are stored again.
const DROPPING_FOR: Duration = Duration::from_secs(2);

/// The tasks that run beside the handlers, stopped by [`Background::stop`].
#[derive(Debug)]
pub(crate) struct Background {
    writer: WriterHandle,
    housekeeping: JoinHandle<()>,
}

impl AppState {
    /// Builds the state and starts what runs beside it: the enqueuer's writer (and replayer) and
    /// the rate limiter's housekeeping.
    pub(crate) fn start(config: &EdgeConfig, parts: Parts) -> (Arc<Self>, Background) {
        let Parts {
            keys,
            queue,
            mut registry,
            spool,
        } = parts;
        let metrics = Arc::new(EdgeMetrics::new(&mut registry));
        let limiter = Arc::new(RateLimiter::new(&config.rate_limit));
        let gauge = metrics.rate_limiter_clients.clone();
        let housekeeping = limiter.spawn_housekeeping(Duration::from_secs(60), move |n| {
            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        });
        let (enqueuer, writer) = queue.start_enqueuer(Some(spool.clone()));
        let state = Self {
            keys,
            enqueuer,
            queue,
            limiter,
            client_ip: ClientIp::new(config.rate_limit.trusted_proxies.clone()),
            allowlist: Allowlist::new(&config.click.allowed_hosts),
            metrics,
            registry,
            spool,
            redis: RedisCheck::default(),
            shutting_down: AtomicBool::new(false),
            last_drop: AtomicU64::new(0),
            last_drop_reason: AtomicUsize::new(0),
        };
        (
            Arc::new(state),
            Background {
                writer,
                housekeeping,
            },
        )
    }

    /// From now on `/readyz` answers `503 shutting_down`.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Counts an answered event that was stored nowhere, marks the edge not ready for a moment,
    /// and says so at most once a second.
    pub(crate) fn dropped(&self, error: &EnqueueError, id: impl std::fmt::Display) {
        let reason = error.reason();
        self.metrics.dropped(reason);
        let index = EnqueueError::REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        self.last_drop_reason.store(index, Ordering::Relaxed);
        let now = unix_ms();
        let before = self.last_drop.swap(now, Ordering::Relaxed);
        if before / 1000 != now / 1000 {
            tracing::warn!(error = %pixelgate_core::config::Chain(error), reason, %id, "event not stored");
        }
    }

    /// Why events are being dropped, if one was within [`DROPPING_FOR`].
    pub(crate) fn dropping(&self) -> Option<&'static str> {
        let last = self.last_drop.load(Ordering::Relaxed);
        let recent = last > 0 && unix_ms().saturating_sub(last) < DROPPING_FOR.as_millis() as u64;
        recent.then(|| {
            let index = self.last_drop_reason.load(Ordering::Relaxed);
            EnqueueError::REASONS
                .get(index)
                .copied()
                .unwrap_or("dropping")
        })
    }
}

/// The last answer to "does Redis answer?", shared by every `/readyz`: one `PING` a second at
/// most, so a flood of readiness probes costs the event writer's pool nothing.
#[derive(Debug, Default)]
pub(crate) struct RedisCheck(
    tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), &'static str>)>>,
);

impl RedisCheck {
    /// How long an answer stands.
    const FRESH: Duration = Duration::from_secs(1);

    /// `Ok`, or the kind of error Redis's `PING` got, at most [`Self::FRESH`] old. Callers that
    /// come while a `PING` is out wait for its answer (one `PING` for all of them).
    pub(crate) async fn answers(&self, queue: &Queue) -> Result<(), &'static str> {
        let mut last = self.0.lock().await;
        if let Some((at, answer)) = *last
            && at.elapsed() < Self::FRESH
        {
            return answer;
        }
        let answer = queue.ping().await.map_err(|e| e.kind());
        *last = Some((tokio::time::Instant::now(), answer));
        answer
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Background {
    /// Stops the housekeeping and waits until the writer has stored (or failed) every event it
    /// acknowledged and the replayer has stopped. Call once every handler is gone, so the
    /// enqueuer is closed.
    pub(crate) async fn stop(self) {
        self.housekeeping.abort();
        self.writer.flushed().await;
    }
}
