//! `pixelgate drain`: start tracing, open the drain and run it until SIGTERM or SIGINT.
//! `--migrate` only migrates the sink, once.
//!
//! A sink that is down at start is retried with back-off (the drain's `retry_*` keys) rather
//! than failing the unit, so a database restart does not need a drain restart.

use std::io::Write;

use anyhow::Context as _;
use pixelgate_drain::Drain;

use crate::{config::Config, serve::init_tracing};

/// Runs the drain (or only its migrations) and returns once it has stopped.
pub fn drain(config: Config, migrate_only: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if !migrate_only {
        init_tracing(&config.log);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pixelgate-drain")
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(async {
        let drain = Drain::open(&config.drain_settings())?;
        if migrate_only {
            drain.migrate().await.context("migration failed")?;
            writeln!(
                out,
                "migrations applied to the {} sink",
                drain.sink().name()
            )?;
            return Ok(());
        }
        let shutdown = crate::signals::stop()?;
        tracing::info!(
            sink = ?config.drain.sink_url,
            admin = %drain.admin_addr()?,
            mode = ?config.queue.mode,
            "pixelgate drain starting"
        );
        drain.run(shutdown).await?;
        Ok(())
    });
    // A file sink's sync stuck on a dead disk must not keep a stopped drain from exiting: what
    // it did not acknowledge is delivered again.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}
