//! Per-client rate limiting: GCRA from the `governor` crate, keyed by client address.
//!
//! IPv6 clients are keyed by their /64 (one subscriber's prefix). Key memory is bounded where
//! keys are made: every 256 checks the table's size is looked at, and past
//! `rate_limit.max_clients` clients are keyed by network (/24, /48), past twice that all share
//! one key per address family, until the sweep (every minute, or at once when the table is
//! crowded) has forgotten the idle ones. So a flood of spoofed addresses costs at most about
//! twice `max_clients` keys, and a crowded table degrades to coarser limits, never to memory.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU32, Ordering},
    },
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};
use tokio::sync::Notify;

use crate::config::RateLimitConfig;

/// How often, in checks, the table's size is looked at.
const LOOK_EVERY: u32 = 256;

/// How coarsely clients are keyed: by client, by network, or all in one.
const BY_CLIENT: u8 = 0;
const BY_NETWORK: u8 = 1;
const SHARED: u8 = 2;

/// The shared limiter. Its map is sharded, so checks on different clients rarely contend.
#[derive(Debug)]
pub struct RateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    max_clients: usize,
    /// `BY_CLIENT`, `BY_NETWORK` or `SHARED`, from the last look at the table's size.
    keying: AtomicU8,
    checks: AtomicU32,
    /// Wakes the sweep early when the table is crowded (its own `Arc`, so the sweep can wait on
    /// it without keeping the limiter alive).
    crowded: Arc<Notify>,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        let limiter = config.enabled.then(|| {
            let quota = Quota::per_second(config.per_second).allow_burst(config.burst);
            DefaultKeyedRateLimiter::keyed(quota)
        });
        Self {
            limiter,
            max_clients: config.max_clients.get(),
            keying: AtomicU8::new(BY_CLIENT),
            checks: AtomicU32::new(0),
            crowded: Arc::new(Notify::new()),
        }
    }

    /// `Ok` within the client's limit, else how long until its next request would pass.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(LOOK_EVERY)
        {
            self.look(limiter.len());
        }
        let key = key_for(client, self.keying.load(Ordering::Relaxed));
        limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Sets the keying for a table of `tracked` keys, and asks for a sweep when it is crowded.
    fn look(&self, tracked: usize) {
        let keying = if tracked >= self.max_clients.saturating_mul(2) {
            SHARED
        } else if tracked >= self.max_clients {
            BY_NETWORK
        } else {
            BY_CLIENT
        };
        if self.keying.swap(keying, Ordering::Relaxed) != keying && keying != BY_CLIENT {
            tracing::warn!(
                tracked,
                max_clients = self.max_clients,
                by = if keying == SHARED {
                    "one key"
                } else {
                    "network"
                },
                "the rate limiter is crowded: new keys are coarser until idle clients are swept"
            );
        }
        if keying != BY_CLIENT {
            self.crowded.notify_one();
        }
    }

    /// How many clients are tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(0, DefaultKeyedRateLimiter::len)
    }

    /// Forgets idle clients and decides how the next ones are keyed. Returns how many clients
    /// are tracked.
    pub fn housekeeping(&self) -> usize {
        let Some(limiter) = &self.limiter else {
            return 0;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
        let tracked = limiter.len();
        self.look(tracked);
        tracked
    }

    /// Runs [`RateLimiter::housekeeping`] every `every`, and at most once a second while the
    /// table is crowded, until the limiter is dropped everywhere else; `on_run` receives the
    /// tracked count (for a gauge).
    pub fn spawn_housekeeping(
        self: &Arc<Self>,
        every: Duration,
        on_run: impl Fn(usize) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let crowded = self.crowded.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = crowded.notified() => {
                        // At most one sweep a second, however crowded.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                let Some(limiter) = weak.upgrade() else { break };
                on_run(limiter.housekeeping());
            }
        })
    }
}

/// The key a client is counted under.
fn key_for(client: IpAddr, keying: u8) -> IpAddr {
    match (client.to_canonical(), keying) {
        (IpAddr::V4(_), SHARED) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), SHARED) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (IpAddr::V4(v4), BY_NETWORK) => IpAddr::V4(Ipv4Addr::from(v4.to_bits() & !0xff)),
        (IpAddr::V4(v4), _) => IpAddr::V4(v4),
        (IpAddr::V6(v6), keying) => {
            let prefix = if keying == BY_NETWORK { 48 } else { 64 };
            IpAddr::V6(Ipv6Addr::from(v6.to_bits() & (u128::MAX << (128 - prefix))))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroUsize};

    use super::*;

    fn limiter(per_second: u32, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            max_clients: NonZeroUsize::new(max_clients).unwrap(),
            ..RateLimitConfig::default()
        })
    }

    #[test]
    fn the_burst_passes_and_the_next_waits() {
        let l = limiter(1, 5, 100);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..5 {
            assert!(l.check(a).is_ok());
        }
        let wait = l.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            l.check("203.0.113.2".parse().unwrap()).is_ok(),
            "others are not affected"
        );
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let l = limiter(1, 1, 100);
        assert!(l.check("2001:db8:1:2::1".parse().unwrap()).is_ok());
        assert!(l.check("2001:db8:1:2::ffff".parse().unwrap()).is_err());
        assert!(l.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn a_crowded_table_keys_new_clients_by_network() {
        let l = limiter(1, 1, 2);
        for i in 1..=3 {
            let _ = l.check(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)));
        }
        // 3 of 2 tracked: by network (twice the limit would be one key for all).
        l.look(3);
        assert!(l.check("192.0.2.1".parse().unwrap()).is_ok());
        assert!(
            l.check("192.0.2.200".parse().unwrap()).is_err(),
            "same /24 while crowded"
        );
        assert_eq!(
            key_for("2001:db8:1:2::1".parse().unwrap(), BY_NETWORK),
            "2001:db8:1::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            key_for("203.0.113.9".parse().unwrap(), SHARED),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }

    /// A flood of addresses, each new, in networks of their own: the table stops growing at
    /// about twice `max_clients` where the keys are made, not at the next sweep.
    #[test]
    fn spoofed_churn_is_bounded_where_keys_are_made() {
        let l = limiter(20, 100, 1000);
        for i in 0..100_000u32 {
            let _ = l.check(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i << 8) | 1)));
        }
        let tracked = l.tracked();
        assert!(
            tracked <= 2 * 1000 + LOOK_EVERY as usize,
            "{tracked} clients tracked"
        );
        // The sweep forgets the idle ones, and clients are keyed by client again. Time is what
        // is tested here: governor's clock is the real one, and a state idles after 50 ms.
        std::thread::sleep(Duration::from_millis(200));
        assert!(l.housekeeping() < 1000);
        assert_eq!(l.keying.load(Ordering::Relaxed), BY_CLIENT);
    }

    #[test]
    fn disabled_means_unlimited() {
        let l = RateLimiter::new(&RateLimitConfig {
            enabled: false,
            ..RateLimitConfig::default()
        });
        for _ in 0..10_000 {
            assert!(l.check("203.0.113.1".parse().unwrap()).is_ok());
        }
        assert_eq!(l.housekeeping(), 0);
    }
}
