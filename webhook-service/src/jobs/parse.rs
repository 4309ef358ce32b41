//! `POST /v1/jobs` bodies: the accepted shapes (the seed's `verb` and `header` too) and the
//! one pass that checks every field and builds a [`NewJob`].

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{JobNotify, JobRequest, JobRetry, NewJob, StoredJob};
use crate::{
    api::{
        error::FieldErrors,
        fields::checked_url,
        headers::{HeaderUse, custom_headers},
    },
    egress::Egress,
    settings::Settings,
};

/// How far ahead a job may be scheduled.
const MAX_SCHEDULE_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(366);
/// Most retry delays of one job (as `WEBHOOK_RETRY_SCHEDULE`).
const MAX_RETRY_DELAYS: usize = 50;
/// Longest single retry delay.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The methods a job may use.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// The body of `POST /v1/jobs`. Unknown fields are refused, so a typo is reported.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobInput {
    /// RFC 3339; absent or past: now. At most a year ahead.
    #[serde(default)]
    #[schema(format = DateTime)]
    execute_at: Option<String>,
    request: RequestInput,
    /// Where the signed outcome report (`job.completed`) is POSTed.
    #[serde(default)]
    notify: Option<NotifyInput>,
    #[serde(default)]
    retry: Option<RetryInput>,
    /// RFC 3339: no attempt starts after it.
    #[serde(default)]
    #[schema(format = DateTime)]
    deadline: Option<String>,
}

/// The request to make.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestInput {
    url: String,
    /// `GET`, `POST` (default), `PUT`, `PATCH`, `DELETE`, `HEAD`. Alias `verb`.
    #[serde(default, alias = "verb")]
    method: Option<String>,
    /// An object name → value, or a list of `[name, value]`. Alias `header`.
    #[serde(default, alias = "header")]
    #[schema(value_type = Option<Object>)]
    headers: Option<HeadersInput>,
    /// A string is sent as-is; any other JSON value is sent serialised, with
    /// `content-type: application/json` unless a content type is given.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    body: Option<Value>,
    /// Milliseconds, or a duration such as `"10s"`; at most `WEBHOOK_MAX_REQUEST_TIMEOUT`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    timeout: Option<Value>,
}

/// Where the outcome report goes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyInput {
    url: String,
    /// Like the request's (no `content-type`, no `webhook-*`). Alias `header`.
    #[serde(default, alias = "header")]
    #[schema(value_type = Option<Object>)]
    headers: Option<HeadersInput>,
    /// Milliseconds or a duration such as `"10s"`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    timeout: Option<Value>,
}

/// The job's retry policy (else the global one).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryInput {
    /// Delays after the first attempt: durations such as `"5s"` or milliseconds.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    schedule: Option<Vec<Value>>,
    /// The same in milliseconds (instead of `schedule`).
    #[serde(default)]
    delays_ms: Option<Vec<u64>>,
    /// 4xx statuses that fail the job at once.
    #[serde(default)]
    fail_statuses: Option<Vec<u16>>,
    /// Attempts in all, the first included: truncates the schedule.
    #[serde(default)]
    max_attempts: Option<u32>,
}

/// Custom headers: `{"name": "value"}` or `[["name", "value"], …]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum HeadersInput {
    Map(BTreeMap<String, String>),
    List(Vec<(String, String)>),
}

impl HeadersInput {
    fn into_pairs(self) -> Vec<(String, String)> {
        match self {
            Self::Map(map) => map.into_iter().collect(),
            Self::List(list) => list,
        }
    }
}

/// Why a job was not accepted.
#[derive(Debug)]
pub(crate) enum JobRefused {
    /// The request body is larger than `WEBHOOK_MAX_BODY_BYTES`.
    BodyTooLarge { limit: usize },
    /// Fields break the rules.
    Invalid(FieldErrors),
}

/// Checks every field of `input` and builds the job, or names every bad field.
///
/// # Errors
/// [`JobRefused`].
pub(crate) fn parse(
    input: JobInput,
    settings: &Settings,
    egress: &Egress,
    now: DateTime<Utc>,
) -> Result<NewJob, JobRefused> {
    let mut errors = FieldErrors::default();
    let execute_at =
        time(input.execute_at.as_deref(), "execute_at", &mut errors).map_or(now, |at| at.max(now));
    if execute_at > now + MAX_SCHEDULE_AHEAD {
        errors.add("execute_at", "too_far", "must be at most a year ahead");
    }
    let deadline = time(input.deadline.as_deref(), "deadline", &mut errors);
    if deadline.is_some_and(|deadline| deadline <= execute_at) {
        errors.add("deadline", "before_execute_at", "must be after execute_at");
    }

    let request = input.request;
    let url = checked_url(&request.url, "request.url", egress, &mut errors);
    let method = request
        .method
        .map_or_else(|| "POST".to_owned(), |m| m.to_ascii_uppercase());
    if !METHODS.contains(&method.as_str()) {
        errors.add(
            "request.method",
            "invalid_method",
            format!("must be one of {}", METHODS.join(", ")),
        );
    }
    let mut headers = custom_headers(
        request
            .headers
            .map(HeadersInput::into_pairs)
            .unwrap_or_default(),
        HeaderUse::JobRequest,
        "request.headers",
        &mut errors,
    );
    let body = match request.body {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(json) => {
            if !headers.iter().any(|(name, _)| name == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Some(json.to_string())
        }
    };
    let limit = settings.webhook_max_body_bytes;
    if body.as_ref().is_some_and(|body| body.len() > limit) {
        return Err(JobRefused::BodyTooLarge { limit });
    }
    let timeout = request_timeout(
        request.timeout.as_ref(),
        "request.timeout",
        settings,
        &mut errors,
    );

    let notify = input.notify.map(|notify| JobNotify {
        url: checked_url(&notify.url, "notify.url", egress, &mut errors),
        headers: custom_headers(
            notify
                .headers
                .map(HeadersInput::into_pairs)
                .unwrap_or_default(),
            HeaderUse::Notify,
            "notify.headers",
            &mut errors,
        ),
        timeout_ms: millis(request_timeout(
            notify.timeout.as_ref(),
            "notify.timeout",
            settings,
            &mut errors,
        )),
    });
    let retry = input
        .retry
        .map(|retry| retry_policy(retry, settings, &mut errors))
        .unwrap_or_default();

    if !errors.is_empty() {
        return Err(JobRefused::Invalid(errors));
    }
    Ok(NewJob {
        id: Uuid::now_v7(),
        stored: StoredJob {
            execute_at,
            deadline,
            request: JobRequest {
                url,
                method,
                headers,
                body,
                timeout_ms: millis(timeout),
            },
            retry,
        },
        notify,
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An optional RFC 3339 time.
fn time(text: Option<&str>, field: &str, errors: &mut FieldErrors) -> Option<DateTime<Utc>> {
    let text = text?;
    match DateTime::parse_from_rfc3339(text) {
        Ok(time) => Some(time.with_timezone(&Utc)),
        Err(_) => {
            errors.add(
                field,
                "invalid_time",
                "must be an RFC 3339 time, e.g. 2030-01-01T12:00:00Z",
            );
            None
        }
    }
}

/// Milliseconds (a number) or a duration text such as `"10s"`.
pub(crate) fn duration(value: &Value) -> Option<Duration> {
    match value {
        Value::Number(ms) => ms.as_u64().map(Duration::from_millis),
        Value::String(text) => humantime::parse_duration(text.trim()).ok(),
        _ => None,
    }
}

/// A timeout: `WEBHOOK_REQUEST_TIMEOUT` when absent, positive and at most
/// `WEBHOOK_MAX_REQUEST_TIMEOUT`.
fn request_timeout(
    value: Option<&Value>,
    field: &str,
    settings: &Settings,
    errors: &mut FieldErrors,
) -> Duration {
    let Some(value) = value else {
        return settings.webhook_request_timeout;
    };
    let max = settings.webhook_max_request_timeout;
    match duration(value) {
        Some(timeout) if !timeout.is_zero() && timeout <= max => timeout,
        Some(_) => {
            errors.add(
                field,
                "out_of_range",
                format!(
                    "must be positive and at most {} (WEBHOOK_MAX_REQUEST_TIMEOUT)",
                    humantime::format_duration(max)
                ),
            );
            settings.webhook_request_timeout
        }
        None => {
            errors.add(
                field,
                "invalid_duration",
                "must be milliseconds or a duration such as \"10s\"",
            );
            settings.webhook_request_timeout
        }
    }
}

fn retry_policy(retry: RetryInput, settings: &Settings, errors: &mut FieldErrors) -> JobRetry {
    let given = match (retry.schedule, retry.delays_ms) {
        (Some(_), Some(_)) => {
            errors.add("retry", "conflict", "give schedule or delays_ms, not both");
            None
        }
        (Some(schedule), None) => Some(
            schedule
                .iter()
                .enumerate()
                .map(|(i, value)| {
                    duration(value).unwrap_or_else(|| {
                        errors.add(
                            format!("retry.schedule.{i}"),
                            "invalid_duration",
                            "must be milliseconds or a duration such as \"5s\"",
                        );
                        Duration::ZERO
                    })
                })
                .collect::<Vec<_>>(),
        ),
        (None, Some(delays)) => Some(delays.into_iter().map(Duration::from_millis).collect()),
        (None, None) => None,
    };
    if let Some(schedule) = &given {
        if schedule.len() > MAX_RETRY_DELAYS {
            errors.add(
                "retry.schedule",
                "too_long",
                format!("at most {MAX_RETRY_DELAYS} delays"),
            );
        }
        if schedule.iter().any(|delay| *delay > MAX_RETRY_DELAY) {
            errors.add(
                "retry.schedule",
                "out_of_range",
                "each delay must be at most 7 days",
            );
        }
    }
    let schedule = match retry.max_attempts {
        None => given,
        Some(0) => {
            errors.add("retry.max_attempts", "out_of_range", "must be at least 1");
            given
        }
        Some(max) => {
            let mut schedule = given.unwrap_or_else(|| settings.webhook_retry_schedule.clone());
            schedule.truncate(usize::try_from(max - 1).unwrap_or(usize::MAX));
            Some(schedule)
        }
    };
    if let Some(statuses) = &retry.fail_statuses
        && statuses.iter().any(|s| !(400..500).contains(s))
    {
        errors.add(
            "retry.fail_statuses",
            "invalid_status",
            "each must be a 4xx status",
        );
    }
    JobRetry {
        schedule_ms: schedule.map(|s| s.into_iter().map(millis).collect()),
        fail_statuses: retry.fail_statuses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_are_milliseconds_or_text() {
        assert_eq!(duration(&json!(1500)), Some(Duration::from_millis(1500)));
        assert_eq!(duration(&json!("10s")), Some(Duration::from_secs(10)));
        assert_eq!(duration(&json!("1m 5s")), Some(Duration::from_secs(65)));
        assert_eq!(duration(&json!("soon")), None);
        assert_eq!(duration(&json!(-1)), None);
        assert_eq!(duration(&json!(true)), None);
    }

    fn policy(input: Value) -> (JobRetry, FieldErrors) {
        let settings = Settings {
            webhook_retry_schedule: vec![Duration::from_secs(1); 5],
            ..Settings::default()
        };
        let mut errors = FieldErrors::default();
        let input: RetryInput = serde_json::from_value(input).expect("retry input");
        (retry_policy(input, &settings, &mut errors), errors)
    }

    #[test]
    fn max_attempts_truncates_the_given_or_the_global_schedule() {
        let (retry, errors) = policy(json!({"schedule": ["5s", 60000, "2m"], "max_attempts": 3}));
        assert!(errors.is_empty());
        assert_eq!(retry.schedule_ms, Some(vec![5000, 60000]));
        let (retry, _) = policy(json!({"max_attempts": 2}));
        assert_eq!(retry.schedule_ms, Some(vec![1000]));
        let (retry, _) = policy(json!({"max_attempts": 1}));
        assert_eq!(retry.schedule_ms, Some(vec![]));
        let (retry, _) = policy(json!({"delays_ms": [10, 20]}));
        assert_eq!(retry.schedule_ms, Some(vec![10, 20]));
        let (retry, _) = policy(json!({"fail_statuses": [400, 422]}));
        assert_eq!(retry.schedule_ms, None);
        assert_eq!(retry.fail_statuses, Some(vec![400, 422]));
    }

    #[test]
    fn bad_retry_fields_are_named() {
        let details = |input| policy(input).1.to_value();
        assert!(details(json!({"schedule": ["x"]}))["retry.schedule.0"].is_array());
        assert!(details(json!({"schedule": ["8d"]}))["retry.schedule"].is_array());
        assert!(details(json!({"schedule": [], "delays_ms": []}))["retry"].is_array());
        assert!(details(json!({"max_attempts": 0}))["retry.max_attempts"].is_array());
        assert!(details(json!({"fail_statuses": [500]}))["retry.fail_statuses"].is_array());
    }
}
