//! Whether the consumer loop is alive: consuming, or busy reconnecting. A loop that is neither
//! for longer than the stall timeout is stuck (something it waits on never finishes) and only
//! a restart helps: `GET /health/live` then answers 503.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Progress of the consumer loop, shared with the admin endpoint.
#[derive(Debug)]
pub(crate) struct ConsumerHealth {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    consuming: bool,
    last_progress: Instant,
}

impl Default for ConsumerHealth {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                consuming: false,
                last_progress: Instant::now(),
            }),
        }
    }
}

impl ConsumerHealth {
    /// The loop made progress (an attempt to connect, a backoff started).
    pub(crate) fn beat(&self) {
        self.update(|state| state.last_progress = Instant::now());
    }

    /// A consumer is (or is no longer) taking deliveries.
    pub(crate) fn set_consuming(&self, consuming: bool) {
        self.update(|state| {
            state.consuming = consuming;
            state.last_progress = Instant::now();
        });
    }

    /// How long the loop has been neither consuming nor making progress, when that is longer
    /// than `limit` at `now`.
    pub(crate) fn stalled_for(&self, now: Instant, limit: Duration) -> Option<Duration> {
        let state = *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = now.saturating_duration_since(state.last_progress);
        (!state.consuming && idle > limit).then_some(idle)
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(
            &mut self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_neither_consuming_nor_progressing_is_stalled_after_the_limit() {
        let health = ConsumerHealth::default();
        let limit = Duration::from_secs(60);
        let start = Instant::now();
        assert_eq!(health.stalled_for(start, limit), None, "just started");
        health.set_consuming(true);
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(health.stalled_for(later, limit), None, "consuming is alive");
        health.set_consuming(false);
        let stopped = Instant::now();
        assert_eq!(
            health.stalled_for(stopped + Duration::from_secs(30), limit),
            None,
            "draining or reconnecting for a while is fine"
        );
        assert!(
            health
                .stalled_for(stopped + Duration::from_secs(61), limit)
                .is_some(),
            "stopped and stuck"
        );
        health.beat();
        let beat = Instant::now();
        assert_eq!(
            health.stalled_for(beat + Duration::from_secs(30), limit),
            None,
            "reconnect attempts are progress"
        );
    }
}
