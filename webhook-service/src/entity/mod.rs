//! sea-orm entities of the webhook-service tables (see the migration for the schema).

pub(crate) mod attempt;
pub(crate) mod delivery;
pub(crate) mod endpoint;
pub(crate) mod job;
pub(crate) mod message;
