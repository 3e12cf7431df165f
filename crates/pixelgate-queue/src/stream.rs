//! Stream mode, drain side: the consumer group `pixelgate-drain`.
//!
//! A consumer first reclaims entries that another consumer read but did not acknowledge within
//! the lease (`XAUTOCLAIM`), moving those delivered too often to a dead-letter stream, then
//! reads new entries (`XREADGROUP … BLOCK`). Acknowledging (`XACK`) also deletes the entries
//! (`XDEL`) in the same transaction, so the stream holds only what is not yet drained.

use std::{sync::Arc, time::Duration};

use redis::{Pipeline, Value};
use tokio::time::timeout;

use crate::{
    error::QueueError,
    layout::ShardKeys,
    metrics::QueueMetrics,
    pool::Pool,
    source::{BatchSource, Holding, Taken},
};

/// The consumer group every drain joins.
pub const GROUP: &str = "pixelgate-drain";

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream id, `ms-seq`.
    pub id: String,
    /// The `event` field: the event's JSON.
    pub payload: Vec<u8>,
}

/// Entries read from one shard by one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBatch {
    pub shard: usize,
    pub entries: Vec<Entry>,
}

/// A named member of the consumer group.
#[derive(Debug, Clone)]
pub struct StreamConsumer {
    pool: Pool,
    shards: Arc<Vec<ShardKeys>>,
    name: String,
    metrics: Arc<QueueMetrics>,
    command_timeout: Duration,
    /// Entries idle `holding.lease` in another consumer's pending list are taken over; those
    /// delivered `holding.max_deliveries` times go to the dead-letter stream instead.
    holding: Holding,
}

impl StreamConsumer {
    pub(crate) fn new(
        pool: Pool,
        shards: Vec<ShardKeys>,
        name: String,
        metrics: Arc<QueueMetrics>,
        command_timeout: Duration,
        holding: Holding,
    ) -> Self {
        Self {
            pool,
            shards: Arc::new(shards),
            name,
            metrics,
            command_timeout,
            holding,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long entries are this consumer's, and how often they may be delivered.
    pub fn holding(&self) -> Holding {
        self.holding
    }

    /// How many shards this consumer reads.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    fn keys(&self, shard: usize) -> Result<&ShardKeys, QueueError> {
        self.shards
            .get(shard)
            .ok_or_else(|| QueueError::Reply(format!("no shard {shard}")))
    }

    /// Creates the group (and the stream) when missing.
    pub async fn ensure_group(&self, shard: usize) -> Result<(), QueueError> {
        let key = &self.keys(shard)?.queue;
        let created: Result<(), QueueError> = self
            .bounded(self.command_timeout, async {
                let mut conn = self.pool.get().await?;
                let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(key)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                Ok(r?)
            })
            .await;
        match created {
            Err(QueueError::Redis(e)) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(|e| e.on_key(key)),
        }
    }

    /// Up to `count` entries of `shard`: stale ones reclaimed from dead consumers first, else
    /// new ones, waiting up to `block` for them. An empty batch means there was nothing.
    pub async fn read(
        &self,
        shard: usize,
        count: usize,
        block: Duration,
    ) -> Result<StreamBatch, QueueError> {
        let reclaimed = self.reclaim(shard, count).await?;
        if !reclaimed.is_empty() {
            return Ok(StreamBatch {
                shard,
                entries: reclaimed,
            });
        }
        let key = &self.keys(shard)?.queue;
        // `BLOCK 0` would wait for ever: at least a millisecond.
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Value = self
            .bounded(block + self.command_timeout, async {
                let mut conn = self.pool.get().await?;
                let v = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.name)
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(block_ms)
                    .arg("STREAMS")
                    .arg(key)
                    .arg(">")
                    .query_async(&mut conn)
                    .await;
                Ok(v?)
            })
            .await?;
        let entries = match reply {
            Value::Nil => Vec::new(),
            Value::Array(streams) => match streams.into_iter().next() {
                Some(Value::Array(mut pair)) if pair.len() == 2 => parse_entries(pair.remove(1))?,
                other => return Err(QueueError::Reply(format!("XREADGROUP answered {other:?}"))),
            },
            Value::Map(streams) => match streams.into_iter().next() {
                Some((_, entries)) => parse_entries(entries)?,
                None => Vec::new(),
            },
            other => return Err(QueueError::Reply(format!("XREADGROUP answered {other:?}"))),
        };
        let (good, poison) = split_poison(entries);
        self.dead_letter(shard, &poison).await?;
        self.metrics.claimed.inc_by(good.len() as u64);
        Ok(StreamBatch {
            shard,
            entries: good,
        })
    }

    /// Acknowledges and deletes the entries of a batch after its sink committed.
    pub async fn ack(&self, batch: &StreamBatch) -> Result<(), QueueError> {
        if batch.entries.is_empty() {
            return Ok(());
        }
        self.forget(batch.shard, &batch.entries).await?;
        self.metrics.acked.inc_by(batch.entries.len() as u64);
        Ok(())
    }

    /// Sets the idle time of a batch's entries (still this consumer's) to `idle`: zero keeps
    /// them ours for another lease, a whole lease hands them to the next consumer that reads.
    pub async fn touch(&self, batch: &StreamBatch, idle: Duration) -> Result<(), QueueError> {
        if batch.entries.is_empty() {
            return Ok(());
        }
        let key = &self.keys(batch.shard)?.queue;
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(key).arg(GROUP).arg(&self.name).arg(0);
        for e in &batch.entries {
            cmd.arg(&e.id);
        }
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        cmd.arg("IDLE").arg(idle_ms).arg("JUSTID");
        self.bounded(self.command_timeout, async {
            let mut conn = self.pool.get().await?;
            let _: Value = cmd.query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// Takes over entries idle past the lease; those delivered `max_deliveries` times or more
    /// go to the dead-letter stream.
    async fn reclaim(&self, shard: usize, count: usize) -> Result<Vec<Entry>, QueueError> {
        let key = &self.keys(shard)?.queue;
        let idle_ms = u64::try_from(self.holding.lease.as_millis()).unwrap_or(u64::MAX);
        let reply: Value = self
            .bounded(self.command_timeout, async {
                let mut conn = self.pool.get().await?;
                let v = redis::cmd("XAUTOCLAIM")
                    .arg(key)
                    .arg(GROUP)
                    .arg(&self.name)
                    .arg(idle_ms)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn)
                    .await;
                Ok(v?)
            })
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(QueueError::Reply(format!("XAUTOCLAIM answered {reply:?}")));
        };
        if parts.len() < 2 {
            return Err(QueueError::Reply("XAUTOCLAIM answered too little".into()));
        }
        let claimed = parse_entries(parts.swap_remove(1))?;
        let (Some((first, _)), Some((last, _))) = (claimed.first(), claimed.last()) else {
            return Ok(Vec::new());
        };
        // Delivery counts of what we just took (XAUTOCLAIM counted this delivery too).
        let (first, last) = (first.clone(), last.clone());
        let pending: Value = self
            .bounded(self.command_timeout, async {
                let mut conn = self.pool.get().await?;
                let v = redis::cmd("XPENDING")
                    .arg(key)
                    .arg(GROUP)
                    .arg(&first)
                    .arg(&last)
                    .arg(claimed.len())
                    .arg(&self.name)
                    .query_async(&mut conn)
                    .await;
                Ok(v?)
            })
            .await?;
        let over: Vec<String> = match pending {
            Value::Array(rows) => rows
                .into_iter()
                .filter_map(|row| match row {
                    Value::Array(f) if f.len() == 4 => match (&f[0], &f[3]) {
                        (Value::BulkString(id), Value::Int(n))
                            if *n as u64 > self.holding.max_deliveries =>
                        {
                            Some(String::from_utf8_lossy(id).into_owned())
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            other => return Err(QueueError::Reply(format!("XPENDING answered {other:?}"))),
        };
        let (mut good, mut poison) = split_poison(claimed);
        good.retain(|e| {
            let dead = over.contains(&e.id);
            if dead {
                poison.push(e.clone());
            }
            !dead
        });
        self.dead_letter(shard, &poison).await?;
        self.metrics.requeued.inc_by(good.len() as u64);
        self.metrics.claimed.inc_by(good.len() as u64);
        Ok(good)
    }

    /// Copies entries to the dead-letter stream, then acknowledges and deletes them. Two steps,
    /// because a transaction would not help: Redis runs the rest of a `MULTI` when one of its
    /// commands fails, and an entry would be deleted without its copy. A crash between them
    /// copies an entry twice at worst.
    pub async fn dead_letter(&self, shard: usize, entries: &[Entry]) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        let keys = self.keys(shard)?;
        let mut pipe = Pipeline::new();
        for e in entries {
            pipe.cmd("XADD")
                .arg(&keys.dead)
                .arg("*")
                .arg("id")
                .arg(&e.id)
                .arg("event")
                .arg(&e.payload)
                .ignore();
        }
        let copied: Result<(), QueueError> = self
            .bounded(self.command_timeout, async {
                let mut conn = self.pool.get().await?;
                let () = pipe.query_async(&mut conn).await?;
                Ok(())
            })
            .await;
        copied.map_err(|e| e.on_key(&keys.dead))?;
        self.forget(shard, entries).await?;
        self.metrics.dead_lettered.inc_by(entries.len() as u64);
        Ok(())
    }

    /// `XACK` and `XDEL` of `entries`, in one transaction.
    async fn forget(&self, shard: usize, entries: &[Entry]) -> Result<(), QueueError> {
        let key = &self.keys(shard)?.queue;
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let mut pipe = Pipeline::new();
        pipe.atomic();
        pipe.cmd("XACK").arg(key).arg(GROUP).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(key).arg(&ids).ignore();
        self.bounded(self.command_timeout, async {
            let mut conn = self.pool.get().await?;
            let () = pipe.query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    async fn bounded<T>(
        &self,
        limit: Duration,
        f: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        let result = match timeout(limit, f).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Timeout(limit)),
        };
        if let Err(e) = &result
            && !matches!(e, QueueError::Redis(r) if r.code() == Some("BUSYGROUP"))
        {
            self.metrics.error(e.kind());
        }
        result
    }
}

/// An entry's id and its `event` field, if it has one.
type RawEntry = (String, Option<Vec<u8>>);

/// Entries without an `event` field (written by something else) cannot be drained.
fn split_poison(entries: Vec<RawEntry>) -> (Vec<Entry>, Vec<Entry>) {
    let mut good = Vec::with_capacity(entries.len());
    let mut poison = Vec::new();
    for (id, payload) in entries {
        match payload {
            Some(payload) => good.push(Entry { id, payload }),
            None => poison.push(Entry {
                id,
                payload: Vec::new(),
            }),
        }
    }
    (good, poison)
}

/// `[[id, [field, value, …]], …]` into `(id, event)` pairs. Deleted entries (`[id, nil]`) are
/// skipped.
fn parse_entries(v: Value) -> Result<Vec<RawEntry>, QueueError> {
    let Value::Array(items) = v else {
        return Err(QueueError::Reply(format!(
            "expected stream entries, got {v:?}"
        )));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            continue;
        };
        if pair.len() != 2 {
            continue;
        }
        let fields = pair.pop();
        let id = match pair.pop() {
            Some(Value::BulkString(id)) => String::from_utf8_lossy(&id).into_owned(),
            Some(Value::SimpleString(id)) => id,
            other => return Err(QueueError::Reply(format!("stream id {other:?}"))),
        };
        let event = match fields {
            Some(Value::Array(f)) => f.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), Value::BulkString(v)] if k == b"event" => Some(v.clone()),
                _ => None,
            }),
            Some(Value::Nil) => continue,
            _ => None,
        };
        out.push((id, event));
    }
    Ok(out)
}

impl Taken for StreamBatch {
    fn shard(&self) -> usize {
        self.shard
    }

    fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|e| e.payload.as_slice())
    }
}

impl BatchSource for StreamConsumer {
    type Batch = StreamBatch;

    /// `XREADGROUP … BLOCK` waits for entries.
    const WAITS: bool = true;

    fn shards(&self) -> usize {
        StreamConsumer::shards(self)
    }

    async fn prepare(&self, shard: usize) -> Result<(), QueueError> {
        self.ensure_group(shard).await
    }

    async fn take(
        &self,
        shard: usize,
        max: usize,
        wait: Duration,
    ) -> Result<Option<StreamBatch>, QueueError> {
        let batch = self.read(shard, max, wait).await?;
        Ok((!batch.entries.is_empty()).then_some(batch))
    }

    async fn keep(&self, batch: &StreamBatch) -> Result<(), QueueError> {
        self.touch(batch, Duration::ZERO).await
    }

    async fn dead_letter(&self, batch: &StreamBatch, poison: &[usize]) -> Result<(), QueueError> {
        let entries: Vec<_> = poison
            .iter()
            .filter_map(|&i| batch.entries.get(i).cloned())
            .collect();
        StreamConsumer::dead_letter(self, batch.shard, &entries).await
    }

    async fn ack(&self, batch: &StreamBatch) -> Result<bool, QueueError> {
        StreamConsumer::ack(self, batch).await.map(|()| true)
    }

    async fn give_back(&self, batch: &StreamBatch) -> Result<(), QueueError> {
        // Pending entries idle for a whole lease are taken over by the next read of any
        // consumer: marking them so hands them on at once.
        self.touch(batch, self.holding().lease).await
    }
}
