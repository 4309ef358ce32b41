//! `POST /v1/jobs`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/cancel`: the rows a job creates
//! (its delivery, its outcome report), idempotency and input checks. The engine that sends is
//! tested elsewhere; jobs here are scheduled an hour ahead so none is sent while a test looks.

use chrono::{DateTime, Duration, Utc};
use reqwest::{Method, StatusCode};
use sea_orm::QueryResult;
use serde_json::{Value, json};

use crate::{
    api::{assert_invalid, row, send},
    helpers::{Receiver, TestService, test_settings},
};

fn in_an_hour() -> String {
    (Utc::now() + Duration::hours(1)).to_rfc3339()
}

async fn delivery(service: &TestService, condition: &str) -> QueryResult {
    row(
        &service.db,
        &format!(
            "SELECT id, kind, job_id, url, method, headers::text AS headers, body, timeout_ms, \
             retry_schedule::text AS retry_schedule, status, attempts, next_attempt_at, \
             completed_at, deadline FROM deliveries WHERE {condition}"
        ),
    )
    .await
}

async fn count(service: &TestService, sql: &str) -> i64 {
    common::testing::scalar(&service.db, sql).await
}

#[tokio::test]
async fn a_job_is_a_delivery_due_at_execute_at() {
    let service = TestService::start(test_settings("jobs_create").await).await;
    let execute_at = Utc::now() + Duration::hours(1);
    let (status, created) = send(service.api(Method::POST, "/v1/jobs").json(&json!({
        "execute_at": execute_at.to_rfc3339(),
        "request": {
            "url": "https://example.com/charge",
            "headers": {"X-Api-Key": "k3y", "X-Trace": "t1"},
            "body": "plain text",
            "timeout": "3s",
        },
        "retry": {"schedule": ["1s", 60000], "fail_statuses": [400]},
    })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["status"], "scheduled");
    assert!(created.get("notify_secret").is_none());
    let id = created["id"].as_str().expect("id").to_owned();

    let row = delivery(&service, &format!("id = '{id}'")).await;
    assert_eq!(row.try_get::<String>("", "kind").expect("kind"), "job");
    assert_eq!(
        row.try_get::<Option<uuid::Uuid>>("", "job_id")
            .expect("job_id"),
        Some(id.parse().expect("uuid"))
    );
    assert_eq!(row.try_get::<String>("", "method").expect("method"), "POST");
    assert_eq!(
        row.try_get::<String>("", "url").expect("url"),
        "https://example.com/charge"
    );
    assert_eq!(
        row.try_get::<String>("", "status").expect("status"),
        "pending"
    );
    assert_eq!(row.try_get::<i64>("", "timeout_ms").expect("timeout"), 3000);
    assert_eq!(
        row.try_get::<Option<String>>("", "body")
            .expect("body")
            .as_deref(),
        Some("plain text")
    );
    let due: DateTime<Utc> = row.try_get("", "next_attempt_at").expect("due");
    assert!(
        (due - execute_at).num_milliseconds().abs() <= 1,
        "{due} vs {execute_at}"
    );
    let schedule: String = row.try_get("", "retry_schedule").expect("schedule");
    assert_eq!(
        serde_json::from_str::<Value>(&schedule).expect("json"),
        json!([1000, 60000])
    );

    let (status, job) = send(service.api(Method::GET, &format!("/v1/jobs/{id}"))).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "scheduled");
    assert_eq!(job["attempts_count"], 0);
    assert_eq!(job["attempts"], json!([]));
    assert_eq!(job["notify"], Value::Null);
    assert_eq!(job["request"]["method"], "POST");
    let headers = job["request"]["headers"].to_string();
    assert!(
        headers.contains("x-trace") && headers.contains("t1"),
        "{headers}"
    );
    assert!(!headers.contains("k3y"), "credential shown: {headers}");
    let (status, _) =
        send(service.api(Method::GET, &format!("/v1/jobs/{}", uuid::Uuid::now_v7()))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Absent or past execute_at: due now.
    let receiver = Receiver::start().await;
    for execute_at in [json!(null), json!("2001-01-01T00:00:00Z")] {
        let before = Utc::now();
        let (status, created) = send(service.api(Method::POST, "/v1/jobs").json(&json!({
            "execute_at": execute_at, "request": {"url": receiver.url("/now")},
        })))
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{created}");
        let at: DateTime<Utc> = created["execute_at"]
            .as_str()
            .expect("at")
            .parse()
            .expect("time");
        assert!(
            at >= before - Duration::seconds(1) && at <= Utc::now(),
            "{at}"
        );
    }
    service.stop().await;
}

#[tokio::test]
async fn the_seed_field_names_are_accepted() {
    let service = TestService::start(test_settings("jobs_seed").await).await;
    let (status, created) = send(service.api(Method::POST, "/v1/jobs").json(&json!({
        "execute_at": in_an_hour(),
        "request": {
            "url": "https://example.com/x",
            "verb": "put",
            "header": [["Authorization", "Bearer abc"], ["X-A", "1"], ["X-A", "2"]],
            "body": {"amount": 5},
        },
        "notify": {"url": "https://example.com/done", "header": {"X-N": "n"}, "timeout": 2500},
    })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().expect("id");
    let row = delivery(&service, &format!("id = '{id}'")).await;
    assert_eq!(row.try_get::<String>("", "method").expect("method"), "PUT");
    let headers: Value =
        serde_json::from_str(&row.try_get::<String>("", "headers").expect("headers"))
            .expect("json");
    assert_eq!(
        headers,
        json!([
            ["authorization", "Bearer abc"],
            ["x-a", "1"],
            ["x-a", "2"],
            ["content-type", "application/json"]
        ])
    );
    let body: String = row
        .try_get::<Option<String>>("", "body")
        .expect("body")
        .expect("some");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"amount": 5})
    );
    let (_, job) = send(service.api(Method::GET, &format!("/v1/jobs/{id}"))).await;
    assert_eq!(
        job["request"]["headers"][0],
        json!(["authorization", "***"])
    );
    assert_eq!(job["notify"]["status"], "waiting");
    assert_eq!(job["notify"]["url"], "https://example.com/done");
    service.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_creates_one_job() {
    let service = TestService::start(test_settings("jobs_idempotency").await).await;
    let body = json!({
        "execute_at": in_an_hour(),
        "request": {"url": "https://example.com/once", "method": "POST", "body": "x"},
        "notify": {"url": "https://example.com/done"},
    });
    // Concurrent first requests: one creates, the others answer the same.
    let answers = futures::future::join_all((0..4).map(|_| {
        send(
            service
                .api(Method::POST, "/v1/jobs")
                .header("Idempotency-Key", "order-42")
                .json(&body),
        )
    }))
    .await;
    let first = &answers[0].1;
    for (status, answer) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer, first, "same answer, same id, same notify secret");
    }
    assert!(
        first["notify_secret"]
            .as_str()
            .expect("secret")
            .starts_with("whsec_")
    );
    // The same body with its keys in another order is the same request.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"notify": {notify}, "request": {request}, "execute_at": {at}}}"#,
        notify = body["notify"],
        request = body["request"],
        at = body["execute_at"],
    ))
    .expect("json");
    let (status, again) = send(
        service
            .api(Method::POST, "/v1/jobs")
            .header("Idempotency-Key", "order-42")
            .json(&reordered),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(&again, first);
    assert_eq!(count(&service, "SELECT count(*) FROM jobs").await, 1);
    assert_eq!(count(&service, "SELECT count(*) FROM deliveries").await, 1);

    let mut other = body.clone();
    other["request"]["body"] = json!("y");
    let (status, refused) = send(
        service
            .api(Method::POST, "/v1/jobs")
            .header("Idempotency-Key", "order-42")
            .json(&other),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["code"], "idempotency_key_reused");
    let (status, bad) = send(
        service
            .api(Method::POST, "/v1/jobs")
            .header("Idempotency-Key", "")
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"]["code"], "invalid_header");
    assert_eq!(count(&service, "SELECT count(*) FROM jobs").await, 1);
    service.stop().await;
}

#[tokio::test]
async fn cancelling_a_job_reports_it_to_notify_once() {
    let service = TestService::start(test_settings("jobs_cancel").await).await;
    let receiver = Receiver::start().await;
    let (status, created) = send(service.api(Method::POST, "/v1/jobs").json(&json!({
        "execute_at": in_an_hour(),
        "request": {"url": "https://example.com/later"},
        "notify": {"url": receiver.url("/report"), "headers": {"X-Tenant": "acme"}},
    })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().expect("id");
    let secret = created["notify_secret"].as_str().expect("notify secret");
    let stored = row(
        &service.db,
        &format!("SELECT notify_secret FROM jobs WHERE id = '{id}'"),
    )
    .await;
    assert_eq!(
        stored
            .try_get::<Option<String>>("", "notify_secret")
            .expect("secret")
            .as_deref(),
        Some(secret)
    );

    let (status, cancelled) =
        send(service.api(Method::POST, &format!("/v1/jobs/{id}/cancel"))).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled, json!({"id": id, "status": "cancelled"}));
    let call = delivery(&service, &format!("id = '{id}'")).await;
    assert_eq!(
        call.try_get::<String>("", "status").expect("status"),
        "cancelled"
    );
    assert!(
        call.try_get::<Option<DateTime<Utc>>>("", "completed_at")
            .expect("completed")
            .is_some()
    );

    let report = delivery(&service, &format!("job_id = '{id}' AND kind = 'notify'")).await;
    assert_eq!(
        report.try_get::<String>("", "method").expect("method"),
        "POST"
    );
    assert_eq!(
        report.try_get::<String>("", "url").expect("url"),
        receiver.url("/report")
    );
    assert!(
        report
            .try_get::<Option<DateTime<Utc>>>("", "deadline")
            .expect("deadline")
            .is_none()
    );
    let headers: String = report.try_get("", "headers").expect("headers");
    assert!(
        headers.contains("x-tenant") && headers.contains("application/json"),
        "{headers}"
    );
    let body: String = report
        .try_get::<Option<String>>("", "body")
        .expect("body")
        .expect("some");
    let body: Value = serde_json::from_str(&body).expect("report JSON");
    assert_eq!(body["type"], "job.completed");
    assert_eq!(body["job_id"], id);
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["attempts"], 0);
    assert_eq!(body["last_status"], Value::Null);
    assert!(body["completed_at"].is_string());

    let (status, again) = send(service.api(Method::POST, &format!("/v1/jobs/{id}/cancel"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["error"]["code"], "not_pending");
    assert_eq!(
        count(
            &service,
            &format!("SELECT count(*) FROM deliveries WHERE job_id = '{id}' AND kind = 'notify'")
        )
        .await,
        1,
        "one report"
    );
    let (_, job) = send(service.api(Method::GET, &format!("/v1/jobs/{id}"))).await;
    assert_eq!(job["status"], "cancelled");
    assert!(job["notify"]["status"].is_string());
    assert!(job["notify"].get("secret").is_none());
    let (status, _) = send(service.api(
        Method::POST,
        &format!("/v1/jobs/{}/cancel", uuid::Uuid::now_v7()),
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    service.stop().await;
}

#[tokio::test]
async fn bad_jobs_are_refused_naming_each_field() {
    let mut settings = test_settings("jobs_refused").await;
    settings.webhook_allowed_nets = vec![];
    let service = TestService::start(settings).await;
    let post = |body: Value| send(service.api(Method::POST, "/v1/jobs").json(&body));
    let url = "https://example.com/";
    for (body, field) in [
        (
            json!({"request": {"url": "ftp://example.com/"}}),
            "request.url",
        ),
        (
            json!({"request": {"url": "http://127.0.0.1:9/"}}),
            "request.url",
        ),
        (
            json!({"request": {"url": "http://169.254.169.254/"}}),
            "request.url",
        ),
        (
            json!({"request": {"url": "http://[::ffff:127.0.0.1]/"}}),
            "request.url",
        ),
        (
            json!({"request": {"url": url}, "notify": {"url": "http://10.1.2.3/"}}),
            "notify.url",
        ),
        (
            json!({"execute_at": "tomorrow", "request": {"url": url}}),
            "execute_at",
        ),
        (
            json!({"execute_at": (Utc::now() + Duration::days(800)).to_rfc3339(), "request": {"url": url}}),
            "execute_at",
        ),
        (
            json!({"deadline": (Utc::now() - Duration::hours(1)).to_rfc3339(), "request": {"url": url}}),
            "deadline",
        ),
        (
            json!({"request": {"url": url, "timeout": "10m"}}),
            "request.timeout",
        ),
        (
            json!({"request": {"url": url, "timeout": 0}}),
            "request.timeout",
        ),
        (
            json!({"request": {"url": url, "timeout": "soon"}}),
            "request.timeout",
        ),
        (
            json!({"request": {"url": url, "method": "TRACE"}}),
            "request.method",
        ),
        (
            json!({"request": {"url": url, "headers": {"Host": "x"}}}),
            "request.headers.host",
        ),
        (
            json!({"request": {"url": url}, "notify": {"url": url, "headers": {"Webhook-Id": "x"}}}),
            "notify.headers.webhook-id",
        ),
        (
            json!({"request": {"url": url}, "retry": {"fail_statuses": [503]}}),
            "retry.fail_statuses",
        ),
        (
            json!({"request": {"url": url}, "retry": {"max_attempts": 0}}),
            "retry.max_attempts",
        ),
        (
            json!({"request": {"url": url}, "retry": {"schedule": ["5 eons"]}}),
            "retry.schedule.0",
        ),
        (json!({"request": {"url": url}, "colour": "red"}), "body"),
        (json!({"request": {}}), "body"),
    ] {
        assert_invalid(&post(body).await, field);
    }
    // Several bad fields: every one named.
    let answer =
        post(json!({"execute_at": "x", "request": {"url": "ftp://x/", "method": "BREW"}})).await;
    for field in ["execute_at", "request.url", "request.method"] {
        assert_invalid(&answer, field);
    }

    let max = service.settings.webhook_max_body_bytes;
    let (status, refused) =
        post(json!({"request": {"url": url, "body": "b".repeat(max + 1)}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["code"], "body_too_large");
    assert!(refused["error"]["details"]["request.body"].is_array());
    let (status, _) = post(json!({
        "execute_at": in_an_hour(), "request": {"url": url, "body": "b".repeat(max)},
    }))
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "exactly the limit is accepted"
    );
    assert_eq!(count(&service, "SELECT count(*) FROM jobs").await, 1);
    service.stop().await;
}

#[tokio::test]
async fn a_job_whose_delivery_was_purged_is_not_found() {
    let service = TestService::start(test_settings("jobs_purged").await).await;
    let (status, created) = send(service.api(Method::POST, "/v1/jobs").json(&json!({
        "execute_at": in_an_hour(), "request": {"url": "https://example.com/x"},
    })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().expect("id");
    // Retention deletes the delivery, then (in a later statement) the job.
    crate::api::execute(
        &service.db,
        &format!("DELETE FROM deliveries WHERE id = '{id}'"),
    )
    .await;
    for (method, path) in [
        (Method::GET, format!("/v1/jobs/{id}")),
        (Method::POST, format!("/v1/jobs/{id}/cancel")),
    ] {
        let (status, body) = send(service.api(method, &path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    service.stop().await;
}
