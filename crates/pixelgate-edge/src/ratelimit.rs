//! Per-client rate limiting: GCRA from the `governor` crate, keyed by client address.
//!
//! IPv6 clients are keyed by their /64 (one subscriber's prefix). Key memory is bounded:
//! every minute idle clients are forgotten (`retain_recent`, `shrink_to_fit`), and while more
//! than `rate_limit.max_clients` are tracked, new clients are keyed by network (/24, /48), so a
//! flood of addresses cannot grow the table without bound.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};

use crate::config::RateLimitConfig;

/// The shared limiter. Its map is sharded, so checks on different clients rarely contend.
#[derive(Debug)]
pub struct RateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    max_clients: usize,
    crowded: AtomicBool,
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
            crowded: AtomicBool::new(false),
        }
    }

    /// `Ok` within the client's limit, else how long until its next request would pass.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let key = key_for(client, self.crowded.load(Ordering::Relaxed));
        limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// How many clients are tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(0, DefaultKeyedRateLimiter::len)
    }

    /// Forgets idle clients and decides whether new ones are keyed by network. Returns how many
    /// clients are tracked.
    pub fn housekeeping(&self) -> usize {
        let Some(limiter) = &self.limiter else {
            return 0;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
        let tracked = limiter.len();
        self.crowded
            .store(tracked >= self.max_clients, Ordering::Relaxed);
        tracked
    }

    /// Runs [`RateLimiter::housekeeping`] every `every` until the limiter is dropped
    /// everywhere else; `on_run` receives the tracked count (for a gauge).
    pub fn spawn_housekeeping(
        self: &Arc<Self>,
        every: Duration,
        on_run: impl Fn(usize) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                on_run(limiter.housekeeping());
            }
        })
    }
}

/// The key a client is counted under.
fn key_for(client: IpAddr, crowded: bool) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V4(v4) if crowded => IpAddr::V4(Ipv4Addr::from(v4.to_bits() & !0xff)),
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = if crowded { 48 } else { 64 };
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
        assert_eq!(l.housekeeping(), 3);
        assert!(l.check("192.0.2.1".parse().unwrap()).is_ok());
        assert!(
            l.check("192.0.2.200".parse().unwrap()).is_err(),
            "same /24 while crowded"
        );
        assert_eq!(
            key_for("2001:db8:1:2::1".parse().unwrap(), true),
            "2001:db8:1::".parse::<IpAddr>().unwrap()
        );
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
