//! pixelgate's drain: moves events from Redis into a database, in batches, exactly once.
//!
//! - [`Drain`]: [`Drain::open`] binds the admin listener, opens the sink and builds the queue;
//!   [`Drain::run`] migrates the sink (waiting out a database that is not up yet) and drains
//!   until shutdown. The binary and the tests start the drain through these.
//! - [`config`]: `[drain]` and the sink URL; [`Settings`] adds the Redis and queue sections.
//! - [`sink`]: the [`Sink`] trait and one directory per sink: MariaDB/MySQL and PostgreSQL
//!   (columns and migrations from one table in `sink/sql`), JSON lines.
//! - `worker`: the one loop, over any `pixelgate_queue::BatchSource` (list leases or the
//!   stream's consumer group): take, write in one transaction, dead-letter, acknowledge.
//! - [`backoff`]: every retry's wait. `admin`: `/healthz`, `/readyz`, `/metrics`.
//!
//! Invariant: a batch is acknowledged in Redis only after the sink committed it. A drain that
//! dies at any point leaves its batch to be delivered again, and the sink's key on `id` turns
//! the replay into nothing: every event ends up exactly once in a SQL sink.

mod admin;
pub mod backoff;
pub mod config;
pub mod metrics;
pub mod sink;
mod worker;

use std::{future::Future, io, net::SocketAddr, sync::Arc};

use pixelgate_core::{Invalid, config::Chain};
use pixelgate_queue::{Holding, Queue, QueueConfig, QueueError, QueueMode, RedisConfig};
use prometheus_client::registry::Registry;
use tokio::{sync::watch, task::JoinSet};

use crate::{backoff::Backoff, metrics::DrainMetrics};
pub use crate::{
    config::{DrainConfig, SinkUrl},
    sink::{Sink, SinkError},
};

/// Everything the drain is configured by: its own section, and Redis and the queue it reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub drain: DrainConfig,
    pub redis: RedisConfig,
    pub queue: QueueConfig,
}

impl Settings {
    /// Checks `[drain]` against the queue it drains; the error names the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let shards = if self.redis.is_cluster() {
            usize::from(self.queue.shards.get())
        } else {
            1
        };
        self.drain.validate(shards)
    }
}

/// Why the drain could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "no sink: set drain.sink_url or PIXELGATE_SINK_URL \
         (mysql://user:pass@host/db, postgres://user@host/db or jsonl:///path/events.jsonl)"
    )]
    NoSink,
    #[error("cannot listen on drain.admin_listen {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the sink")]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A drain with its admin listener bound, its sink opened (connections come lazily) and its
/// queue built, ready to [`Drain::run`].
#[derive(Debug)]
pub struct Drain {
    config: DrainConfig,
    mode: QueueMode,
    queue: Queue,
    registry: Registry,
    sink: Arc<dyn Sink>,
    admin: std::net::TcpListener,
}

impl Drain {
    pub fn open(settings: &Settings) -> Result<Self, OpenError> {
        let config = settings.drain.clone();
        let url = config.sink_url.as_ref().ok_or(OpenError::NoSink)?;
        let sink: Arc<dyn Sink> = sink::open(url, &config.sink_options())?.into();
        let admin =
            std::net::TcpListener::bind(config.admin_listen).map_err(|source| OpenError::Bind {
                addr: config.admin_listen,
                source,
            })?;
        let mut registry = Registry::default();
        let queue = Queue::new(&settings.redis, &settings.queue, &mut registry)?;
        Ok(Self {
            config,
            mode: settings.queue.mode,
            queue,
            registry,
            sink,
            admin,
        })
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    pub fn sink(&self) -> &dyn Sink {
        &*self.sink
    }

    /// Creates or updates the sink's table, once (`pixelgate drain --migrate`).
    pub async fn migrate(&self) -> Result<(), SinkError> {
        self.sink.migrate().await
    }

    /// Migrates the sink (when `drain.migrate_on_start`, retrying with back-off while it is not
    /// up), then drains until `shutdown` completes; then lets each worker finish (or give back)
    /// its batch, at most `drain.shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Self {
            config,
            mode,
            queue,
            mut registry,
            sink,
            admin,
        } = self;
        let (stop_tx, mut stop) = watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        tokio::pin!(shutdown);
        if config.migrate_on_start {
            let mut backoff = Backoff::new(&config);
            let migrated = async {
                loop {
                    match sink.migrate().await {
                        Ok(()) => return true,
                        Err(error) => {
                            let retry_in = backoff.next_wait();
                            tracing::warn!(error = %Chain(&error), ?retry_in, "sink not ready for migrations");
                            if !backoff::pause(retry_in, &mut stop).await {
                                return false;
                            }
                        }
                    }
                }
            };
            let migrated = tokio::select! {
                migrated = migrated => migrated,
                () = &mut shutdown => false,
            };
            if !migrated {
                return Ok(());
            }
        }

        let metrics = Arc::new(DrainMetrics::new(&mut registry));
        let ctx = Arc::new(worker::Ctx {
            config: config.clone(),
            sink: sink.clone(),
            metrics,
        });
        let holding = Holding {
            lease: config.lease,
            max_deliveries: config.max_deliveries.get(),
        };
        let mut workers = JoinSet::new();
        for slot in 0..config.concurrency.get() {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            match mode {
                QueueMode::List => {
                    let leases = queue.leases(&config.shards, holding);
                    workers.spawn(worker::worker(ctx, leases, slot, stop));
                }
                QueueMode::Stream => {
                    let name = worker::consumer_name(config.consumer.as_deref(), slot);
                    let consumer = queue.stream_consumer(&name, &config.shards, holding);
                    workers.spawn(worker::worker(ctx, consumer, slot, stop));
                }
            }
        }
        admin.set_nonblocking(true)?;
        let admin = tokio::net::TcpListener::from_std(admin)?;
        let stack = Arc::new(admin::stack(Arc::new(admin::Admin {
            queue,
            sink,
            registry,
        })));
        let serving = tokio::spawn(pixelgate_http::serve::serve(
            admin,
            stack,
            stop.clone(),
            config.shutdown_grace,
        ));
        tracing::info!(workers = config.concurrency.get(), ?mode, "draining");

        (&mut shutdown).await;
        tracing::info!("stopping: finishing the batches in hand");
        let finished = tokio::time::timeout(config.shutdown_grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                "shutdown grace over; unfinished batches return to the queue when their leases expire"
            );
            workers.shutdown().await;
        }
        let _ = serving.await;
        tracing::info!("stopped");
        Ok(())
    }
}
