//! List mode, drain side: leasing batches with Lua scripts, crash-safe.
//!
//! A consumer *claims* up to N events from the head of a shard's list atomically; they move into
//! a lease with a deadline. *Ack* forgets the lease after the sink committed. A lease whose
//! deadline passes is given back to the head of the list in its original order by the next
//! claim on that shard, so a crashed consumer loses nothing and nothing jumps the queue. The
//! scripts are loaded once (`SCRIPT LOAD`) and run with `EVALSHA`; on `NOSCRIPT` (a restarted or
//! flushed Redis) `redis::Script` loads them again and retries.

use std::{sync::Arc, time::Duration};

use redis::{Script, Value};
use tokio::time::timeout;

use crate::{
    error::QueueError,
    layout::ShardKeys,
    metrics::QueueMetrics,
    pool::Pool,
    source::{BatchSource, Holding, Taken},
};

macro_rules! script {
    ($name:literal) => {
        concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $name, ".lua"))
        )
    };
}

/// The lease scripts, hashed once.
#[derive(Debug)]
struct Scripts {
    claim: Script,
    ack: Script,
    renew: Script,
    release: Script,
}

/// A batch of events leased by one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard the events came from.
    pub shard: usize,
    /// The lease id, unique within the shard.
    pub id: u64,
    /// The events, oldest first, exactly as they were queued.
    pub events: Vec<Vec<u8>>,
}

/// Leasing access to the list shards.
#[derive(Debug, Clone)]
pub struct Leases {
    pool: Pool,
    shards: Arc<Vec<ShardKeys>>,
    scripts: Arc<Scripts>,
    metrics: Arc<QueueMetrics>,
    command_timeout: Duration,
    holding: Holding,
}

impl Leases {
    pub(crate) fn new(
        pool: Pool,
        shards: Vec<ShardKeys>,
        metrics: Arc<QueueMetrics>,
        command_timeout: Duration,
        holding: Holding,
    ) -> Self {
        let scripts = Scripts {
            claim: Script::new(script!("claim")),
            ack: Script::new(script!("ack")),
            renew: Script::new(script!("renew")),
            release: Script::new(script!("release")),
        };
        Self {
            pool,
            shards: Arc::new(shards),
            scripts: Arc::new(scripts),
            metrics,
            command_timeout,
            holding,
        }
    }

    /// How long the batches it takes as a [`crate::BatchSource`] are leased for.
    pub fn holding(&self) -> Holding {
        self.holding
    }

    /// The shards this handle can lease from.
    pub fn shards(&self) -> &[ShardKeys] {
        &self.shards
    }

    /// Loads every script (`SCRIPT LOAD`), so the first claim already runs by `EVALSHA`.
    pub async fn load_scripts(&self) -> Result<(), QueueError> {
        let s = &self.scripts;
        for script in [&s.claim, &s.ack, &s.renew, &s.release] {
            let mut conn = self.pool.get().await?;
            let invocation = script.prepare_invoke();
            self.bounded(invocation.load_async(&mut conn)).await?;
        }
        Ok(())
    }

    /// Leases up to `max` events from the head of `shard` for `lease`; `None` when it is empty.
    /// Shards are numbered by position among this handle's [`Leases::shards`], not by their
    /// index in the queue's layout (`queue.leases(&[2])` has one shard, position 0).
    /// Expired leases of the shard are given back to the head first, and the claim then takes
    /// at least all of those (so it may return more than `max` events).
    pub async fn claim(
        &self,
        shard: usize,
        max: usize,
        lease: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let reply = self
            .run(&self.scripts.claim, shard, &[max as u64, millis(lease)])
            .await?;
        let (id, requeued, events) = parse_claim(reply)?;
        self.metrics.requeued.inc_by(requeued);
        if id == 0 {
            return Ok(None);
        }
        self.metrics.claimed.inc_by(events.len() as u64);
        Ok(Some(Lease { shard, id, events }))
    }

    /// Gives back the expired leases of `shard` without claiming; returns how many events.
    pub async fn reap(&self, shard: usize) -> Result<u64, QueueError> {
        let (_, requeued, _) = parse_claim(self.run(&self.scripts.claim, shard, &[0, 1]).await?)?;
        self.metrics.requeued.inc_by(requeued);
        Ok(requeued)
    }

    /// Forgets a lease after its sink committed. `false` when the lease had expired and its
    /// events were given back (the sink then sees them again and ignores the duplicates).
    pub async fn ack(&self, lease: &Lease) -> Result<bool, QueueError> {
        let n: u64 = self
            .run_as(&self.scripts.ack, lease.shard, &[lease.id])
            .await?;
        self.metrics.acked.inc_by(n);
        Ok(n > 0)
    }

    /// Extends a lease by `lease` from now; `false` when it is already gone.
    pub async fn renew(&self, lease: &Lease, for_: Duration) -> Result<bool, QueueError> {
        let renewed: u64 = self
            .run_as(&self.scripts.renew, lease.shard, &[lease.id, millis(for_)])
            .await?;
        Ok(renewed == 1)
    }

    /// Gives a lease's events back to the head of the queue now; returns how many.
    pub async fn release(&self, lease: &Lease) -> Result<u64, QueueError> {
        let n: u64 = self
            .run_as(&self.scripts.release, lease.shard, &[lease.id])
            .await?;
        self.metrics.requeued.inc_by(n);
        Ok(n)
    }

    /// Appends elements that are not events to the shard's dead-letter list (`KEY:dead`), for
    /// a person to look at. Called before the lease holding them is acknowledged.
    pub async fn dead_letter_payloads(
        &self,
        shard: usize,
        payloads: &[Vec<u8>],
    ) -> Result<(), QueueError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let keys = self
            .shards
            .get(shard)
            .ok_or_else(|| QueueError::Reply(format!("no shard {shard}")))?;
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(&keys.dead);
        for p in payloads {
            cmd.arg(p);
        }
        let pushed: Result<u64, QueueError> = self
            .bounded(async {
                let mut conn = self.pool.get().await?;
                Ok::<u64, QueueError>(cmd.query_async(&mut conn).await?)
            })
            .await;
        pushed.map_err(|e| e.on_key(&keys.dead))?;
        Ok(())
    }

    async fn run(&self, script: &Script, shard: usize, args: &[u64]) -> Result<Value, QueueError> {
        self.run_as(script, shard, args).await
    }

    async fn run_as<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        shard: usize,
        args: &[u64],
    ) -> Result<T, QueueError> {
        let keys = self
            .shards
            .get(shard)
            .ok_or_else(|| QueueError::Reply(format!("no shard {shard}")))?;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&keys.queue)
            .key(&keys.leases)
            .key(&keys.lease_data);
        for arg in args {
            invocation.arg(*arg);
        }
        let result = self
            .bounded(async {
                let mut conn = self.pool.get().await?;
                Ok::<T, QueueError>(invocation.invoke_async(&mut conn).await?)
            })
            .await;
        if let Err(e) = &result {
            self.metrics.error(e.kind());
        }
        result
    }

    async fn bounded<T, E: Into<QueueError>>(
        &self,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, QueueError> {
        match timeout(self.command_timeout, f).await {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err(QueueError::Timeout(self.command_timeout)),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn parse_claim(reply: Value) -> Result<(u64, u64, Vec<Vec<u8>>), QueueError> {
    let bad = |v: &dyn std::fmt::Debug| QueueError::Reply(format!("claim answered {v:?}"));
    let Value::Array(parts) = reply else {
        return Err(bad(&reply));
    };
    match parts.as_slice() {
        [Value::Int(id), Value::Int(requeued), Value::Array(items)] => {
            let events = items
                .iter()
                .map(|v| match v {
                    Value::BulkString(b) => Ok(b.clone()),
                    other => Err(bad(other)),
                })
                .collect::<Result<_, _>>()?;
            let n = |i: &i64| u64::try_from(*i).map_err(|_| bad(i));
            Ok((n(id)?, n(requeued)?, events))
        }
        other => Err(bad(&other)),
    }
}

impl Taken for Lease {
    fn shard(&self) -> usize {
        self.shard
    }

    fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        self.events.iter().map(Vec::as_slice)
    }
}

impl BatchSource for Leases {
    type Batch = Lease;

    /// A claim answers at once, full or empty.
    const WAITS: bool = false;

    fn shards(&self) -> usize {
        Leases::shards(self).len()
    }

    async fn prepare(&self, _shard: usize) -> Result<(), QueueError> {
        Ok(())
    }

    async fn take(
        &self,
        shard: usize,
        max: usize,
        _wait: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        self.claim(shard, max, self.holding().lease).await
    }

    async fn keep(&self, batch: &Lease) -> Result<(), QueueError> {
        self.renew(batch, self.holding().lease).await.map(drop)
    }

    async fn dead_letter(&self, batch: &Lease, poison: &[usize]) -> Result<(), QueueError> {
        let payloads: Vec<Vec<u8>> = poison
            .iter()
            .filter_map(|&i| batch.events.get(i).cloned())
            .collect();
        self.dead_letter_payloads(batch.shard, &payloads).await
    }

    async fn ack(&self, batch: &Lease) -> Result<bool, QueueError> {
        Leases::ack(self, batch).await
    }

    async fn give_back(&self, batch: &Lease) -> Result<(), QueueError> {
        self.release(batch).await.map(drop)
    }
}
