//! `deliveries`: every outbound HTTP call, with its state and schedule.

use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, entity::prelude::*};

/// What a delivery is.
pub(crate) mod kind {
    /// A signed webhook of a message to an endpoint.
    pub(crate) const WEBHOOK: &str = "webhook";
    /// The request of a scheduled job.
    pub(crate) const JOB: &str = "job";
    /// The signed outcome report of a job to its `notify` URL.
    pub(crate) const NOTIFY: &str = "notify";
    /// A text message through the SMS gateway.
    pub(crate) const SMS: &str = "sms";
}

/// Delivery states: `pending` until a terminal one.
pub(crate) mod status {
    /// Waiting for `next_attempt_at` (also while an attempt runs: claiming moves
    /// `next_attempt_at` past the attempt's timeout, a lease that a crash lets expire).
    pub(crate) const PENDING: &str = "pending";
    /// A 2xx answer.
    pub(crate) const SUCCEEDED: &str = "succeeded";
    /// Failed permanently, attempts exhausted or past its deadline.
    pub(crate) const FAILED: &str = "failed";
    /// Cancelled before it succeeded (job cancel, endpoint deleted).
    pub(crate) const CANCELLED: &str = "cancelled";
}

/// SQL condition: no attempt is in flight (the row holds no lease, or its lease has ended), on
/// the clock the engine writes leases with: the database's on PostgreSQL; on SQLite (one
/// process) the process's, the statement's parameter `now` (e.g. `$2`).
pub(crate) fn not_in_flight(backend: DbBackend, now: &str) -> String {
    let now = if backend == DbBackend::Postgres {
        "now()"
    } else {
        now
    };
    format!("(leased_until IS NULL OR leased_until <= {now})")
}

/// A delivery. `Debug` leaves out headers and body (credentials, personal data).
#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deliveries")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    /// One of [`kind`].
    pub(crate) kind: String,
    /// `webhook`: the endpoint (its current URL, headers and secrets are used at each attempt).
    pub(crate) endpoint_id: Option<Uuid>,
    /// `webhook`: the message sent.
    pub(crate) message_id: Option<Uuid>,
    /// `job` and `notify`: the job.
    pub(crate) job_id: Option<Uuid>,
    /// Target URL (for `webhook`, the endpoint's URL when it was enqueued).
    pub(crate) url: String,
    /// HTTP method.
    pub(crate) method: String,
    /// Request headers, a JSON array of `[name, value]` pairs.
    pub(crate) headers: Json,
    /// Request body (`webhook`: `None`, the message's payload is sent).
    pub(crate) body: Option<String>,
    /// Bound on one attempt.
    pub(crate) timeout_ms: i64,
    /// Delays after the first attempt (milliseconds, JSON array); `None`: the global schedule.
    pub(crate) retry_schedule: Option<Json>,
    /// 4xx statuses failing at once (JSON array); `None`: the global list.
    pub(crate) fail_statuses: Option<Json>,
    /// One of [`status`].
    pub(crate) status: String,
    /// Attempts started so far.
    pub(crate) attempts: i32,
    /// When the next attempt is due (or the running attempt's lease ends).
    pub(crate) next_attempt_at: DateTime<Utc>,
    /// While an attempt holds the row: the end of its lease (also in `next_attempt_at`), the
    /// fence its recording matches. `None` between attempts and once finished; a time in the
    /// past is the lease of an attempt that was lost (the row is due again).
    pub(crate) leased_until: Option<DateTime<Utc>>,
    /// No attempt starts after this (short-lived content such as one-time codes).
    pub(crate) deadline: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt.
    pub(crate) last_status: Option<i32>,
    /// Error kind or message of the last failed attempt.
    pub(crate) last_error: Option<String>,
    /// W3C `traceparent` to continue.
    pub(crate) traceparent: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    /// When it reached a terminal status.
    pub(crate) completed_at: Option<DateTime<Utc>>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .field("next_attempt_at", &self.next_attempt_at)
            .field("leased_until", &self.leased_until)
            .finish_non_exhaustive()
    }
}
