//! `SIGTERM` and `SIGINT` as the future that ends `serve` and `drain`.
//!
//! The handlers are installed when this is called, before anything is served, so a signal that
//! comes during start-up is not lost: it ends the run as soon as it begins.

use std::future::Future;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

/// Completes at the first `SIGTERM` or `SIGINT`, and logs which.
pub fn stop() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM"),
            _ = interrupt.recv() => tracing::info!("SIGINT"),
        }
    })
}
