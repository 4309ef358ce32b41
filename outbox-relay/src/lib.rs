//! outbox-relay
