//! sea-orm entities of the user-service tables (see [`crate::migration`] for the schema).

pub mod idempotency_key;
pub mod user;
pub mod verification;
