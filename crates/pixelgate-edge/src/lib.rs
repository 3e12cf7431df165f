//! pixelgate's edge: the HTTP server that answers open pixels and click links.
//!
//! - [`Edge`]: [`Edge::open`] binds, opens the spool and builds the queue (all that can fail
//!   before serving); [`Edge::run`] serves until shutdown, then flushes. The binary and the tests
//!   start the edge through these two and nothing else.
//! - [`config`]: `[server]`, `[rate_limit]`, `[tls]`, `[click]`; [`Settings`] adds the Redis,
//!   queue and spool sections the edge is opened with.
//! - `stack`: each listener's whole stack, connection to handler, outermost first.
//! - `middleware/`: the request layers, one concern a file. `handlers/`: by listener.
//! - [`route`]: what a request names ([`Route`], [`Routed`], [`Peer`]), shared by the others.
//! - `state`: what the handlers share, built from the configuration and the opened parts.
//! - [`ratelimit`], [`client_ip`], [`allowlist`]: per-client limits, who the client is, where
//!   an account's clicks may go. [`tls`]: certificates by SNI, reloadable. [`metrics`].
//!
//! Invariant: the edge talks to Redis only through `pixelgate_queue`; an answered tracking
//! request's event is in Redis or in the disk spool (`pixelgate_spool`), or counted as dropped
//! with a reason. Serving (accept loops, connections, refusals) is `pixelgate_http`'s.

pub mod allowlist;
pub mod client_ip;
pub mod config;
mod handlers;
mod listeners;
pub mod metrics;
mod middleware;
pub mod ratelimit;
pub mod route;
mod stack;
mod state;
pub mod tls;

use std::{future::Future, io, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use pixelgate_core::{Invalid, Keyring};
use pixelgate_queue::{Queue, QueueConfig, QueueError, RedisConfig};
use pixelgate_spool::{Spool, SpoolConfig, SpoolError};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

pub use crate::{
    config::EdgeConfig,
    handlers::public::{GIF, gif},
    listeners::Listeners,
    middleware::observe::escape,
    route::{Peer, Route, Routed},
    tls::TlsError,
};
pub use pixelgate_http::{Refusal, SharedTls};

use crate::state::{AppState, Parts};

/// Everything the edge is configured by: its own sections, and those of the queue it writes to
/// and the spool behind it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub edge: EdgeConfig,
    pub redis: RedisConfig,
    pub queue: QueueConfig,
    pub spool: SpoolConfig,
}

impl Settings {
    /// Checks each section and what they must agree on; the error names the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.edge.validate()?;
        self.redis.validate()?;
        self.queue.validate(&self.redis)?;
        self.spool.validate()?;
        let server = &self.edge.server;
        // A pixel waits up to queue.ack_timeout for Redis before it is spooled: a request or a
        // shutdown that allowed less would cut answers short.
        for (key, d) in [
            ("server.request_timeout", server.request_timeout),
            ("server.shutdown_grace", server.shutdown_grace),
        ] {
            if d <= self.queue.ack_timeout {
                return Err(Invalid::new(key, "must be longer than queue.ack_timeout"));
            }
        }
        if self.queue.channel_capacity < self.edge.server.max_in_flight {
            // Each request in flight holds at most one event, so with room for all of them an
            // enqueue never finds the channel full and every answered event is stored.
            return Err(Invalid::new(
                "queue.channel_capacity",
                "must be at least server.max_in_flight",
            ));
        }
        Ok(())
    }
}

/// Why the edge could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot listen on {listen} and {admin}")]
    Bind {
        listen: SocketAddr,
        admin: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// An edge with its sockets bound, its spool locked and its queue built, ready to [`run`].
///
/// [`run`]: Edge::run
#[derive(Debug)]
pub struct Edge {
    config: EdgeConfig,
    listeners: Listeners,
    keys: Arc<ArcSwap<Keyring>>,
    tls: Option<SharedTls>,
    queue: Queue,
    registry: Registry,
    spool: Arc<Spool>,
}

impl Edge {
    /// Loads the certificates, binds both listeners, opens (and locks) the spool and builds the
    /// queue; no connection to Redis is made yet. A spool another process holds, or one that
    /// cannot be written, fails here; whatever a previous run left in it is replayed once Redis
    /// answers.
    pub fn open(settings: &Settings, keys: Keyring) -> Result<Self, OpenError> {
        let config = settings.edge.clone();
        let tls = tls::load(&config.tls)?.map(|c| Arc::new(ArcSwap::new(c)));
        let listeners = Listeners::bind(&config.server).map_err(|source| OpenError::Bind {
            listen: config.server.listen,
            admin: config.server.admin_listen,
            source,
        })?;
        let spool = Spool::open(&settings.spool)?;
        let mut registry = Registry::default();
        let queue = Queue::new(&settings.redis, &settings.queue, &mut registry)?;
        Ok(Self {
            config,
            listeners,
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            tls,
            queue,
            registry,
            spool: Arc::new(spool),
        })
    }

    pub fn public_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.public_addr()
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.admin_addr()
    }

    /// The signing keys; keep a clone to swap in reloaded ones (`SIGHUP`).
    pub fn keys(&self) -> Arc<ArcSwap<Keyring>> {
        self.keys.clone()
    }

    /// The TLS settings, swappable like the keys; `None` for plain HTTP.
    pub fn tls(&self) -> Option<SharedTls> {
        self.tls.clone()
    }

    /// The spool, as opened (what a previous run left is in its stats).
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (at most `server.shutdown_grace`), and returns only after the enqueuer has written (or
    /// failed) every event it acknowledged and the replayer has stopped.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Self {
            config,
            listeners,
            keys,
            tls,
            queue,
            registry,
            spool,
        } = self;
        let parts = Parts {
            keys,
            queue,
            registry,
            spool,
        };
        let (state, background) = AppState::start(&config, parts);
        let public = Arc::new(stack::public(&state, &config.server, tls));
        let admin = Arc::new(stack::admin(&state, &config.server));
        let (stop_tx, stop) = watch::channel(false);
        let grace = config.server.shutdown_grace;
        let mut loops = JoinSet::new();
        for socket in listeners.public {
            let socket = TcpListener::from_std(socket)?;
            loops.spawn(pixelgate_http::serve::serve(
                socket,
                public.clone(),
                stop.clone(),
                grace,
            ));
        }
        let socket = TcpListener::from_std(listeners.admin)?;
        loops.spawn(pixelgate_http::serve::serve(
            socket,
            admin.clone(),
            stop,
            grace,
        ));
        tracing::info!("serving");

        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests");
        state.begin_shutdown();
        let _ = stop_tx.send(true);
        while loops.join_next().await.is_some() {}
        // The stacks (and their clones of the state) are gone with the connections; dropping
        // the last references closes the enqueuer, and the writer flushes what it holds.
        drop((public, admin, state));
        background.stop().await;
        tracing::info!("stopped");
        Ok(())
    }
}
