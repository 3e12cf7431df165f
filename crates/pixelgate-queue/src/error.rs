//! The queue's errors, and the kinds they are counted under in metrics.

use std::sync::Arc;

const GENERIC_KEY: &str = "a queue key";

/// A failed Redis operation.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no pooled Redis connection")]
    Pool(#[source] deadpool_redis::PoolError),
    #[error("cannot set up the Redis pool")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("redis")]
    Redis(#[source] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("redis holds {key} as the wrong type: {detail}")]
    WrongType { key: String, detail: String },
    #[error("unexpected redis reply: {0}")]
    Reply(String),
}

impl QueueError {
    /// The label this error is counted under in `pixelgate_queue_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Pool(_) => "pool",
            Self::Setup(_) => "setup",
            Self::Redis(e) if e.is_io_error() || e.is_connection_dropped() => "connection",
            Self::Redis(e) if e.is_timeout() => "timeout",
            Self::Redis(e) => match server_error(e).as_ref().map(|(code, _)| code.as_str()) {
                Some("READONLY") => "readonly",
                Some("OOM") => "oom",
                Some("NOSCRIPT") => "noscript",
                Some("FULL") => "stream_full",
                _ => "redis",
            },
            Self::Timeout(_) => "timeout",
            Self::WrongType { .. } => "wrong_type",
            Self::Reply(_) => "reply",
        }
    }

    /// Names `key` in a wrong-type error that Redis reported without naming it.
    pub(crate) fn on_key(self, key: &str) -> Self {
        match self {
            Self::WrongType { key: k, detail } if k == GENERIC_KEY => Self::WrongType {
                key: key.to_owned(),
                detail,
            },
            other => other,
        }
    }

    /// Whether trying again on a new connection may help.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), "pool" | "connection" | "timeout")
    }
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        // Our scripts report a bad key type as `WRONGTYPE pixelgate: KEY is a T, expected a U`;
        // Redis itself as `WRONGTYPE Operation against a key holding the wrong kind of value`.
        if let Some((code, detail)) = server_error(&e)
            && code == "WRONGTYPE"
        {
            let key = detail
                .strip_prefix("pixelgate: ")
                .and_then(|d| d.split(' ').next())
                .unwrap_or(GENERIC_KEY)
                .to_owned();
            return Self::WrongType { key, detail };
        }
        Self::Redis(e)
    }
}

impl From<deadpool_redis::PoolError> for QueueError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        Self::Pool(e)
    }
}

/// The code and detail of the server's error, also when it came inside a pipeline's replies.
fn server_error(e: &redis::RedisError) -> Option<(String, String)> {
    if let Some(code) = e.code() {
        return Some((code.to_owned(), e.detail().unwrap_or_default().to_owned()));
    }
    let errors = e.clone().into_server_errors()?;
    let (_, first) = errors.first()?;
    Some((
        first.code().to_owned(),
        first.details().unwrap_or_default().to_owned(),
    ))
}

/// Why an event's batch did not reach Redis; shared by every event of the batch.
pub type BatchError = Arc<QueueError>;
