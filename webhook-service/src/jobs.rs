//! Scheduled requests (`POST /v1/jobs`): a job is one HTTP request to make at `execute_at`,
//! retried by its own (or the global) schedule until `deadline`, whose outcome is reported,
//! signed, to its `notify` URL.
//!
//! - `parse`: the posted JSON (the seed's field names `verb` and `header` included) checked
//!   and normalised into a [`NewJob`], every bad field named.
//! - here: the stored form of a job (`jobs.request`, `jobs.notify`), its row and its delivery
//!   (kind `job`, id = the job's id), and the job's public status.
//! - `report`: [`notify_delivery_in`], the outcome report (`job.completed`) as a delivery of kind
//!   `notify`.

mod parse;
mod report;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub(crate) use parse::{JobInput, JobRefused, parse};
pub(crate) use report::JobReport;
pub(crate) use report::notify_delivery_in;

use crate::{
    entity::{delivery, job},
    store::NewDelivery,
};

/// A job as `POST /v1/jobs` accepted it: checked, normalised, not yet stored.
#[derive(Clone)]
pub(crate) struct NewJob {
    pub(crate) id: Uuid,
    pub(crate) stored: StoredJob,
    pub(crate) notify: Option<JobNotify>,
}

/// `jobs.request`: the normalised job, shown back by `GET /v1/jobs/{id}`.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredJob {
    /// First attempt (a past or absent `execute_at` is the time of creation).
    pub(crate) execute_at: DateTime<Utc>,
    /// No attempt starts after this.
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) request: JobRequest,
    pub(crate) retry: JobRetry,
}

/// The request a job makes.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct JobRequest {
    pub(crate) url: String,
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    pub(crate) method: String,
    /// Lower-case names, in the order given.
    pub(crate) headers: Vec<(String, String)>,
    /// Sent as-is (a JSON body was serialised and given `content-type: application/json`).
    pub(crate) body: Option<String>,
    pub(crate) timeout_ms: u64,
}

/// A job's retry policy; `None` fields follow the global settings.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct JobRetry {
    /// Delays after the first attempt.
    pub(crate) schedule_ms: Option<Vec<u64>>,
    /// 4xx statuses that fail the job at once.
    pub(crate) fail_statuses: Option<Vec<u16>>,
}

/// `jobs.notify`: where and how the outcome report is sent.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct JobNotify {
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout_ms: u64,
}

impl NewJob {
    /// The `jobs` row.
    pub(crate) fn row(
        &self,
        idempotency_key: Option<String>,
        fingerprint: String,
        notify_secret: Option<String>,
        now: DateTime<Utc>,
    ) -> job::ActiveModel {
        job::ActiveModel {
            id: Set(self.id),
            idempotency_key: Set(idempotency_key),
            request_fingerprint: Set(fingerprint),
            request: Set(serde_json::to_value(&self.stored).unwrap_or(Value::Null)),
            notify: Set(self
                .notify
                .as_ref()
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))),
            notify_secret: Set(notify_secret),
            created_at: Set(now),
        }
    }

    /// The job's call: a delivery of kind `job` with the job's id.
    pub(crate) fn delivery(&self, traceparent: Option<String>) -> NewDelivery {
        let StoredJob {
            execute_at,
            deadline,
            request,
            retry,
        } = self.stored.clone();
        NewDelivery {
            id: self.id,
            kind: delivery::kind::JOB,
            endpoint_id: None,
            message_id: None,
            job_id: Some(self.id),
            url: request.url,
            method: request.method,
            headers: request.headers,
            body: request.body,
            timeout: Duration::from_millis(request.timeout_ms),
            retry_schedule: retry
                .schedule_ms
                .map(|s| s.into_iter().map(Duration::from_millis).collect()),
            fail_statuses: retry.fail_statuses,
            execute_at,
            deadline,
            traceparent,
        }
    }
}

/// The job's normalised request as stored, if readable.
pub(crate) fn stored_job(job: &job::Model) -> Option<StoredJob> {
    serde_json::from_value(job.request.clone()).ok()
}

/// The job's `notify`, if it has one (and it is readable).
pub(crate) fn stored_notify(job: &job::Model) -> Option<JobNotify> {
    serde_json::from_value(job.notify.clone()?).ok()
}

/// SHA-256 (hex) of the request body's JSON with object keys sorted: the same job posted again
/// with the same `Idempotency-Key`, whatever its key order or spacing, has the same
/// fingerprint.
pub(crate) fn fingerprint(body: &Value) -> String {
    fn canonical(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), canonical(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    hex::encode(Sha256::digest(canonical(body).to_string().as_bytes()))
}

/// The public status of a job from its delivery and whether an attempt was recorded:
/// `scheduled` (pending, no attempt finished yet), `retrying` (pending after an attempt), or
/// the terminal `succeeded`, `failed`, `cancelled`.
pub(crate) fn public_status(delivery: &delivery::Model, attempted: bool) -> &'static str {
    match delivery.status.as_str() {
        delivery::status::PENDING if attempted => "retrying",
        delivery::status::PENDING => "scheduled",
        delivery::status::SUCCEEDED => "succeeded",
        delivery::status::CANCELLED => "cancelled",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprints_ignore_key_order_but_not_values() {
        let a = json!({"request": {"url": "http://x", "method": "POST"}, "execute_at": null});
        let b = json!({"execute_at": null, "request": {"method": "POST", "url": "http://x"}});
        let c = json!({"execute_at": null, "request": {"method": "PUT", "url": "http://x"}});
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a).len(), 64);
    }
}
