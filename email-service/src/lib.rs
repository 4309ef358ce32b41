//! email-service
