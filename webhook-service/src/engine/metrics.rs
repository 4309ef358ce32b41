//! The engine's Prometheus metrics, registered (at zero) when the engine starts so every series
//! exists from the first scrape, and alert rules never see a missing series as "no problem".
//!
//! - `webhook_attempts_total{kind,outcome}`: attempts made; `outcome` is `success`, `retry` or
//!   `failed` (the attempt's verdict). Deliveries ended without a call (deadline passed,
//!   endpoint disabled or deleted) are counted by `webhook_deliveries_skipped_total{reason}`.
//! - `webhook_attempt_duration_seconds{kind}`: duration of each call.
//! - `webhook_due_backlog`: pending deliveries due now (sampled every few seconds).
//! - `webhook_oldest_due_age_seconds`: how late the most overdue pending delivery is.
//! - `webhook_endpoints_disabled_total{reason}`: endpoints disabled by the engine (`gone`,
//!   `failing`).
//! - `webhook_lease_put_backs_total`: claimed deliveries put back uncalled because too little
//!   of their lease was left (building the request was slow: a database under strain).

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::entity::delivery;

const KINDS: &[&str] = &[
    delivery::kind::WEBHOOK,
    delivery::kind::JOB,
    delivery::kind::NOTIFY,
    delivery::kind::SMS,
];
const OUTCOMES: &[&str] = &["success", "retry", "failed"];
const SKIP_REASONS: &[&str] = &[
    "deadline",
    "endpoint_disabled",
    "endpoint_deleted",
    "message_missing",
    "invalid_secret",
    crate::sms::UNREADABLE,
];
const DISABLE_REASONS: &[&str] = &["gone", "failing"];

/// Describes every series and creates it at zero.
pub(super) fn register() {
    describe_counter!(
        "webhook_attempts_total",
        Unit::Count,
        "Outbound calls made, by delivery kind and verdict (success, retry, failed)"
    );
    describe_histogram!(
        "webhook_attempt_duration_seconds",
        Unit::Seconds,
        "Duration of each outbound call"
    );
    describe_counter!(
        "webhook_deliveries_skipped_total",
        Unit::Count,
        "Deliveries ended without a call (deadline passed, endpoint disabled or deleted)"
    );
    describe_gauge!(
        "webhook_due_backlog",
        Unit::Count,
        "Pending deliveries due now"
    );
    describe_gauge!(
        "webhook_oldest_due_age_seconds",
        Unit::Seconds,
        "How long the most overdue pending delivery has been due"
    );
    describe_counter!(
        "webhook_endpoints_disabled_total",
        Unit::Count,
        "Endpoints disabled by the engine (gone: 410; failing: WEBHOOK_DISABLE_AFTER)"
    );
    describe_counter!(
        "webhook_lease_put_backs_total",
        Unit::Count,
        "Claimed deliveries put back uncalled: too little of the lease was left for the call"
    );
    describe_counter!(
        "webhook_purged_total",
        Unit::Count,
        "Rows deleted by the retention task (WEBHOOK_ATTEMPT_RETENTION)"
    );
    for &kind in KINDS {
        for &outcome in OUTCOMES {
            counter!("webhook_attempts_total", "kind" => kind, "outcome" => outcome).absolute(0);
        }
        // Touching the histogram registers it; it is rendered once it has a sample.
        let _ = histogram!("webhook_attempt_duration_seconds", "kind" => kind);
    }
    for &reason in SKIP_REASONS {
        counter!("webhook_deliveries_skipped_total", "reason" => reason).absolute(0);
    }
    for &reason in DISABLE_REASONS {
        counter!("webhook_endpoints_disabled_total", "reason" => reason).absolute(0);
    }
    counter!("webhook_purged_total").absolute(0);
    counter!("webhook_lease_put_backs_total").absolute(0);
    gauge!("webhook_due_backlog").set(0.0);
    gauge!("webhook_oldest_due_age_seconds").set(0.0);
}

/// The `kind` label of a stored kind (bounded: anything else is `other`).
pub(super) fn kind_label(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|&&k| k == kind)
        .copied()
        .unwrap_or("other")
}

/// One call made.
pub(super) fn attempt(kind: &str, outcome: &'static str, duration: Duration) {
    let kind = kind_label(kind);
    counter!("webhook_attempts_total", "kind" => kind, "outcome" => outcome).increment(1);
    histogram!("webhook_attempt_duration_seconds", "kind" => kind).record(duration.as_secs_f64());
}

/// A delivery ended without a call.
pub(super) fn skipped(reason: &'static str) {
    counter!("webhook_deliveries_skipped_total", "reason" => reason).increment(1);
}

/// A claimed delivery put back uncalled, its lease too short for the call.
pub(super) fn lease_put_back() {
    counter!("webhook_lease_put_backs_total").increment(1);
}

/// An endpoint disabled.
pub(super) fn endpoint_disabled(reason: &'static str) {
    counter!("webhook_endpoints_disabled_total", "reason" => reason).increment(1);
}

/// Rows deleted by retention.
pub(super) fn purged(rows: u64) {
    counter!("webhook_purged_total").increment(rows);
}

/// The sampled backlog.
pub(super) fn backlog(due: i64, oldest_due_age: Duration) {
    #[allow(
        clippy::cast_precision_loss,
        reason = "a gauge; exact above 2^53 rows is moot"
    )]
    gauge!("webhook_due_backlog").set(due as f64);
    gauge!("webhook_oldest_due_age_seconds").set(oldest_due_age.as_secs_f64());
}
