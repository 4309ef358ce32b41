//! The seed's "webhook retry queue" story through the API and the engine together: a job runs
//! at `execute_at`, is retried per its policy, and its outcome is reported to `notify`, signed
//! with the job's secret and itself retried.

use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use webhook_service::signing::{self, Secret};

use crate::{
    api::send,
    helpers::{Received, Receiver, Reply, TestService, eventually, test_settings},
};

const WAIT: Duration = Duration::from_secs(15);

/// The report `received` carries, after checking its signature with the job's secret.
fn verified_report(received: &Received, secret: &str) -> Value {
    let secret = Secret::parse(secret).expect("whsec_ secret");
    signing::verify(
        &[&secret],
        &received.headers,
        &received.body,
        Utc::now().timestamp(),
        signing::DEFAULT_TOLERANCE,
    )
    .expect("the report is signed with the job's notify secret");
    received.json()
}

async fn job_state(service: &TestService, id: &str) -> Value {
    let (status, job) = send(service.api(Method::GET, &format!("/v1/jobs/{id}"))).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

#[tokio::test]
async fn a_job_runs_at_execute_at_is_retried_and_its_report_is_delivered_with_retries() {
    let service = TestService::start(test_settings("scheduled_story").await).await;
    let target = Receiver::start().await;
    let notify = Receiver::start().await;
    target.reply([Reply::status(503)]);
    notify.reply([Reply::status(500)]);
    let execute_at = Utc::now() + chrono::Duration::milliseconds(1500);

    let (status, created) = send(service.api(Method::POST, "/v1/jobs").json(&json!({
        "execute_at": execute_at.to_rfc3339(),
        // The seed's field names.
        "request": {
            "url": target.url("/charge"),
            "verb": "PUT",
            "header": {"x-job": "42"},
            "body": {"amount": 7},
            "timeout": 2000,
        },
        "notify": {"url": notify.url("/outcome"), "header": {"x-notify": "yes"}},
        "retry": {"schedule": ["200ms", "200ms"]},
    })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["notify_secret"]
        .as_str()
        .expect("a notify secret, returned once")
        .to_owned();

    let calls = target.wait_for(2, WAIT).await;
    let first_at =
        chrono::DateTime::<Utc>::from(std::time::SystemTime::now() - calls[0].at.elapsed());
    assert!(
        first_at >= execute_at - chrono::Duration::milliseconds(5),
        "not executed before execute_at ({first_at} < {execute_at})"
    );
    let late = (first_at - execute_at).num_milliseconds();
    assert!(late <= 500, "executed {late} ms after execute_at");
    assert_eq!(calls[0].method, Method::PUT);
    assert_eq!(calls[0].header("x-job"), "42");
    assert_eq!(calls[0].json(), json!({"amount": 7}));
    assert!(
        calls[1].at.duration_since(calls[0].at) >= Duration::from_millis(150),
        "the retry waited for the schedule (200 ms ± 20 %)"
    );

    // The report: the first POST fails (500), the retry arrives, both signed, same id.
    let reports = notify.wait_for(2, WAIT).await;
    assert_eq!(
        reports[0].header("webhook-id"),
        reports[1].header("webhook-id")
    );
    assert_eq!(reports[1].header("x-notify"), "yes");
    let report = verified_report(&reports[1], &secret);
    assert_eq!(report["type"], "job.completed");
    assert_eq!(report["job_id"], id.as_str());
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["attempts"], 2);
    assert_eq!(report["last_status"], 200);
    assert!(report["duration_ms"].is_i64(), "{report}");

    let job = eventually(WAIT, "the report delivered", || async {
        let job = job_state(&service, &id).await;
        (job["notify"]["status"] == "succeeded").then_some(job)
    })
    .await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["attempts"].as_array().map(Vec::len), Some(2));
    assert_eq!(job["attempts"][0]["status"], 503);
    assert_eq!(job["notify"]["attempts"], 2);
}

#[tokio::test]
async fn exhausted_and_cancelled_jobs_are_reported_too() {
    let service = TestService::start(test_settings("scheduled_outcomes").await).await;
    let target = Receiver::start().await;
    let notify = Receiver::start().await;
    target.reply([Reply::status(500), Reply::status(500)]);

    let (_, failing) = send(service.api(Method::POST, "/v1/jobs").json(&json!({
        "request": {"url": target.url("/always-500")},
        "notify": {"url": notify.url("/failed")},
        "retry": {"schedule": ["100ms"]},
    })))
    .await;
    let (_, later) = send(service.api(Method::POST, "/v1/jobs").json(&json!({
        "execute_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
        "request": {"url": target.url("/never")},
        "notify": {"url": notify.url("/cancelled")},
    })))
    .await;
    let later_id = later["id"].as_str().expect("id");
    let (status, _) = send(service.api(Method::POST, &format!("/v1/jobs/{later_id}/cancel"))).await;
    assert_eq!(status, StatusCode::OK);

    let reports = notify.wait_for(2, WAIT).await;
    let report_at = |path: &str, secret: &Value| {
        let received = reports
            .iter()
            .find(|r| r.uri.path() == path)
            .unwrap_or_else(|| panic!("a report at {path}"));
        verified_report(received, secret.as_str().expect("secret"))
    };
    let failed = report_at("/failed", &failing["notify_secret"]);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 2, "the schedule allows two attempts");
    assert_eq!(failed["last_status"], 500);
    let cancelled = report_at("/cancelled", &later["notify_secret"]);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["attempts"], 0);
    assert_eq!(target.requests().len(), 2, "the cancelled job never ran");
}
