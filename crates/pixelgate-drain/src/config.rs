//! `[drain]`: where the drain writes and how it takes batches.
//!
//! Each field's doc comment (unit and default) is the reference copied into
//! `docs/configuration.md`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    num::{NonZeroU64, NonZeroUsize},
    time::Duration,
};

use pixelgate_core::{
    Invalid,
    config::{at_most, within},
};
use serde::Deserialize;

use crate::sink::SinkOptions;
pub use crate::sink::SinkUrl;

/// `[drain]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Where events go: `mysql://` or `mariadb://user:pass@host:3306/db`, `postgres://` or
    /// `postgresql://user@host/db`, or `jsonl:///path/events.jsonl`. Default: none (`drain`
    /// refuses to start without one). Env `PIXELGATE_SINK_URL`.
    pub sink_url: Option<SinkUrl>,
    /// Events per batch: one lease (or stream read) and one transaction. Default `2000`.
    pub batch_size: NonZeroUsize,
    /// Batches in flight at once, each with its own sink connection. Default `2`.
    pub concurrency: NonZeroUsize,
    /// How long a leased batch is ours before it goes back to the queue (list mode), or how
    /// long a read entry may stay unacknowledged before another drain takes it over (stream
    /// mode). Default `60s`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long a worker waits when the queue is empty before asking again. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub idle_wait: Duration,
    /// Shards this drain works on (indexes into the queue's shards); empty means all.
    /// Default: all.
    pub shards: Vec<usize>,
    /// Stream mode: this drain's consumer name in the group `pixelgate-drain`. Default: the host
    /// name and process id.
    pub consumer: Option<String>,
    /// Stream mode: deliveries after which an entry moves to the dead-letter stream. Default `5`.
    pub max_deliveries: NonZeroU64,
    /// First wait after a failed sink write or Redis call; doubles up to `retry_max`.
    /// Default `100ms`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between retries. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// The drain's admin listener: `/healthz`, `/readyz`, `/metrics`. Default `127.0.0.1:9091`.
    pub admin_listen: SocketAddr,
    /// Create or update the sink's table when the drain starts. Default `true`.
    pub migrate_on_start: bool,
    /// JSON lines: rotate the file when it reaches this many bytes. Default `268435456` (256 MiB).
    pub jsonl_rotate_bytes: NonZeroU64,
    /// After `SIGTERM`, how long a batch being written may take before it is given back.
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        let nz = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            sink_url: None,
            batch_size: nz(2000),
            concurrency: nz(2),
            lease: Duration::from_secs(60),
            idle_wait: Duration::from_millis(200),
            shards: Vec::new(),
            consumer: None,
            max_deliveries: NonZeroU64::new(5).unwrap_or(NonZeroU64::MIN),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            admin_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9091)),
            migrate_on_start: true,
            jsonl_rotate_bytes: NonZeroU64::new(256 << 20).unwrap_or(NonZeroU64::MIN),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl DrainConfig {
    /// What the sink is opened with besides its URL.
    pub fn sink_options(&self) -> SinkOptions {
        SinkOptions {
            concurrency: self.concurrency.get(),
            jsonl_rotate_bytes: self.jsonl_rotate_bytes.get(),
        }
    }

    /// Checks what single values cannot check; the error names the key.
    pub fn validate(&self, shard_count: usize) -> Result<(), Invalid> {
        if self.batch_size.get() > 50_000 {
            return Err(Invalid::new("drain.batch_size", "must be at most 50000"));
        }
        let (second, day) = (Duration::from_secs(1), Duration::from_secs(86_400));
        within("drain.lease", self.lease, second, day)?;
        within(
            "drain.idle_wait",
            self.idle_wait,
            Duration::ZERO,
            Duration::from_secs(60),
        )?;
        within(
            "drain.retry_max",
            self.retry_max,
            Duration::ZERO,
            Duration::from_secs(3600),
        )?;
        within(
            "drain.shutdown_grace",
            self.shutdown_grace,
            Duration::from_millis(1),
            day,
        )?;
        at_most("drain.concurrency", self.concurrency.get() as u64, 256)?;
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(Invalid::new(
                "drain.retry_max",
                "must be at least drain.retry_initial, which must be more than 0s",
            ));
        }
        if let Some(&bad) = self.shards.iter().find(|&&s| s >= shard_count) {
            return Err(Invalid::new(
                "drain.shards",
                format!("shard {bad} does not exist (queue.shards is {shard_count})"),
            ));
        }
        if self
            .consumer
            .as_deref()
            .is_some_and(|c| c.is_empty() || c.chars().any(char::is_whitespace))
        {
            return Err(Invalid::new(
                "drain.consumer",
                "must be a name without spaces",
            ));
        }
        Ok(())
    }
}
