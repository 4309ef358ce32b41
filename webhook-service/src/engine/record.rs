//! Recording an attempt: one transaction holds the `attempts` row, the delivery's new state,
//! the endpoint's health and, when a job's delivery ends, its `notify` delivery.
//!
//! The delivery is only updated while it still holds this attempt's claim (`pending`, same
//! `leased_until`): if the API cancelled or replayed it meanwhile, or its lease ran out and it
//! was claimed again, the attempt is still recorded but the newer state is left alone. The
//! attempt count is no fence: a replay resets it, so a stale attempt could match a newer claim.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, Statement, TransactionTrait, Value,
};

use uuid::Uuid;

use crate::{
    consumer::fanout::{self, Stored},
    egress::{self, AttemptResult, MAX_RESPONSE_BODY},
    entity::{attempt, delivery, job},
    jobs, public_events, store,
};

/// The attempt made, as stored.
pub(super) struct AttemptRow {
    pub(super) url: String,
    pub(super) result: AttemptResult,
    pub(super) error_kind: Option<&'static str>,
}

/// What the endpoint learns from the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// A success: the failure run ends.
    Succeeded,
    /// A failure: a failure run starts (or goes on); past `disable_after` it disables.
    Failed,
    /// 410 Gone: disabled at once.
    Gone,
}

/// An endpoint disabled by this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Disabled {
    pub(super) reason: &'static str,
    pub(super) failing_since: Option<DateTime<Utc>>,
    /// The endpoint's URL (not redacted).
    pub(super) url: String,
}

/// The delivery after the attempt (or after no attempt).
pub(super) struct Change<'a> {
    /// The delivery as claimed.
    pub(super) claimed: &'a delivery::Model,
    pub(super) attempt: Option<AttemptRow>,
    pub(super) status: &'static str,
    pub(super) next_attempt_at: DateTime<Utc>,
    /// Attempts made (the claim counted one; a skipped attempt gives it back).
    pub(super) attempts: i32,
    pub(super) last_status: Option<i32>,
    pub(super) last_error: Option<String>,
    /// `(endpoint id, what it learns, disable after)` for a webhook attempt.
    pub(super) health: Option<(uuid::Uuid, Health, std::time::Duration)>,
    pub(super) now: DateTime<Utc>,
}

/// What recording did.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    /// The delivery still held the claim and took the new state.
    pub(super) applied: bool,
    /// A `notify` delivery, or `endpoint.disabled` webhooks, were inserted (wake the engine
    /// after the commit).
    pub(super) notify_inserted: bool,
    pub(super) disabled: Option<Disabled>,
}

/// Records `change` in one transaction.
///
/// # Errors
/// Any database error: nothing was recorded, and the claim's lease will make the row due again.
pub(super) async fn record(
    db: &DatabaseConnection,
    change: &Change<'_>,
) -> Result<Recorded, DbErr> {
    let txn = db.begin().await?;
    let claimed = change.claimed;
    if let Some(attempt) = &change.attempt {
        attempt::Entity::insert(attempt_row(claimed, attempt))
            .exec_without_returning(&txn)
            .await?;
    }
    let terminal = change.status != delivery::status::PENDING;
    let completed_at = terminal.then_some(change.now);
    // A finished `sms` delivery (`$1`, the new status, is not `pending`) loses its body, which
    // holds the one-time code: the code is at rest only while it may still be sent.
    let updated = txn
        .execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE deliveries SET status = $1, next_attempt_at = $2, attempts = $3, \
             last_status = $4, last_error = $5, updated_at = $6, completed_at = $7, \
             leased_until = NULL, \
             body = CASE WHEN kind = 'sms' AND $1 <> 'pending' THEN NULL ELSE body END \
             WHERE id = $8 AND status = 'pending' AND leased_until = $9",
            [
                Value::from(change.status),
                Value::from(change.next_attempt_at),
                Value::from(change.attempts),
                Value::from(change.last_status),
                Value::from(change.last_error.clone()),
                Value::from(change.now),
                Value::from(completed_at),
                Value::from(claimed.id),
                Value::from(claimed.leased_until),
            ],
        ))
        .await?;
    let mut recorded = Recorded {
        applied: updated.rows_affected() == 1,
        ..Recorded::default()
    };
    if recorded.applied
        && terminal
        && claimed.kind == delivery::kind::JOB
        && let Some(job_id) = claimed.job_id
        && let Some(job) = job::Entity::find_by_id(job_id).one(&txn).await?
    {
        let after = delivery::Model {
            status: change.status.to_owned(),
            next_attempt_at: change.next_attempt_at,
            attempts: change.attempts,
            last_status: change.last_status,
            last_error: change.last_error.clone(),
            updated_at: change.now,
            completed_at,
            leased_until: None,
            ..claimed.clone()
        };
        if let Some(notify) = jobs::notify_delivery_in(&txn, &job, &after, change.now).await? {
            store::insert(&txn, vec![notify]).await?;
            recorded.notify_inserted = true;
        }
    }
    if let Some((endpoint_id, health, disable_after)) = change.health {
        recorded.disabled =
            endpoint_health(&txn, endpoint_id, health, disable_after, change.now).await?;
        if let Some(disabled) = &recorded.disabled {
            // Announced in the same transaction: `endpoint.disabled` to the endpoints
            // subscribed to it (the disabled one no longer is: it is not enabled).
            let event = public_events::endpoint_disabled(
                endpoint_id,
                origin(&disabled.url),
                disabled.reason,
                disabled.failing_since,
                change.now,
            )
            .map_err(|e| DbErr::Custom(format!("encoding endpoint.disabled: {e}")))?;
            let timeout = std::time::Duration::from_millis(
                u64::try_from(claimed.timeout_ms).unwrap_or_default(),
            );
            let stored = fanout::store_message_in(
                &txn,
                Uuid::now_v7(),
                &event,
                claimed.traceparent.clone(),
                timeout,
            )
            .await?;
            recorded.notify_inserted |=
                matches!(stored, Stored::Fresh { deliveries } if deliveries > 0);
        }
    }
    txn.commit().await?;
    Ok(recorded)
}

fn attempt_row(claimed: &delivery::Model, attempt: &AttemptRow) -> attempt::ActiveModel {
    let result = &attempt.result;
    let mut headers = serde_json::Map::new();
    for (name, value) in &result.response_headers {
        let name = name.to_ascii_lowercase();
        match headers.get_mut(&name) {
            Some(serde_json::Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name, value.clone().into());
            }
        }
    }
    let body = egress::truncate(&result.response_body, MAX_RESPONSE_BODY);
    attempt::ActiveModel {
        id: NotSet,
        delivery_id: Set(claimed.id),
        attempt: Set(claimed.attempts),
        started_at: Set(result.started_at),
        duration_ms: Set(i64::try_from(result.duration.as_millis()).unwrap_or(i64::MAX)),
        url: Set(attempt.url.clone()),
        status: Set(result.status.map(i32::from)),
        error_kind: Set(attempt.error_kind.map(str::to_owned)),
        error: Set(result.error.as_ref().map(|(_, message)| message.clone())),
        response_headers: Set((result.status.is_some()).then(|| headers.into())),
        response_body: Set((result.status.is_some()).then(|| body.to_owned())),
    }
}

/// Updates the endpoint's failure run. Each statement only matches (and locks the row) when
/// something changes, so concurrent attempts to one endpoint rarely wait for each other.
async fn endpoint_health(
    conn: &impl ConnectionTrait,
    endpoint_id: uuid::Uuid,
    health: Health,
    disable_after: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Option<Disabled>, DbErr> {
    let backend = conn.get_database_backend();
    let run = |sql: &'static str, values: Vec<Value>| {
        conn.query_all_raw(Statement::from_sql_and_values(backend, sql, values))
    };
    let id = Value::from(endpoint_id);
    match health {
        Health::Succeeded => {
            run(
                "UPDATE endpoints SET failing_since = NULL, updated_at = $1 \
                 WHERE id = $2 AND failing_since IS NOT NULL RETURNING id",
                vec![now.into(), id],
            )
            .await?;
            Ok(None)
        }
        Health::Gone => {
            let rows = run(
                "UPDATE endpoints SET enabled = false, disabled_reason = 'gone', updated_at = $1 \
                 WHERE id = $2 AND enabled RETURNING failing_since, url",
                vec![now.into(), id],
            )
            .await?;
            disabled(&rows, "gone")
        }
        Health::Failed => {
            run(
                "UPDATE endpoints SET failing_since = $1, updated_at = $1 \
                 WHERE id = $2 AND failing_since IS NULL RETURNING id",
                vec![now.into(), id.clone()],
            )
            .await?;
            let cutoff = chrono::Duration::from_std(disable_after)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let rows = run(
                "UPDATE endpoints SET enabled = false, disabled_reason = 'failing', \
                 updated_at = $1 WHERE id = $2 AND enabled AND failing_since <= $3 \
                 RETURNING failing_since, url",
                vec![now.into(), id, cutoff.into()],
            )
            .await?;
            disabled(&rows, "failing")
        }
    }
}

/// `scheme://host[:port]` of `url`: what `endpoint.disabled` may tell other receivers.
fn origin(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| String::new(), |u| u.origin().ascii_serialization())
}

fn disabled(
    rows: &[sea_orm::QueryResult],
    reason: &'static str,
) -> Result<Option<Disabled>, DbErr> {
    rows.first()
        .map(|row| {
            Ok(Disabled {
                reason,
                failing_since: row.try_get("", "failing_since")?,
                url: row.try_get("", "url")?,
            })
        })
        .transpose()
}
