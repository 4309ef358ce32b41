//! Waking the batch pipelines: PostgreSQL `LISTEN`, an in-process [`Notify`] for runners that
//! host the user-service in the same process (SQLite), and the poll interval as the fallback.
//!
//! A wake-up is only a hint. Pipelines re-read the outbox whenever they wake, so a lost
//! notification costs at most one poll interval of latency, never a row.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbBackend, sqlx::postgres::PgListener};
use tokio::sync::{Notify, futures::Notified};
use tokio_util::sync::CancellationToken;

use crate::relay::{Backoff, sleep_or_cancel};

/// Wakes one idle pipeline per signal. A pipeline that claims a full batch signals again, so
/// a burst recruits the others one by one while a single event costs one claim, not one per
/// pipeline. A signal sent while every pipeline is busy is kept (one permit) and makes the next
/// pipeline to go idle look once more.
#[derive(Debug, Clone, Default)]
pub struct Wakeup {
    notify: Arc<Notify>,
}

impl Wakeup {
    /// Wakes one idle pipeline (or the next one to go idle).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next [`wake`](Self::wake) meant for this pipeline.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// The underlying [`Notify`]: `notify_one()` on it is [`wake`](Self::wake), for writers
    /// that only know tokio.
    pub fn handle(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

/// Listens on `channel` (PostgreSQL only) and wakes the pipelines on every notification, and
/// after every reconnect (notifications sent while disconnected are lost). Reconnects with
/// backoff; returns at `shutdown`, or at once on SQLite.
pub async fn listen(
    db: DatabaseConnection,
    channel: &str,
    wakeup: Wakeup,
    shutdown: CancellationToken,
) {
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let pool = db.get_postgres_connection_pool();
    let mut backoff = Backoff::default();
    loop {
        let error = match PgListener::connect_with(pool).await {
            Ok(mut listener) => match listener.listen(channel).await {
                Ok(()) => {
                    tracing::debug!(channel, "listening for outbox notifications");
                    backoff.reset();
                    wakeup.wake();
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            received = listener.try_recv() => match received {
                                Ok(_) => wakeup.wake(),
                                Err(error) => break error,
                            },
                        }
                    }
                }
                Err(error) => error,
            },
            Err(error) => error,
        };
        tracing::warn!(%error, "LISTEN failed; polling until it is re-established");
        if !sleep_or_cancel(backoff.next(), &shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_wake_wakes_one_idle_pipeline_and_is_kept_when_none_waits() {
        let wakeup = Wakeup::default();
        wakeup.wake();
        assert!(
            wakeup.notified().now_or_never().is_some(),
            "a wake-up sent while every pipeline is busy is kept"
        );
        assert!(wakeup.notified().now_or_never().is_none(), "and kept once");

        let mut first = pin!(wakeup.notified());
        let mut second = pin!(wakeup.notified());
        first.as_mut().enable();
        second.as_mut().enable();
        wakeup.wake();
        assert!(
            first.as_mut().now_or_never().is_some(),
            "one pipeline wakes"
        );
        assert!(second.as_mut().now_or_never().is_none(), "only one");
        wakeup.wake();
        assert!(second.now_or_never().is_some());
    }
}
