//! Exponential backoff with jitter for loops that wait out an unavailable peer (broker,
//! database).

use std::time::Duration;

/// Delays that double from `first` up to `max`, each drawn at random from its upper half
/// (`[d/2, d]`), and start again at `first` after a success.
///
/// The jitter keeps the pipelines of a relay and the instances of a service from retrying in
/// lock-step; the cap keeps the wait after a peer comes back short. Used by the relay's batch
/// pipelines and its `LISTEN`, the email-service's reconnect loop and the reminder scheduler,
/// so every service waits out an outage the same way.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Default for Backoff {
    /// 100 ms doubling to 2 s: a reconnect attempt is cheap, and work resumes within about two
    /// seconds of the peer's return.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(2))
    }
}

impl Backoff {
    /// Delays doubling from `first` to at most `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            failures: 0,
        }
    }

    /// The delay before the next attempt, counting one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .first
            .saturating_mul(1 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        ceiling / 2 + ceiling.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// Whether the last attempt failed (a success since resets this): tells a loop that the
    /// peer it waited for is back, so it can say so once.
    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_between(delay: Duration, low: Duration, high: Duration) {
        assert!(
            low <= delay && delay <= high,
            "{delay:?} not in [{low:?}, {high:?}]"
        );
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::default();
        assert!(!backoff.is_failing());
        assert_between(backoff.next_delay(), ms(50), ms(100));
        assert_between(backoff.next_delay(), ms(100), ms(200));
        assert!(backoff.is_failing());
        for _ in 0..40 {
            assert_between(backoff.next_delay(), ms(50), ms(2000));
        }
        assert_between(backoff.next_delay(), ms(1000), ms(2000));
        backoff.reset();
        assert!(!backoff.is_failing());
        assert_between(backoff.next_delay(), ms(50), ms(100));
    }

    #[test]
    fn backoff_delays_are_spread_out() {
        let mut delays: Vec<Duration> = (0..20)
            .map(|_| {
                let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
                backoff.next_delay()
            })
            .collect();
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 10, "20 instances retry at {delays:?}");
    }

    #[test]
    fn backoff_starts_where_asked() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let ms = Duration::from_millis;
        assert_between(backoff.next_delay(), ms(125), ms(250));
        assert_between(backoff.next_delay(), ms(250), ms(500));
        assert_between(backoff.next_delay(), ms(500), ms(1000));
        assert_between(backoff.next_delay(), ms(500), ms(1000));
    }
}
