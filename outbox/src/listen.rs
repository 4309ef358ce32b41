//! PostgreSQL `LISTEN` on [`NOTIFY_CHANNEL`](crate::NOTIFY_CHANNEL): every commit that wrote
//! outbox rows wakes the relay at once instead of at its next poll.

use common::{backoff::Backoff, shutdown::sleep_or_cancel};
use sea_orm::{DatabaseConnection, DbBackend, sqlx::postgres::PgListener};
use tokio_util::sync::CancellationToken;

use crate::{NOTIFY_CHANNEL, Wakeup};

/// Listens for outbox notifications (PostgreSQL only) and signals `wakeup` on each one, and
/// after every (re)connect, since notifications sent while disconnected are lost. Reconnects
/// with backoff; returns at `shutdown`, or at once on SQLite.
pub async fn listen(db: DatabaseConnection, wakeup: Wakeup, shutdown: CancellationToken) {
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let pool = db.get_postgres_connection_pool();
    let mut backoff = Backoff::default();
    loop {
        let error = match PgListener::connect_with(pool).await {
            Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
                Ok(()) => {
                    if backoff.is_failing() {
                        tracing::info!("LISTEN re-established: outbox notifications are back");
                    } else {
                        tracing::debug!(
                            channel = NOTIFY_CHANNEL,
                            "listening for outbox notifications"
                        );
                    }
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
        if backoff.is_failing() {
            tracing::debug!(%error, "LISTEN failed again");
        } else {
            tracing::warn!(%error, "LISTEN failed; polling until it is re-established");
        }
        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}
