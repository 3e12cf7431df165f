//! What the handlers share, built once from the configuration and the opened parts.
//!
//! State is immutable after start; what changes lives behind the type that owns it: the keys
//! behind an `ArcSwap` (swapped on `SIGHUP`), the limiter's sharded map, the enqueuer's channel,
//! the spool's lock. Nothing here is a global, so two edges run side by side in one test.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
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
    shutting_down: AtomicBool,
    /// Unix second of the last "events dropped" warning, so an outage logs once a second.
    last_drop_warning: AtomicU64,
}

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
            shutting_down: AtomicBool::new(false),
            last_drop_warning: AtomicU64::new(0),
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

    /// Counts an answered event that was stored nowhere, and says so at most once a second.
    pub(crate) fn dropped(&self, error: &EnqueueError, id: impl std::fmt::Display) {
        let reason = error.reason();
        self.metrics.dropped(reason);
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_drop_warning.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(error = %pixelgate_core::config::Chain(error), reason, %id, "event not stored");
        }
    }
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
