//! Waiting between retries: exponential back-off from `drain.retry_initial` to
//! `drain.retry_max`, cut short when the drain is told to stop. Used for every retry the drain
//! makes (sink writes, Redis calls, migrations at start), so none of them spins.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::DrainConfig;

/// Doubling waits between `retry_initial` and `retry_max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(config: &DrainConfig) -> Self {
        Self {
            next: config.retry_initial,
            initial: config.retry_initial,
            max: config.retry_max,
        }
    }

    /// After a success: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The wait the next failure costs; doubles it for the one after.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Waits the current delay (or until stop) and doubles it; `false` when stopping.
    pub async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let delay = self.next_wait();
        pause(delay, stop).await
    }
}

/// Sleeps `d` unless stop comes first; `false` when stopping.
pub async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !stopping(stop)
}

/// Whether stop has been asked for.
pub fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset() {
        let config = DrainConfig {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(350),
            ..DrainConfig::default()
        };
        let mut b = Backoff::new(&config);
        let waits: Vec<u128> = (0..4).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cuts_the_wait_short() {
        let (tx, mut rx) = watch::channel(false);
        let mut b = Backoff::new(&DrainConfig {
            retry_initial: Duration::from_secs(60),
            ..DrainConfig::default()
        });
        let waiting = tokio::spawn(async move { b.wait(&mut rx).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(true).unwrap();
        assert!(!waiting.await.unwrap());
    }
}
