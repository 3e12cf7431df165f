//! The Redis key layout: which keys a queue uses, per shard.
//!
//! Without a cluster there is one shard and its queue key is exactly `queue.key`. On a cluster
//! there are `queue.shards` shards named `{key}:{TAG}`; each shard's tag is chosen so that its
//! hash slot lies in the shard's own equal share of the 16384 slots, so a cluster whose masters
//! split the slots evenly (what `redis-cli --cluster create` does) gets one shard per master.
//! Every key of a shard carries the shard's tag, so the Lua scripts touch a single slot.

use crate::config::{QueueConfig, RedisConfig};

const SLOTS: u32 = 16_384;

/// The keys of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardKeys {
    /// Position of the shard, `0..shards`.
    pub index: usize,
    /// The list (or stream) events are appended to.
    pub queue: String,
    /// List mode: sorted set of lease ids scored by their deadline (Unix milliseconds).
    pub leases: String,
    /// List mode: hash of lease id → the leased events, plus the lease sequence and counts.
    pub lease_data: String,
    /// Where what cannot be drained goes: a stream (stream mode: entries delivered too often,
    /// or without an `event`) or a list (list mode: elements that are not events).
    pub dead: String,
}

impl ShardKeys {
    fn new(index: usize, queue: String) -> Self {
        Self {
            index,
            leases: format!("{queue}:leases"),
            lease_data: format!("{queue}:lease-data"),
            dead: format!("{queue}:dead"),
            queue,
        }
    }
}

/// Every key the queue uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub shards: Vec<ShardKeys>,
    /// The capped list of rate-limited clients' events (not sharded: it is a safety valve).
    pub overflow: String,
}

impl Layout {
    pub fn new(queue: &QueueConfig, redis: &RedisConfig) -> Self {
        let key = queue.key.as_str();
        let shards = if redis.is_cluster() {
            let n = u32::from(queue.shards.get());
            (0..n)
                .map(|i| ShardKeys::new(i as usize, format!("{key}:{{{}}}", shard_tag(i, n))))
                .collect()
        } else {
            vec![ShardKeys::new(0, key.to_owned())]
        };
        Self {
            shards,
            overflow: queue.overflow_key.as_str().to_owned(),
        }
    }
}

/// The smallest number whose hash slot lies in shard `i`'s share of the slots.
fn shard_tag(i: u32, n: u32) -> u32 {
    let (lo, hi) = (i * SLOTS / n, (i + 1) * SLOTS / n);
    (0..)
        .find(|t: &u32| (lo..hi).contains(&key_slot(t.to_string().as_bytes())))
        .unwrap_or(i)
}

/// Redis Cluster's hash slot of a key: CRC16 of its hash tag (the first non-empty `{…}`), or of
/// the whole key.
pub fn key_slot(key: &[u8]) -> u32 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &rest[..len])
        })
        .unwrap_or(key);
    u32::from(crc16::State::<crc16::XMODEM>::calculate(tag)) % SLOTS
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;

    #[test]
    fn one_shard_without_a_cluster_uses_the_key_itself() {
        let layout = Layout::new(&QueueConfig::default(), &RedisConfig::default());
        assert_eq!(layout.shards.len(), 1);
        assert_eq!(layout.shards[0].queue, "pixelgate:events");
        assert_eq!(layout.shards[0].leases, "pixelgate:events:leases");
        assert_eq!(layout.overflow, "pixelgate:overflow");
    }

    #[test]
    fn cluster_shards_land_in_distinct_slot_ranges() {
        let redis = RedisConfig {
            cluster_nodes: vec!["redis://127.0.0.1:7000".parse().unwrap()],
            ..RedisConfig::default()
        };
        for n in [1u16, 2, 3, 5, 16] {
            let queue = QueueConfig {
                shards: NonZeroU16::new(n).unwrap(),
                ..QueueConfig::default()
            };
            let layout = Layout::new(&queue, &redis);
            assert_eq!(layout.shards.len(), usize::from(n));
            for (i, shard) in layout.shards.iter().enumerate() {
                let slot = key_slot(shard.queue.as_bytes());
                let share = slot * u32::from(n) / SLOTS;
                assert_eq!(share as usize, i, "{} is in share {share}", shard.queue);
                // Every key of the shard is in the same slot.
                for k in [&shard.leases, &shard.lease_data, &shard.dead] {
                    assert_eq!(key_slot(k.as_bytes()), slot);
                }
            }
        }
        let three = QueueConfig {
            shards: NonZeroU16::new(3).unwrap(),
            ..QueueConfig::default()
        };
        let names: Vec<_> = Layout::new(&three, &redis)
            .shards
            .into_iter()
            .map(|s| s.queue)
            .collect();
        assert_eq!(
            names,
            [
                "pixelgate:events:{3}",
                "pixelgate:events:{1}",
                "pixelgate:events:{0}"
            ]
        );
    }

    #[test]
    fn key_slots_follow_the_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
    }
}
