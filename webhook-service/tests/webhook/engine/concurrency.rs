//! Several calls and several engines: per-endpoint fairness, two engines on one database,
//! a crash mid-attempt, and the SQLite claim.

use crate::helpers::TestService;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

use super::{
    WAIT, assert_no_more_requests,
    rows::{self, Endpoint, NewRow, delivery, insert, insert_endpoint, insert_message},
    wait_status,
};
use crate::helpers::{Receiver, Reply, eventually, test_settings};

#[tokio::test]
async fn a_slow_endpoint_does_not_starve_another() {
    let settings = webhook_service::Settings {
        webhook_max_in_flight: 4,
        webhook_endpoint_concurrency: 2,
        ..test_settings("engine_fairness").await
    };
    let service = TestService::start(settings).await;
    let slow = Receiver::start().await;
    slow.reply(std::iter::repeat_n(Reply::Hang, 100));
    let fast = Receiver::start().await;
    let slow_endpoint = insert_endpoint(&service.db, &Endpoint::new(slow.url("/slow"))).await;
    let fast_endpoint = insert_endpoint(&service.db, &Endpoint::new(fast.url("/fast"))).await;

    for _ in 0..10 {
        let message = insert_message(&service.db, "{}").await;
        insert(
            &service.db,
            NewRow {
                timeout_ms: 10_000,
                ..NewRow::webhook(slow_endpoint, message)
            },
        )
        .await;
    }
    slow.wait_for(2, WAIT).await;

    let started = Instant::now();
    for _ in 0..6 {
        let message = insert_message(&service.db, "{}").await;
        insert(&service.db, NewRow::webhook(fast_endpoint, message)).await;
    }
    fast.wait_for(6, Duration::from_secs(3)).await;
    let took = started.elapsed();
    eprintln!("6 deliveries to the fast endpoint beside a hanging one: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        slow.requests().len(),
        2,
        "the hanging endpoint holds its 2 slots, no more"
    );
}

#[tokio::test]
async fn two_engines_deliver_each_row_once() {
    let first_settings = webhook_service::Settings {
        webhook_max_in_flight: 8,
        ..test_settings("engine_two").await
    };
    let second_settings = webhook_service::Settings {
        amqp_namespace: common::testing::unique_namespace(),
        ..first_settings.clone()
    };
    let first = TestService::start(first_settings).await;
    let second = TestService::start(second_settings).await;
    let receiver = Receiver::start().await;

    let rows: Vec<NewRow> = (0..200)
        .map(|i| NewRow::job(receiver.url(&format!("/d/{i}"))))
        .collect();
    rows::insert_many(&first.db, rows).await;
    receiver.wait_for(200, Duration::from_secs(30)).await;
    assert_no_more_requests(&receiver, 200, Duration::from_millis(500)).await;
    let mut paths: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 200, "each delivery sent exactly once");
    eventually(WAIT, "all succeeded once", || async {
        rows::count(
            &second.db,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded' AND attempts = 1",
        )
        .await
            == 200
    })
    .await;
}

#[tokio::test]
async fn a_delivery_claimed_by_a_crashed_engine_is_sent_by_another_after_its_lease() {
    let settings = test_settings("engine_crash").await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::Hang]);

    // The first service runs on its own runtime: shutting that runtime down drops every task
    // mid-flight, like a killed process (no graceful stop, nothing recorded).
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let crashed = std::thread::spawn({
        let settings = settings.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let service = runtime.block_on(TestService::start(settings));
            let _ = started_tx.send(service.db.clone());
            let _ = kill_rx.recv();
            runtime.shutdown_background();
            drop(service);
        }
    });
    let db = started_rx.await.expect("first service started");
    let endpoint_id = insert_endpoint(&db, &Endpoint::new(receiver.url("/hook"))).await;
    let message_id = insert_message(&db, "{}").await;
    let id = insert(
        &db,
        NewRow {
            timeout_ms: 1000,
            ..NewRow::webhook(endpoint_id, message_id)
        },
    )
    .await;
    receiver.wait_for(1, WAIT).await;
    kill_tx.send(()).expect("kill");
    crashed.join().expect("crashed service thread");

    let survivor = TestService::start(webhook_service::Settings {
        amqp_namespace: common::testing::unique_namespace(),
        ..settings
    })
    .await;
    let requests = receiver.wait_for(2, Duration::from_secs(30)).await;
    let gap = requests[1].at - requests[0].at;
    eprintln!("re-sent {gap:?} after the crashed attempt (lease: 1 s timeout + 10 s margin)");
    assert!(gap >= Duration::from_millis(10_500), "{gap:?}");
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    let row = wait_status(&survivor.db, id, "succeeded").await;
    assert_eq!(row.attempts, 2, "the lost attempt counts");
    assert_eq!(rows::attempts(&survivor.db, id).await.len(), 1);
}

#[tokio::test]
async fn sqlite_delivers_retries_and_caps_an_endpoint() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let settings = webhook_service::Settings {
        database_url: format!("sqlite://{}/webhook.db?mode=rwc", dir.path().display()).into(),
        webhook_endpoint_concurrency: 1,
        ..test_settings("engine_sqlite").await
    };
    let service = TestService::start(settings).await;
    let hooks = Receiver::start().await;
    hooks.reply([Reply::status(500)]);
    let jobs = Receiver::start().await;
    let endpoint_id = insert_endpoint(&service.db, &Endpoint::new(hooks.url("/hook"))).await;

    let mut ids = Vec::new();
    for _ in 0..3 {
        let message = insert_message(&service.db, "{}").await;
        ids.push(insert(&service.db, NewRow::webhook(endpoint_id, message)).await);
    }
    ids.push(insert(&service.db, NewRow::job(jobs.url("/job"))).await);
    // No NOTIFY on SQLite: the engine's backstop poll finds rows inserted behind its back.
    eventually(WAIT, "every delivery succeeded", || async {
        let mut done = true;
        for &id in &ids {
            done &= delivery(&service.db, id).await.status == "succeeded";
        }
        done
    })
    .await;
    assert_eq!(hooks.requests().len(), 4, "3 webhooks, one retried");
    assert_eq!(jobs.requests().len(), 1);
    let retried = rows::attempts(&service.db, ids[0]).await.len()
        + rows::attempts(&service.db, ids[1]).await.len()
        + rows::attempts(&service.db, ids[2]).await.len();
    assert_eq!(retried, 4);
}

#[tokio::test]
async fn the_claim_scan_skips_saturated_endpoints_in_the_index() {
    let service = TestService::start(test_settings("engine_due_index").await).await;
    // The claim's inner scan; whatever the table's size, the plan with sequential scans off
    // shows whether the index alone answers it (saturated endpoints filtered on its entries).
    let plan = plan_without_seqscan(
        &service.db,
        "SELECT id, endpoint_id, next_attempt_at FROM deliveries \
         WHERE status = 'pending' AND next_attempt_at <= now() \
           AND (endpoint_id IS NULL OR NOT (endpoint_id = \
             ANY('{00000000-0000-0000-0000-000000000001}'::text::uuid[]))) \
         ORDER BY next_attempt_at LIMIT 800",
    )
    .await;
    assert!(
        plan.contains("Index Only Scan using deliveries_due"),
        "the due scan must not fetch each row from the table:\n{plan}"
    );
}

#[tokio::test]
async fn deliveries_without_a_job_or_still_pending_add_no_entry_to_the_job_and_completed_indexes() {
    let service = TestService::start(test_settings("engine_partial_indexes").await).await;
    let backend = service.db.get_database_backend();
    let definitions = service
        .db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'deliveries' \
             AND indexname IN ('deliveries_job', 'deliveries_completed_at') ORDER BY indexname",
        ))
        .await
        .expect("pg_indexes");
    let definitions: Vec<String> = definitions
        .iter()
        .map(|row| row.try_get::<String>("", "indexdef").expect("indexdef"))
        .collect();
    assert_eq!(definitions.len(), 2, "{definitions:?}");
    assert!(
        definitions[0].ends_with("WHERE (completed_at IS NOT NULL)"),
        "{definitions:?}"
    );
    assert!(
        definitions[1].ends_with("WHERE (job_id IS NOT NULL)"),
        "{definitions:?}"
    );
    // What reads them still can use them: a job's deliveries, the retention's finished rows.
    for (query, index) in [
        (
            "SELECT id FROM deliveries WHERE job_id = '00000000-0000-0000-0000-000000000001'",
            "deliveries_job",
        ),
        (
            "SELECT id FROM deliveries WHERE status <> 'pending' AND completed_at < now()",
            "deliveries_completed_at",
        ),
    ] {
        let plan = plan_without_seqscan(&service.db, query).await;
        assert!(
            plan.contains(index),
            "{query} does not use {index}:\n{plan}"
        );
    }
}

/// PostgreSQL's plan of `query` with sequential scans off, one line per plan node.
async fn plan_without_seqscan(db: &sea_orm::DatabaseConnection, query: &str) -> String {
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared("SET LOCAL enable_seqscan = off")
        .await
        .expect("set");
    let plan = txn
        .query_all_raw(Statement::from_string(
            txn.get_database_backend(),
            format!("EXPLAIN (COSTS OFF) {query}"),
        ))
        .await
        .expect("explain");
    plan.iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("plan line"))
        .collect::<Vec<_>>()
        .join("\n")
}
