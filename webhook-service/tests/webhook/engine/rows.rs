//! The rows the engine works on, written and read with SQL, as the API and the consumer will
//! write them: endpoints, messages, deliveries; and what the engine recorded. PostgreSQL, and
//! SQLite for the statements that say so.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, Value};
use uuid::Uuid;
use webhook_service::signing::Secret;

/// A delivery to insert (the `deliveries` columns a producer sets).
pub(crate) struct NewRow {
    pub(crate) kind: &'static str,
    pub(crate) endpoint_id: Option<Uuid>,
    pub(crate) message_id: Option<Uuid>,
    pub(crate) url: String,
    pub(crate) method: &'static str,
    pub(crate) headers: serde_json::Value,
    pub(crate) body: Option<String>,
    pub(crate) timeout_ms: i64,
    pub(crate) retry_schedule: Option<Vec<u64>>,
    pub(crate) fail_statuses: Option<Vec<u16>>,
    pub(crate) execute_at: DateTime<Utc>,
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) traceparent: Option<String>,
}

impl NewRow {
    /// A job: `POST url` with a small JSON body, due now, 2 s timeout.
    pub(crate) fn job(url: String) -> Self {
        Self {
            kind: "job",
            endpoint_id: None,
            message_id: None,
            url,
            method: "POST",
            headers: serde_json::json!([["content-type", "application/json"]]),
            body: Some(r#"{"job":true}"#.into()),
            timeout_ms: 2000,
            retry_schedule: None,
            fail_statuses: None,
            execute_at: Utc::now(),
            deadline: None,
            traceparent: None,
        }
    }

    /// A webhook of `message_id` to `endpoint_id`, due now.
    pub(crate) fn webhook(endpoint_id: Uuid, message_id: Uuid) -> Self {
        Self {
            kind: "webhook",
            endpoint_id: Some(endpoint_id),
            message_id: Some(message_id),
            headers: serde_json::json!([]),
            body: None,
            ..Self::job("http://enqueued.invalid/".into())
        }
    }
}

const INSERT: &str = "INSERT INTO deliveries (id, kind, endpoint_id, message_id, url, method, \
    headers, body, timeout_ms, retry_schedule, fail_statuses, status, attempts, \
    next_attempt_at, deadline, traceparent, created_at, updated_at) VALUES \
    ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', 0, $12, $13, $14, $15, $15)";

/// Inserts `rows` and sends the `NOTIFY` every producer sends (PostgreSQL; on SQLite the
/// engine's poll finds them); returns their ids.
pub(crate) async fn insert_many(db: &DatabaseConnection, rows: Vec<NewRow>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for row in rows {
        let id = Uuid::new_v4();
        let values: Vec<Value> = vec![
            id.into(),
            row.kind.into(),
            row.endpoint_id.into(),
            row.message_id.into(),
            row.url.into(),
            row.method.into(),
            row.headers.into(),
            row.body.into(),
            row.timeout_ms.into(),
            row.retry_schedule.map(|s| serde_json::json!(s)).into(),
            row.fail_statuses.map(|s| serde_json::json!(s)).into(),
            row.execute_at.into(),
            row.deadline.into(),
            row.traceparent.into(),
            Utc::now().into(),
        ];
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            INSERT,
            values,
        ))
        .await
        .expect("insert delivery");
        ids.push(id);
    }
    if db.get_database_backend() == DbBackend::Postgres {
        execute(db, "SELECT pg_notify('webhook_due', '')").await;
    }
    ids
}

/// Inserts one delivery (and notifies).
pub(crate) async fn insert(db: &DatabaseConnection, row: NewRow) -> Uuid {
    insert_many(db, vec![row]).await[0]
}

/// An endpoint to insert.
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) headers: serde_json::Value,
    pub(crate) secret: String,
    /// The previous secret and the end of its grace period.
    pub(crate) previous_secret: Option<(String, DateTime<Utc>)>,
}

impl Endpoint {
    /// An enabled endpoint with a fresh secret.
    pub(crate) fn new(url: String) -> Self {
        Self::with_secret(url, &Secret::generate())
    }

    /// An enabled endpoint signing with `secret`.
    pub(crate) fn with_secret(url: String, secret: &Secret) -> Self {
        Self {
            url,
            headers: serde_json::json!({}),
            secret: secret.to_text(),
            previous_secret: None,
        }
    }
}

pub(crate) async fn insert_endpoint(db: &DatabaseConnection, endpoint: &Endpoint) -> Uuid {
    let id = Uuid::new_v4();
    let (previous, until) = endpoint.previous_secret.clone().unzip();
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO endpoints (id, url, headers, secret, previous_secret, \
         previous_secret_until, enabled, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, true, $7, $7)",
        [
            id.into(),
            endpoint.url.clone().into(),
            endpoint.headers.clone().into(),
            endpoint.secret.clone().into(),
            previous.into(),
            until.into(),
            Utc::now().into(),
        ],
    ))
    .await
    .expect("insert endpoint");
    id
}

/// Inserts a message with `payload`; returns its id.
pub(crate) async fn insert_message(db: &DatabaseConnection, payload: &str) -> Uuid {
    let id = Uuid::new_v4();
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO messages (id, event_type, payload, created_at) \
         VALUES ($1, 'user.registered', $2, $3)",
        [id.into(), payload.into(), Utc::now().into()],
    ))
    .await
    .expect("insert message");
    id
}

/// A delivery's state.
#[derive(Debug, FromQueryResult)]
pub(crate) struct DeliveryState {
    pub(crate) status: String,
    pub(crate) attempts: i32,
    pub(crate) last_status: Option<i32>,
    pub(crate) last_error: Option<String>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
}

pub(crate) async fn delivery(db: &DatabaseConnection, id: Uuid) -> DeliveryState {
    DeliveryState::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT status, attempts, last_status, last_error, completed_at \
         FROM deliveries WHERE id = $1",
        [id.into()],
    ))
    .one(db)
    .await
    .expect("query delivery")
    .expect("the delivery exists")
}

/// One recorded attempt.
#[derive(Debug, FromQueryResult)]
pub(crate) struct AttemptState {
    pub(crate) attempt: i32,
    pub(crate) status: Option<i32>,
    pub(crate) error_kind: Option<String>,
    pub(crate) url: String,
    pub(crate) duration_ms: i64,
}

pub(crate) async fn attempts(db: &DatabaseConnection, delivery_id: Uuid) -> Vec<AttemptState> {
    AttemptState::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT attempt, status, error_kind, url, duration_ms FROM attempts \
         WHERE delivery_id = $1 ORDER BY id",
        [delivery_id.into()],
    ))
    .all(db)
    .await
    .expect("query attempts")
}

/// An endpoint's state.
#[derive(Debug, FromQueryResult)]
pub(crate) struct EndpointState {
    pub(crate) enabled: bool,
    pub(crate) disabled_reason: Option<String>,
    pub(crate) failing_since: Option<DateTime<Utc>>,
}

pub(crate) async fn endpoint(db: &DatabaseConnection, id: Uuid) -> EndpointState {
    EndpointState::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT enabled, disabled_reason, failing_since FROM endpoints WHERE id = $1",
        [id.into()],
    ))
    .one(db)
    .await
    .expect("query endpoint")
    .expect("the endpoint exists")
}

pub(crate) async fn execute(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql).await.expect(sql);
}

pub(crate) async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    common::testing::scalar(db, sql).await
}
