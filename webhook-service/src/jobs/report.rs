//! The outcome report of a job (`job.completed`), sent to its `notify` URL as a delivery of kind
//! `notify`: POST, JSON, signed by the engine with the job's `notify_secret` (Standard Webhooks
//! headers), retried with the global schedule, no deadline.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::stored_notify;
use crate::{
    entity::{attempt, delivery, job},
    store::NewDelivery,
};

/// The report's `type`.
pub(crate) const JOB_COMPLETED: &str = "job.completed";

/// Most bytes of the last response carried by a report.
pub(crate) const MAX_REPORT_RESPONSE_BYTES: usize = 2048;

/// The body POSTed to a job's `notify` URL once the job is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct JobReport {
    /// Always `job.completed`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) job_id: Uuid,
    /// `succeeded`, `failed` or `cancelled`.
    pub(crate) status: String,
    /// Attempts made.
    pub(crate) attempts: i32,
    /// HTTP status of the last attempt, if an answer came.
    pub(crate) last_status: Option<i32>,
    /// Duration of the last attempt.
    pub(crate) duration_ms: Option<i64>,
    /// The start of the last response's body (at most 2 kB).
    pub(crate) response: Option<String>,
    /// Why the last attempt got no usable answer (`timeout`, `connect`, …).
    pub(crate) error_kind: Option<String>,
    pub(crate) completed_at: DateTime<Utc>,
}

/// The `notify` delivery reporting `delivery`'s terminal outcome (succeeded, failed, cancelled)
/// with its last attempt's duration, response and error kind, or `None` when the job has no
/// `notify` (or the delivery is not terminal). Called in the transaction that makes the job's
/// delivery terminal, with the delivery as it is after that change.
pub(crate) fn notify_delivery_after(
    job: &job::Model,
    delivery: &delivery::Model,
    last_attempt: Option<&attempt::Model>,
    now: DateTime<Utc>,
) -> Option<NewDelivery> {
    let notify = stored_notify(job)?;
    let report = report(job, delivery, last_attempt, now)?;
    let body = serde_json::to_string(&report).ok()?;
    let mut headers = notify.headers;
    headers.push(("content-type".into(), "application/json".into()));
    Some(NewDelivery {
        id: Uuid::now_v7(),
        kind: delivery::kind::NOTIFY,
        endpoint_id: None,
        message_id: None,
        job_id: Some(job.id),
        url: notify.url,
        method: "POST".into(),
        headers,
        body: Some(body),
        timeout: Duration::from_millis(notify.timeout_ms),
        retry_schedule: None,
        fail_statuses: None,
        execute_at: now,
        deadline: None,
        traceparent: delivery.traceparent.clone(),
    })
}

/// [`notify_delivery_after`] with the last attempt read from `conn` (the caller's transaction).
///
/// # Errors
/// Database errors.
pub(crate) async fn notify_delivery_in(
    conn: &impl ConnectionTrait,
    job: &job::Model,
    delivery: &delivery::Model,
    now: DateTime<Utc>,
) -> Result<Option<NewDelivery>, DbErr> {
    if job.notify.is_none() {
        return Ok(None);
    }
    let last = attempt::Entity::find()
        .filter(attempt::Column::DeliveryId.eq(delivery.id))
        .order_by_desc(attempt::Column::Id)
        .one(conn)
        .await?;
    Ok(notify_delivery_after(job, delivery, last.as_ref(), now))
}

/// The report of a terminal delivery; `None` while it is pending.
pub(crate) fn report(
    job: &job::Model,
    delivery: &delivery::Model,
    last_attempt: Option<&attempt::Model>,
    now: DateTime<Utc>,
) -> Option<JobReport> {
    let status = match delivery.status.as_str() {
        delivery::status::SUCCEEDED => "succeeded",
        delivery::status::FAILED => "failed",
        delivery::status::CANCELLED => "cancelled",
        _ => return None,
    };
    Some(JobReport {
        kind: JOB_COMPLETED.into(),
        job_id: job.id,
        status: status.into(),
        attempts: delivery.attempts,
        last_status: delivery.last_status,
        duration_ms: last_attempt.map(|a| a.duration_ms),
        response: last_attempt
            .and_then(|a| a.response_body.as_deref())
            .filter(|body| !body.is_empty())
            .map(|body| crate::egress::truncate(body, MAX_REPORT_RESPONSE_BYTES).to_owned()),
        error_kind: last_attempt.and_then(|a| a.error_kind.clone()),
        completed_at: delivery.completed_at.unwrap_or(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(notify: Option<serde_json::Value>) -> job::Model {
        job::Model {
            id: Uuid::now_v7(),
            idempotency_key: None,
            request_fingerprint: String::new(),
            request: json!({}),
            notify,
            notify_secret: Some("whsec_x".into()),
            created_at: Utc::now(),
        }
    }

    fn delivery(status: &str, attempts: i32, last_status: Option<i32>) -> delivery::Model {
        let now = Utc::now();
        delivery::Model {
            id: Uuid::now_v7(),
            kind: delivery::kind::JOB.into(),
            endpoint_id: None,
            message_id: None,
            job_id: None,
            url: "http://x/".into(),
            method: "POST".into(),
            headers: json!([]),
            body: None,
            timeout_ms: 1000,
            retry_schedule: None,
            fail_statuses: None,
            status: status.into(),
            attempts,
            next_attempt_at: now,
            leased_until: None,
            deadline: None,
            last_status,
            last_error: None,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            created_at: now,
            updated_at: now,
            completed_at: Some(now),
        }
    }

    fn attempt(body: &str) -> attempt::Model {
        attempt::Model {
            id: 1,
            delivery_id: Uuid::nil(),
            attempt: 2,
            started_at: Utc::now(),
            duration_ms: 42,
            url: "http://x/".into(),
            status: Some(503),
            error_kind: None,
            error: None,
            response_headers: None,
            response_body: Some(body.into()),
        }
    }

    #[test]
    fn no_notify_no_report() {
        let now = Utc::now();
        assert!(
            notify_delivery_after(&job(None), &delivery("failed", 1, None), None, now).is_none()
        );
    }

    #[test]
    fn the_report_is_a_signed_post_of_the_outcome() {
        let now = Utc::now();
        let notify = json!({"url": "http://n/", "headers": [["x-a", "1"]], "timeout_ms": 3000});
        let job = job(Some(notify));
        let done = delivery("failed", 3, Some(503));
        let long = "é".repeat(2000);
        let last = attempt(&long);
        let new = notify_delivery_after(&job, &done, Some(&last), now).expect("report");
        assert_eq!(new.kind, delivery::kind::NOTIFY);
        assert_eq!(new.job_id, Some(job.id));
        assert_eq!(
            (new.url.as_str(), new.method.as_str()),
            ("http://n/", "POST")
        );
        assert_eq!(new.timeout, Duration::from_secs(3));
        assert!(new.retry_schedule.is_none() && new.deadline.is_none());
        assert!(
            new.headers
                .contains(&("content-type".into(), "application/json".into()))
        );
        assert_eq!(new.traceparent, done.traceparent);
        let report: JobReport =
            serde_json::from_str(new.body.as_deref().expect("body")).expect("report JSON");
        assert_eq!(report.kind, "job.completed");
        assert_eq!(report.status, "failed");
        assert_eq!((report.attempts, report.last_status), (3, Some(503)));
        assert_eq!(report.duration_ms, Some(42));
        let response = report.response.expect("response");
        assert!(response.len() <= MAX_REPORT_RESPONSE_BYTES && response.starts_with('é'));
        assert!(notify_delivery_after(&job, &delivery("pending", 1, None), None, now).is_none());
    }
}
