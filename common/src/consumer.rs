//! The loop every AMQP consumer runs ([`consume_with_reconnect`]): consume on the [`Broker`]'s
//! connection and, whenever it is lost, reconnect with backoff and consume again, until
//! shutdown; on one connection, the bounded-concurrency dispatch of deliveries to tasks
//! ([`dispatch`]); and [`ConsumerHealth`], that loop's progress, which liveness reads. The
//! email-service and the webhook-service both use them.

use std::{future::Future, sync::Arc, sync::Mutex, time::Duration};

use anyhow::Context as _;
use futures::StreamExt as _;
use lapin::{Connection, Consumer, message::Delivery};
use tokio::{sync::Semaphore, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{amqp::Broker, backoff::Backoff, shutdown::sleep_or_cancel};

/// Runs `consume` on the broker connection until `stop`; whenever it returns (the connection or
/// its channel was lost), drops the connection, waits and goes on with a fresh one.
///
/// `consume` takes deliveries until `stop` or a failure, and reports that it does with
/// [`ConsumerHealth::set_consuming`]; this loop beats `health` at every reconnect attempt, so
/// a loop busy reconnecting is not taken for a stuck one.
///
/// Two backoffs: an unreachable broker is retried quickly (100 ms doubling to 2 s), so
/// consuming resumes soon after it returns; a consumer that fails right after connecting
/// (a broker that accepts the connection but refuses the consumer) doubles a slower one (to
/// 30 s), which starts afresh after a run of at least 30 s.
pub async fn consume_with_reconnect<F, Fut>(
    broker: &Broker,
    health: &ConsumerHealth,
    stop: &CancellationToken,
    mut consume: F,
) where
    F: FnMut(Arc<Connection>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    const HEALTHY_RUN: Duration = Duration::from_secs(30);
    let mut unreachable = Backoff::default();
    let mut failing_consumer = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    while !stop.is_cancelled() {
        health.beat();
        let connected = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            connected = broker.connection() => connected,
        };
        let connection = match connected {
            Ok(connection) => {
                unreachable.reset();
                connection
            }
            Err(error) => {
                // Once when the outage starts; the broker logs when it is back.
                let error = crate::telemetry::error_chain(&error);
                if unreachable.is_failing() {
                    tracing::debug!(error, "RabbitMQ still unreachable");
                } else {
                    tracing::warn!(error, "RabbitMQ unreachable; retrying until it is back");
                }
                sleep_or_cancel(unreachable.next_delay(), stop).await;
                continue;
            }
        };
        let started = std::time::Instant::now();
        let consumed = consume(connection).await;
        if stop.is_cancelled() {
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            failing_consumer.reset();
        }
        let delay = failing_consumer.next_delay();
        let error = consumed.err().map(|e| format!("{e:#}")).unwrap_or_default();
        tracing::warn!(error, retry_in = ?delay, "lost the RabbitMQ connection; reconnecting");
        broker.disconnect("reconnecting").await;
        health.beat();
        sleep_or_cancel(delay, stop).await;
    }
}

/// Takes deliveries from `deliveries` and runs `handle` on each as a task in `tasks`, at most
/// `limit` at once, until `stop` (`Ok`) or the consumer fails (`Err`); the caller then cancels
/// the consumer and drains `tasks`.
///
/// Per delivery, in this order: a free slot; `admit`, a gate that may hold the loop (the
/// email-service's SMTP breaker; `|| std::future::ready(Some(()))` admits everything), whose
/// value goes to `handle` and whose `None` stops the loop like `stop`; the next delivery; then
/// the task, holding its slot until `handle`'s future completes. Each wait gives way to `stop`
/// first (`biased`): once it is cancelled, no further delivery is started, and prefetched ones
/// stay with the broker.
///
/// # Errors
/// When the consumer stream fails or the broker ends it (the channel or connection is gone).
pub async fn dispatch<T, A, AFut, H, HFut>(
    deliveries: &mut Consumer,
    limit: usize,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    mut admit: A,
    mut handle: H,
) -> anyhow::Result<()>
where
    A: FnMut() -> AFut,
    AFut: Future<Output = Option<T>>,
    H: FnMut(Delivery, T) -> HFut,
    HFut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit));
    loop {
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            permit = permits.clone().acquire_owned() => permit.context("semaphore closed")?,
        };
        let Some(admission) = admit().await else {
            return Ok(());
        };
        let delivery = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            delivery = deliveries.next() => delivery,
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(error).context("consuming deliveries"),
            None => anyhow::bail!("the broker ended the consumer"),
        };
        let task = handle(delivery, admission);
        tasks.spawn(async move {
            task.await;
            drop(permit);
        });
    }
}

/// Whether a consumer loop is alive: consuming, or busy reconnecting. A loop that is neither
/// for longer than a stall timeout is stuck (something it waits on never finishes) and only a
/// restart helps: `GET /health/live` then answers 503.
#[derive(Debug)]
pub struct ConsumerHealth {
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
    pub fn beat(&self) {
        self.update(|state| state.last_progress = Instant::now());
    }

    /// A consumer is (or is no longer) taking deliveries.
    pub fn set_consuming(&self, consuming: bool) {
        self.update(|state| {
            state.consuming = consuming;
            state.last_progress = Instant::now();
        });
    }

    /// How long the loop has been neither consuming nor making progress, when that is longer
    /// than `limit` at `now`.
    pub fn stalled_for(&self, now: Instant, limit: Duration) -> Option<Duration> {
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
