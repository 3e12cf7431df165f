//! pixelgate's drain: moves events from Redis into a database, in batches, exactly once.
//!
//! - [`config`]: `[drain]` of the configuration, and the sink URL.
//! - [`sink`]: MariaDB/MySQL and PostgreSQL (sqlx, migrations, idempotent multi-row inserts)
//!   and JSON lines (appended, synced, rotated).
//! - `worker`: the loop: claim or read a batch, write it in one transaction, acknowledge.
//! - `admin`: `/healthz`, `/readyz`, `/metrics` on `drain.admin_listen`.
//!
//! Invariant: a batch is acknowledged in Redis only after the sink committed it. A drain that
//! dies at any point leaves its batch to be delivered again, and the sink's key on `id` turns
//! the replay into nothing: every event ends up exactly once in a SQL sink.

mod admin;
pub mod config;
pub mod metrics;
pub mod sink;
mod worker;

use std::{future::Future, sync::Arc};

use pixelgate_queue::{Queue, QueueMode};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use crate::{
    config::{DrainConfig, SinkUrl},
    sink::{Sink, SinkError},
};

/// What the drain is built from, besides its configuration.
#[derive(Debug)]
pub struct Parts {
    /// The queue, its metrics already registered in `registry`.
    pub queue: Queue,
    /// `queue.mode`: leases on lists, or the consumer group on streams.
    pub mode: QueueMode,
    /// The opened (and migrated) sink.
    pub sink: Sink,
    /// Where every metric is registered; the admin listener's `/metrics` encodes it.
    pub registry: Registry,
    /// The bound admin listener (`drain.admin_listen`).
    pub admin: std::net::TcpListener,
}

/// Runs the drain until `shutdown` completes, then lets each worker finish (or give back) its
/// batch, at most `drain.shutdown_grace`.
pub async fn run(
    config: DrainConfig,
    parts: Parts,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Parts {
        queue,
        mode,
        sink,
        mut registry,
        admin,
    } = parts;
    let metrics = Arc::new(metrics::DrainMetrics::new(&mut registry));
    let sink = Arc::new(sink);
    let ctx = Arc::new(worker::Ctx {
        config: config.clone(),
        sink: sink.clone(),
        metrics,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    let shard_count = if config.shards.is_empty() {
        queue.layout().shards.len()
    } else {
        config.shards.len()
    };
    for slot in 0..config.concurrency.get() {
        let (ctx, stop) = (ctx.clone(), stop_rx.clone());
        match mode {
            QueueMode::List => {
                let leases = queue.leases(&config.shards);
                workers.spawn(worker::list_worker(ctx, leases, slot, stop));
            }
            QueueMode::Stream => {
                let name = config.consumer.clone().unwrap_or_else(default_consumer);
                let mut consumer = queue.stream_consumer(&format!("{name}-{slot}"), &config.shards);
                consumer.lease = config.lease;
                consumer.max_deliveries = config.max_deliveries.get();
                workers.spawn(worker::stream_worker(
                    ctx,
                    consumer,
                    shard_count,
                    slot,
                    stop,
                ));
            }
        }
    }
    admin.set_nonblocking(true)?;
    let admin_listener = tokio::net::TcpListener::from_std(admin)?;
    let admin_state = Arc::new(admin::Admin {
        queue,
        sink,
        registry,
    });
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, stop_rx));
    tracing::info!(workers = config.concurrency.get(), ?mode, "draining");

    shutdown.await;
    tracing::info!("stopping: finishing the batches in hand");
    let _ = stop_tx.send(true);
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
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// `HOST-PID`: unique per process, and readable in `XINFO CONSUMERS`.
fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}
