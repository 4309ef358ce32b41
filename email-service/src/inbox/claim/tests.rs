//! The claim against a real PostgreSQL inbox: its statements, and the cap and the claim under
//! concurrency.

use std::sync::{Arc, Mutex};

use sea_orm::{Statement, Value};

use super::*;
use crate::inbox::mark_sent;

const EVENT_TYPE: &str = "user.registered.v1";
const LEASE: Duration = Duration::from_secs(5);

/// A fresh PostgreSQL inbox, and the statements run on it from now on.
async fn recorded_inbox(label: &str) -> (DatabaseConnection, Arc<Mutex<Vec<String>>>) {
    let url = common::testing::fresh_postgres_database(label)
        .await
        .unwrap();
    let mut db = crate::migration::connect_and_migrate(&url, 8)
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    db.set_metric_callback(move |info| {
        sink.lock().unwrap().push(info.statement.sql.clone());
    });
    (db, log)
}

fn cap(limit: u32) -> CapCheck {
    CapCheck {
        recipient_key: "0123abcd".repeat(8),
        limit,
        since: Utc::now() - crate::cap::WINDOW,
    }
}

fn taken(log: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test]
async fn a_first_seen_capped_mail_costs_the_lock_and_one_insert_and_its_mark_one_update() {
    let (db, log) = recorded_inbox("email_claim_cost").await;
    let (event_id, instance) = (Uuid::new_v4(), Uuid::new_v4());
    let claimed = claim(&db, event_id, EVENT_TYPE, instance, LEASE, Some(&cap(10))).await;
    assert_eq!(claimed.unwrap(), Claim::Fresh);
    let statements = taken(&log);
    assert_eq!(statements.len(), 2, "{statements:#?}");
    assert!(statements[0].contains("pg_advisory_xact_lock"));
    assert!(statements[1].starts_with("INSERT INTO inbox"));
    mark_sent(&db, event_id).await.unwrap();
    assert_eq!(taken(&log).len(), 1);

    // Exempt (or the cap off): the insert alone.
    let exempt = claim(&db, Uuid::new_v4(), EVENT_TYPE, instance, LEASE, None).await;
    assert_eq!(exempt.unwrap(), Claim::Fresh);
    assert_eq!(taken(&log).len(), 1);

    // The redelivery of the sent one: recognised.
    let again = claim(&db, event_id, EVENT_TYPE, instance, LEASE, Some(&cap(10))).await;
    assert_eq!(again.unwrap(), Claim::AlreadySent);
}

#[tokio::test]
async fn concurrent_first_claims_of_one_address_admit_exactly_the_cap() {
    let (db, _) = recorded_inbox("email_claim_race").await;
    let claims = (0..40).map(|_| {
        let db = db.clone();
        // Several instances: each claim its own.
        tokio::spawn(async move {
            let (event_id, instance) = (Uuid::new_v4(), Uuid::new_v4());
            claim(&db, event_id, EVENT_TYPE, instance, LEASE, Some(&cap(5)))
                .await
                .unwrap()
        })
    });
    let claims = futures::future::try_join_all(claims).await.unwrap();
    let fresh = claims.iter().filter(|c| **c == Claim::Fresh).count();
    let suppressed = claims.iter().filter(|c| **c == Claim::Suppressed).count();
    assert_eq!((fresh, suppressed), (5, 35), "{claims:?}");
    let tagged = common::testing::scalar(
        &db,
        "SELECT COUNT(*) FROM inbox WHERE recipient_key IS NOT NULL AND state = 'sending'",
    )
    .await;
    assert_eq!(tagged, 5, "only admitted rows carry the key");
}

#[tokio::test]
async fn concurrent_copies_of_one_event_in_several_instances_claim_it_once() {
    let (db, _) = recorded_inbox("email_claim_copies").await;
    let event_id = Uuid::new_v4();
    let claims = (0..8).map(|_| {
        let db = db.clone();
        tokio::spawn(async move {
            claim(
                &db,
                event_id,
                EVENT_TYPE,
                Uuid::new_v4(),
                LEASE,
                Some(&cap(5)),
            )
            .await
            .unwrap()
        })
    });
    let claims = futures::future::try_join_all(claims).await.unwrap();
    let fresh = claims.iter().filter(|c| **c == Claim::Fresh).count();
    let elsewhere = claims
        .iter()
        .filter(|c| matches!(c, Claim::InFlightElsewhere { .. }))
        .count();
    assert_eq!((fresh, elsewhere), (1, 7), "{claims:?}");
    let row = find_inbox_entry(&db, event_id).await.unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (SendState::Sending, 1));
}

#[tokio::test]
async fn a_taken_over_row_is_decided_under_the_cap_too() {
    let (db, _) = recorded_inbox("email_claim_takeover").await;
    let me = Uuid::new_v4();
    // A crashed claimer's row, admitted before (it carries the key), claimed 2 s ago.
    let crashed = Uuid::new_v4();
    let claimed_at = Utc::now() - chrono::Duration::seconds(2);
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO inbox (event_id, event_type, state, attempts, claimed_by, created_at, \
         updated_at, recipient_key) VALUES ($1, $2, 'sending', 1, $3, $4, $4, $5)",
        [
            Value::from(crashed),
            EVENT_TYPE.into(),
            Uuid::new_v4().into(),
            claimed_at.into(),
            cap(1).recipient_key.into(),
        ],
    ))
    .await
    .unwrap();
    // It fills a cap of 1: a fresh mail to the address is kept back.
    let fresh = claim(&db, Uuid::new_v4(), EVENT_TYPE, me, LEASE, Some(&cap(1))).await;
    assert_eq!(fresh.unwrap(), Claim::Suppressed);
    // Within the lease it is in flight elsewhere; after it, resumed (and still admitted:
    // it does not count against itself).
    let early = claim(&db, crashed, EVENT_TYPE, me, LEASE, Some(&cap(1))).await;
    assert!(
        matches!(early.unwrap(), Claim::InFlightElsewhere { remaining } if remaining <= Duration::from_secs(3))
    );
    let late = Duration::from_secs(1);
    let resumed = claim(&db, crashed, EVENT_TYPE, me, late, Some(&cap(1))).await;
    assert_eq!(resumed.unwrap(), Claim::Resumed);

    // A failed mail retried once the address reached the cap: kept back, recorded.
    let failed = Uuid::new_v4();
    let first = claim(&db, failed, EVENT_TYPE, me, LEASE, Some(&cap(2))).await;
    assert_eq!(first.unwrap(), Claim::Fresh);
    crate::inbox::mark_failed(&db, failed, "421 try later")
        .await
        .unwrap();
    let other = claim(&db, Uuid::new_v4(), EVENT_TYPE, me, LEASE, Some(&cap(2))).await;
    assert_eq!(other.unwrap(), Claim::Fresh);
    let retried = claim(&db, failed, EVENT_TYPE, me, LEASE, Some(&cap(2))).await;
    assert_eq!(retried.unwrap(), Claim::Suppressed);
    let row = find_inbox_entry(&db, failed).await.unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (SendState::Suppressed, 2));
    let again = claim(&db, failed, EVENT_TYPE, me, LEASE, Some(&cap(2))).await;
    assert_eq!(again.unwrap(), Claim::AlreadySuppressed);
}
