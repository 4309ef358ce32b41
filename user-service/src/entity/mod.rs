//! sea-orm entities of the user-service tables (see [`crate::migration`] for the schema).

pub(crate) mod idempotency_key;
pub(crate) mod phone_send;
pub(crate) mod phone_verification;
pub(crate) mod user;
pub(crate) mod verification;
