//! Phone verification codes by SMS: a `PhoneVerificationRequestedV1` published to the
//! namespaced exchange becomes one SMS through a local fake gateway (Twilio-compatible or a
//! templated HTTP API) or a file; redeliveries send nothing more; failures retry until the
//! code's expiry and never after; the stored code is erased once the SMS is done; and
//! `user.phone_verified` is a public webhook while the code request never is.

use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use common::{
    events::{Envelope, PhoneVerificationRequestedV1},
    testing::{phone_verification_requested, phone_verified, scalar},
};
use sea_orm::{ConnectionTrait, Statement};
use uuid::Uuid;
use webhook_service::{Settings, SmsGateway, SmsHeaders, SmsSecret};

use crate::{
    consumer::{Publisher, endpoint, wait_until_settled},
    helpers::{Receiver, Reply, TestService, eventually, test_settings},
};

const WAIT: Duration = Duration::from_secs(20);
const CODE: &str = "493817";
const PHONE: &str = "+447700900123";

/// The `deliveries` columns an SMS test looks at.
#[derive(Debug, Clone)]
struct SmsRow {
    status: String,
    attempts: i32,
    last_status: Option<i32>,
    last_error: Option<String>,
    body: Option<String>,
    url: String,
}

async fn sms_row(service: &TestService, id: Uuid) -> Option<SmsRow> {
    let row = service
        .db
        .query_one_raw(Statement::from_string(
            service.db.get_database_backend(),
            format!(
                "SELECT status, attempts, last_status, last_error, body, url FROM deliveries \
                 WHERE id = '{id}' AND kind = 'sms'"
            ),
        ))
        .await
        .expect("query")?;
    Some(SmsRow {
        status: row.try_get("", "status").expect("status"),
        attempts: row.try_get("", "attempts").expect("attempts"),
        last_status: row.try_get("", "last_status").expect("last_status"),
        last_error: row.try_get("", "last_error").expect("last_error"),
        body: row.try_get("", "body").expect("body"),
        url: row.try_get("", "url").expect("url"),
    })
}

/// Waits (bounded) until the SMS delivery `id` is no longer pending.
async fn finished(service: &TestService, id: Uuid) -> SmsRow {
    eventually(WAIT, "the SMS delivery to finish", || async {
        sms_row(service, id)
            .await
            .filter(|row| row.status != "pending")
    })
    .await
}

/// `(url, response_body)` of every attempt of delivery `id`.
async fn attempts_of(service: &TestService, id: Uuid) -> Vec<(String, String)> {
    let rows = service
        .db
        .query_all_raw(Statement::from_string(
            service.db.get_database_backend(),
            format!(
                "SELECT url, coalesce(response_body, '') AS body FROM attempts \
                 WHERE delivery_id = '{id}' ORDER BY id"
            ),
        ))
        .await
        .expect("attempts");
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "url").expect("url"),
                row.try_get("", "body").expect("body"),
            )
        })
        .collect()
}

async fn publisher(service: &TestService) -> Publisher {
    Publisher::for_namespace(&service.settings.amqp_url, &service.settings.amqp_namespace).await
}

fn twilio_settings(receiver: &Receiver, settings: Settings) -> Settings {
    Settings {
        sms_gateway: SmsGateway::Twilio,
        sms_twilio_base_url: receiver.url(""),
        sms_twilio_account_sid: Some("AC0123".into()),
        sms_twilio_auth_token: Some(SmsSecret("tw1l10-t0ken".into())),
        sms_from: Some("+15005550006".into()),
        sms_retry_schedule: vec![Duration::from_millis(100), Duration::from_millis(200)],
        ..settings
    }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

#[tokio::test]
async fn a_code_request_becomes_one_twilio_sms_and_a_redelivery_sends_no_second() {
    let gateway = Receiver::start().await;
    // Twilio echoes the message, code included: it must not be stored with the attempt.
    gateway.reply([Reply::Json(
        201,
        format!(
            r#"{{"sid": "SM1", "status": "queued", "to": "{PHONE}", "body": "Signup: your code is {CODE}"}}"#
        ),
    )]);
    let settings = twilio_settings(&gateway, test_settings("wh_sms_twilio").await);
    let service = TestService::start(settings).await;
    let publisher = publisher(&service).await;
    let event = phone_verification_requested(CODE);
    assert!(
        publisher.publish(&event).await,
        "the webhook queue is bound"
    );

    let requests = gateway.wait_for(1, WAIT).await;
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.uri.path(),
        "/2010-04-01/Accounts/AC0123/Messages.json"
    );
    let credentials = base64::engine::general_purpose::STANDARD.encode("AC0123:tw1l10-t0ken");
    assert_eq!(
        request.header("authorization"),
        format!("Basic {credentials}")
    );
    assert_eq!(
        request.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let fields = form(&request.body);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("To"), PHONE);
    assert_eq!(field("From"), "+15005550006");
    assert_eq!(
        field("Body"),
        format!("Signup: your code is {CODE}. It expires in 10 minutes.")
    );

    let row = finished(&service, event.event_id).await;
    assert_eq!(row.status, "succeeded", "{row:?}");
    assert_eq!((row.attempts, row.last_status), (1, Some(201)));
    // The code is no longer at rest: neither the body nor the attempt's response holds it.
    assert_eq!(row.body, None);
    let attempts = attempts_of(&service, event.event_id).await;
    assert_eq!(attempts.len(), 1);
    assert!(!attempts[0].1.contains(CODE), "{attempts:?}");
    assert!(
        !attempts[0].1.contains(&PHONE[1..]),
        "the number echoed: {attempts:?}"
    );
    assert!(attempts[0].1.contains("\"sid\": \"SM1\""), "{attempts:?}");
    let leaked = scalar(
        &service.db,
        &format!(
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE body LIKE '%{CODE}%') \
                  + (SELECT COUNT(*) FROM attempts WHERE response_body LIKE '%{CODE}%' \
                     OR error LIKE '%{CODE}%' OR url LIKE '%{CODE}%')"
        ),
    )
    .await;
    assert_eq!(leaked, 0, "the code is stored somewhere");

    // The same event again (a redelivery): acked, no second delivery, no second SMS.
    assert!(publisher.publish(&event).await);
    let topology = common::topology::Topology::webhook_service(&service.settings.amqp_namespace);
    wait_until_settled(&topology.webhook_queue).await;
    let deliveries = scalar(&service.db, "SELECT COUNT(*) FROM deliveries").await;
    assert_eq!(deliveries, 1);
    assert_eq!(gateway.requests().len(), 1);
    service.stop().await;
}

/// Publishes a code request and returns its delivery id (the event id).
async fn send_code(service: &TestService, event: &Envelope<PhoneVerificationRequestedV1>) -> Uuid {
    assert!(publisher(service).await.publish(event).await);
    event.event_id
}

#[tokio::test]
async fn a_gateway_failing_twice_then_answering_sends_one_sms_in_three_attempts() {
    let gateway = Receiver::start().await;
    gateway.reply([Reply::status(500), Reply::status(503)]);
    let settings = twilio_settings(&gateway, test_settings("wh_sms_retry").await);
    let service = TestService::start(settings).await;
    let id = send_code(&service, &phone_verification_requested(CODE)).await;

    let row = finished(&service, id).await;
    assert_eq!(row.status, "succeeded", "{row:?}");
    assert_eq!((row.attempts, row.last_status), (3, Some(200)));
    assert_eq!(gateway.requests().len(), 3);
    assert_eq!(row.body, None);
    service.stop().await;
}

#[tokio::test]
async fn a_gateway_refusing_the_sms_with_400_fails_it_without_a_retry() {
    let gateway = Receiver::start().await;
    gateway.reply([Reply::Json(
        400,
        r#"{"code": 21211, "message": "Invalid 'To' Phone Number"}"#.into(),
    )]);
    let settings = twilio_settings(&gateway, test_settings("wh_sms_400").await);
    let service = TestService::start(settings).await;
    let id = send_code(&service, &phone_verification_requested(CODE)).await;

    let row = finished(&service, id).await;
    assert_eq!(row.status, "failed", "{row:?}");
    assert_eq!((row.attempts, row.last_status), (1, Some(400)));
    assert_eq!(row.body, None, "a failed SMS loses its code too");
    assert_eq!(gateway.requests().len(), 1);
    service.stop().await;
}

#[tokio::test]
async fn a_gateway_down_past_the_codes_expiry_gets_no_request_after_it() {
    let gateway = Receiver::start().await;
    gateway.reply(vec![Reply::status(502); 100]);
    let settings = Settings {
        sms_retry_schedule: vec![Duration::from_millis(400); 30],
        ..twilio_settings(&gateway, test_settings("wh_sms_deadline").await)
    };
    let service = TestService::start(settings).await;
    let mut event = phone_verification_requested(CODE);
    let lifetime = Duration::from_secs(3);
    event.data.expires_at = Utc::now() + chrono::Duration::from_std(lifetime).expect("lifetime");
    let expiry = Instant::now() + lifetime;
    let id = send_code(&service, &event).await;

    let row = finished(&service, id).await;
    assert_eq!(row.status, "failed", "{row:?}");
    assert_eq!(row.last_error.as_deref(), Some("deadline"), "{row:?}");
    assert_eq!(row.body, None);
    let requests = gateway.requests();
    assert!(
        requests.len() >= 3,
        "retried until the expiry: {}",
        requests.len()
    );
    // The gateway is on loopback: a request started before the expiry arrives within
    // milliseconds of it.
    for request in &requests {
        assert!(
            request.at <= expiry + Duration::from_millis(200),
            "a request {:?} after the expiry",
            request.at.duration_since(expiry)
        );
    }
    assert_eq!(
        i64::from(row.attempts),
        i64::try_from(requests.len()).expect("count")
    );
    service.stop().await;
}

#[tokio::test]
async fn the_http_gateway_fills_a_json_template_with_escaped_values() {
    let gateway = Receiver::start().await;
    let settings = Settings {
        sms_gateway: SmsGateway::Http,
        sms_http_url: Some(gateway.url("/v1/send?api_key=k3y-4711").into()),
        sms_http_headers: SmsHeaders::parse("Authorization: Bearer b34rer-4712; X-Account: 7")
            .expect("headers"),
        sms_http_body: r#"{"recipient": "{to}", "message": "{text}", "flash": false}"#.into(),
        sms_app_name: r#"The "Quoted" App"#.into(),
        sms_template: r"{app}: {code} \ {minutes} min".into(),
        ..test_settings("wh_sms_http").await
    };
    let service = TestService::start(settings).await;
    let id = send_code(&service, &phone_verification_requested(CODE)).await;

    let request = gateway.wait_for(1, WAIT).await.remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri.path(), "/v1/send");
    assert_eq!(request.uri.query(), Some("api_key=k3y-4711"));
    assert_eq!(request.header("authorization"), "Bearer b34rer-4712");
    assert_eq!(request.header("x-account"), "7");
    assert_eq!(request.header("content-type"), "application/json");
    let json = request.json();
    assert_eq!(json["recipient"], PHONE);
    assert_eq!(
        json["message"],
        format!(r#"The "Quoted" App: {CODE} \ 10 min"#)
    );
    assert_eq!(json["flash"], false);

    let row = finished(&service, id).await;
    assert_eq!(row.status, "succeeded", "{row:?}");
    // Where it went is stored without the key in the query.
    for url in [row.url, attempts_of(&service, id).await.remove(0).0] {
        assert!(url.ends_with("/v1/send?api_key=***"), "{url}");
    }
    service.stop().await;
}

#[tokio::test]
async fn the_file_gateway_writes_one_file_per_sms_in_sms_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sms_dir = dir.path().join("sms");
    let settings = Settings {
        sms_gateway: SmsGateway::File,
        sms_dir: sms_dir.clone(),
        ..test_settings("wh_sms_file").await
    };
    let service = TestService::start(settings).await;
    let id = send_code(&service, &phone_verification_requested(CODE)).await;

    let path = sms_dir.join(format!("{id}.txt"));
    let text = eventually(WAIT, "the SMS file", || async {
        std::fs::read_to_string(&path).ok()
    })
    .await;
    assert_eq!(
        text,
        format!("To: {PHONE}\n\nSignup: your code is {CODE}. It expires in 10 minutes.\n")
    );
    let row = finished(&service, id).await;
    assert_eq!(row.status, "succeeded", "{row:?}");
    assert_eq!(
        (row.attempts, row.last_status, row.body),
        (1, Some(200), None)
    );
    let url = url::Url::from_file_path(&path)
        .expect("a file URL")
        .to_string();
    assert_eq!(row.url, url);
    assert_eq!(attempts_of(&service, id).await, vec![(url, String::new())]);
    let files: Vec<_> = std::fs::read_dir(&sms_dir)
        .expect("SMS_DIR")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(files.len(), 1, "no temporary file left: {files:?}");
    service.stop().await;
}

#[tokio::test]
async fn a_verified_phone_is_a_public_webhook_and_a_code_request_never_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings {
        sms_dir: dir.path().to_owned(),
        ..test_settings("wh_sms_public").await
    };
    let service = TestService::start(settings).await;
    let (subscribed, catch_all) = (Receiver::start().await, Receiver::start().await);
    endpoint(
        &service,
        &subscribed.url("/phone"),
        Some(&["user.phone_verified"]),
        true,
    )
    .await;
    endpoint(&service, &catch_all.url("/all"), None, true).await;

    let requested = phone_verification_requested(CODE);
    let verified = phone_verified();
    let publisher = publisher(&service).await;
    assert!(publisher.publish(&requested).await);
    assert!(publisher.publish(&verified).await);
    let topology = common::topology::Topology::webhook_service(&service.settings.amqp_namespace);
    wait_until_settled(&topology.webhook_queue).await;
    eventually(WAIT, "every delivery to finish", || async {
        scalar(
            &service.db,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
        )
        .await
            == 0
    })
    .await;

    for receiver in [&subscribed, &catch_all] {
        let requests = receiver.requests();
        assert_eq!(requests.len(), 1, "only user.phone_verified: {requests:?}");
        let json = requests[0].json();
        assert_eq!(json["type"], "user.phone_verified");
        assert_eq!(json["data"]["phone"], PHONE);
        assert_eq!(json["data"]["user_id"], verified.data.user_id.to_string());
        assert_eq!(json["data"]["version"], 1);
        let body = String::from_utf8_lossy(&requests[0].body).into_owned();
        assert!(!body.contains(CODE), "{body}");
    }
    let count = |sql: &'static str| scalar(&service.db, sql);
    assert_eq!(count("SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(
        count("SELECT COUNT(*) FROM deliveries WHERE kind = 'webhook'").await,
        2
    );
    let sms = sms_row(&service, requested.event_id)
        .await
        .expect("the SMS");
    assert_eq!(sms.status, "succeeded", "{sms:?}");
    service.stop().await;
}
