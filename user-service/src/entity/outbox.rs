//! `outbox`: events waiting to be published by the outbox-relay.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// An outbox row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Monotonic sequence; publication order.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// Event id (= envelope `event_id` = AMQP `message_id`).
    pub id: Uuid,
    /// The user the event is about; per-aggregate order is preserved.
    pub aggregate_id: Uuid,
    /// Event type, e.g. `UserRegisteredV1`.
    pub event_type: String,
    /// Routing key on the events exchange.
    pub routing_key: String,
    /// The JSON envelope.
    pub payload: Json,
    /// AMQP headers (correlation id, traceparent).
    pub headers: Json,
    /// Insert time.
    pub created_at: DateTime<Utc>,
    /// Set once the broker confirmed the publish.
    pub published_at: Option<DateTime<Utc>>,
    /// Failed publish attempts.
    pub attempts: i32,
    /// Last publish error.
    pub last_error: Option<String>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
