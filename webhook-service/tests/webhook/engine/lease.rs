//! The lease of an attempt in flight: a late attempt cannot overwrite newer state, no call
//! starts after its lease, and cancelling waits for the call under way. The database is made
//! slow on purpose by holding a table lock.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

use super::{
    WAIT, assert_no_more_requests,
    rows::{self, Endpoint, NewRow, delivery, insert, insert_endpoint, insert_message},
    wait_status,
};
use crate::{
    api::send,
    helpers::{Receiver, Reply, TestService, eventually, test_settings},
};

/// Bound of the waits that outlast a lease (a timeout plus the 10 s margin).
const PAST_A_LEASE: Duration = Duration::from_secs(40);

/// Holds `table` locked (nothing reads or writes it) until the transaction is dropped or
/// rolled back.
async fn lock(db: &DatabaseConnection, table: &str) -> DatabaseTransaction {
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await
        .expect("lock");
    txn
}

async fn attempts_recorded(db: &DatabaseConnection, id: Uuid) -> i64 {
    rows::count(
        db,
        &format!("SELECT COUNT(*) FROM attempts WHERE delivery_id = '{id}'"),
    )
    .await
}

#[tokio::test]
async fn a_late_attempt_cannot_overwrite_a_replayed_delivery() {
    let service = TestService::start(test_settings("engine_fence").await).await;
    let receiver = Receiver::start().await;
    // The first attempt succeeds (its recording is held back); the replay's attempt hangs.
    receiver.reply([Reply::status(200), Reply::Hang]);
    let endpoint_id = insert_endpoint(&service.db, &Endpoint::new(receiver.url("/hook"))).await;
    let message_id = insert_message(&service.db, "{}").await;

    // Attempt A: sent and answered, but recording it waits for the `attempts` table.
    let held = lock(&service.db, "attempts").await;
    let id = insert(
        &service.db,
        NewRow {
            timeout_ms: 2000,
            ..NewRow::webhook(endpoint_id, message_id)
        },
    )
    .await;
    receiver.wait_for(1, WAIT).await;
    // A's lease (2 s + 10 s) ends; the next claim finds the endpoint disabled and fails the
    // delivery without a call (nothing to record in `attempts`).
    rows::execute(
        &service.db,
        &format!("UPDATE endpoints SET enabled = false WHERE id = '{endpoint_id}'"),
    )
    .await;
    eventually(PAST_A_LEASE, "failed after A's lease", || async {
        delivery(&service.db, id).await.status == "failed"
    })
    .await;
    // Replayed: pending again, `attempts` back to 0; its new attempt C (attempt 1) hangs.
    rows::execute(
        &service.db,
        &format!("UPDATE endpoints SET enabled = true WHERE id = '{endpoint_id}'"),
    )
    .await;
    let (status, body) = send(service.api(
        Method::POST,
        &format!("/v1/endpoints/{endpoint_id}/messages/{message_id}/retry"),
    ))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    receiver.wait_for(2, WAIT).await;

    // A's recording goes through now, while C (attempt 1 too) is in flight.
    held.rollback().await.expect("unlock");
    eventually(WAIT, "A recorded", || async {
        attempts_recorded(&service.db, id).await == 1
    })
    .await;
    let row = delivery(&service.db, id).await;
    assert_eq!(
        (row.status.as_str(), row.attempts, row.last_status),
        ("pending", 1, None),
        "A's late success must not overwrite the replayed delivery while C runs"
    );

    // C times out; its retry succeeds: C's state was the delivery's.
    let row = wait_status(&service.db, id, "succeeded").await;
    assert_eq!((row.attempts, row.last_status), (2, Some(200)));
    let recorded = rows::attempts(&service.db, id).await;
    let kinds: Vec<_> = recorded
        .iter()
        .map(|a| (a.attempt, a.status, a.error_kind.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            (1, Some(200), None),
            (1, None, Some("timeout")),
            (2, Some(200), None)
        ]
    );
}

#[tokio::test]
async fn no_call_starts_after_its_lease() {
    let service = TestService::start(test_settings("engine_lease_end").await).await;
    let receiver = Receiver::start().await;
    let endpoint_id = insert_endpoint(&service.db, &Endpoint::new(receiver.url("/hook"))).await;
    let message_id = insert_message(&service.db, "{}").await;

    // Building the request reads the endpoint: it waits until the lock is released.
    let held = lock(&service.db, "endpoints").await;
    let id = insert(
        &service.db,
        NewRow {
            timeout_ms: 1000,
            ..NewRow::webhook(endpoint_id, message_id)
        },
    )
    .await;
    // The first claim's lease (1 s + 10 s) ends while it waits; the row is claimed again.
    eventually(PAST_A_LEASE, "claimed again after the lease", || async {
        delivery(&service.db, id).await.attempts == 2
    })
    .await;
    held.rollback().await.expect("unlock");

    // Both claims get their request built at once: only the one within its lease calls.
    let row = wait_status(&service.db, id, "succeeded").await;
    assert_no_more_requests(&receiver, 1, Duration::from_millis(500)).await;
    assert_eq!(
        row.attempts, 2,
        "the expired claim counts, like a crashed one"
    );
    assert_eq!(attempts_recorded(&service.db, id).await, 1);
}

#[tokio::test]
async fn a_job_in_flight_is_cancelled_only_once_its_attempt_ends() {
    let service = TestService::start(test_settings("engine_cancel_in_flight").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::Hang]);
    let (status, created) = send(service.api(Method::POST, "/v1/jobs").json(&json!({
        "request": {"url": receiver.url("/slow"), "timeout": "1s"},
        "retry": {"schedule": ["1h"]},
    })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id: Uuid = created["id"].as_str().expect("id").parse().expect("uuid");
    receiver.wait_for(1, WAIT).await;

    let cancel = format!("/v1/jobs/{id}/cancel");
    let (status, refused) = send(service.api(Method::POST, &cancel)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "in_flight");
    assert!(refused["error"]["message"].is_string(), "{refused}");
    assert_eq!(delivery(&service.db, id).await.status, "pending");

    // The call times out and is recorded (next attempt in an hour): now it can be cancelled.
    eventually(WAIT, "the attempt recorded", || async {
        attempts_recorded(&service.db, id).await == 1
    })
    .await;
    let (status, cancelled) = send(service.api(Method::POST, &cancel)).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (_, job) = send(service.api(Method::GET, &format!("/v1/jobs/{id}"))).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["attempts"][0]["error_kind"], "timeout");
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn deleting_an_endpoint_lets_its_delivery_in_flight_finish() {
    let service = TestService::start(test_settings("engine_delete_in_flight").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::Hang]);
    let endpoint_id = insert_endpoint(&service.db, &Endpoint::new(receiver.url("/hook"))).await;
    let message_id = insert_message(&service.db, "{}").await;
    let in_flight = insert(
        &service.db,
        NewRow {
            timeout_ms: 1000,
            ..NewRow::webhook(endpoint_id, message_id)
        },
    )
    .await;
    let later_message = insert_message(&service.db, "{}").await;
    let waiting = insert(
        &service.db,
        NewRow {
            execute_at: chrono::Utc::now() + chrono::Duration::hours(1),
            ..NewRow::webhook(endpoint_id, later_message)
        },
    )
    .await;
    receiver.wait_for(1, WAIT).await;

    let (status, _) =
        send(service.api(Method::DELETE, &format!("/v1/endpoints/{endpoint_id}"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(delivery(&service.db, waiting).await.status, "cancelled");
    assert_eq!(
        delivery(&service.db, in_flight).await.status,
        "pending",
        "the call under way is not reported cancelled"
    );

    // Its attempt (a timeout) is recorded; the retry finds the endpoint gone and cancels.
    let row = wait_status(&service.db, in_flight, "cancelled").await;
    assert_eq!(row.last_error.as_deref(), Some("endpoint_deleted"));
    let recorded = rows::attempts(&service.db, in_flight).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].error_kind.as_deref(), Some("timeout"));
    assert_eq!(receiver.requests().len(), 1);
}
