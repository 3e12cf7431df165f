//! `pixelgate serve`: start tracing, bind, and run the edge until SIGTERM or SIGINT.
//!
//! Keys and certificates are loaded before anything listens, so a bad key file fails the start
//! (and `systemctl start`) instead of the first request. `SIGHUP` reloads both; a reload that
//! fails keeps the old ones and says why.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use pixelgate_edge::{Listeners, Parts, tls};
use pixelgate_queue::Queue;
use pixelgate_spool::Spool;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{Config, LogConfig, LogFormat},
    keys::load_keyring,
};

/// Runs the edge; returns once it has stopped and flushed.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let keys = load_keyring(&config.signing)?;
    let tls_config = tls::load(&config.tls)?;
    init_tracing(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pixelgate")
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(run(config, keys, tls_config))
}

async fn run(
    config: Config,
    keys: pixelgate_core::Keyring,
    tls_config: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let edge = config.edge();
    let listeners = Listeners::bind(&edge.server).with_context(|| {
        format!(
            "cannot listen on {} and {}",
            edge.server.listen, edge.server.admin_listen
        )
    })?;
    // Opened before anything is served: a spool another process holds, or one that cannot be
    // written, fails the start. Whatever a previous run left in it is replayed once Redis answers.
    let spool = Spool::open(&config.spool)?;
    if spool.stats().bytes() > 0 {
        tracing::info!(
            dir = %spool.dir().display(),
            bytes = spool.stats().bytes(),
            segments = spool.stats().segments(),
            "the spool holds events from a previous run; they will be replayed"
        );
    }
    let mut registry = Registry::default();
    let queue = Queue::new(&config.redis, &config.queue, &mut registry)?;
    let keys = Arc::new(ArcSwap::from_pointee(keys));
    let tls = tls_config.map(|c| Arc::new(ArcSwap::new(c)));
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let reloader = tokio::spawn(reload_on_hangup(
        hangup,
        config.clone(),
        keys.clone(),
        tls.clone(),
    ));
    tracing::info!(
        listen = %listeners.public_addr()?,
        admin = %listeners.admin_addr()?,
        tls = tls.is_some(),
        sealing_key = %keys.load().sealing_key_id(),
        "pixelgate serve starting"
    );
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM"),
            _ = interrupt.recv() => tracing::info!("SIGINT"),
        }
    };
    let parts = Parts {
        keys,
        queue,
        registry,
        tls,
        spool: Arc::new(spool),
    };
    pixelgate_edge::run(edge, listeners, parts, shutdown).await?;
    reloader.abort();
    Ok(())
}

/// Reloads signing keys and certificates on every `SIGHUP`.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    config: Config,
    keys: Arc<ArcSwap<pixelgate_core::Keyring>>,
    tls: Option<pixelgate_edge::SharedTls>,
) {
    while hangup.recv().await.is_some() {
        match load_keyring(&config.signing) {
            Ok(ring) => {
                tracing::info!(sealing_key = %ring.sealing_key_id(), "signing keys reloaded");
                keys.store(Arc::new(ring));
            }
            Err(error) => {
                tracing::error!(%error, "signing keys not reloaded; keeping the old ones")
            }
        }
        if let Some(tls) = &tls {
            match tls::load(&config.tls) {
                Ok(Some(fresh)) => {
                    tls.store(fresh);
                    tracing::info!("certificates reloaded");
                }
                Ok(None) => tracing::error!("no certificate configured; keeping the old ones"),
                Err(error) => {
                    tracing::error!(%error, "certificates not reloaded; keeping the old ones")
                }
            }
        }
    }
}

/// Logs to stderr (journald picks it up), as text or JSON, filtered by `log.level`.
pub fn init_tracing(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
