//! `pixelgate serve`: start tracing, bind, and run the edge until SIGTERM or SIGINT.
//!
//! Keys and certificates are loaded before anything listens (`Edge::open`), so a bad key file
//! fails the start (and `systemctl start`) instead of the first request. `SIGHUP` reloads both; a reload that
//! fails keeps the old ones and says why.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use pixelgate_core::config::Chain;
use pixelgate_edge::{Edge, SharedTls, tls};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{Config, LogConfig, LogFormat},
    keys::load_keyring,
};

/// Runs the edge; returns once it has stopped and flushed.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let keys = load_keyring(&config.signing)?;
    init_tracing(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pixelgate")
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(run(config, keys))
}

async fn run(config: Config, keys: pixelgate_core::Keyring) -> anyhow::Result<()> {
    let edge = Edge::open(&config.edge_settings(), keys)?;
    let spool = edge.spool().stats();
    if spool.bytes() > 0 {
        tracing::info!(
            dir = %edge.spool().dir().display(),
            bytes = spool.bytes(),
            segments = spool.segments(),
            "the spool holds events from a previous run; they will be replayed"
        );
    }
    let shutdown = crate::signals::stop()?;
    let hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let reloader = tokio::spawn(reload_on_hangup(
        hangup,
        config.clone(),
        edge.keys(),
        edge.tls(),
    ));
    tracing::info!(
        listen = %edge.public_addr()?,
        admin = %edge.admin_addr()?,
        tls = edge.tls().is_some(),
        sealing_key = %edge.keys().load().sealing_key_id(),
        "pixelgate serve starting"
    );
    edge.run(shutdown).await?;
    reloader.abort();
    Ok(())
}

/// Reloads signing keys and certificates on every `SIGHUP`.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    config: Config,
    keys: Arc<ArcSwap<pixelgate_core::Keyring>>,
    tls: Option<SharedTls>,
) {
    while hangup.recv().await.is_some() {
        match load_keyring(&config.signing) {
            Ok(ring) => {
                tracing::info!(sealing_key = %ring.sealing_key_id(), "signing keys reloaded");
                keys.store(Arc::new(ring));
            }
            Err(error) => {
                tracing::error!(error = %Chain(&error), "signing keys not reloaded; keeping the old ones")
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
                    tracing::error!(error = %Chain(&error), "certificates not reloaded; keeping the old ones")
                }
            }
        }
    }
}

/// Logs to stderr (journald picks it up), as text or JSON, filtered by `log.level`.
pub fn init_tracing(log: &LogConfig) {
    let filter = log.level.filter();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
