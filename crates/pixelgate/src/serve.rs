//! `pixelgate serve`: start tracing, bind, and run the edge until SIGTERM or SIGINT.
//!
//! Keys and certificates are loaded before anything listens (`Edge::open`), so a bad key file
//! fails the start (and `systemctl start`) instead of the first request. `SIGHUP` reloads both; a reload that
//! fails keeps the old ones and says why.

use std::{sync::Arc, time::Duration};

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
    let result = runtime.block_on(run(config, keys));
    // What blocking work is left (a disk that stopped answering a sync) must not keep a stopped
    // edge from exiting: every answered event is stored or counted by now.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
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

/// The longest a reload may take to read its files; past it the old keys and certificates
/// stay, and the read is left to finish (or hang, on a dead mount) on its own thread.
const RELOAD_LIMIT: Duration = Duration::from_secs(5);

/// Reloads signing keys and certificates on every `SIGHUP`. The files are read on a thread of
/// their own, never on the runtime: a FIFO, a hung NFS mount or a slow disk delays the reload,
/// not the edge.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    config: Config,
    keys: Arc<ArcSwap<pixelgate_core::Keyring>>,
    tls: Option<SharedTls>,
) {
    while hangup.recv().await.is_some() {
        let (signing, certificates) = (config.signing.clone(), config.tls.clone());
        let read = off_runtime(RELOAD_LIMIT, move || {
            (load_keyring(&signing), tls::load(&certificates))
        });
        let Some((ring, certified)) = read.await else {
            tracing::error!(
                limit = ?RELOAD_LIMIT,
                "reading the keys and certificates took too long; keeping the old ones"
            );
            continue;
        };
        match ring {
            Ok(ring) => {
                tracing::info!(sealing_key = %ring.sealing_key_id(), "signing keys reloaded");
                keys.store(Arc::new(ring));
            }
            Err(error) => {
                tracing::error!(error = %Chain(&error), "signing keys not reloaded; keeping the old ones")
            }
        }
        if let Some(tls) = &tls {
            match certified {
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

/// Runs `read` on a thread of its own and waits for it at most `limit`; `None` when it took
/// longer. The thread is detached, so one stuck for ever keeps neither the runtime nor the exit.
async fn off_runtime<T: Send + 'static>(
    limit: Duration,
    read: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("pixelgate-reload".into())
        .spawn(move || {
            let _ = tx.send(read());
        });
    if spawned.is_err() {
        return None;
    }
    tokio::time::timeout(limit, rx).await.ok()?.ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_off_the_runtime_is_waited_for_only_so_long() {
        let quick = off_runtime(Duration::from_secs(5), || 7).await;
        assert_eq!(quick, Some(7));
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let slow = off_runtime(Duration::from_millis(50), move || stuck.recv().is_ok()).await;
        assert_eq!(slow, None, "a read that hangs is given up on");
        drop(release);
    }
}
