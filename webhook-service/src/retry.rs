//! The retry policy: what one attempt's outcome means for its delivery, and when the next
//! attempt is due. Pure functions; the engine applies them.
//!
//! The schedule lists the delays **after** the first, immediate attempt: `WEBHOOK_RETRY_SCHEDULE`
//! (default Svix's `5s,5m,30m,2h,5h,10h,10h`), or the delivery's own `retry_schedule`, which
//! replaces it. A delivery makes at most `schedule length + 1` attempts. Each delay is jittered
//! by ±20 % (never negative) so deliveries failing together do not retry in lock-step.
//!
//! | outcome of the attempt | verdict |
//! |---|---|
//! | 2xx | succeeded |
//! | 410 Gone | failed at once (`gone`); a webhook's endpoint is disabled (reason `gone`) |
//! | a 4xx listed in the delivery's `fail_statuses` (else in `WEBHOOK_FAIL_STATUSES`) | failed at once (`fail_status`) |
//! | 429, 503 | retry; the wait is max(jittered delay, min(`Retry-After`, `WEBHOOK_RETRY_AFTER_CAP`)) |
//! | 408, 425, 5xx, any other 4xx | retry |
//! | 3xx (never followed) | retry (`redirect`) |
//! | timeout, connect, dns, tls, other error | retry |
//! | `blocked` (SSRF guard), `invalid_request` | failed at once (`refused`) |
//! | a retry with no attempt left | failed (`exhausted`) |
//! | a retry that would start after the delivery's `deadline` | failed (`deadline`) |
//!
//! A claimed delivery already past its deadline is failed (`deadline`) without an attempt
//! (the engine checks [`past_deadline`] before building the request and again before the call).
//!
//! **Per kind.** An `sms` delivery (a one-time code, its deadline the code's expiry) follows
//! `SMS_RETRY_SCHEDULE` (default `2s,5s,10s,30s,1m,2m,5m,5m`) and fails at once on every 4xx but
//! 408, 425 and 429 ([`sms_fail_statuses`]); 5xx, timeouts and connection errors are retried
//! until the deadline, never after it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::{
    egress::{AttemptResult, ErrorKind},
    entity::delivery,
    settings::Settings,
};

/// Largest jitter, as a fraction of the delay: ±20 %.
pub(crate) const JITTER: f64 = 0.2;

/// The retry rules of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Delays after the first attempt; one more attempt per entry.
    pub(crate) schedule: Vec<Duration>,
    /// 4xx statuses that fail at once instead of being retried.
    pub(crate) fail_statuses: Vec<u16>,
    /// The longest `Retry-After` honoured.
    pub(crate) retry_after_cap: Duration,
}

impl Policy {
    /// The policy of `delivery`: its own `retry_schedule` (milliseconds) and `fail_statuses`
    /// when set, else its kind's: for `sms` `SMS_RETRY_SCHEDULE` and [`SMS_FAIL_STATUSES`],
    /// for the others the global settings. A stored value that does not parse (never written by
    /// this service) falls back to the kind's.
    pub(crate) fn for_delivery(settings: &Settings, delivery: &delivery::Model) -> Self {
        let is_sms = delivery.kind == delivery::kind::SMS;
        let schedule = delivery
            .retry_schedule
            .as_ref()
            .and_then(|json| serde_json::from_value::<Vec<u64>>(json.clone()).ok())
            .map(|millis| millis.into_iter().map(Duration::from_millis).collect())
            .unwrap_or_else(|| {
                if is_sms {
                    settings.sms_retry_schedule.clone()
                } else {
                    settings.webhook_retry_schedule.clone()
                }
            });
        let fail_statuses = delivery
            .fail_statuses
            .as_ref()
            .and_then(|json| serde_json::from_value::<Vec<u16>>(json.clone()).ok())
            .unwrap_or_else(|| {
                if is_sms {
                    sms_fail_statuses()
                } else {
                    settings.webhook_fail_statuses.clone()
                }
            });
        Self {
            schedule,
            fail_statuses,
            retry_after_cap: settings.webhook_retry_after_cap,
        }
    }

    /// Attempts allowed in all.
    pub(crate) fn max_attempts(&self) -> usize {
        self.schedule.len() + 1
    }
}

/// The 4xx statuses an SMS gateway answers that are retried: timeout (408), too early (425),
/// too many requests (429). Every other 4xx fails an `sms` delivery at once ([`FailReason::
/// FailStatus`], 410 [`FailReason::Gone`]): the gateway refused this message (a bad number, bad
/// credentials), and sending it again cannot help before the code expires.
pub(crate) const SMS_RETRIED_4XX: [u16; 3] = [408, 425, 429];

/// The fail statuses of an `sms` delivery: every 4xx but [`SMS_RETRIED_4XX`].
pub(crate) fn sms_fail_statuses() -> Vec<u16> {
    (400..500)
        .filter(|status| !SMS_RETRIED_4XX.contains(status))
        .collect()
}

/// What an attempt produced, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// An HTTP answer, with its `Retry-After` (as a delay) if any.
    Status(u16, Option<Duration>),
    /// No usable answer.
    Error(ErrorKind),
}

impl Answer {
    /// The policy's view of an egress result.
    pub(crate) fn of(result: &AttemptResult) -> Self {
        match (result.status, &result.error) {
            (Some(status), _) => Self::Status(status, result.retry_after),
            (None, Some((kind, _))) => Self::Error(*kind),
            (None, None) => Self::Error(ErrorKind::Other),
        }
    }

    /// The attempt's `error_kind`: `None` for a success, the egress error kind, else
    /// `redirect` (3xx), `gone` (410) or `status` (any other failing status).
    pub(crate) fn error_kind(self) -> Option<&'static str> {
        match self {
            Self::Status(200..=299, _) => None,
            Self::Status(300..=399, _) => Some("redirect"),
            Self::Status(410, _) => Some("gone"),
            Self::Status(..) => Some("status"),
            Self::Error(kind) => Some(kind.as_str()),
        }
    }
}

/// Why a delivery failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailReason {
    /// 410 Gone.
    Gone,
    /// A status listed in the fail statuses.
    FailStatus,
    /// The SSRF guard or an unusable request: retrying cannot help.
    Refused,
    /// No attempt left.
    Exhausted,
    /// The next attempt would start after the deadline.
    Deadline,
}

impl FailReason {
    /// `gone`, `fail_status`, `refused`, `exhausted`, `deadline`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::FailStatus => "fail_status",
            Self::Refused => "refused",
            Self::Exhausted => "exhausted",
            Self::Deadline => "deadline",
        }
    }
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Done: a 2xx answer.
    Succeeded,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// Done, failed.
    Failed(FailReason),
}

impl Verdict {
    /// `success`, `retry` or `failed`: the `outcome` label of `webhook_attempts_total`.
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            Self::Succeeded => "success",
            Self::Retry(_) => "retry",
            Self::Failed(_) => "failed",
        }
    }
}

/// The verdict after attempt number `attempt` (1-based) answered `answer` at `now`.
///
/// `jitter` is the fraction the schedule delay is stretched by, in `[-JITTER, JITTER]`
/// ([`random_jitter`] in production; fixed in tests).
pub(crate) fn decide(
    policy: &Policy,
    attempt: u32,
    answer: Answer,
    now: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    jitter: f64,
) -> Verdict {
    let retry_after = match answer {
        Answer::Status(200..=299, _) => return Verdict::Succeeded,
        Answer::Status(410, _) => return Verdict::Failed(FailReason::Gone),
        Answer::Status(status, _) if policy.fail_statuses.contains(&status) => {
            return Verdict::Failed(FailReason::FailStatus);
        }
        Answer::Status(429 | 503, retry_after) => retry_after,
        Answer::Status(..) => None,
        Answer::Error(ErrorKind::Blocked | ErrorKind::InvalidRequest) => {
            return Verdict::Failed(FailReason::Refused);
        }
        Answer::Error(_) => None,
    };
    let index = usize::try_from(attempt.max(1) - 1).unwrap_or(usize::MAX);
    let Some(&delay) = policy.schedule.get(index) else {
        return Verdict::Failed(FailReason::Exhausted);
    };
    let mut wait = jittered(delay, jitter);
    if let Some(retry_after) = retry_after {
        wait = wait.max(retry_after.min(policy.retry_after_cap));
    }
    let at = chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| now.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if past_deadline(deadline, at) {
        return Verdict::Failed(FailReason::Deadline);
    }
    Verdict::Retry(at)
}

/// Whether an attempt starting at `at` would start after `deadline`.
pub(crate) fn past_deadline(deadline: Option<DateTime<Utc>>, at: DateTime<Utc>) -> bool {
    deadline.is_some_and(|deadline| at > deadline)
}

/// `delay` stretched by `jitter` (clamped to ±[`JITTER`]), never negative.
pub(crate) fn jittered(delay: Duration, jitter: f64) -> Duration {
    let factor = 1.0 + jitter.clamp(-JITTER, JITTER);
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay)
}

/// A uniform jitter in `[-JITTER, JITTER]`.
pub(crate) fn random_jitter() -> f64 {
    rand::rng().random_range(-JITTER..=JITTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            schedule: vec![Duration::from_secs(5), Duration::from_secs(300)],
            fail_statuses: vec![400, 422],
            retry_after_cap: Duration::from_secs(60),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("valid time")
    }

    fn secs(s: i64) -> DateTime<Utc> {
        now() + chrono::Duration::seconds(s)
    }

    #[test]
    fn outcome_table() {
        use Answer::{Error, Status};
        use FailReason::*;
        use Verdict::{Failed, Retry, Succeeded};
        let ra = |s| Some(Duration::from_secs(s));
        #[rustfmt::skip]
        let cases: &[(u32, Answer, Option<DateTime<Utc>>, Verdict)] = &[
            // 2xx, on any attempt.
            (1, Status(200, None), None, Succeeded),
            (3, Status(204, None), None, Succeeded),
            // 3xx: a failure, retried (never followed).
            (1, Status(301, None), None, Retry(secs(5))),
            (1, Status(308, None), None, Retry(secs(5))),
            // Retried statuses; Retry-After only counts for 429 and 503.
            (1, Status(408, None), None, Retry(secs(5))),
            (1, Status(425, None), None, Retry(secs(5))),
            (1, Status(429, None), None, Retry(secs(5))),
            (1, Status(429, ra(30)), None, Retry(secs(30))),
            (1, Status(503, ra(30)), None, Retry(secs(30))),
            (1, Status(429, ra(1)), None, Retry(secs(5))),
            (1, Status(429, ra(3600)), None, Retry(secs(60))),
            (1, Status(500, ra(30)), None, Retry(secs(5))),
            (1, Status(502, None), None, Retry(secs(5))),
            (2, Status(500, None), None, Retry(secs(300))),
            // Other 4xx retry unless listed.
            (1, Status(404, None), None, Retry(secs(5))),
            (1, Status(401, None), None, Retry(secs(5))),
            (1, Status(400, None), None, Failed(FailStatus)),
            (1, Status(422, None), None, Failed(FailStatus)),
            // 410 fails at once, whatever the list.
            (1, Status(410, None), None, Failed(Gone)),
            // Errors.
            (1, Error(ErrorKind::Timeout), None, Retry(secs(5))),
            (1, Error(ErrorKind::Connect), None, Retry(secs(5))),
            (1, Error(ErrorKind::Dns), None, Retry(secs(5))),
            (1, Error(ErrorKind::Tls), None, Retry(secs(5))),
            (1, Error(ErrorKind::Other), None, Retry(secs(5))),
            (1, Error(ErrorKind::Blocked), None, Failed(Refused)),
            (1, Error(ErrorKind::InvalidRequest), None, Failed(Refused)),
            // Exhausted: 2 delays = 3 attempts.
            (3, Status(500, None), None, Failed(Exhausted)),
            (3, Error(ErrorKind::Timeout), None, Failed(Exhausted)),
            (7, Status(503, ra(1)), None, Failed(Exhausted)),
            // Deadline: a retry may start at the deadline, not after it.
            (1, Status(500, None), Some(secs(5)), Retry(secs(5))),
            (1, Status(500, None), Some(secs(4)), Failed(Deadline)),
            (1, Status(429, ra(30)), Some(secs(10)), Failed(Deadline)),
            (1, Status(200, None), Some(secs(-10)), Succeeded),
        ];
        for &(attempt, answer, deadline, expected) in cases {
            let verdict = decide(&policy(), attempt, answer, now(), deadline, 0.0);
            assert_eq!(
                verdict, expected,
                "attempt {attempt}, {answer:?}, {deadline:?}"
            );
        }
    }

    #[test]
    fn an_sms_fails_on_a_4xx_but_408_425_429_and_retries_the_rest_until_its_deadline() {
        use Answer::{Error, Status};
        let policy = Policy {
            schedule: vec![Duration::from_secs(2), Duration::from_secs(5)],
            fail_statuses: sms_fail_statuses(),
            retry_after_cap: Duration::from_secs(60),
        };
        let deadline = Some(secs(4));
        let decide = |attempt, answer| decide(&policy, attempt, answer, now(), deadline, 0.0);
        for status in [400, 401, 403, 404, 422] {
            assert_eq!(
                decide(1, Status(status, None)),
                Verdict::Failed(FailReason::FailStatus),
                "{status}"
            );
        }
        assert_eq!(
            decide(1, Status(410, None)),
            Verdict::Failed(FailReason::Gone)
        );
        for answer in [
            Status(408, None),
            Status(425, None),
            Status(429, None),
            Status(500, None),
            Status(503, None),
            Error(ErrorKind::Timeout),
            Error(ErrorKind::Connect),
        ] {
            assert_eq!(decide(1, answer), Verdict::Retry(secs(2)), "{answer:?}");
            // The second delay (5 s) would start after the deadline (4 s).
            assert_eq!(
                decide(2, answer),
                Verdict::Failed(FailReason::Deadline),
                "{answer:?}"
            );
        }
        let retry_after = Status(429, Some(Duration::from_secs(30)));
        assert_eq!(
            decide(1, retry_after),
            Verdict::Failed(FailReason::Deadline)
        );
    }

    #[test]
    fn an_empty_schedule_means_one_attempt() {
        let policy = Policy {
            schedule: Vec::new(),
            ..policy()
        };
        assert_eq!(policy.max_attempts(), 1);
        let verdict = decide(&policy, 1, Answer::Status(500, None), now(), None, 0.0);
        assert_eq!(verdict, Verdict::Failed(FailReason::Exhausted));
    }

    #[test]
    fn delays_are_jittered_within_twenty_percent_and_never_negative() {
        let delay = Duration::from_secs(100);
        assert_eq!(jittered(delay, -0.2), Duration::from_secs(80));
        assert_eq!(jittered(delay, 0.2), Duration::from_secs(120));
        assert_eq!(jittered(delay, -5.0), Duration::from_secs(80), "clamped");
        assert_eq!(jittered(Duration::ZERO, -0.2), Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..200 {
            let jitter = random_jitter();
            assert!((-JITTER..=JITTER).contains(&jitter), "{jitter}");
            seen.push(jittered(delay, jitter));
        }
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 100, "jitter spreads the retries: {seen:?}");
    }

    #[test]
    fn retry_after_is_a_floor_not_jittered_below() {
        // The jittered delay (4 s) is shorter than Retry-After (5 s): Retry-After wins exactly.
        let verdict = decide(
            &policy(),
            1,
            Answer::Status(503, Some(Duration::from_secs(5))),
            now(),
            None,
            -0.2,
        );
        assert_eq!(verdict, Verdict::Retry(secs(5)));
    }

    #[test]
    fn error_kinds_and_outcomes_are_labelled() {
        assert_eq!(Answer::Status(204, None).error_kind(), None);
        assert_eq!(Answer::Status(302, None).error_kind(), Some("redirect"));
        assert_eq!(Answer::Status(410, None).error_kind(), Some("gone"));
        assert_eq!(Answer::Status(500, None).error_kind(), Some("status"));
        assert_eq!(
            Answer::Error(ErrorKind::Timeout).error_kind(),
            Some("timeout")
        );
        assert_eq!(Verdict::Succeeded.outcome(), "success");
        assert_eq!(Verdict::Retry(now()).outcome(), "retry");
        assert_eq!(Verdict::Failed(FailReason::Deadline).outcome(), "failed");
        assert_eq!(FailReason::Deadline.as_str(), "deadline");
    }

    #[test]
    fn a_huge_delay_saturates_instead_of_overflowing() {
        let policy = Policy {
            schedule: vec![Duration::from_secs(u64::MAX / 4)],
            ..policy()
        };
        let verdict = decide(&policy, 1, Answer::Status(500, None), now(), None, 0.0);
        assert!(matches!(verdict, Verdict::Retry(_)), "{verdict:?}");
    }
}
