//! Sinks: where drained events end up. One batch is one transaction (SQL) or one synced append
//! (JSON lines); a batch is acknowledged in Redis only after its write returned `Ok`.
//!
//! The SQL sinks key the table on the event `id` and insert idempotently, so a batch written
//! twice (a lease that expired during a slow commit, a drain killed after its commit but before
//! its ack) still leaves one row per event.

mod jsonl;
mod sql;

use std::time::Duration;

use pixelgate_core::Event;

pub use self::{jsonl::JsonLines, sql::Sql};
use crate::config::{DrainConfig, SinkUrl};

/// Why a sink did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sink did not answer within {0:?}")]
    Timeout(Duration),
}

impl SinkError {
    /// The label this error is counted under in `pixelgate_drain_sink_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_),
            ) => "connection",
            Self::Database(sqlx::Error::Database(_)) => "database",
            Self::Database(_) => "other",
            Self::File { .. } => "file",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// A configured sink.
#[derive(Debug)]
pub enum Sink {
    Sql(Sql),
    JsonLines(JsonLines),
}

impl Sink {
    /// Opens the sink named by `drain.sink_url` (connections are made lazily).
    pub fn open(url: &SinkUrl, config: &DrainConfig) -> Result<Self, SinkError> {
        Ok(match url {
            SinkUrl::Mysql(u) | SinkUrl::Postgres(u) => Self::Sql(Sql::open(u, config)?),
            SinkUrl::JsonLines(path) => {
                Self::JsonLines(JsonLines::open(path, config.jsonl_rotate_bytes.get())?)
            }
        })
    }

    /// Creates or updates the table (SQL); nothing to do for a file.
    pub async fn migrate(&self) -> Result<(), SinkError> {
        match self {
            Self::Sql(s) => s.migrate().await,
            Self::JsonLines(_) => Ok(()),
        }
    }

    /// Writes one batch durably: committed, or appended and synced.
    pub async fn write(&self, events: &[Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        match self {
            Self::Sql(s) => s.write(events).await,
            Self::JsonLines(j) => j.write(events).await,
        }
    }

    /// Whether the sink answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), SinkError> {
        match self {
            Self::Sql(s) => s.ping().await,
            Self::JsonLines(j) => j.ping(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Sql(s) => s.name(),
            Self::JsonLines(_) => "jsonl",
        }
    }
}
