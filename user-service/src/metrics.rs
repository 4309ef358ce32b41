//! The user-service's Prometheus metrics (admin port), described and created at start-up
//! ([`register`]) so every series is in the first scrape: the sign-up funnel and its alerts
//! compare rates, and a missing series would read as "no data" instead of zero.
//!
//! - `user_registrations_total{outcome}`: `created`, `email_taken`, `replayed`, `error`.
//! - `verifications_total{method,outcome}`: `link`/`code` × `verified`, `already_verified`
//!   or the reason of a refusal (`invalid_token`, `verification_expired`, `wrong_code`, …).
//! - `user_time_to_verify_seconds{method}`: sign-up → verification of each verified account
//!   (buckets from a minute to a week: `common::telemetry`).
//! - `verifications_issued_total{reason}`: `registration`, `resend`, `reminder`.
//! - `verification_resends_total{outcome}`, `verification_failed_attempts_total`,
//!   `reminders_sent_total`, `pending_accounts_expired_total`,
//!   `signup_attempt_notices_total{outcome}`, `http_rate_limited_total{route}`,
//!   `password_hash_overloaded_total`, `password_hashes_in_progress`.
//!
//! The API's `http_requests_total` and `http_request_duration_seconds` (by method, route and
//! status) appear with the first request: their label values are not known in advance.

use chrono::{DateTime, Utc};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// The name of the time-to-verify histogram (its buckets are set in `common::telemetry`).
pub(crate) const TIME_TO_VERIFY: &str = common::telemetry::TIME_TO_VERIFY_METRIC;

const REGISTRATION_OUTCOMES: [&str; 4] = ["created", "email_taken", "replayed", "error"];
const METHODS: [&str; 2] = ["link", "code"];
/// The outcomes of `verifications_total` created at zero: the successes and the refusals an
/// operator watches. Others (`service_unavailable`, …) appear when they happen.
const LINK_OUTCOMES: [&str; 4] = [
    "verified",
    "already_verified",
    "invalid_token",
    "verification_expired",
];
const CODE_OUTCOMES: [&str; 8] = [
    "verified",
    "already_verified",
    "wrong_code",
    "expired",
    "locked",
    "daily_limit",
    "no_verification",
    "unknown_address",
];
const ISSUE_REASONS: [&str; 3] = ["registration", "resend", "reminder"];
const RESEND_OUTCOMES: [&str; 4] = [
    "sent",
    "rate_limited",
    "unknown_address",
    "already_verified",
];
const NOTICE_OUTCOMES: [&str; 3] = ["written", "rate_limited", "no_account"];
const RATE_LIMITED_ROUTES: [&str; 3] = [
    "/user/register",
    "/user/verify",
    "/user/verification/resend",
];

/// Describes every series and creates it at zero.
pub(crate) fn register() {
    describe_counter!(
        "user_registrations_total",
        Unit::Count,
        "POST /user/register answers: created, email_taken, replayed (Idempotency-Key), error"
    );
    describe_counter!(
        "verifications_total",
        Unit::Count,
        "POST /user/verify answers by method (link, code) and outcome (verified, already_verified, or why refused)"
    );
    describe_histogram!(
        TIME_TO_VERIFY,
        Unit::Seconds,
        "Time from sign-up to verification of each account verified"
    );
    describe_counter!(
        "verifications_issued_total",
        Unit::Count,
        "Verification links and codes issued: registration, resend, reminder"
    );
    describe_counter!(
        "verification_resends_total",
        Unit::Count,
        "POST /user/verification/resend requests by what was done"
    );
    describe_counter!(
        "verification_failed_attempts_total",
        Unit::Count,
        "Wrong verification codes entered"
    );
    describe_counter!(
        "reminders_sent_total",
        Unit::Count,
        "Verification reminders written to the outbox"
    );
    describe_counter!(
        "pending_accounts_expired_total",
        Unit::Count,
        "Unverified accounts deleted after PENDING_ACCOUNT_TTL"
    );
    describe_counter!(
        "signup_attempt_notices_total",
        Unit::Count,
        "Sign-ups for an existing address: notice written to its owner, rate-limited, no account"
    );
    describe_counter!(
        "http_rate_limited_total",
        Unit::Count,
        "API requests refused by the per-client rate limit, by route"
    );
    describe_counter!(
        "password_hash_overloaded_total",
        Unit::Count,
        "Registrations refused (503) because no hashing slot freed within HASH_QUEUE_TIMEOUT"
    );
    describe_gauge!(
        "password_hashes_in_progress",
        Unit::Count,
        "Password hashes being computed now"
    );
    for outcome in REGISTRATION_OUTCOMES {
        counter!("user_registrations_total", "outcome" => outcome).absolute(0);
    }
    for (method, outcomes) in [("link", &LINK_OUTCOMES[..]), ("code", &CODE_OUTCOMES[..])] {
        for &outcome in outcomes {
            counter!("verifications_total", "method" => method, "outcome" => outcome).absolute(0);
        }
    }
    for method in METHODS {
        // Touching a histogram registers it: it is rendered (with zero counts) from then on.
        let _ = histogram!(TIME_TO_VERIFY, "method" => method);
    }
    for reason in ISSUE_REASONS {
        counter!("verifications_issued_total", "reason" => reason).absolute(0);
    }
    for outcome in RESEND_OUTCOMES {
        counter!("verification_resends_total", "outcome" => outcome).absolute(0);
    }
    for outcome in NOTICE_OUTCOMES {
        counter!("signup_attempt_notices_total", "outcome" => outcome).absolute(0);
    }
    for route in RATE_LIMITED_ROUTES {
        counter!("http_rate_limited_total", "route" => route).absolute(0);
    }
    counter!("verification_failed_attempts_total").absolute(0);
    counter!("reminders_sent_total").absolute(0);
    counter!("pending_accounts_expired_total").absolute(0);
    counter!("password_hash_overloaded_total").absolute(0);
    gauge!("password_hashes_in_progress").set(0.0);
}

/// Records how long an account took from sign-up to verification.
pub(crate) fn verified_after(method: &'static str, created_at: DateTime<Utc>, now: DateTime<Utc>) {
    let seconds = (now - created_at).as_seconds_f64().max(0.0);
    histogram!(TIME_TO_VERIFY, "method" => method).record(seconds);
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn the_funnel_series_are_rendered_before_the_first_request() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, register);
        let text = handle.render();
        for series in [
            "user_registrations_total{outcome=\"created\"} 0",
            "verifications_total{method=\"link\",outcome=\"verified\"} 0",
            "verifications_total{method=\"code\",outcome=\"verified\"} 0",
            "user_time_to_verify_seconds_count{method=\"link\"} 0",
            "verifications_issued_total{reason=\"reminder\"} 0",
            "reminders_sent_total 0",
            "password_hashes_in_progress 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn time_to_verify_is_recorded_in_seconds() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let now = Utc::now();
        metrics::with_local_recorder(&recorder, || {
            verified_after("code", now - chrono::Duration::minutes(10), now);
        });
        let text = handle.render();
        assert!(
            text.contains("user_time_to_verify_seconds_sum{method=\"code\"} 600"),
            "{text}"
        );
    }
}
