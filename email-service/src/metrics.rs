//! The email-service's Prometheus metrics, described and created at start-up ([`register`]) so
//! every series is in the first scrape, before the first mail: an alert such as "mails fail"
//! or "nothing sent" must see zeros, not missing series.
//!
//! - `email_messages_consumed_total`, `email_duplicates_total`, `email_requeued_total`,
//!   `email_resent_after_crash_total`, `email_unrecorded_sends_total`,
//!   `email_ambiguous_sends_total`.
//! - `email_sent_total{event_type}`, `email_suppressed_total{reason,event_type}`.
//! - `email_send_failures_total{kind=transient|permanent}`, `email_retried_total`,
//!   `email_dead_lettered_total{category}`, `email_refused_content_total{field}`.
//! - `email_send_duration_seconds`: one SMTP transaction (or `.eml` write).
//! - `email_smtp_circuit_open` (0/1), `email_smtp_circuit_opened_total`.
//! - `email_dead_letter_queue_messages`: messages waiting in the DLQ (sampled by each
//!   `GET /metrics`; it also counts what the broker itself dead-lettered after the delivery
//!   limit, which `email_dead_lettered_total` does not see).

use common::events::{
    Event as _, SignupAttemptedV1, UserRegisteredV1, UserVerifiedV1, VerificationReminderV1,
    VerificationResentV1,
};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// The event types a mail is sent for (the `event_type` label).
const MAIL_EVENT_TYPES: [&str; 5] = [
    UserRegisteredV1::EVENT_TYPE,
    VerificationReminderV1::EVENT_TYPE,
    VerificationResentV1::EVENT_TYPE,
    UserVerifiedV1::EVENT_TYPE,
    SignupAttemptedV1::EVENT_TYPE,
];

/// Every `category` of `email_dead_lettered_total` (see `consumer::delivery`).
const DEAD_LETTER_CATEGORIES: [&str; 6] = [
    "malformed",
    "unknown_type",
    "forged",
    "unrenderable",
    "exhausted",
    "rejected",
];

/// Every `field` of `email_refused_content_total` (`content::Refused::field`).
const REFUSED_FIELDS: [&str; 3] = ["link", "code", "name"];

/// Describes every series and creates it at zero.
pub(crate) fn register() {
    describe_counter!(
        "email_messages_consumed_total",
        Unit::Count,
        "Deliveries taken from the work and retry queues"
    );
    describe_counter!(
        "email_duplicates_total",
        Unit::Count,
        "Deliveries of an event already sent, suppressed or in flight: acked without a mail"
    );
    describe_counter!(
        "email_requeued_total",
        Unit::Count,
        "Deliveries handed back to the broker because neither processing nor parking worked"
    );
    describe_counter!(
        "email_resent_after_crash_total",
        Unit::Count,
        "Mails sent again because an earlier attempt died mid-send"
    );
    describe_counter!(
        "email_unrecorded_sends_total",
        Unit::Count,
        "Mails sent whose sent state could not be recorded"
    );
    describe_counter!(
        "email_ambiguous_sends_total",
        Unit::Count,
        "SMTP transactions that failed after the data was handed over (maybe delivered)"
    );
    describe_counter!("email_sent_total", Unit::Count, "Mails sent, by event type");
    describe_counter!(
        "email_suppressed_total",
        Unit::Count,
        "Mails not sent on purpose (daily cap per address), by event type"
    );
    describe_counter!(
        "email_send_failures_total",
        Unit::Count,
        "Failed sends: transient (refused, timeout, 4xx) or permanent (5xx)"
    );
    describe_counter!(
        "email_retried_total",
        Unit::Count,
        "Mails put in a delayed retry queue after a transient failure"
    );
    describe_counter!(
        "email_dead_lettered_total",
        Unit::Count,
        "Messages moved to the dead-letter queue, by category"
    );
    describe_counter!(
        "email_refused_content_total",
        Unit::Count,
        "Events refused (dead-lettered as forged) because of a field's content"
    );
    describe_histogram!(
        "email_send_duration_seconds",
        Unit::Seconds,
        "Duration of one send (SMTP transaction or .eml file)"
    );
    describe_gauge!(
        "email_smtp_circuit_open",
        "1 while the SMTP circuit breaker pauses sending, else 0"
    );
    describe_counter!(
        "email_smtp_circuit_opened_total",
        Unit::Count,
        "Times the SMTP circuit breaker opened"
    );
    describe_gauge!(
        "email_dead_letter_queue_messages",
        Unit::Count,
        "Messages waiting in the dead-letter queue (sampled at scrape time)"
    );
    for name in [
        "email_messages_consumed_total",
        "email_duplicates_total",
        "email_requeued_total",
        "email_resent_after_crash_total",
        "email_unrecorded_sends_total",
        "email_ambiguous_sends_total",
        "email_retried_total",
        "email_smtp_circuit_opened_total",
    ] {
        counter!(name).absolute(0);
    }
    for event_type in MAIL_EVENT_TYPES {
        counter!("email_sent_total", "event_type" => event_type).absolute(0);
        counter!("email_suppressed_total", "reason" => "daily_cap", "event_type" => event_type)
            .absolute(0);
    }
    for kind in ["transient", "permanent"] {
        counter!("email_send_failures_total", "kind" => kind).absolute(0);
    }
    for category in DEAD_LETTER_CATEGORIES {
        counter!("email_dead_lettered_total", "category" => category).absolute(0);
    }
    for field in REFUSED_FIELDS {
        counter!("email_refused_content_total", "field" => field).absolute(0);
    }
    // Touching a histogram registers it: it is rendered (with zero counts) from then on.
    let _ = histogram!("email_send_duration_seconds");
    gauge!("email_smtp_circuit_open").set(0.0);
    gauge!("email_dead_letter_queue_messages").set(0.0);
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn every_series_is_rendered_before_the_first_mail() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, register);
        let text = handle.render();
        for series in [
            "email_messages_consumed_total 0",
            "email_sent_total{event_type=\"UserRegisteredV1\"} 0",
            "email_sent_total{event_type=\"UserVerifiedV1\"} 0",
            "email_send_failures_total{kind=\"transient\"} 0",
            "email_retried_total 0",
            "email_dead_lettered_total{category=\"exhausted\"} 0",
            "email_send_duration_seconds_count 0",
            "email_smtp_circuit_open 0",
            "email_smtp_circuit_opened_total 0",
            "email_dead_letter_queue_messages 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }
}
