//! `/v1/jobs`: schedule a request (`POST`, with `Idempotency-Key`), read its state and attempt
//! log, cancel it. The job domain (parsing, its delivery, the outcome report) is
//! `crate::jobs`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use common::trace::TraceContext;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Statement, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    error::{ApiError, ApiJson, ApiPath, ErrorBody, is_unique_violation},
    fields,
    headers::redacted,
    messages::{AttemptOut, attempts_of},
};
use crate::{
    egress::redact_url,
    entity::{delivery, job},
    jobs::{self, JobInput, JobRefused, JobRetry},
    signing::Secret,
    state::AppState,
    store,
};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// 202 answer of `POST /v1/jobs` (and of its replays with the same `Idempotency-Key`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct JobCreated {
    id: Uuid,
    /// `scheduled`.
    status: String,
    execute_at: DateTime<Utc>,
    /// The `whsec_…` secret the outcome report is signed with (Standard Webhooks); only when
    /// `notify` was given, and only in this answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_secret: Option<String>,
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct JobOut {
    id: Uuid,
    /// `scheduled`, `retrying`, `succeeded`, `failed` or `cancelled`.
    status: String,
    execute_at: DateTime<Utc>,
    /// When the next attempt is due (while pending).
    next_attempt_at: Option<DateTime<Utc>>,
    deadline: Option<DateTime<Utc>>,
    attempts_count: i32,
    /// The request; header values that look like credentials, and a password in the URL, are
    /// shown as `***`.
    #[schema(value_type = Object)]
    request: Value,
    #[schema(value_type = Object)]
    retry: Value,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    attempts: Vec<AttemptOut>,
    notify: Option<NotifyOut>,
}

/// The outcome report's delivery.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct NotifyOut {
    /// Userinfo and query values redacted.
    url: String,
    /// `waiting` (the job is not over), then `pending`, `succeeded`, `failed`.
    status: String,
    attempts: i32,
}

/// The optional `Idempotency-Key`: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidHeader {
            name: "Idempotency-Key",
            reason: "must be 1 to 255 visible ASCII characters",
        });
    }
    Ok(Some(text.to_owned()))
}

/// The job created with `key`, if any.
async fn find_by_key(
    conn: &impl ConnectionTrait,
    key: &str,
) -> Result<Option<job::Model>, ApiError> {
    Ok(job::Entity::find()
        .filter(job::Column::IdempotencyKey.eq(key))
        .one(conn)
        .await?)
}

/// The first answer again if `fingerprint` is the stored request's, else 422.
fn replay(existing: &job::Model, fingerprint: &str) -> Result<Response, ApiError> {
    if existing.request_fingerprint != fingerprint {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let execute_at = jobs::stored_job(existing).map_or(existing.created_at, |s| s.execute_at);
    let mut answer = created(existing.id, execute_at, existing.notify_secret.clone());
    answer
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(answer)
}

fn created(id: Uuid, execute_at: DateTime<Utc>, notify_secret: Option<String>) -> Response {
    let body = JobCreated {
        id,
        status: "scheduled".into(),
        execute_at,
        notify_secret,
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// `POST /v1/jobs`: the job row and its delivery commit together.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobInput,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "The same key and body answer the first 202 again, creating nothing")),
    responses(
        (status = 202, description = "Scheduled", body = JobCreated),
        (status = 400, description = "`malformed_json` or `invalid_header`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`validation_failed` (per-field details), `body_too_large`, `idempotency_key_reused`", body = ErrorBody),
    ))]
#[tracing::instrument(name = "create_job", skip_all, fields(job_id))]
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let fingerprint = jobs::fingerprint(&body);
    if let Some(key) = &key
        && let Some(existing) = find_by_key(&state.db, key).await?
    {
        return replay(&existing, &fingerprint);
    }
    let input: JobInput = serde_json::from_value(body).map_err(|error| {
        ApiError::Validation(json!({
            "body": [{ "code": "invalid_shape", "message": error.to_string() }]
        }))
    })?;
    let now = Utc::now();
    let job =
        jobs::parse(input, &state.settings, &state.egress, now).map_err(
            |refused| match refused {
                JobRefused::BodyTooLarge { limit } => ApiError::BodyTooLarge { limit },
                JobRefused::Invalid(errors) => errors.into(),
            },
        )?;
    tracing::Span::current().record("job_id", tracing::field::display(job.id));
    let notify_secret = job.notify.is_some().then(|| Secret::generate().to_text());
    let trace = TraceContext::from_headers(&headers);

    let txn = state.db.begin().await?;
    let row = job.row(key.clone(), fingerprint.clone(), notify_secret.clone(), now);
    if let Err(error) = job::Entity::insert(row).exec_without_returning(&txn).await {
        drop(txn);
        // A concurrent request with the same key committed first: answer like it.
        if is_unique_violation(&error)
            && let Some(key) = &key
            && let Some(existing) = find_by_key(&state.db, key).await?
        {
            return replay(&existing, &fingerprint);
        }
        return Err(error.into());
    }
    store::insert(&txn, vec![job.delivery(Some(trace.traceparent))]).await?;
    txn.commit().await?;
    state.due.wake();
    metrics::counter!("webhook_jobs_created_total").increment(1);
    tracing::info!(execute_at = %job.stored.execute_at, "job scheduled");
    Ok(created(job.id, job.stored.execute_at, notify_secret))
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job, its attempt log and its report's state", body = JobOut),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<JobOut>, ApiError> {
    let job = job::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    // Retention purges the delivery first, then the job: in between, the job is gone too.
    let call = delivery::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    let attempts = attempts_of(&state.db, id).await?;
    let stored = jobs::stored_job(&job)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("job {id}: unreadable request")))?;
    let notify = match jobs::stored_notify(&job) {
        None => None,
        Some(notify) => {
            let report = delivery::Entity::find()
                .filter(delivery::Column::JobId.eq(id))
                .filter(delivery::Column::Kind.eq(delivery::kind::NOTIFY))
                .order_by_desc(delivery::Column::CreatedAt)
                .one(&state.db)
                .await?;
            Some(NotifyOut {
                url: redact_url(&notify.url),
                status: report
                    .as_ref()
                    .map_or_else(|| "waiting".to_owned(), |r| r.status.clone()),
                attempts: report.map_or(0, |r| r.attempts),
            })
        }
    };
    let mut request = stored.request;
    request.url = fields::shown_url(&request.url);
    request.headers = redacted(&request.headers);
    let pending = call.status == delivery::status::PENDING;
    Ok(Json(JobOut {
        id,
        status: jobs::public_status(&call, !attempts.is_empty()).into(),
        execute_at: stored.execute_at,
        next_attempt_at: pending.then_some(call.next_attempt_at),
        deadline: stored.deadline,
        attempts_count: call.attempts,
        request: serde_json::to_value(request).map_err(anyhow::Error::from)?,
        retry: serde_json::to_value::<JobRetry>(stored.retry).map_err(anyhow::Error::from)?,
        last_status: call.last_status,
        last_error: call.last_error,
        created_at: job.created_at,
        completed_at: call.completed_at,
        attempts,
        notify,
    }))
}

/// `POST /v1/jobs/{id}/cancel`: only while pending and no attempt is in flight (a cancel
/// cannot stop a call under way, so it does not claim to); the outcome report (`cancelled`) is
/// created in the same transaction.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "`{id, status: \"cancelled\"}`", body = Object),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_pending`: already finished or cancelled; `in_flight`: an attempt is calling the target now, retry once it has ended", body = ErrorBody),
    ))]
#[tracing::instrument(name = "cancel_job", skip_all, fields(job_id = %id))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let txn = state.db.begin().await?;
    let job = job::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    // The status and lease guards decide races with the engine and with other cancels: one
    // wins. A row whose lease is over (its attempt was lost) is not in flight.
    let backend = txn.get_database_backend();
    let cancelled = txn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "UPDATE deliveries SET status = $1, completed_at = $2, updated_at = $2, \
                 leased_until = NULL WHERE id = $3 AND kind = $4 AND status = $5 AND {}",
                delivery::not_in_flight(backend, "$2")
            ),
            [
                delivery::status::CANCELLED.into(),
                now.into(),
                id.into(),
                delivery::kind::JOB.into(),
                delivery::status::PENDING.into(),
            ],
        ))
        .await?;
    if cancelled.rows_affected() == 0 {
        let call = delivery::Entity::find_by_id(id).one(&txn).await?;
        return Err(match call {
            None => ApiError::NotFound("job"),
            Some(call) if call.status == delivery::status::PENDING => ApiError::InFlight,
            Some(_) => ApiError::NotPending,
        });
    }
    let call = delivery::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("job {id} has no delivery")))?;
    let report = jobs::notify_delivery_in(&txn, &job, &call, now).await?;
    let reported = report.is_some();
    store::insert(&txn, report.into_iter().collect()).await?;
    txn.commit().await?;
    if reported {
        state.due.wake();
    }
    tracing::info!("job cancelled");
    Ok(Json(json!({ "id": id, "status": "cancelled" })))
}
