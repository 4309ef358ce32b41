//! When attempts happen and what their outcome means: scheduling, retries, `Retry-After`,
//! timeouts, redirects, fail statuses, exhaustion and deadlines (jobs).

use crate::helpers::TestService;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::{
    WAIT, assert_no_more_requests,
    rows::{self, NewRow, delivery, insert},
    wait_status,
};
use crate::helpers::{Receiver, Reply, test_settings};

#[tokio::test]
async fn a_due_job_is_sent_once_and_a_later_one_on_time() {
    let service = TestService::start(test_settings("engine_due").await).await;
    let receiver = Receiver::start().await;

    let now_id = insert(&service.db, NewRow::job(receiver.url("/now"))).await;
    receiver.wait_for(1, WAIT).await;
    wait_status(&service.db, now_id, "succeeded").await;

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
    let service = TestService::start(test_settings("engine_retry").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::status(500), Reply::status(500)]);

    let id = insert(&service.db, NewRow::job(receiver.url("/flaky"))).await;
    receiver.wait_for(3, WAIT).await;
    let row = wait_status(&service.db, id, "succeeded").await;
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
    let service = TestService::start(test_settings("engine_retry_after").await).await;
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
    let service = TestService::start(test_settings("engine_timeout").await).await;
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
    wait_status(&service.db, id, "succeeded").await;
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
    let service = TestService::start(test_settings("engine_redirect").await).await;
    let receiver = Receiver::start().await;
    let redirect = Reply::Status(302, vec![("location", receiver.url("/elsewhere"))]);
    receiver.reply([redirect.clone(), redirect.clone(), redirect]);

    let id = insert(&service.db, NewRow::job(receiver.url("/start"))).await;
    let row = wait_status(&service.db, id, "failed").await;
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
    let service = TestService::start(test_settings("engine_fail_status").await).await;
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
    let row = wait_status(&service.db, failing, "failed").await;
    assert_eq!((row.attempts, row.last_status), (1, Some(422)));
    wait_status(&service.db, retried, "succeeded").await;
    assert_eq!(delivery(&service.db, retried).await.attempts, 2);
    assert_no_more_requests(&listed, 1, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn no_attempt_starts_after_the_deadline() {
    let service = TestService::start(test_settings("engine_deadline").await).await;
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
    let row = wait_status(&service.db, id, "failed").await;
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
    let row = wait_status(&service.db, late, "failed").await;
    assert_eq!(
        (row.attempts, row.last_error.as_deref()),
        (0, Some("deadline"))
    );
    assert!(rows::attempts(&service.db, late).await.is_empty());
    assert!(receiver.requests().iter().all(|r| r.uri.path() != "/late"));
}
