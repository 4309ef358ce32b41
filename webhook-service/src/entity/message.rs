//! `messages`: one public webhook event per consumed sign-up event (its id is the event id, so
//! inserting it is also the inbox check).

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// A public webhook event, as sent to every subscribed endpoint.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub(crate) struct Model {
    /// The sign-up event's id; `webhook-id` is `msg_` + its simple form.
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    /// Public event type, e.g. `user.registered`.
    pub(crate) event_type: String,
    /// The JSON body sent (public schema: no secret, ever).
    pub(crate) payload: String,
    /// W3C `traceparent` of the event, continued by the deliveries.
    pub(crate) traceparent: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
