//! Recording attempts: one transaction holds the `attempts` rows, the deliveries' new states,
//! the endpoints' health and, when a job's delivery ends, its `notify` delivery. The recorder
//! (`recorder`) gives it the attempts that ended together, so under load one commit records
//! many of them.
//!
//! The delivery is only updated while it still holds this attempt's claim (`pending`, same
//! `leased_until`): if the API cancelled or replayed it meanwhile, or its lease ran out and it
//! was claimed again, the attempt is still recorded but the newer state is left alone. The
//! attempt count is no fence: a replay resets it, so a stale attempt could match a newer claim.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, Statement,
    TransactionTrait, Value,
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
pub(super) struct Change {
    /// The delivery as claimed.
    pub(super) claimed: delivery::Model,
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

impl Change {
    fn terminal(&self) -> bool {
        self.status != delivery::status::PENDING
    }

    fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.terminal().then_some(self.now)
    }
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

/// Records `changes` in one transaction (the recorder batches the attempts that end together:
/// one commit, one multi-row insert of their attempt rows, one update of their deliveries).
/// Returns what recording did for each change, in order.
///
/// # Errors
/// Any database error: nothing was recorded, and each claim's lease will make its row due
/// again.
pub(super) async fn record_batch(
    db: &(impl ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>),
    changes: &[&Change],
) -> Result<Vec<Recorded>, DbErr> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let txn = db.begin().await?;
    let attempts: Vec<attempt::ActiveModel> = changes
        .iter()
        .filter_map(|change| {
            change
                .attempt
                .as_ref()
                .map(|attempt| attempt_row(&change.claimed, attempt))
        })
        .collect();
    if !attempts.is_empty() {
        attempt::Entity::insert_many(attempts)
            .exec_without_returning(&txn)
            .await?;
    }
    let applied = update_deliveries(&txn, changes).await?;
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let mut recorded = Recorded {
            // By id and lease: a batch may hold a stale attempt of a delivery and the attempt
            // of its newer claim; only the latter moved it.
            applied: applied.contains(&(change.claimed.id, change.claimed.leased_until)),
            ..Recorded::default()
        };
        if recorded.applied && change.terminal() && change.claimed.kind == delivery::kind::JOB {
            recorded.notify_inserted = notify_job(&txn, change).await?;
        }
        results.push(recorded);
    }
    // Each endpoint learns its latest outcome in the batch (what recording one attempt at a
    // time would have left), in ascending id order (concurrent batches lock endpoints in one
    // order).
    let mut latest: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (i, change) in changes.iter().enumerate() {
        if let Some((endpoint_id, _, _)) = change.health {
            let slot = latest.entry(endpoint_id).or_insert(i);
            if changes[*slot].now <= change.now {
                *slot = i;
            }
        }
    }
    let succeeded: Vec<Uuid> = latest
        .iter()
        .filter(|(_, i)| matches!(changes[**i].health, Some((_, Health::Succeeded, _))))
        .map(|(id, _)| *id)
        .collect();
    succeeded_endpoints(&txn, &succeeded, changes).await?;
    for (&endpoint_id, &i) in &latest {
        let change = changes[i];
        if let Some((_, health, disable_after)) = change.health
            && health != Health::Succeeded
        {
            let recorded = &mut results[i];
            recorded.disabled =
                endpoint_health(&txn, endpoint_id, health, disable_after, change.now).await?;
            if let Some(disabled) = &recorded.disabled {
                recorded.notify_inserted |=
                    announce_disabled(&txn, change, endpoint_id, disabled).await?;
            }
        }
    }
    txn.commit().await?;
    Ok(results)
}

/// Moves each delivery still holding its claim (`pending`, same `leased_until`) to its new
/// state; returns the ids it moved. A finished `sms` delivery loses its body, which holds the
/// one-time code: the code is at rest only while it may still be sent. PostgreSQL: one
/// statement joining the new states as a `VALUES` list; SQLite (one process): one statement
/// per change.
async fn update_deliveries(
    txn: &impl ConnectionTrait,
    changes: &[&Change],
) -> Result<HashSet<(Uuid, Option<DateTime<Utc>>)>, DbErr> {
    let backend = txn.get_database_backend();
    let values = |change: &Change| {
        [
            Value::from(change.claimed.id),
            Value::from(change.status),
            Value::from(change.next_attempt_at),
            Value::from(change.attempts),
            Value::from(change.last_status),
            Value::from(change.last_error.clone()),
            Value::from(change.now),
            Value::from(change.completed_at()),
            Value::from(change.claimed.leased_until),
        ]
    };
    let mut applied = HashSet::new();
    if backend == DbBackend::Postgres {
        let mut rows = Vec::with_capacity(changes.len());
        let mut bound = Vec::with_capacity(changes.len() * 9);
        for (i, change) in changes.iter().enumerate() {
            let p = |k: usize| i * 9 + k;
            rows.push(format!(
                "(${}::uuid, ${}::text, ${}::timestamptz, ${}::integer, ${}::integer, \
                 ${}::text, ${}::timestamptz, ${}::timestamptz, ${}::timestamptz)",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                p(7),
                p(8),
                p(9)
            ));
            bound.extend(values(change));
        }
        // The ids again, as a list and a range on `d.id`, and `d.status || ''`: the generic
        // plan cached on a small table (a new deployment's, kept until the next ANALYZE)
        // walked the whole `deliveries_due` index (the pending backlog) and matched the list
        // by a join filter. Together they make it a primary-key probe per id; none alone did.
        let ids: Vec<String> = (0..changes.len())
            .map(|i| format!("${}::uuid", i * 9 + 1))
            .collect();
        let ids = ids.join(", ");
        let sql = format!(
            "UPDATE deliveries AS d SET status = v.status, next_attempt_at = v.next_attempt_at, \
             attempts = v.attempts, last_status = v.last_status, last_error = v.last_error, \
             updated_at = v.updated_at, completed_at = v.completed_at, leased_until = NULL, \
             body = CASE WHEN d.kind = 'sms' AND v.status <> 'pending' THEN NULL ELSE d.body END \
             FROM (VALUES {}) AS v(id, status, next_attempt_at, attempts, last_status, \
               last_error, updated_at, completed_at, leased_until) \
             WHERE d.id = v.id AND d.id IN ({ids}) \
               AND d.id BETWEEN LEAST({ids}) AND GREATEST({ids}) \
               AND d.status || '' = 'pending' AND d.leased_until = v.leased_until \
             RETURNING d.id, v.leased_until AS fence",
            rows.join(", ")
        );
        for row in txn
            .query_all_raw(Statement::from_sql_and_values(backend, sql, bound))
            .await?
        {
            applied.insert((
                row.try_get::<Uuid>("", "id")?,
                row.try_get::<Option<DateTime<Utc>>>("", "fence")?,
            ));
        }
    } else {
        for change in changes {
            let updated = txn
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    "UPDATE deliveries SET status = $2, next_attempt_at = $3, attempts = $4, \
                     last_status = $5, last_error = $6, updated_at = $7, completed_at = $8, \
                     leased_until = NULL, \
                     body = CASE WHEN kind = 'sms' AND $2 <> 'pending' THEN NULL ELSE body END \
                     WHERE id = $1 AND status = 'pending' AND leased_until = $9",
                    values(change),
                ))
                .await?;
            if updated.rows_affected() == 1 {
                applied.insert((change.claimed.id, change.claimed.leased_until));
            }
        }
    }
    Ok(applied)
}

/// Inserts the `notify` delivery of a job whose delivery just ended; whether it did.
async fn notify_job(txn: &impl ConnectionTrait, change: &Change) -> Result<bool, DbErr> {
    let claimed = &change.claimed;
    let Some(job_id) = claimed.job_id else {
        return Ok(false);
    };
    let Some(job) = job::Entity::find_by_id(job_id).one(txn).await? else {
        return Ok(false);
    };
    let after = delivery::Model {
        status: change.status.to_owned(),
        next_attempt_at: change.next_attempt_at,
        attempts: change.attempts,
        last_status: change.last_status,
        last_error: change.last_error.clone(),
        updated_at: change.now,
        completed_at: change.completed_at(),
        leased_until: None,
        ..claimed.clone()
    };
    match jobs::notify_delivery_in(txn, &job, &after, change.now).await? {
        Some(notify) => {
            store::insert(txn, vec![notify]).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Ends the failure run of `ids` (endpoints whose latest attempt in the batch succeeded): one
/// statement, only matching (and locking) the endpoints that were failing.
async fn succeeded_endpoints(
    txn: &impl ConnectionTrait,
    ids: &[Uuid],
    changes: &[&Change],
) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    let now = changes
        .iter()
        .map(|change| change.now)
        .max()
        .unwrap_or_else(Utc::now);
    let backend = txn.get_database_backend();
    let (filter, list) = match backend {
        DbBackend::Postgres => (
            "id = ANY($2::text::uuid[])",
            Value::from(super::claim::uuid_array(ids)),
        ),
        _ => (
            "hex(id) IN (SELECT value FROM json_each($2))",
            Value::from(super::claim::hex_json_list(ids)),
        ),
    };
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "UPDATE endpoints SET failing_since = NULL, updated_at = $1 \
             WHERE {filter} AND failing_since IS NOT NULL"
        ),
        [Value::from(now), list],
    ))
    .await?;
    Ok(())
}

/// Announces a disabled endpoint in the same transaction: `endpoint.disabled` to the endpoints
/// subscribed to it (the disabled one no longer is: it is not enabled). Whether deliveries
/// were inserted.
async fn announce_disabled(
    txn: &impl ConnectionTrait,
    change: &Change,
    endpoint_id: Uuid,
    disabled: &Disabled,
) -> Result<bool, DbErr> {
    let event = public_events::endpoint_disabled(
        endpoint_id,
        origin(&disabled.url),
        disabled.reason,
        disabled.failing_since,
        change.now,
    )
    .map_err(|e| DbErr::Custom(format!("encoding endpoint.disabled: {e}")))?;
    let timeout = std::time::Duration::from_millis(
        u64::try_from(change.claimed.timeout_ms).unwrap_or_default(),
    );
    let stored = fanout::store_message_in(
        txn,
        Uuid::now_v7(),
        &event,
        change.claimed.traceparent.clone(),
        timeout,
    )
    .await?;
    Ok(matches!(stored, Stored::Fresh { deliveries } if deliveries > 0))
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

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveModelTrait, DatabaseConnection, IntoActiveModel};

    use super::*;
    use crate::entity::endpoint;

    async fn db() -> DatabaseConnection {
        crate::migration::connect_and_migrate("sqlite::memory:", 1)
            .await
            .expect("an in-memory database")
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a time")
    }

    async fn endpoint(db: &DatabaseConnection) -> Uuid {
        let id = Uuid::now_v7();
        endpoint::Model {
            id,
            url: "https://example.com/hook".into(),
            description: String::new(),
            event_types: None,
            headers: serde_json::json!({}),
            secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
            previous_secret: None,
            previous_secret_until: None,
            enabled: true,
            disabled_reason: None,
            failing_since: None,
            created_at: at(0),
            updated_at: at(0),
        }
        .into_active_model()
        .insert(db)
        .await
        .expect("an endpoint");
        id
    }

    /// A pending `job` delivery (of `endpoint`, when given) leased until `lease`.
    async fn delivery(
        db: &DatabaseConnection,
        endpoint: Option<Uuid>,
        lease: DateTime<Utc>,
    ) -> delivery::Model {
        delivery::Model {
            id: Uuid::now_v7(),
            kind: delivery::kind::JOB.into(),
            endpoint_id: endpoint,
            message_id: None,
            job_id: None,
            url: "https://example.com/".into(),
            method: "POST".into(),
            headers: serde_json::json!([]),
            body: None,
            timeout_ms: 1000,
            retry_schedule: None,
            fail_statuses: None,
            status: delivery::status::PENDING.into(),
            attempts: 1,
            next_attempt_at: lease,
            leased_until: Some(lease),
            deadline: None,
            last_status: None,
            last_error: None,
            traceparent: None,
            created_at: at(0),
            updated_at: at(0),
            completed_at: None,
        }
        .into_active_model()
        .insert(db)
        .await
        .expect("a delivery")
    }

    fn change(claimed: delivery::Model, status: &'static str, now: DateTime<Utc>) -> Change {
        Change {
            attempts: claimed.attempts,
            claimed,
            attempt: None,
            status,
            next_attempt_at: now,
            last_status: None,
            last_error: None,
            health: None,
            now,
        }
    }

    #[tokio::test]
    async fn a_stale_attempt_batched_with_the_newer_claim_is_not_applied() {
        let db = db().await;
        let fresh = delivery(&db, None, at(100)).await;
        let stale = delivery::Model {
            leased_until: Some(at(50)),
            ..fresh.clone()
        };
        let stale = change(stale, delivery::status::SUCCEEDED, at(60));
        let newer = change(fresh.clone(), delivery::status::PENDING, at(61));
        let recorded = record_batch(&db, &[&stale, &newer])
            .await
            .expect("recorded");
        assert!(!recorded[0].applied, "the stale attempt holds no lease");
        assert!(recorded[1].applied);
        let row = delivery::Entity::find_by_id(fresh.id)
            .one(&db)
            .await
            .expect("read")
            .expect("row");
        assert_eq!(row.status, delivery::status::PENDING);
    }

    #[tokio::test]
    async fn an_endpoint_learns_its_latest_outcome_in_a_batch() {
        let db = db().await;
        let week = std::time::Duration::from_secs(7 * 24 * 3600);
        for (first, second, failing_since) in [
            (Health::Failed, Health::Succeeded, None),
            (Health::Succeeded, Health::Failed, Some(at(20))),
        ] {
            let endpoint_id = endpoint(&db).await;
            let mut a = change(
                delivery(&db, Some(endpoint_id), at(100)).await,
                delivery::status::PENDING,
                at(10),
            );
            a.health = Some((endpoint_id, first, week));
            let mut b = change(
                delivery(&db, Some(endpoint_id), at(100)).await,
                delivery::status::PENDING,
                at(20),
            );
            b.health = Some((endpoint_id, second, week));
            // The later outcome is listed first: the batch's order is not the attempts' order.
            record_batch(&db, &[&b, &a]).await.expect("recorded");
            let row = endpoint::Entity::find_by_id(endpoint_id)
                .one(&db)
                .await
                .expect("read")
                .expect("row");
            assert_eq!(
                row.failing_since, failing_since,
                "{first:?} then {second:?}"
            );
        }
    }
}
