//! `phone_sends`: one row per send request that got past input validation, sent or blocked.
//! The velocity limits count these rows; a blocked row never has an event.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// A send request.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "phone_sends")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    /// The verification whose code was sent; `None` when none was (blocked, unknown number).
    pub(crate) verification_id: Option<Uuid>,
    /// E.164.
    pub(crate) phone: String,
    /// The number without its last `PHONE_PREFIX_STRIP_DIGITS` digits.
    pub(crate) prefix: String,
    /// The client address as the rate limits see it.
    pub(crate) client_ip: String,
    pub(crate) created_at: DateTime<Utc>,
    /// 1 for a verification's first SMS, 2 for the first resend, …; `None` when nothing was sent.
    pub(crate) send_number: Option<i32>,
    /// Why nothing was sent (`crate::phone::SendBlock`); `None` for a sent SMS.
    pub(crate) blocked_reason: Option<String>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
