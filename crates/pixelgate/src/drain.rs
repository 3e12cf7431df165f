//! `pixelgate drain`: start tracing, open the sink, migrate it, and run the drain until SIGTERM
//! or SIGINT. `--migrate` only migrates.
//!
//! A sink that is down at start is retried with back-off (the drain's `retry_*` keys) rather
//! than failing the unit, so a database restart does not need a drain restart.

use std::io::Write;

use anyhow::Context as _;
use pixelgate_drain::{Sink, SinkUrl};
use pixelgate_queue::Queue;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};

use crate::{config::Config, serve::init_tracing};

/// Runs the drain (or only its migrations) and returns once it has stopped.
pub fn drain(config: Config, migrate_only: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let url = config.drain.sink_url.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "no sink: set drain.sink_url or PIXELGATE_SINK_URL \
             (mysql://user:pass@host/db, postgres://user@host/db or jsonl:///path/events.jsonl)"
        )
    })?;
    if !migrate_only {
        init_tracing(&config.log);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pixelgate-drain")
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let sink = Sink::open(&url, &config.drain).context("cannot open the sink")?;
        if migrate_only {
            sink.migrate().await.context("migration failed")?;
            writeln!(out, "migrations applied to the {} sink", sink.name())?;
            return Ok(());
        }
        run(config, url, sink).await
    })
}

async fn run(config: Config, url: SinkUrl, sink: Sink) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let admin = std::net::TcpListener::bind(config.drain.admin_listen).with_context(|| {
        format!(
            "cannot listen on drain.admin_listen {}",
            config.drain.admin_listen
        )
    })?;
    let mut registry = Registry::default();
    let queue = Queue::new(&config.redis, &config.queue, &mut registry)?;
    tracing::info!(sink = ?url, admin = %config.drain.admin_listen, mode = ?config.queue.mode, "pixelgate drain starting");
    if config.drain.migrate_on_start {
        let mut wait = config.drain.retry_initial;
        loop {
            match sink.migrate().await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?wait, "sink not ready for migrations");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = terminate.recv() => return Ok(()),
                        _ = interrupt.recv() => return Ok(()),
                    }
                    wait = (wait * 2).min(config.drain.retry_max);
                }
            }
        }
    }
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM"),
            _ = interrupt.recv() => tracing::info!("SIGINT"),
        }
    };
    let parts = pixelgate_drain::Parts {
        queue,
        mode: config.queue.mode,
        sink,
        registry,
        admin,
    };
    pixelgate_drain::run(config.drain, parts, shutdown).await?;
    Ok(())
}
