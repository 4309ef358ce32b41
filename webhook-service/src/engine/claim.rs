//! Claiming due deliveries (one statement), putting back the ones this process cannot run now,
//! and the due times the loop sleeps until.
//!
//! A claim moves `next_attempt_at` to the end of a lease (the attempt's timeout plus
//! [`LEASE_MARGIN`]), writes the same time into `leased_until` (the fence the attempt's
//! recording matches) and counts the attempt. The row stays `pending`: if the process dies, the
//! row is due again when the lease ends and another instance (or this one, restarted) sends it
//! again with the same `webhook-id`. Duplicates are bounded by the calls in flight at the crash.
//! Every value is bound as a parameter; the SQL differs between backends only where it must.
//!
//! **Clock.** On PostgreSQL the claim's `now` is the database's clock ([`database_now`]): every
//! instance then writes leases and tests due times against one clock, so a skew between the
//! instances' clocks cannot make a row due again while its attempt is still within its lease.
//! The attempt measures what is left of its lease on the process's monotonic clock, from the
//! moment before that `now` was read ([`Claimed::lease_end`]). Due times written by the API and
//! the retry policy come from the process clocks; a skew only moves them by as much.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, QueryResult, Statement, Value};
use uuid::Uuid;

use crate::entity::delivery;

/// Time a lease adds to the attempt's timeout: the claim-to-send and the recording must fit in
/// it, or a second instance may send the row again (a duplicate, never a loss).
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// Due rows a claim looks at per row it may take, to cap each endpoint at the limit (a
/// window function over the earliest due rows). A window full of one endpoint's rows only
/// delays the others by one claim: that endpoint is then saturated and left out.
const SCAN_PER_ROW: usize = 8;

/// What one claim asks for.
#[derive(Debug, Clone)]
pub(super) struct Claim<'a> {
    /// The claim's clock ([`database_now`]): rows due at or before it are taken, the leases
    /// start at it.
    pub(super) now: DateTime<Utc>,
    /// This process's monotonic clock just before `now` was read.
    pub(super) started: Instant,
    /// At most this many rows (free global slots).
    pub(super) limit: usize,
    /// At most this many rows of one endpoint.
    pub(super) per_endpoint: usize,
    /// Endpoints whose rows are left alone (at their limit in this process).
    pub(super) saturated: &'a [Uuid],
    /// A per-row timeout above this is cut to it.
    pub(super) max_timeout: Duration,
}

/// A claimed row and its lease.
#[derive(Debug, Clone)]
pub(super) struct Claimed {
    /// The row as updated by the claim (attempt counted, `leased_until` set).
    pub(super) row: delivery::Model,
    /// When the lease ends on this process's monotonic clock (no later than the lease's end in
    /// the database: measured from before the claim's `now` was read).
    pub(super) lease_end: Instant,
}

/// The claim's clock: the database's on PostgreSQL (see the module's **Clock**), the process's
/// on SQLite (one process, and SQLite has no clock in the stored timestamps' format).
///
/// # Errors
/// Any database error.
pub(super) async fn database_now(conn: &impl ConnectionTrait) -> Result<DateTime<Utc>, DbErr> {
    let backend = conn.get_database_backend();
    if backend != DbBackend::Postgres {
        return Ok(Utc::now());
    }
    let row = conn
        .query_one_raw(Statement::from_string(backend, "SELECT now() AS now"))
        .await?
        .ok_or_else(|| DbErr::Custom("SELECT now() returned no row".into()))?;
    row.try_get("", "now")
}

/// The lease on PostgreSQL: each row's own timeout (at most `$6` ms) plus `$7` ms.
const LEASE_POSTGRES: &str = "$1 + (LEAST(timeout_ms, $6) + $7) * interval '1 millisecond'";
/// SQLite (one process) has no interval arithmetic on its text timestamps: one lease for all,
/// the longest timeout allowed plus the margin, computed here (`$6`).
const LEASE_SQLITE: &str = "$6";

/// `endpoint_id` is not one of the saturated ones (`$5`, a list bound as one text parameter).
const NOT_SATURATED_POSTGRES: &str = "NOT (endpoint_id = ANY($5::text::uuid[]))";
const NOT_SATURATED_SQLITE: &str = "hex(endpoint_id) NOT IN (SELECT value FROM json_each($5))";

/// Claims due rows: the earliest due first, at most `limit`, at most `per_endpoint` of one
/// endpoint, none of a saturated endpoint; on PostgreSQL rows another instance is claiming are
/// skipped, not waited for. Returns them as updated (attempts counted, lease set) with their
/// lease on this process's clock.
///
/// The inner scan reads the `deliveries_due` index alone (`next_attempt_at, endpoint_id, id`
/// of the pending rows): a saturated endpoint's rows are skipped there, not fetched.
///
/// The status and due predicates are repeated at the level that locks the rows, so a row
/// another instance claimed (and committed) since this statement's snapshot is rechecked and
/// dropped instead of claimed twice.
///
/// # Errors
/// Any database error.
pub(super) async fn claim(
    conn: &impl ConnectionTrait,
    claim: &Claim<'_>,
) -> Result<Vec<Claimed>, DbErr> {
    if claim.limit == 0 {
        return Ok(Vec::new());
    }
    let backend = conn.get_database_backend();
    let (lease, not_saturated, saturated) = match backend {
        DbBackend::Postgres => (
            LEASE_POSTGRES,
            NOT_SATURATED_POSTGRES,
            Value::from(uuid_array(claim.saturated)),
        ),
        _ => (
            LEASE_SQLITE,
            NOT_SATURATED_SQLITE,
            Value::from(hex_json_list(claim.saturated)),
        ),
    };
    let skip_locked = common::database::skip_locked(backend);
    let sql = format!(
        "UPDATE deliveries SET next_attempt_at = {lease}, leased_until = {lease}, \
         attempts = attempts + 1, updated_at = $1 \
         WHERE id IN (SELECT id FROM deliveries \
           WHERE status = 'pending' AND next_attempt_at <= $1 AND id IN ( \
             SELECT id FROM ( \
               SELECT id, endpoint_id, row_number() OVER ( \
                 PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS place \
               FROM (SELECT id, endpoint_id, next_attempt_at FROM deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= $1 \
                   AND (endpoint_id IS NULL OR {not_saturated}) \
                 ORDER BY next_attempt_at LIMIT $3) AS due) AS ranked \
             WHERE endpoint_id IS NULL OR place <= $4) \
           ORDER BY next_attempt_at LIMIT $2{skip_locked}) \
         RETURNING *"
    );
    let count = |n: usize| Value::from(i64::try_from(n).unwrap_or(i64::MAX));
    let millis = |d: Duration| Value::from(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let sqlite_lease = chrono::Duration::from_std(claim.max_timeout + LEASE_MARGIN)
        .ok()
        .and_then(|d| claim.now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut values = vec![
        Value::from(claim.now),
        count(claim.limit),
        count(claim.limit.saturating_mul(SCAN_PER_ROW)),
        count(claim.per_endpoint),
        saturated,
    ];
    match backend {
        DbBackend::Postgres => {
            values.extend([millis(claim.max_timeout), millis(LEASE_MARGIN)]);
        }
        _ => values.push(sqlite_lease.into()),
    }
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.iter()
        .map(|row| {
            let row = decode(row)?;
            // `leased_until` is always set by the statement; without it the lease is over.
            let left = row
                .leased_until
                .and_then(|lease| (lease - claim.now).to_std().ok())
                .unwrap_or_default();
            Ok(Claimed {
                lease_end: claim.started + left,
                row,
            })
        })
        .collect()
}

fn decode(row: &QueryResult) -> Result<delivery::Model, DbErr> {
    delivery::Model::from_query_result(row, "")
}

/// Puts back rows claimed but not started (their endpoint filled up, or too little of the
/// lease was left to make the call): due again now, the attempt uncounted, the lease cleared.
/// Only rows still holding their claim's lease are touched.
///
/// `status || ''` keeps the row's lookup on its primary key: with `status = 'pending'`, the
/// generic plan cached on a small table searched `deliveries_due` for the id (its third
/// column), walking the whole pending index.
///
/// # Errors
/// Any database error.
pub(super) async fn put_back(
    conn: &impl ConnectionTrait,
    rows: &[delivery::Model],
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    // "Now" on the claim's clock; SQLite binds the process's (`$3`).
    let (now, bound) = match backend {
        DbBackend::Postgres => ("now()", None),
        _ => ("$3", Some(Value::from(Utc::now()))),
    };
    for row in rows {
        let mut values = vec![Value::from(row.id), Value::from(row.leased_until)];
        values.extend(bound.clone());
        conn.execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "UPDATE deliveries SET next_attempt_at = {now}, leased_until = NULL, \
                 attempts = attempts - 1, updated_at = {now} \
                 WHERE id = $1 AND status || '' = 'pending' AND leased_until = $2"
            ),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// The earliest `next_attempt_at` after `after` among pending rows (a due time or a lease
/// end): when the loop must look again at the latest.
///
/// # Errors
/// Any database error.
pub(super) async fn next_due_after(
    conn: &impl ConnectionTrait,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let backend = conn.get_database_backend();
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT next_attempt_at FROM deliveries WHERE status = 'pending' \
             AND next_attempt_at > $1 ORDER BY next_attempt_at LIMIT 1",
            [Value::from(after)],
        ))
        .await?;
    row.map(|row| row.try_get("", "next_attempt_at"))
        .transpose()
}

/// Pending rows due at `now`, and the oldest due time among them.
///
/// # Errors
/// Any database error.
pub(super) async fn due_backlog(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
) -> Result<(i64, Option<DateTime<Utc>>), DbErr> {
    let backend = conn.get_database_backend();
    let count = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT COUNT(*) AS due FROM deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $1",
            [Value::from(now)],
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "due"))
        .transpose()?
        .unwrap_or(0);
    let oldest = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT next_attempt_at FROM deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT 1",
            [Value::from(now)],
        ))
        .await?
        .map(|row| row.try_get("", "next_attempt_at"))
        .transpose()?;
    Ok((count, oldest))
}

/// `{a,b}`: a `uuid[]` literal bound as text.
pub(super) fn uuid_array(ids: &[Uuid]) -> String {
    let joined: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    format!("{{{}}}", joined.join(","))
}

/// `["A1…","B2…"]`: upper-case hex, as SQLite's `hex()` prints a UUID blob.
pub(super) fn hex_json_list(ids: &[Uuid]) -> String {
    let hex: Vec<String> = ids
        .iter()
        .map(|id| id.simple().to_string().to_uppercase())
        .collect();
    serde_json::json!(hex).to_string()
}
