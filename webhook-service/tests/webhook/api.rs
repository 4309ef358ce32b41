//! The management API: access, bodies, endpoints, secrets, messages, health and the OpenAPI
//! document. Assertions are on answers and rows (the engine sends; it is tested elsewhere).

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult, Statement};
use serde_json::{Value, json};

use crate::helpers::{Receiver, Reply, TOKEN, TestService, test_settings};

/// Sends `request`: its status and JSON body (`Value::Null` when empty).
pub(crate) async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"))
    };
    (status, body)
}

/// The one row `sql` selects.
pub(crate) async fn row(db: &DatabaseConnection, sql: &str) -> QueryResult {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap_or_else(|error| panic!("{sql}: {error}"))
    .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Runs `sql`.
pub(crate) async fn execute(db: &DatabaseConnection, sql: &str) {
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// Asserts a 422 `validation_failed` naming `field`.
#[track_caller]
pub(crate) fn assert_invalid(answer: &(StatusCode, Value), field: &str) {
    let (status, body) = answer;
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(
        body["error"]["details"][field].is_array(),
        "no details for {field}: {body}"
    );
}

async fn create_endpoint(service: &TestService, body: Value) -> Value {
    let (status, created) = send(service.api(Method::POST, "/v1/endpoints").json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

#[tokio::test]
async fn endpoint_crud_round_trip() {
    let service = TestService::start(test_settings("api_crud").await).await;
    let created = create_endpoint(
        &service,
        json!({
            "url": "https://hooks.example.com/in?token=abc",
            "event_types": ["user.verified", "user.registered"],
            "description": "CRM",
            "headers": {"Authorization": "Bearer s3cret", "X-Tenant": "acme"},
        }),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret");
    let bytes = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64");
    assert!(bytes.len() >= 24, "{} secret bytes", bytes.len());
    assert_eq!(created["enabled"], true);
    assert_eq!(created["disabled_reason"], Value::Null);
    assert_eq!(
        created["event_types"],
        json!(["user.registered", "user.verified"])
    );
    assert_eq!(
        created["headers"],
        json!({"authorization": "***", "x-tenant": "acme"})
    );

    let with_password = create_endpoint(
        &service,
        json!({"url": "https://bot:pa55@hooks.example.com/x"}),
    )
    .await;
    assert_eq!(with_password["url"], "https://bot:***@hooks.example.com/x");

    let (status, read) = send(service.api(Method::GET, &format!("/v1/endpoints/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["url"], "https://hooks.example.com/in?token=abc");
    assert_eq!(read["description"], "CRM");
    assert!(read.get("secret").is_none(), "GET must not show the secret");
    assert_eq!(read["headers"]["authorization"], "***");
    let stored = row(
        &service.db,
        &format!("SELECT headers::text AS h FROM endpoints WHERE id = '{id}'"),
    )
    .await;
    let headers: String = stored.try_get("", "h").expect("headers");
    assert!(
        headers.contains("Bearer s3cret"),
        "stored as given: {headers}"
    );

    let (_, shown) = send(service.api(Method::GET, &format!("/v1/endpoints/{id}/secret"))).await;
    assert_eq!(shown["secret"], secret);

    let (status, patched) = send(
        service
            .api(Method::PATCH, &format!("/v1/endpoints/{id}"))
            .json(&json!({"description": "CRM v2", "event_types": null, "enabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["description"], "CRM v2");
    assert_eq!(patched["event_types"], Value::Null);
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["disabled_reason"], "manual");
    assert_eq!(patched["url"], read["url"], "fields not given are kept");
    assert_eq!(patched["headers"], read["headers"]);

    execute(
        &service.db,
        &format!("UPDATE endpoints SET failing_since = now() WHERE id = '{id}'"),
    )
    .await;
    let (_, enabled) = send(
        service
            .api(Method::PATCH, &format!("/v1/endpoints/{id}"))
            .json(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["disabled_reason"], Value::Null);
    let failing = row(
        &service.db,
        &format!("SELECT count(*) AS n FROM endpoints WHERE id = '{id}' AND failing_since IS NULL"),
    )
    .await;
    assert_eq!(failing.try_get::<i64>("", "n").expect("n"), 1);

    let (status, _) = send(service.api(Method::DELETE, &format!("/v1/endpoints/{id}"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, gone) = send(service.api(Method::GET, &format!("/v1/endpoints/{id}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone["error"]["code"], "not_found");
    let (status, _) = send(service.api(Method::DELETE, &format!("/v1/endpoints/{id}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(service.api(Method::GET, "/v1/endpoints/not-a-uuid")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    service.stop().await;
}

#[tokio::test]
async fn rotating_a_secret_keeps_the_previous_one_for_the_grace_period() {
    let service = TestService::start(test_settings("api_rotate").await).await;
    let created = create_endpoint(&service, json!({"url": "https://example.com/hook"})).await;
    let id = created["id"].as_str().expect("id");
    let old = created["secret"].as_str().expect("secret");

    let before = Utc::now();
    let (status, rotated) =
        send(service.api(Method::POST, &format!("/v1/endpoints/{id}/rotate-secret"))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().expect("new secret");
    assert!(new.starts_with("whsec_") && new != old);

    let stored = row(
        &service.db,
        &format!(
            "SELECT secret, previous_secret, previous_secret_until FROM endpoints WHERE id = '{id}'"
        ),
    )
    .await;
    assert_eq!(stored.try_get::<String>("", "secret").expect("secret"), new);
    assert_eq!(
        stored
            .try_get::<Option<String>>("", "previous_secret")
            .expect("previous"),
        Some(old.to_owned())
    );
    let until: DateTime<Utc> = stored.try_get("", "previous_secret_until").expect("until");
    let grace =
        chrono::Duration::from_std(service.settings.webhook_secret_rotation_grace).expect("grace");
    assert!(
        until >= before + grace && until <= Utc::now() + grace,
        "{until}"
    );

    let (_, shown) = send(service.api(Method::GET, &format!("/v1/endpoints/{id}/secret"))).await;
    assert_eq!(shown["secret"], new);
    let (status, _) = send(service.api(
        Method::POST,
        &format!("/v1/endpoints/{}/rotate-secret", uuid::Uuid::now_v7()),
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    service.stop().await;
}

/// Inserts a message and this endpoint's delivery of it: `status`, created `age` ago, next
/// attempt in an hour (so no engine picks it up while the test looks).
pub(crate) async fn insert_delivery(
    db: &DatabaseConnection,
    endpoint_id: &str,
    status: &str,
    age: Duration,
) -> uuid::Uuid {
    let message_id = uuid::Uuid::now_v7();
    let created = Utc::now() - chrono::Duration::from_std(age).expect("age");
    let completed = if status == "pending" {
        "NULL".to_owned()
    } else {
        format!("'{}'", created.to_rfc3339())
    };
    execute(
        db,
        &format!(
            "INSERT INTO messages (id, event_type, payload, created_at) \
             VALUES ('{message_id}', 'user.verified', '{{}}', '{created}')",
            created = created.to_rfc3339()
        ),
    )
    .await;
    execute(
        db,
        &format!(
            "INSERT INTO deliveries (id, kind, endpoint_id, message_id, url, method, headers, \
             timeout_ms, status, attempts, next_attempt_at, last_status, last_error, created_at, \
             updated_at, completed_at) VALUES ('{id}', 'webhook', '{endpoint_id}', \
             '{message_id}', 'http://unused/', 'POST', '[]', 1000, '{status}', 3, \
             now() + interval '1 hour', 500, 'status 500', '{created}', '{created}', \
             {completed})",
            id = uuid::Uuid::now_v7(),
            created = created.to_rfc3339(),
        ),
    )
    .await;
    message_id
}

async fn delivery_status(db: &DatabaseConnection, message_id: uuid::Uuid) -> (String, i32) {
    let found = row(
        db,
        &format!("SELECT status, attempts FROM deliveries WHERE message_id = '{message_id}'"),
    )
    .await;
    (
        found.try_get("", "status").expect("status"),
        found.try_get("", "attempts").expect("attempts"),
    )
}

#[tokio::test]
async fn deleting_an_endpoint_cancels_its_pending_deliveries() {
    let service = TestService::start(test_settings("api_delete").await).await;
    let created = create_endpoint(&service, json!({"url": "https://example.com/hook"})).await;
    let id = created["id"].as_str().expect("id");
    let pending = insert_delivery(&service.db, id, "pending", Duration::ZERO).await;
    let done = insert_delivery(&service.db, id, "succeeded", Duration::ZERO).await;

    let (status, _) = send(service.api(Method::DELETE, &format!("/v1/endpoints/{id}"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(delivery_status(&service.db, pending).await.0, "cancelled");
    assert_eq!(delivery_status(&service.db, done).await.0, "succeeded");
    let cancelled = row(
        &service.db,
        &format!("SELECT count(*) AS n FROM deliveries WHERE message_id = '{pending}' AND completed_at IS NOT NULL"),
    )
    .await;
    assert_eq!(cancelled.try_get::<i64>("", "n").expect("n"), 1);
    service.stop().await;
}

#[tokio::test]
async fn endpoints_are_listed_in_pages() {
    let service = TestService::start(test_settings("api_pages").await).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let created =
            create_endpoint(&service, json!({"url": format!("https://example.com/{i}")})).await;
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/endpoints?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = send(service.api(Method::GET, &path)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= 2);
        assert!(data.iter().all(|e| e.get("secret").is_none()));
        seen.extend(
            data.iter()
                .map(|e| e["id"].as_str().expect("id").to_owned()),
        );
        pages += 1;
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/endpoints?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every endpoint once, in creation order");
    assert_eq!(pages, 3);
    for bad in ["limit=0", "limit=251", "after=nope"] {
        let answer = send(service.api(Method::GET, &format!("/v1/endpoints?{bad}"))).await;
        assert_eq!(
            answer.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            answer.1
        );
    }
    service.stop().await;
}

#[tokio::test]
async fn bad_endpoints_are_refused_naming_each_field() {
    let mut settings = test_settings("api_refused").await;
    // Loopback NOT allowed: the production default.
    settings.webhook_allowed_nets = vec![];
    let service = TestService::start(settings).await;
    let post = |body: Value| send(service.api(Method::POST, "/v1/endpoints").json(&body));
    for url in [
        "not a url",
        "ftp://example.com/x",
        "http://127.0.0.1/",
        "http://localhost:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
    ] {
        let answer = post(json!({"url": url})).await;
        assert_invalid(&answer, "url");
        assert_eq!(
            answer.1["error"]["details"]["url"][0]["code"],
            "invalid_url"
        );
    }
    let answer = post(json!({
        "url": "https://example.com/",
        "event_types": ["user.registered", "user.deleted"],
        "headers": {"Host": "evil", "Webhook-Signature": "x", "X-Ok": "1", "Content-Type": "text/plain"},
        "secret": "whsec_c2hvcnQ=",
    }))
    .await;
    assert_invalid(&answer, "event_types.1");
    assert_invalid(&answer, "headers.host");
    assert_invalid(&answer, "headers.webhook-signature");
    assert_invalid(&answer, "headers.content-type");
    assert_invalid(&answer, "secret");
    assert!(answer.1["error"]["details"].get("headers.x-ok").is_none());
    assert_invalid(
        &post(json!({"url": "https://example.com/", "event_types": []})).await,
        "event_types",
    );
    let (status, body) = post(json!({"url": "https://example.com/", "colour": "red"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    let count = row(&service.db, "SELECT count(*) AS n FROM endpoints").await;
    assert_eq!(count.try_get::<i64>("", "n").expect("n"), 0);
    service.stop().await;
}

#[tokio::test]
async fn v1_needs_the_bearer_token_and_operations_do_not() {
    let service = TestService::start(test_settings("api_token").await).await;
    let url = format!("{}/v1/endpoints", service.base);
    let missing = service.client.get(&url).send().await.expect("sent");
    let wrong = service
        .client
        .get(&url)
        .bearer_auth(format!("{TOKEN}x"))
        .send()
        .await
        .expect("sent");
    let mut bodies = Vec::new();
    for response in [missing, wrong] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["www-authenticate"]
                .to_str()
                .expect("text"),
            "Bearer"
        );
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "unauthorized");
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1], "missing and wrong answer alike");
    // The token is checked before the body is looked at.
    let (status, _) = send(
        service
            .client
            .post(&url)
            .bearer_auth("nope")
            .body("{not json"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    for path in ["/health/live", "/health/ready", "/metrics", "/openapi.json"] {
        let response = service
            .client
            .get(format!("{}{path}", service.base))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let (_, ready) = send(service.client.get(format!("{}/health/ready", service.base))).await;
    assert_eq!(
        ready,
        json!({"status": "ok", "database": "ok", "broker": "ok"})
    );
    service.stop().await;
}

#[tokio::test]
async fn bodies_must_be_bounded_json() {
    let service = TestService::start(test_settings("api_bodies").await).await;
    let (status, body) = send(
        service
            .api(Method::POST, "/v1/endpoints")
            .header("content-type", "application/json")
            .body("{\"url\": "),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed_json");
    let (status, body) = send(
        service
            .api(Method::POST, "/v1/endpoints")
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    let huge = "x".repeat(service.settings.webhook_max_body_bytes * 3);
    let (status, body) = send(
        service
            .api(Method::POST, "/v1/jobs")
            .json(&json!({"request": {"url": "https://example.com/", "body": huge}})),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
    service.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let service = TestService::start(test_settings("api_openapi").await).await;
    let (status, document) =
        send(service.client.get(format!("{}/openapi.json", service.base))).await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/endpoints", &["get", "post"][..]),
        ("/v1/endpoints/{id}", &["get", "patch", "delete"]),
        ("/v1/endpoints/{id}/secret", &["get"]),
        ("/v1/endpoints/{id}/rotate-secret", &["post"]),
        ("/v1/endpoints/{id}/messages", &["get"]),
        (
            "/v1/endpoints/{id}/messages/{message_id}/attempts",
            &["get"],
        ),
        ("/v1/endpoints/{id}/messages/{message_id}/retry", &["post"]),
        ("/v1/endpoints/{id}/recover", &["post"]),
        ("/v1/jobs", &["post"]),
        ("/v1/jobs/{id}", &["get"]),
        ("/v1/jobs/{id}/cancel", &["post"]),
        ("/health/live", &["get"]),
        ("/health/ready", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} undocumented"
            );
        }
    }
    let v1 = paths.keys().filter(|p| p.starts_with("/v1")).count();
    assert_eq!(
        v1,
        11,
        "a /v1 path the test does not know: {:?}",
        paths.keys()
    );
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    assert!(document["components"]["schemas"]["JobReport"].is_object());
    service.stop().await;
}

#[tokio::test]
async fn messages_are_listed_replayed_and_recovered() {
    let service = TestService::start(test_settings("api_messages").await).await;
    // A receiver that never answers: whatever an engine does with a replayed message, it stays
    // pending (in flight) while the test looks.
    let receiver = Receiver::start().await;
    receiver.reply(vec![Reply::Hang; 20]);
    let created = create_endpoint(&service, json!({"url": receiver.url("/hook")})).await;
    let id = created["id"].as_str().expect("id");
    let day = Duration::from_secs(24 * 3600);
    let old_failed = insert_delivery(&service.db, id, "failed", 3 * day).await;
    let failed = insert_delivery(&service.db, id, "failed", Duration::from_secs(60)).await;
    let succeeded = insert_delivery(&service.db, id, "succeeded", Duration::from_secs(30)).await;
    execute(
        &service.db,
        &format!(
            "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, url, status, \
             error_kind, response_headers, response_body) SELECT id, 1, now(), 12, url, 500, \
             NULL, '{{\"content-type\": \"text/plain\"}}', 'boom' FROM deliveries \
             WHERE message_id = '{failed}'"
        ),
    )
    .await;

    let (status, page) = send(service.api(
        Method::GET,
        &format!("/v1/endpoints/{id}/messages?status=failed"),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["message_id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, [failed.to_string(), old_failed.to_string()]);
    let first = &page["data"][0];
    assert_eq!(first["event_type"], "user.verified");
    assert_eq!(first["status"], "failed");
    assert_eq!(first["last_status"], 500);
    assert_eq!(first["next_attempt_at"], Value::Null);
    let (_, page) =
        send(service.api(Method::GET, &format!("/v1/endpoints/{id}/messages?limit=1"))).await;
    assert_eq!(page["data"][0]["message_id"], succeeded.to_string());
    let next = page["next"].as_str().expect("next cursor");
    let (_, page) = send(service.api(
        Method::GET,
        &format!("/v1/endpoints/{id}/messages?limit=1&before={next}"),
    ))
    .await;
    assert_eq!(page["data"][0]["message_id"], failed.to_string());
    let bad = send(service.api(
        Method::GET,
        &format!("/v1/endpoints/{id}/messages?status=odd"),
    ))
    .await;
    assert_invalid(&bad, "status");

    let (status, attempts) = send(service.api(
        Method::GET,
        &format!("/v1/endpoints/{id}/messages/{failed}/attempts"),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(attempts["data"][0]["status"], 500);
    assert_eq!(attempts["data"][0]["response_body"], "boom");
    assert_eq!(attempts["data"][0]["duration_ms"], 12);

    let retry = format!("/v1/endpoints/{id}/messages/{succeeded}/retry");
    let (status, _) = send(service.api(Method::POST, &retry)).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "a succeeded message is resent"
    );
    let (state, _) = delivery_status(&service.db, succeeded).await;
    assert_eq!(state, "pending");
    let (status, again) = send(service.api(Method::POST, &retry)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["error"]["code"], "already_pending");

    let since = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let (status, recovered) = send(
        service
            .api(Method::POST, &format!("/v1/endpoints/{id}/recover"))
            .json(&json!({ "since": since })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{recovered}");
    assert_eq!(recovered["recovered"], 1);
    assert_eq!(
        delivery_status(&service.db, old_failed).await,
        ("failed".into(), 3)
    );
    let (state, _) = delivery_status(&service.db, failed).await;
    assert_ne!(state, "failed", "recovered");
    let fresh = row(
        &service.db,
        // Pending with a fresh count (an engine may have claimed it already: the receiver
        // hangs, so its first new attempt is still running).
        &format!("SELECT count(*) AS n FROM deliveries WHERE message_id = '{failed}' AND status = 'pending' AND completed_at IS NULL AND attempts <= 1"),
    )
    .await;
    assert_eq!(fresh.try_get::<i64>("", "n").expect("n"), 1);
    let bad = send(
        service
            .api(Method::POST, &format!("/v1/endpoints/{id}/recover"))
            .json(&json!({ "since": "yesterday" })),
    )
    .await;
    assert_invalid(&bad, "since");
    let unknown = uuid::Uuid::now_v7();
    let (status, _) = send(service.api(
        Method::POST,
        &format!("/v1/endpoints/{id}/messages/{unknown}/retry"),
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    service.stop().await;
}

#[tokio::test]
async fn a_new_url_starts_a_clean_failure_record() {
    let service = TestService::start(test_settings("api_new_url").await).await;
    let created = create_endpoint(&service, json!({"url": "https://old.example.com/hook"})).await;
    let id = created["id"].as_str().expect("id");
    execute(
        &service.db,
        &format!(
            "UPDATE endpoints SET failing_since = now() - interval '6 days' WHERE id = '{id}'"
        ),
    )
    .await;
    let (status, _) = send(
        service
            .api(Method::PATCH, &format!("/v1/endpoints/{id}"))
            .json(&json!({"description": "still failing"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let failing = |db| async move {
        common::testing::scalar(
            db,
            &format!(
                "SELECT COUNT(*) FROM endpoints WHERE id = '{id}' AND failing_since IS NOT NULL"
            ),
        )
        .await
    };
    assert_eq!(
        failing(&service.db).await,
        1,
        "other changes keep the record"
    );
    let (status, _) = send(
        service
            .api(Method::PATCH, &format!("/v1/endpoints/{id}"))
            .json(&json!({"url": "https://new.example.com/hook"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        failing(&service.db).await,
        0,
        "a new URL clears the failure run"
    );
}
