//! The public webhook events: documented, versioned, secret-free. STUB: the catalogue only.

/// Every public event type an endpoint may subscribe to.
pub(crate) const EVENT_TYPES: &[&str] = &[
    "user.registered",
    "user.verification_reminder_sent",
    "user.verification_resent",
    "user.verified",
];
