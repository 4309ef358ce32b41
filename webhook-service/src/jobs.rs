//! Scheduled requests (`POST /v1/jobs`): the job's outcome report to its `notify` URL. STUB.

use chrono::{DateTime, Utc};

use crate::{
    entity::{delivery, job},
    store::NewDelivery,
};

/// The `notify` delivery reporting `delivery`'s terminal outcome (succeeded, failed, cancelled),
/// or `None` when the job has no `notify`. Called in the transaction that makes the job's
/// delivery terminal (by the engine after an attempt, by the API on cancel), with the delivery
/// as it is after that change.
pub(crate) fn notify_delivery(
    job: &job::Model,
    delivery: &delivery::Model,
    now: DateTime<Utc>,
) -> Option<NewDelivery> {
    let _ = (job, delivery, now);
    None
}
