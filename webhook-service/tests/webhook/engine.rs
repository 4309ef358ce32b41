//! The delivery engine against real PostgreSQL and local receivers. Deliveries are inserted
//! with SQL (the rows the API and the consumer write), followed by the `NOTIFY` every producer
//! sends.

mod concurrency;
mod lease;
mod rows;
mod schedule;
mod upkeep;
mod webhooks;

use std::time::Duration;

use sea_orm::DatabaseConnection;
use uuid::Uuid;

use self::rows::DeliveryState;
use crate::helpers::{Receiver, eventually};

/// Bound of every wait for the engine.
const WAIT: Duration = Duration::from_secs(15);

/// Waits (bounded) until delivery `id` has `status`; returns its state.
async fn wait_status(db: &DatabaseConnection, id: Uuid, status: &str) -> DeliveryState {
    eventually(WAIT, &format!("delivery {status}"), || async {
        let row = rows::delivery(db, id).await;
        (row.status == status).then_some(row)
    })
    .await
}

/// Asserts that `receiver` gets no request beyond `n` within `window` (the one fixed sleep a
/// "did not happen" needs).
async fn assert_no_more_requests(receiver: &Receiver, n: usize, window: Duration) {
    tokio::time::sleep(window).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), n, "unexpected requests: {requests:?}");
}
