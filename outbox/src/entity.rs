//! The `outbox` row as sea-orm writes it (the reader uses plain SQL, see [`crate::reader`]).

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// An outbox row. `Debug` leaves out the payload: it may carry a verification link and code.
#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub(crate) struct Model {
    /// Monotonic sequence; publication order.
    #[sea_orm(primary_key)]
    pub(crate) seq: i64,
    /// Event id (= envelope `event_id` = AMQP `message_id`).
    pub(crate) id: Uuid,
    /// The aggregate (user) the event is about; its events keep their order.
    pub(crate) aggregate_id: Uuid,
    /// Event type, e.g. `user.registered.v1`.
    pub(crate) event_type: String,
    /// Routing key on the events exchange.
    pub(crate) routing_key: String,
    /// The JSON envelope.
    pub(crate) payload: Json,
    /// `payload` with the event's secret fields blanked, swapped in when the row is marked
    /// published; `None` for an event without secrets.
    pub(crate) redacted_payload: Option<Json>,
    /// AMQP headers (trace context).
    pub(crate) headers: Json,
    /// Insert time.
    pub(crate) created_at: DateTime<Utc>,
    /// Set once the broker confirmed the publish.
    pub(crate) published_at: Option<DateTime<Utc>>,
    /// Failed publish attempts.
    pub(crate) attempts: i32,
    /// Last publish error.
    pub(crate) last_error: Option<String>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("seq", &self.seq)
            .field("id", &self.id)
            .field("aggregate_id", &self.aggregate_id)
            .field("event_type", &self.event_type)
            .field("routing_key", &self.routing_key)
            .field("payload", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("published_at", &self.published_at)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}
