//! The webhook-service's integration tests: one binary, one module per area.

mod signing_interop;
