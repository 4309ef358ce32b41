//! sea-orm entities of the user-service tables (see [`crate::migration`] for the schema).

pub(crate) mod idempotency_key;
// Public (as before) until the outbox moves to its own crate.
pub mod outbox;
pub(crate) mod user;
pub(crate) mod verification;
