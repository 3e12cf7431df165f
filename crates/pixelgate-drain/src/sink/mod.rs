//! Sinks: where drained events end up, one directory each behind the [`Sink`] trait.
//!
//! One batch is one transaction (SQL) or one synced append (JSON lines); a batch is
//! acknowledged in Redis only after its write returned `Ok`. Every sink is idempotent on the
//! event `id` (the SQL tables are keyed on it), so a batch written twice (a lease that expired
//! during a slow commit, a drain killed after its commit but before its ack) leaves one row per
//! event. Adding a sink is a directory here and a line in [`SINKS`].

mod jsonl;
mod mysql;
mod postgres;
mod sql;
mod url;

use std::{fmt, path::PathBuf, pin::Pin, time::Duration};

use pixelgate_core::Event;

pub use self::url::SinkUrl;

/// Why a sink did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("{}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sink did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no sink is named {0}://")]
    Unknown(String),
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
            Self::Unknown(_) => "other",
        }
    }
}

/// What a sink's methods return.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// A place events are written to.
pub trait Sink: fmt::Debug + Send + Sync {
    /// Its name in logs and in `drain --migrate`'s answer.
    fn name(&self) -> &'static str;

    /// Creates or updates what the sink needs (a table); nothing by default.
    fn migrate(&self) -> SinkFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    /// Writes one batch durably (committed, or appended and synced); never called empty.
    fn write<'a>(&'a self, events: &'a [Event]) -> SinkFuture<'a>;

    /// Whether the sink answers (for `/readyz`).
    fn ping(&self) -> SinkFuture<'_>;
}

/// Where a sink's URL points: a server (with a host) or a local file (a path, no host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Server,
    File,
}

/// What sinks are opened with besides their URL, from `[drain]` (`DrainConfig::sink_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkOptions {
    /// Batches written at once (`drain.concurrency`): a SQL sink's pool keeps one connection
    /// for each, and one for `/readyz`.
    pub concurrency: usize,
    /// `drain.jsonl_rotate_bytes`.
    pub jsonl_rotate_bytes: u64,
}

/// How a sink is opened from its URL; connections are made lazily, so this does not wait for a
/// server.
pub type Open = fn(&SinkUrl, &SinkOptions) -> Result<Box<dyn Sink>, SinkError>;

/// One kind of sink: the URL schemes that name it and how to open it.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    pub schemes: &'static [&'static str],
    pub location: Location,
    pub open: Open,
}

/// Every sink the drain can write to, by scheme.
pub const SINKS: &[Registration] = &[
    Registration {
        schemes: &["mysql", "mariadb"],
        location: Location::Server,
        open: mysql::open,
    },
    Registration {
        schemes: &["postgres", "postgresql"],
        location: Location::Server,
        open: postgres::open,
    },
    Registration {
        schemes: &["jsonl"],
        location: Location::File,
        open: jsonl::open,
    },
];

/// The registration of a URL scheme.
pub fn registration(scheme: &str) -> Option<&'static Registration> {
    SINKS.iter().find(|r| r.schemes.contains(&scheme))
}

/// Opens the sink `url` names (its scheme was checked when the URL was read).
pub fn open(url: &SinkUrl, options: &SinkOptions) -> Result<Box<dyn Sink>, SinkError> {
    let registration =
        registration(url.scheme()).ok_or_else(|| SinkError::Unknown(url.scheme().to_owned()))?;
    (registration.open)(url, options)
}
