//! PostgreSQL `LISTEN` on [`NOTIFY_CHANNEL`](crate::NOTIFY_CHANNEL): every commit that wrote
//! outbox rows wakes the relay at once instead of at its next poll.

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::{NOTIFY_CHANNEL, Wakeup};

/// Listens for outbox notifications (PostgreSQL only) and signals `wakeup` on each one, and
/// after every (re)connect, since notifications sent while disconnected are lost. Reconnects
/// with backoff; returns at `shutdown`, or at once on SQLite ([`common::database::listen`]).
pub async fn listen(db: DatabaseConnection, wakeup: Wakeup, shutdown: CancellationToken) {
    common::database::listen(db, NOTIFY_CHANNEL, move || wakeup.wake(), shutdown).await;
}
