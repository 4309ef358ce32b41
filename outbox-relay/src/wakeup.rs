//! Waking the batch pipelines: PostgreSQL `LISTEN`, an in-process [`Notify`] for runners that
//! host the user-service in the same process (SQLite), and the poll interval as the fallback.
//!
//! A wake-up is only a hint. Pipelines re-read the outbox whenever they wake, so a lost
//! notification costs at most one poll interval of latency, never a row.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbBackend, sqlx::postgres::PgListener};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::relay::{Backoff, sleep_or_cancel};

/// A broadcast wake-up: every pipeline sees every signal at least once (a version counter, so a
/// signal arriving while a pipeline is busy is not lost).
#[derive(Debug, Clone)]
pub struct Wakeup {
    sender: Arc<watch::Sender<u64>>,
}

impl Default for Wakeup {
    fn default() -> Self {
        Self {
            sender: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Wakeup {
    /// Signals every pipeline.
    pub fn wake(&self) {
        self.sender
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// A receiver whose `changed()` resolves after the next [`wake`](Self::wake).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

/// Forwards `notify` (signalled with `notify_one()` by an in-process writer after its commit)
/// to `wakeup` until `shutdown`. `notify_one` stores a permit, so a signal sent while this task
/// is busy is not lost.
pub async fn forward_notify(notify: Arc<Notify>, wakeup: Wakeup, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = notify.notified() => wakeup.wake(),
        }
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
