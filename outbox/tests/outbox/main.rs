//! The outbox crate against a real PostgreSQL: its migration under concurrent first starts.

mod migration;
