//! The batch pipelines: each one relays batches while there is work (until a batch comes back
//! short with nothing left behind it), then waits for a wake-up or the poll interval, and backs
//! off while the database or broker is down.

use std::{pin::pin, sync::atomic::Ordering, time::Duration};

use common::{backoff::Backoff, shutdown::sleep_or_cancel};
use lapin::Channel;
use tokio_util::sync::CancellationToken;

use super::{Relay, RelayError};

impl Relay {
    /// Runs one batch pipeline until `shutdown`: drains while batches come back full or leave
    /// work behind (failed rows, an aggregate's next row), then waits for a wake-up or the poll
    /// interval. On shutdown the in-flight batch gets up to the confirm timeout to finish; after
    /// that it is dropped and its rows stay pending.
    pub async fn run_pipeline(&self, shutdown: CancellationToken) {
        let pipeline = self.next_pipeline.fetch_add(1, Ordering::Relaxed);
        let mut slot: Option<Channel> = None;
        // The database or broker is down: retry soon (capped at 2 s), so work resumes within
        // seconds of its return.
        let mut unavailable = Backoff::default();
        // Batches that made no progress (nacks, unroutable rows): there is no outage to wait
        // out, so back off further and spare the broker and the logs.
        let mut no_progress = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        'outer: loop {
            // Drain. A wake-up arriving meanwhile is kept by `Wakeup` for the next idle wait.
            loop {
                if shutdown.is_cancelled() {
                    break 'outer;
                }
                self.set_busy(pipeline, true);
                let result = {
                    let mut batch = pin!(self.relay_batch(&mut slot, Some(pipeline)));
                    tokio::select! {
                        result = &mut batch => Some(result),
                        () = shutdown.cancelled() => {
                            tokio::time::timeout(self.config.confirm_timeout, &mut batch).await.ok()
                        }
                    }
                };
                self.set_busy(pipeline, false);
                match result {
                    None => {
                        tracing::warn!(
                            "shutdown: in-flight batch abandoned, its rows stay pending"
                        );
                        break 'outer;
                    }
                    // Progress (or nothing to do): keep draining. A batch with some failed rows
                    // but others published goes on too, so one unroutable row does not throttle
                    // everyone else.
                    Some(Ok(report)) if report.failed == 0 || report.published > 0 => {
                        unavailable.reset();
                        no_progress.reset();
                        if self.failing.swap(0, Ordering::Relaxed) != 0 {
                            tracing::info!("outbox relay is publishing again");
                        }
                        // A short batch took every eligible row: later ones woke (or will
                        // wake) a pipeline when they committed. Claiming again at once would
                        // mostly find nothing, a transaction for nothing per batch. Except
                        // after failures (those rows are pending again) and when a published
                        // row's aggregate has a later row, which no commit will announce.
                        let short = report.claimed < self.config.batch_size as usize;
                        if report.claimed == 0
                            || (short && report.failed == 0 && !report.successors_pending)
                        {
                            break;
                        }
                        if report.claimed >= self.config.batch_size as usize {
                            // More may be waiting: recruit another idle pipeline.
                            self.wakeup.wake();
                        }
                    }
                    Some(Ok(_)) => {
                        // Nothing but nacks, returns, timeouts or a channel failure: back off.
                        if !sleep_or_cancel(no_progress.next_delay(), &shutdown).await {
                            break 'outer;
                        }
                    }
                    Some(Err(error)) => {
                        // Whatever it had claimed is pending again.
                        self.cursor.lock().await.rewind();
                        self.log_error(&error);
                        if !sleep_or_cancel(unavailable.next_delay(), &shutdown).await {
                            break 'outer;
                        }
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        if let Some(channel) = slot {
            let _ = channel.close(200, "shutting down".into()).await;
        }
    }

    fn log_error(&self, error: &RelayError) {
        metrics::counter!("outbox_relay_errors_total", "kind" => error.kind()).increment(1);
        // Warn when a trouble starts (or its cause changes), not once per retry of every
        // pipeline; the recovery is logged when a batch succeeds again.
        let new = self.failing.swap(error.kind_code(), Ordering::Relaxed) != error.kind_code();
        match error {
            RelayError::OutboxMissing if new => tracing::warn!(
                "{error}; retrying with backoff. Start the user-service once to migrate it."
            ),
            other if new => tracing::warn!(
                error = common::telemetry::error_chain(other),
                "relay batch failed; retrying with backoff until it succeeds"
            ),
            other => tracing::debug!(
                error = common::telemetry::error_chain(other),
                "relay batch failed again"
            ),
        }
    }
}
