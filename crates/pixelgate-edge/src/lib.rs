//! pixelgate's edge: the HTTP server that answers open pixels and click links.
//!
//! - [`config`]: `[server]`, `[rate_limit]`, `[tls]`, `[click]`.
//! - [`server`]: listeners (`SO_REUSEPORT`), connections (hyper-util auto builder with a timer),
//!   graceful shutdown.
//! - [`stack`]: the tower stack of each listener, in one function, outermost layer first.
//! - [`routes`]: the handlers `pixel`, `click`, `healthz`, `readyz`, `test`, `metrics`.
//! - [`error`]: every non-success answer and its status, in one exhaustive match.
//! - [`ratelimit`], [`client_ip`]: per-client GCRA limits, and who the client is.
//! - [`tls`]: certificates by SNI, reloadable. [`metrics`]: what `/metrics` shows of the edge.
//!
//! Invariant: the edge talks to Redis only through `pixelgate_queue`; an answered tracking
//! request's event is in Redis or in the disk spool (`pixelgate_spool`), or counted as dropped
//! with a reason.

pub mod client_ip;
pub mod config;
pub mod error;
pub mod metrics;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod stack;
pub mod tls;

use std::{future::Future, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use pixelgate_core::Keyring;
use pixelgate_queue::Queue;
use pixelgate_spool::Spool;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::{
    client_ip::ClientIp,
    metrics::EdgeMetrics,
    ratelimit::RateLimiter,
    routes::{Allowlist, AppState},
    server::ConnSettings,
};
pub use crate::{
    config::EdgeConfig,
    server::Listeners,
    tls::{SharedTls, TlsError},
};

/// What the edge is built from, besides its configuration.
#[derive(Debug)]
pub struct Parts {
    /// The signing keys; the caller keeps a clone to swap in reloaded keys (`SIGHUP`).
    pub keys: Arc<ArcSwap<Keyring>>,
    /// The queue, its metrics already registered in `registry`.
    pub queue: Queue,
    /// Where every metric is registered; `/metrics` encodes it.
    pub registry: Registry,
    /// TLS settings for the public listener, swappable like the keys; `None` for plain HTTP.
    pub tls: Option<SharedTls>,
    /// Where batches Redis does not take in time go, opened (and locked) by the caller.
    pub spool: Arc<Spool>,
}

/// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish,
/// and returns only after the enqueuer has written (or failed) every event it acknowledged.
pub async fn run(
    config: EdgeConfig,
    listeners: Listeners,
    parts: Parts,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Parts {
        keys,
        queue,
        mut registry,
        tls,
        spool,
    } = parts;
    let metrics = Arc::new(EdgeMetrics::new(&mut registry));
    let limiter = Arc::new(RateLimiter::new(&config.rate_limit));
    let gauge = metrics.rate_limiter_clients.clone();
    let housekeeping = limiter.spawn_housekeeping(Duration::from_secs(60), move |n| {
        gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
    });
    let (enqueuer, writer) = queue.start_enqueuer(Some(spool.clone()));
    let state = Arc::new(AppState::new(
        keys,
        enqueuer,
        queue,
        limiter,
        ClientIp::new(config.rate_limit.trusted_proxies.clone()),
        Allowlist::new(&config.click.allowed_hosts),
        metrics,
        Arc::new(registry),
        spool,
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = config.server.shutdown_grace;
    let public = Arc::new(ConnSettings::new(
        stack::public(state.clone(), &config.server),
        tls,
        &config.server,
        true,
    ));
    let admin = Arc::new(ConnSettings::new(
        stack::admin(state.clone(), &config.server),
        None,
        &config.server,
        false,
    ));
    let mut loops = Vec::new();
    for listener in listeners.public {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loops.push(tokio::spawn(server::accept_loop(
            listener,
            public.clone(),
            state.clone(),
            stop_rx.clone(),
            grace,
        )));
    }
    let admin_listener = tokio::net::TcpListener::from_std(listeners.admin)?;
    loops.push(tokio::spawn(server::accept_loop(
        admin_listener,
        admin.clone(),
        state.clone(),
        stop_rx.clone(),
        grace,
    )));
    tracing::info!("serving");

    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing requests");
    server::begin_shutdown(&state);
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    housekeeping.abort();
    // The services (and their clones of the state) are gone with the connections; dropping
    // the last references closes the enqueuer, and the writer flushes what it holds.
    drop((public, admin, state));
    writer.flushed().await;
    tracing::info!("stopped");
    Ok(())
}
