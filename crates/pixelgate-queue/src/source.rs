//! One way to drain: a source of batches, whatever holds them in Redis.
//!
//! List leases (`lease.rs`) and the stream consumer group (`stream.rs`) both implement
//! [`BatchSource`], and the drain has one loop over it, so both modes keep the same promises:
//! a batch is acknowledged only after its events were written and its poison dead-lettered, a
//! batch being retried is kept from other drains, and a batch in hand at shutdown is given back.

use std::time::Duration;

use crate::error::QueueError;

/// How a drain holds what it takes, set when its source is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// How long a batch is this drain's before another may take it (`drain.lease`).
    pub lease: Duration,
    /// Stream mode: deliveries after which an entry goes to the dead-letter stream instead.
    pub max_deliveries: u64,
}

/// Payloads taken from one shard, and what their source needs to acknowledge them.
pub trait Taken: Send + Sync + 'static {
    /// The shard (a position among the source's shards) the batch came from.
    fn shard(&self) -> usize;
    /// The payloads, oldest first, exactly as they were queued.
    fn payloads(&self) -> impl Iterator<Item = &[u8]>;
}

/// Where a drain takes batches from.
pub trait BatchSource: Send + Sync + 'static {
    type Batch: Taken;

    /// Whether [`BatchSource::take`] itself waits for events when a shard is empty; when not,
    /// the caller pauses instead.
    const WAITS: bool;

    /// How many shards this source takes from; they are numbered from 0.
    fn shards(&self) -> usize;

    /// Makes a shard ready to take from (the stream's consumer group); called before the first
    /// take, and again after a failed one.
    fn prepare(&self, shard: usize) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Up to `max` events of `shard` (waiting up to `wait` for some when [`Self::WAITS`]);
    /// `None` when there are none.
    fn take(
        &self,
        shard: usize,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<Self::Batch>, QueueError>> + Send;

    /// Keeps `batch` this drain's for another lease, while its write is retried.
    fn keep(&self, batch: &Self::Batch) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Moves the payloads at `poison` (positions in the batch) to the shard's dead-letter key.
    fn dead_letter(
        &self,
        batch: &Self::Batch,
        poison: &[usize],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Forgets a batch its sink committed. `false` when it was no longer this drain's (its lease
    /// expired and it went back): it will be written again, and sinks ignore the duplicates.
    fn ack(&self, batch: &Self::Batch) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Gives a batch back now, for this or another drain to take again.
    fn give_back(&self, batch: &Self::Batch)
    -> impl Future<Output = Result<(), QueueError>> + Send;
}
