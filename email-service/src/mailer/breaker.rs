//! The circuit breaker in front of the mail transport.
//!
//! After `SMTP_BREAKER_THRESHOLD` consecutive transient failures (connection refused, timeouts,
//! 4xx "try later") the breaker opens: the consumer stops taking deliveries (they wait in the
//! queue, their attempts unspent), and a send that fails while it is open is parked without
//! counting an attempt. After a cool-down (`SMTP_BREAKER_COOLDOWN`, doubling to 30 s) one
//! delivery is let through as a probe; its success closes the breaker, its failure opens it
//! again. The outage is logged once when it starts and once when it ends, and shown by
//! readiness and the `email_smtp_circuit_open` gauge.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use common::backoff::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Shared by the consumer (admission) and the delivery tasks (results).
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    cooldown: Backoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Sending; the count of consecutive transient failures.
    Closed(u32),
    /// Not sending until the instant, then one probe.
    Open(Instant),
    /// One probe in flight.
    HalfOpen,
}

/// Permission to send one mail, given by [`Breaker::admit`]; report how the send went with
/// [`succeeded`](Self::succeeded) or [`failed`](Self::failed). Dropped without a report (the
/// delivery sent nothing: a duplicate, a malformed event), a probe lets the next one through.
#[derive(Debug)]
pub(crate) struct Admission {
    breaker: Arc<Breaker>,
    probe: bool,
    reported: bool,
}

impl Breaker {
    /// Opens after `threshold` consecutive transient failures; waits `first_cooldown` (doubling
    /// to 30 s while probes keep failing) before each probe.
    pub(crate) fn new(threshold: u32, first_cooldown: Duration) -> Self {
        metrics::gauge!("email_smtp_circuit_open").set(0.0);
        Self {
            threshold: threshold.max(1),
            state: Mutex::new(State {
                mode: Mode::Closed(0),
                cooldown: Backoff::new(first_cooldown, Duration::from_secs(30).max(first_cooldown)),
            }),
        }
    }

    /// Whether sends are paused (readiness).
    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.lock().mode, Mode::Closed(_))
    }

    /// Waits until a send may start: at once while closed; while open, until the cool-down is
    /// over and no other probe is in flight. `None` when `shutdown` came first.
    pub(crate) async fn admit(self: &Arc<Self>, shutdown: &CancellationToken) -> Option<Admission> {
        loop {
            let wait = {
                let mut state = self.lock();
                match state.mode {
                    Mode::Closed(_) => return Some(self.admission(false)),
                    Mode::Open(until) if Instant::now() >= until => {
                        state.mode = Mode::HalfOpen;
                        return Some(self.admission(true));
                    }
                    Mode::Open(until) => until.min(Instant::now() + Duration::from_millis(100)),
                    // The probe's result decides; look again shortly.
                    Mode::HalfOpen => Instant::now() + Duration::from_millis(50),
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep_until(wait) => {}
            }
        }
    }

    fn admission(self: &Arc<Self>, probe: bool) -> Admission {
        Admission {
            breaker: self.clone(),
            probe,
            reported: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Admission {
    /// The server answered (accepted the mail, or rejected it for good: it is up either way).
    pub(crate) fn succeeded(mut self) {
        self.reported = true;
        let mut state = self.breaker.lock();
        if !matches!(state.mode, Mode::Closed(_)) {
            tracing::info!("SMTP server is back; resuming deliveries");
            metrics::gauge!("email_smtp_circuit_open").set(0.0);
        }
        state.mode = Mode::Closed(0);
        state.cooldown.reset();
    }

    /// The send failed transiently. Returns whether the breaker is open now: the caller then
    /// parks the delivery without counting an attempt.
    pub(crate) fn failed(mut self) -> bool {
        self.reported = true;
        let threshold = self.breaker.threshold;
        let mut state = self.breaker.lock();
        match state.mode {
            Mode::Closed(failures) if failures + 1 < threshold => {
                state.mode = Mode::Closed(failures + 1);
                false
            }
            Mode::Closed(_) => {
                let cooldown = state.cooldown.next_delay();
                state.mode = Mode::Open(Instant::now() + cooldown);
                tracing::warn!(
                    consecutive_failures = threshold,
                    "SMTP server unavailable; pausing deliveries until it answers again"
                );
                metrics::gauge!("email_smtp_circuit_open").set(1.0);
                metrics::counter!("email_smtp_circuit_opened_total").increment(1);
                true
            }
            Mode::HalfOpen if self.probe => {
                let cooldown = state.cooldown.next_delay();
                tracing::debug!(?cooldown, "SMTP probe failed; still paused");
                state.mode = Mode::Open(Instant::now() + cooldown);
                true
            }
            Mode::HalfOpen | Mode::Open(_) => true,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut state = self.breaker.lock();
            if state.mode == Mode::HalfOpen {
                // No verdict from this one: let the next delivery probe at once.
                state.mode = Mode::Open(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn breaker(threshold: u32) -> Arc<Breaker> {
        Arc::new(Breaker::new(threshold, Duration::from_millis(10)))
    }

    async fn admit(breaker: &Arc<Breaker>) -> Admission {
        breaker.admit(&CancellationToken::new()).await.unwrap()
    }

    #[tokio::test]
    async fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let breaker = breaker(3);
        assert!(!admit(&breaker).await.failed());
        assert!(!admit(&breaker).await.failed());
        assert!(!breaker.is_open());
        assert!(admit(&breaker).await.failed(), "the third failure opens it");
        assert!(breaker.is_open());
        assert!(
            breaker
                .admit(&CancellationToken::new())
                .now_or_never()
                .is_none(),
            "no admission while open"
        );
        let probe = admit(&breaker).await;
        assert!(
            breaker
                .admit(&CancellationToken::new())
                .now_or_never()
                .is_none(),
            "one probe at a time"
        );
        assert!(probe.failed(), "a failed probe opens it again");
        let probe = admit(&breaker).await;
        probe.succeeded();
        assert!(!breaker.is_open());
        assert!(!admit(&breaker).await.failed(), "counting starts afresh");
    }

    #[tokio::test]
    async fn a_success_resets_the_count_and_a_probe_without_verdict_lets_the_next_through() {
        let breaker = breaker(2);
        assert!(!admit(&breaker).await.failed());
        admit(&breaker).await.succeeded();
        assert!(!admit(&breaker).await.failed(), "not consecutive");
        assert!(admit(&breaker).await.failed());
        drop(admit(&breaker).await);
        let next = breaker.admit(&CancellationToken::new()).now_or_never();
        assert!(next.is_some(), "the next delivery probes at once");
    }
}
