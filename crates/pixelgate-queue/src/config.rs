//! `[redis]` and `[queue]`: where events go and how they are batched.
//!
//! The doc comment of each field (unit and default) is the reference copied into
//! `docs/configuration.md`. Values are checked as they are read; [`QueueConfig::validate`] and
//! [`RedisConfig::validate`] check what single values cannot, naming the key.

use std::{
    fmt,
    num::{NonZeroU16, NonZeroU64, NonZeroUsize},
    str::FromStr,
    time::Duration,
};

use pixelgate_core::{
    BadValue, Invalid,
    config::{at_most, within, without_password},
    deserialize_from_str,
};
use serde::Deserialize;
use url::Url;

/// `[redis]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS, or `unix:///path.sock`.
    /// Default `redis://127.0.0.1:6379`. Env `PIXELGATE_REDIS_URL`.
    pub url: RedisUrl,
    /// Redis Cluster seed nodes (`redis://host:port` each). When set, `url` is not used and the
    /// queue is spread over `queue.shards` keys on the cluster's masters. Default: none.
    pub cluster_nodes: Vec<RedisUrl>,
    /// ACL user name; overrides the one in the URL. Default: the URL's, else none.
    pub username: Option<String>,
    /// ACL password (or `requirepass`); overrides the one in the URL. Default: the URL's.
    pub password: Option<Password>,
    /// Connections in the pool. Default `16`.
    pub pool_size: NonZeroUsize,
    /// Longest wait to open a new connection (TCP, TLS, AUTH). Default `1s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for a free pooled connection. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// Longest health check (`PING`) of a pooled connection before reuse. Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub recycle_timeout: Duration,
    /// Longest wait for one reply outside the enqueue path (readiness, `/test`, drain scripts).
    /// Default `2s`.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: RedisUrl::from_str("redis://127.0.0.1:6379").unwrap_or_else(|_| unreachable!()),
            cluster_nodes: Vec::new(),
            username: None,
            password: None,
            pool_size: NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN),
            connect_timeout: Duration::from_secs(1),
            wait_timeout: Duration::from_secs(1),
            recycle_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_secs(2),
        }
    }
}

impl RedisConfig {
    /// Whether the queue runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// Checks what single values cannot check; the error names the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, d) in [
            ("redis.connect_timeout", self.connect_timeout),
            ("redis.wait_timeout", self.wait_timeout),
            ("redis.recycle_timeout", self.recycle_timeout),
            ("redis.command_timeout", self.command_timeout),
        ] {
            within(key, d, Duration::from_millis(1), Duration::from_secs(600))?;
        }
        at_most("redis.pool_size", self.pool_size.get() as u64, 4096)?;
        if self
            .cluster_nodes
            .iter()
            .any(|n| n.0.scheme().contains("unix"))
        {
            return Err(Invalid::new(
                "redis.cluster_nodes",
                "cluster nodes are redis:// or rediss:// URLs",
            ));
        }
        Ok(())
    }

    /// The URLs to connect to, with `username` and `password` applied.
    pub(crate) fn connection_urls(&self) -> Vec<String> {
        let nodes = if self.is_cluster() {
            self.cluster_nodes.clone()
        } else {
            vec![self.url.clone()]
        };
        nodes
            .into_iter()
            .map(|node| self.with_credentials(node.0))
            .collect()
    }

    fn with_credentials(&self, mut url: Url) -> String {
        let unix = url.scheme().contains("unix");
        if unix {
            // redis-rs takes credentials of a socket URL from its query.
            let mut pairs = url.query_pairs_mut();
            if let Some(user) = &self.username {
                pairs.append_pair("user", user);
            }
            if let Some(pass) = &self.password {
                pairs.append_pair("pass", &pass.0);
            }
        } else {
            if let Some(user) = &self.username {
                let _ = url.set_username(user);
            }
            if let Some(pass) = &self.password {
                let _ = url.set_password(Some(&pass.0));
            }
        }
        url.into()
    }
}

/// How events are kept in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// A list: batched `RPUSH`, drained by leasing batches with Lua scripts.
    #[default]
    List,
    /// A stream: `XADD … MAXLEN ~`, drained by the consumer group `pixelgate-drain`.
    Stream,
}

/// `[queue]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `list` or `stream`. Default `list`.
    pub mode: QueueMode,
    /// Key events are appended to (with `:{tag}` per shard on a cluster).
    /// Default `pixelgate:events`. Env `PIXELGATE_QUEUE_KEY`.
    pub key: RedisKey,
    /// Capped list for the events of clients over their rate limit. Default `pixelgate:overflow`.
    pub overflow_key: RedisKey,
    /// Most events kept in `overflow_key`; the oldest beyond it are trimmed and counted.
    /// Default `1000000`.
    pub overflow_cap: NonZeroU64,
    /// Stream mode: the most entries the stream holds, waiting or being drained (a memory cap).
    /// A batch that would pass it goes to the disk spool instead, until the drain has made room:
    /// answered events are never trimmed. Entries are deleted once drained. Default `10000000`.
    pub stream_maxlen: NonZeroU64,
    /// Shard keys on a Redis Cluster, spread over its masters; `1` without a cluster.
    /// Default `1`.
    pub shards: NonZeroU16,
    /// Most events in one batch (one `RPUSH`). Default `512`.
    pub batch_max: NonZeroUsize,
    /// How long a batch waits for more events after its first, e.g. `"1ms"`; `"0s"` sends what
    /// is there at once, and the batches in flight gather the next one. tokio's timer counts
    /// whole milliseconds, so any other value waits at least 1 ms. Default `0s`.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Events waiting for a batch; when full, enqueue fails at once (back-pressure).
    /// Default `65536`.
    pub channel_capacity: NonZeroUsize,
    /// How long a batch gathering behind one in flight waits for it to land before it is
    /// written beside it, e.g. `"2ms"`. A write to a Redis on the same host or network lands
    /// well within it, so under load a batch is whatever queued while the last was written; a
    /// write that has not is stalled (a dead master, a slow disk) and does not hold the next.
    /// `"0s"` writes a batch whenever a slot is free. Less than `ack_timeout`. Default `2ms`.
    #[serde(with = "humantime_serde")]
    pub patience: Duration,
    /// Batches written at the same time, on the writer's one multiplexed connection to each
    /// shard. Default `4`.
    pub max_in_flight: NonZeroUsize,
    /// Longest wait for Redis to acknowledge an event's batch before the caller is told it
    /// failed (and the edge spools it). Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let nz = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            mode: QueueMode::List,
            key: RedisKey("pixelgate:events".into()),
            overflow_key: RedisKey("pixelgate:overflow".into()),
            overflow_cap: NonZeroU64::new(1_000_000).unwrap_or(NonZeroU64::MIN),
            stream_maxlen: NonZeroU64::new(10_000_000).unwrap_or(NonZeroU64::MIN),
            shards: NonZeroU16::MIN,
            batch_max: nz(512),
            // A timed linger makes every batch wait a whole timer tick (1 ms) for events that
            // cannot come while their producers wait for this batch: on the 2-core benchmark
            // 200us gave ~130k events/s at 256 producers, 0s two to three times as many.
            linger: Duration::ZERO,
            channel_capacity: nz(65_536),
            patience: Duration::from_millis(2),
            max_in_flight: nz(4),
            ack_timeout: Duration::from_millis(500),
        }
    }
}

impl QueueConfig {
    /// Checks what single values cannot check; the error names the key.
    pub fn validate(&self, redis: &RedisConfig) -> Result<(), Invalid> {
        if self.key == self.overflow_key {
            return Err(Invalid::new(
                "queue.overflow_key",
                "must differ from queue.key, or limited events would crowd out real ones",
            ));
        }
        within(
            "queue.ack_timeout",
            self.ack_timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        at_most(
            "queue.channel_capacity",
            self.channel_capacity.get() as u64,
            1 << 24,
        )?;
        at_most("queue.max_in_flight", self.max_in_flight.get() as u64, 1024)?;
        if self.linger > Duration::from_millis(50) {
            return Err(Invalid::new(
                "queue.linger",
                "must be at most 50ms: every request waits for it",
            ));
        }
        if self.patience >= self.ack_timeout {
            return Err(Invalid::new(
                "queue.patience",
                "must be less than queue.ack_timeout, or a batch could wait out its deadline",
            ));
        }
        if self.batch_max.get() > 100_000 {
            return Err(Invalid::new("queue.batch_max", "must be at most 100000"));
        }
        if self.mode == QueueMode::Stream && self.stream_maxlen.get() < self.batch_max.get() as u64
        {
            // A whole batch must fit, or it would never be written.
            return Err(Invalid::new(
                "queue.stream_maxlen",
                "must be at least queue.batch_max",
            ));
        }
        if redis.is_cluster() {
            for (name, key) in [
                ("queue.key", &self.key),
                ("queue.overflow_key", &self.overflow_key),
            ] {
                if key.0.contains(['{', '}']) {
                    return Err(Invalid::new(
                        name,
                        "must not contain { or } on a cluster: pixelgate adds the hash tags",
                    ));
                }
            }
        } else if self.shards.get() != 1 {
            return Err(Invalid::new(
                "queue.shards",
                "must be 1 unless redis.cluster_nodes is set",
            ));
        }
        Ok(())
    }
}

/// A password; its `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A Redis server address: `redis://`, `rediss://` (TLS) or `unix://`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url);

impl RedisUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for RedisUrl {
    /// Never shows a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", without_password(&self.0))
    }
}

impl FromStr for RedisUrl {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(s)?;
        match url.scheme() {
            "redis" | "rediss" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(Self(url)),
            "unix" | "redis+unix" if !url.path().is_empty() => Ok(Self(url)),
            _ => Err(BadValue::Rule(
                "must be redis://host:port, rediss://host:port or unix:///path",
            )),
        }
    }
}
deserialize_from_str!(RedisUrl);

/// A Redis key name: 1 to 256 bytes, no spaces or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKey(String);

impl RedisKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RedisKey {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(BadValue::Rule(
                "must be 1 to 256 bytes without spaces or control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}
deserialize_from_str!(RedisKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_into_the_connection_urls() {
        let mut c = RedisConfig {
            url: "redis://h:1/2".parse().unwrap(),
            ..RedisConfig::default()
        };
        assert_eq!(c.connection_urls(), ["redis://h:1/2"]);
        c.username = Some("edge".into());
        c.password = Some(Password("p@ss word".into()));
        assert_eq!(c.connection_urls(), ["redis://edge:p%40ss%20word@h:1/2"]);
        c.url = "unix:///run/redis.sock".parse().unwrap();
        assert_eq!(
            c.connection_urls(),
            ["unix:///run/redis.sock?user=edge&pass=p%40ss+word"]
        );
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn validation_names_the_key() {
        let redis = RedisConfig::default();
        let mut q = QueueConfig::default();
        q.validate(&redis).unwrap();
        q.shards = NonZeroU16::new(3).unwrap();
        assert_eq!(q.validate(&redis).unwrap_err().key, "queue.shards");
        let cluster = RedisConfig {
            cluster_nodes: vec!["redis://a:1".parse().unwrap()],
            ..redis
        };
        q.validate(&cluster).unwrap();
        q.key = "{x}events".parse().unwrap();
        assert_eq!(q.validate(&cluster).unwrap_err().key, "queue.key");
        let q = QueueConfig {
            linger: Duration::from_secs(1),
            ..QueueConfig::default()
        };
        assert_eq!(q.validate(&cluster).unwrap_err().key, "queue.linger");
        let q = QueueConfig {
            patience: QueueConfig::default().ack_timeout,
            ..QueueConfig::default()
        };
        assert_eq!(q.validate(&cluster).unwrap_err().key, "queue.patience");
    }
}
