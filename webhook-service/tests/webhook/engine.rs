//! The delivery engine against real PostgreSQL and local receivers: scheduling, the retry
//! policy, deadlines, signing, per-endpoint concurrency, several engines, crash safety,
//! endpoint health and retention. Deliveries are inserted with SQL (the rows the API and the
//! consumer write), followed by the `NOTIFY` every producer sends.

mod rows;

use std::time::{Duration, Instant};

use chrono::Utc;
use webhook_service::signing::{self, Secret};

use self::rows::{Endpoint, NewRow, delivery, endpoint, insert, insert_endpoint, insert_message};
use crate::helpers::{Receiver, Reply, TestService, eventually, test_settings};

const WAIT: Duration = Duration::from_secs(15);

/// [`TestService::start`], after making ring the default rustls provider (the test client is a
/// reqwest built without one).
async fn start(settings: webhook_service::Settings) -> TestService {
    // An error only says a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    TestService::start(settings).await
}

/// Asserts that `receiver` gets no request beyond `n` within `window` (the one fixed sleep a
/// "did not happen" needs).
async fn assert_no_more_requests(receiver: &Receiver, n: usize, window: Duration) {
    tokio::time::sleep(window).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), n, "unexpected requests: {requests:?}");
}

#[tokio::test]
async fn a_due_job_is_sent_once_and_a_later_one_on_time() {
    let service = start(test_settings("engine_due").await).await;
    let receiver = Receiver::start().await;

    let now_id = insert(&service.db, NewRow::job(receiver.url("/now"))).await;
    receiver.wait_for(1, WAIT).await;
    eventually(WAIT, "succeeded", || async {
        delivery(&service.db, now_id).await.status == "succeeded"
    })
    .await;

    let execute_at = Utc::now() + chrono::Duration::seconds(1);
    let due = Instant::now() + Duration::from_secs(1);
    let later_id = insert(
        &service.db,
        NewRow {
            execute_at,
            ..NewRow::job(receiver.url("/later"))
        },
    )
    .await;
    let requests = receiver.wait_for(2, WAIT).await;
    let later = &requests[1];
    assert_eq!(later.uri.path(), "/later");
    // The engine compares `next_attempt_at` with its own clock; a few ms of slack for the
    // two clocks sampled one after the other above.
    assert!(
        later.at + Duration::from_millis(5) >= due,
        "sent {:?} early",
        due - later.at
    );
    let lateness = later.at.saturating_duration_since(due);
    eprintln!("scheduling lateness: {lateness:?}");
    assert!(lateness <= Duration::from_millis(300), "{lateness:?} late");

    assert_no_more_requests(&receiver, 2, Duration::from_millis(500)).await;
    let row = delivery(&service.db, later_id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("succeeded", 1));
    assert_eq!(delivery(&service.db, now_id).await.attempts, 1);
}

#[tokio::test]
async fn failures_are_retried_until_success() {
    let service = start(test_settings("engine_retry").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::status(500), Reply::status(500)]);

    let id = insert(&service.db, NewRow::job(receiver.url("/flaky"))).await;
    receiver.wait_for(3, WAIT).await;
    let row = eventually(WAIT, "succeeded", || async {
        let row = delivery(&service.db, id).await;
        (row.status == "succeeded").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_status, Some(200));
    assert_eq!(row.last_error, None);
    assert!(row.completed_at.is_some());
    let attempts = rows::attempts(&service.db, id).await;
    let seen: Vec<_> = attempts
        .iter()
        .map(|a| (a.attempt, a.status, a.error_kind.as_deref()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, Some(500), Some("status")),
            (2, Some(500), Some("status")),
            (3, Some(200), None)
        ]
    );
}

#[tokio::test]
async fn retry_after_is_honoured_for_429() {
    let service = start(test_settings("engine_retry_after").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::Status(429, vec![("retry-after", "1".into())])]);

    insert(&service.db, NewRow::job(receiver.url("/limited"))).await;
    let requests = receiver.wait_for(2, WAIT).await;
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_is_retried() {
    let service = start(test_settings("engine_timeout").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::Hang]);

    let id = insert(
        &service.db,
        NewRow {
            timeout_ms: 300,
            ..NewRow::job(receiver.url("/slow"))
        },
    )
    .await;
    receiver.wait_for(2, WAIT).await;
    eventually(WAIT, "succeeded", || async {
        delivery(&service.db, id).await.status == "succeeded"
    })
    .await;
    let attempts = rows::attempts(&service.db, id).await;
    assert_eq!(attempts[0].error_kind.as_deref(), Some("timeout"));
    assert_eq!(attempts[0].status, None);
    assert!(
        attempts[0].duration_ms >= 300,
        "{}",
        attempts[0].duration_ms
    );
    assert_eq!(attempts[1].status, Some(200));
}

#[tokio::test]
async fn redirects_are_failures_never_followed_and_exhausted_attempts_fail() {
    let service = start(test_settings("engine_redirect").await).await;
    let receiver = Receiver::start().await;
    let redirect = Reply::Status(302, vec![("location", receiver.url("/elsewhere"))]);
    receiver.reply([redirect.clone(), redirect.clone(), redirect]);

    let id = insert(&service.db, NewRow::job(receiver.url("/start"))).await;
    let row = eventually(WAIT, "failed", || async {
        let row = delivery(&service.db, id).await;
        (row.status == "failed").then_some(row)
    })
    .await;
    // Default test schedule: 2 delays, so 3 attempts, each answered 302.
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_status, Some(302));
    assert_eq!(row.last_error.as_deref(), Some("redirect"));
    assert_no_more_requests(&receiver, 3, Duration::from_millis(300)).await;
    assert!(
        receiver
            .requests()
            .iter()
            .all(|request| request.uri.path() == "/start")
    );
}

#[tokio::test]
async fn a_listed_4xx_fails_at_once_and_an_unlisted_one_is_retried() {
    let service = start(test_settings("engine_fail_status").await).await;
    let listed = Receiver::start().await;
    listed.reply([Reply::status(422)]);
    let unlisted = Receiver::start().await;
    unlisted.reply([Reply::status(404)]);

    let failing = insert(
        &service.db,
        NewRow {
            fail_statuses: Some(vec![422]),
            ..NewRow::job(listed.url("/strict"))
        },
    )
    .await;
    let retried = insert(&service.db, NewRow::job(unlisted.url("/lenient"))).await;
    let row = eventually(WAIT, "failed", || async {
        let row = delivery(&service.db, failing).await;
        (row.status == "failed").then_some(row)
    })
    .await;
    assert_eq!((row.attempts, row.last_status), (1, Some(422)));
    eventually(WAIT, "succeeded", || async {
        delivery(&service.db, retried).await.status == "succeeded"
    })
    .await;
    assert_eq!(delivery(&service.db, retried).await.attempts, 2);
    assert_no_more_requests(&listed, 1, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn gone_fails_at_once_and_disables_the_endpoint() {
    let service = start(test_settings("engine_gone").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::status(410)]);
    let endpoint_id = insert_endpoint(&service.db, &Endpoint::new(receiver.url("/hook"))).await;

    let first = insert(
        &service.db,
        NewRow::webhook(endpoint_id, insert_message(&service.db, "{}").await),
    )
    .await;
    let row = eventually(WAIT, "failed", || async {
        let row = delivery(&service.db, first).await;
        (row.status == "failed").then_some(row)
    })
    .await;
    assert_eq!((row.attempts, row.last_status), (1, Some(410)));
    assert_eq!(row.last_error.as_deref(), Some("gone"));
    let state = endpoint(&service.db, endpoint_id).await;
    assert!(!state.enabled);
    assert_eq!(state.disabled_reason.as_deref(), Some("gone"));

    // A disabled endpoint gets no call: its deliveries fail, recoverable later.
    let second = insert(
        &service.db,
        NewRow::webhook(endpoint_id, insert_message(&service.db, "{}").await),
    )
    .await;
    let row = eventually(WAIT, "failed", || async {
        let row = delivery(&service.db, second).await;
        (row.status == "failed").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 0);
    assert_eq!(row.last_error.as_deref(), Some("endpoint_disabled"));

    // A deleted endpoint's deliveries are cancelled.
    rows::execute(&service.db, "DELETE FROM endpoints").await;
    let third = insert(
        &service.db,
        NewRow::webhook(endpoint_id, insert_message(&service.db, "{}").await),
    )
    .await;
    eventually(WAIT, "cancelled", || async {
        delivery(&service.db, third).await.status == "cancelled"
    })
    .await;
    assert_no_more_requests(&receiver, 1, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn no_attempt_starts_after_the_deadline() {
    let service = start(test_settings("engine_deadline").await).await;
    let receiver = Receiver::start().await;
    receiver.reply(std::iter::repeat_n(Reply::status(503), 100));

    let deadline = Utc::now() + chrono::Duration::milliseconds(1200);
    let deadline_instant = Instant::now() + Duration::from_millis(1200);
    let id = insert(
        &service.db,
        NewRow {
            deadline: Some(deadline),
            retry_schedule: Some(vec![250; 20]),
            ..NewRow::job(receiver.url("/down"))
        },
    )
    .await;
    let row = eventually(WAIT, "failed", || async {
        let row = delivery(&service.db, id).await;
        (row.status == "failed").then_some(row)
    })
    .await;
    assert_eq!(row.last_error.as_deref(), Some("deadline"));
    let sent = receiver.requests();
    assert!(
        sent.len() >= 3,
        "retried until the deadline: {}",
        sent.len()
    );
    assert_no_more_requests(&receiver, sent.len(), Duration::from_millis(500)).await;
    for request in &sent {
        // An attempt starts at or before the deadline; it reaches the receiver a few ms later.
        assert!(
            request.at <= deadline_instant + Duration::from_millis(50),
            "a request {:?} after the deadline",
            request.at - deadline_instant
        );
    }

    // Already past its deadline when claimed: failed without a call.
    let late = insert(
        &service.db,
        NewRow {
            deadline: Some(Utc::now() - chrono::Duration::seconds(1)),
            ..NewRow::job(receiver.url("/late"))
        },
    )
    .await;
    let row = eventually(WAIT, "failed", || async {
        let row = delivery(&service.db, late).await;
        (row.status == "failed").then_some(row)
    })
    .await;
    assert_eq!(
        (row.attempts, row.last_error.as_deref()),
        (0, Some("deadline"))
    );
    assert!(rows::attempts(&service.db, late).await.is_empty());
    assert!(receiver.requests().iter().all(|r| r.uri.path() != "/late"));
}

#[tokio::test]
async fn webhooks_are_signed_with_one_id_across_retries_and_both_secrets_in_a_rotation() {
    let service = start(test_settings("engine_signing").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::status(500)]);
    let (current, previous) = (Secret::generate(), Secret::generate());
    let endpoint_id = insert_endpoint(
        &service.db,
        &Endpoint {
            headers: serde_json::json!({"x-custom": "custom-value", "webhook-id": "forged"}),
            previous_secret: Some((previous.to_text(), Utc::now() + chrono::Duration::hours(1))),
            ..Endpoint::with_secret(receiver.url("/hook?token=s3cret"), &current)
        },
    )
    .await;
    let payload = r#"{"type":"user.registered","data":{"user_id":"u1"}}"#;
    let message_id = insert_message(&service.db, payload).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let id = insert(
        &service.db,
        NewRow {
            traceparent: Some(parent.into()),
            ..NewRow::webhook(endpoint_id, message_id)
        },
    )
    .await;

    let requests = receiver.wait_for(2, WAIT).await;
    let now = Utc::now().timestamp();
    for request in &requests {
        assert_eq!(
            request.header("webhook-id"),
            format!("msg_{}", message_id.simple())
        );
        assert_eq!(request.body.as_ref(), payload.as_bytes());
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("x-custom"), "custom-value");
        assert_eq!(request.headers.get_all("webhook-id").iter().count(), 1);
        assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
        for secret in [&current, &previous] {
            signing::verify(
                &[secret],
                &request.headers,
                &request.body,
                now,
                signing::DEFAULT_TOLERANCE,
            )
            .expect("each secret of the rotation verifies");
        }
        let traceparent = request.header("traceparent");
        assert_eq!(&traceparent[..36], &parent[..36], "same trace");
        assert_ne!(&traceparent[36..52], &parent[36..52], "new span");
    }
    eventually(WAIT, "succeeded", || async {
        delivery(&service.db, id).await.status == "succeeded"
    })
    .await;
    let attempts = rows::attempts(&service.db, id).await;
    assert!(
        attempts[0].url.ends_with("/hook?token=***"),
        "{}",
        attempts[0].url
    );

    // After the grace period only the current secret signs.
    rows::execute(
        &service.db,
        "UPDATE endpoints SET previous_secret_until = now() - interval '1 second'",
    )
    .await;
    insert(
        &service.db,
        NewRow::webhook(endpoint_id, insert_message(&service.db, payload).await),
    )
    .await;
    let requests = receiver.wait_for(3, WAIT).await;
    let signature = requests[2].header("webhook-signature");
    assert_eq!(signature.split(' ').count(), 1, "{signature}");
    let now = Utc::now().timestamp();
    let verify = |secret: &Secret| {
        signing::verify(
            &[secret],
            &requests[2].headers,
            &requests[2].body,
            now,
            signing::DEFAULT_TOLERANCE,
        )
    };
    verify(&current).expect("the current secret signs");
    verify(&previous).expect_err("the previous one no longer does");
}

#[tokio::test]
async fn a_slow_endpoint_does_not_starve_another() {
    let settings = webhook_service::Settings {
        webhook_max_in_flight: 4,
        webhook_endpoint_concurrency: 2,
        ..test_settings("engine_fairness").await
    };
    let service = start(settings).await;
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
    let first = start(first_settings).await;
    let second = start(second_settings).await;
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
            let service = runtime.block_on(start(settings));
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

    let survivor = start(webhook_service::Settings {
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
    let row = eventually(WAIT, "succeeded", || async {
        let row = delivery(&survivor.db, id).await;
        (row.status == "succeeded").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 2, "the lost attempt counts");
    assert_eq!(rows::attempts(&survivor.db, id).await.len(), 1);
}

#[tokio::test]
async fn an_endpoint_failing_for_disable_after_is_disabled_and_a_success_clears_the_run() {
    let settings = webhook_service::Settings {
        webhook_disable_after: Duration::from_secs(1),
        ..test_settings("engine_disable").await
    };
    let service = start(settings).await;
    let failing = Receiver::start().await;
    failing.reply(std::iter::repeat_n(Reply::status(500), 1000));
    let recovering = Receiver::start().await;
    recovering.reply([Reply::status(500)]);
    let failing_endpoint = insert_endpoint(&service.db, &Endpoint::new(failing.url("/a"))).await;
    let recovering_endpoint =
        insert_endpoint(&service.db, &Endpoint::new(recovering.url("/b"))).await;

    let id = insert(
        &service.db,
        NewRow {
            retry_schedule: Some(vec![200; 30]),
            ..NewRow::webhook(failing_endpoint, insert_message(&service.db, "{}").await)
        },
    )
    .await;
    let recovered = insert(
        &service.db,
        NewRow::webhook(recovering_endpoint, insert_message(&service.db, "{}").await),
    )
    .await;

    let row = eventually(WAIT, "failed", || async {
        let row = delivery(&service.db, id).await;
        (row.status == "failed").then_some(row)
    })
    .await;
    assert_eq!(row.last_error.as_deref(), Some("endpoint_disabled"));
    let state = endpoint(&service.db, failing_endpoint).await;
    assert!(!state.enabled);
    assert_eq!(state.disabled_reason.as_deref(), Some("failing"));
    let calls = failing.requests().len();
    assert!((5..=10).contains(&calls), "{calls} calls in about 1 s");
    let rendered = common::telemetry::metrics().render();
    assert!(
        rendered.contains("webhook_endpoints_disabled_total{reason=\"failing\"}"),
        "{rendered}"
    );

    eventually(WAIT, "succeeded", || async {
        delivery(&service.db, recovered).await.status == "succeeded"
    })
    .await;
    let state = endpoint(&service.db, recovering_endpoint).await;
    assert!(state.enabled);
    assert_eq!(state.failing_since, None, "a success ends the failure run");
}

#[tokio::test]
async fn retention_purges_finished_rows_and_keeps_pending_ones() {
    let settings = webhook_service::Settings {
        webhook_attempt_retention: Duration::from_secs(1),
        ..test_settings("engine_retention").await
    };
    let service = start(settings).await;
    let receiver = Receiver::start().await;
    let endpoint_id = insert_endpoint(&service.db, &Endpoint::new(receiver.url("/hook"))).await;

    let delivered_message = insert_message(&service.db, "{}").await;
    let delivered = insert(&service.db, NewRow::webhook(endpoint_id, delivered_message)).await;
    let waiting_message = insert_message(&service.db, "{}").await;
    let waiting = insert(
        &service.db,
        NewRow {
            execute_at: Utc::now() + chrono::Duration::hours(1),
            ..NewRow::webhook(endpoint_id, waiting_message)
        },
    )
    .await;
    receiver.wait_for(1, WAIT).await;

    eventually(WAIT, "finished rows purged", || async {
        let count = |sql: String| {
            let db = service.db.clone();
            async move { rows::count(&db, &sql).await }
        };
        count(format!(
            "SELECT COUNT(*) FROM deliveries WHERE id = '{delivered}'"
        ))
        .await
            == 0
            && count(format!(
                "SELECT COUNT(*) FROM attempts WHERE delivery_id = '{delivered}'"
            ))
            .await
                == 0
            && count(format!(
                "SELECT COUNT(*) FROM messages WHERE id = '{delivered_message}'"
            ))
            .await
                == 0
    })
    .await;
    assert_eq!(delivery(&service.db, waiting).await.status, "pending");
    assert_eq!(
        rows::count(
            &service.db,
            &format!("SELECT COUNT(*) FROM messages WHERE id = '{waiting_message}'")
        )
        .await,
        1,
        "a message with a pending delivery stays"
    );
}

#[tokio::test]
async fn engine_metrics_exist_from_the_start() {
    let _service = start(test_settings("engine_metrics").await).await;
    let rendered = eventually(WAIT, "engine metrics", || async {
        let rendered = common::telemetry::metrics().render();
        rendered.contains("webhook_due_backlog").then_some(rendered)
    })
    .await;
    for series in [
        "webhook_attempts_total{kind=\"job\",outcome=\"retry\"}",
        "webhook_attempts_total{kind=\"webhook\",outcome=\"failed\"}",
        "webhook_oldest_due_age_seconds",
        "webhook_endpoints_disabled_total{reason=\"gone\"}",
    ] {
        assert!(rendered.contains(series), "{series} missing:\n{rendered}");
    }
}
