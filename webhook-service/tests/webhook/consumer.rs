//! The event consumer: sign-up events published to the (namespaced) exchange become one
//! `messages` row and one `webhook` delivery per enabled endpoint subscribed to the type; a
//! redelivered event adds nothing; garbage is dead-lettered; signup attempts are never
//! published; no payload carries a verification secret.
//!
//! Endpoints are inserted with SQL (the management API is built separately).

use std::time::Duration;

use chrono::Utc;
use common::{
    events::{Envelope, Event, SignupAttemptedV1, UserRegisteredV1, UserVerifiedV1},
    testing::{scalar, signup_attempted, user_registered},
};
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use sea_orm::{ConnectionTrait, Statement};
use uuid::Uuid;

use crate::helpers::{TestService, eventually, test_settings};

const WAIT: Duration = Duration::from_secs(20);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A confirm-mode channel to publish the test's events with.
pub(crate) struct Publisher {
    _connection: Connection,
    channel: Channel,
    exchange: String,
}

impl Publisher {
    async fn new(service: &TestService) -> Self {
        Self::for_namespace(&service.settings.amqp_url, &service.settings.amqp_namespace).await
    }

    /// A publisher to the exchange of `namespace`.
    pub(crate) async fn for_namespace(amqp_url: &str, namespace: &str) -> Self {
        let connection = common::amqp::connect(amqp_url, "webhook-test")
            .await
            .expect("broker");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        Self {
            _connection: connection,
            channel,
            exchange: common::topology::Topology::webhook_service(namespace).exchange,
        }
    }

    /// Publishes `envelope` to the exchange with its routing key; `true` if it was routed.
    pub(crate) async fn publish<T: Event>(&self, envelope: &Envelope<T>) -> bool {
        let body = serde_json::to_vec(envelope).expect("JSON");
        self.publish_bytes(&self.exchange, T::ROUTING_KEY, &body)
            .await
    }

    /// Publishes `body` to `exchange` (`""`: the default exchange, `key` a queue name) and waits
    /// for the confirm; `true` if it was routed.
    async fn publish_bytes(&self, exchange: &str, key: &str, body: &[u8]) -> bool {
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(TRACEPARENT.into()),
        );
        let properties = BasicProperties::default()
            .with_message_id(Uuid::new_v4().to_string().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
        confirm.take_message().is_none()
    }

    /// Ready messages in `queue` (a queue without consumer: all of them).
    async fn ready(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the queue exists")
            .message_count()
    }
}

/// Waits until `queue` holds no message, ready or unacknowledged: every delivery was settled.
pub(crate) async fn wait_until_settled(queue: &str) {
    eventually(WAIT, &format!("{queue} to be empty"), || async move {
        let listed = common::testing::rabbitmqctl(&["-s", "list_queues", "name", "messages"]).await;
        listed
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .any(|(name, messages)| name == queue && messages.trim() == "0")
    })
    .await;
}

/// Inserts an endpoint; `event_types` `None` subscribes it to every type.
pub(crate) async fn endpoint(
    service: &TestService,
    url: &str,
    event_types: Option<&[&str]>,
    enabled: bool,
) -> Uuid {
    let id = Uuid::new_v4();
    let types = event_types.map_or_else(
        || "NULL".to_owned(),
        |types| format!("'{}'", serde_json::json!(types)),
    );
    service
        .db
        .execute_unprepared(&format!(
            "INSERT INTO endpoints (id, url, description, event_types, headers, secret, enabled, \
             created_at, updated_at) VALUES ('{id}', '{url}', '', {types}, '{{}}', \
             'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD', {enabled}, now(), now())"
        ))
        .await
        .expect("endpoint inserted");
    id
}

async fn count(service: &TestService, sql: &str) -> i64 {
    scalar(&service.db, sql).await
}

/// `(endpoint_id, url, kind, method, body is null, timeout_ms, traceparent)` of each delivery
/// of `message_id`, by endpoint id.
async fn deliveries_of(
    service: &TestService,
    message_id: Uuid,
) -> Vec<(Uuid, String, String, String, bool, i64, Option<String>)> {
    let rows = service
        .db
        .query_all_raw(Statement::from_string(
            service.db.get_database_backend(),
            format!(
                "SELECT endpoint_id, url, kind, method, body IS NULL AS no_body, timeout_ms, \
                 traceparent FROM deliveries WHERE message_id = '{message_id}' ORDER BY endpoint_id"
            ),
        ))
        .await
        .expect("deliveries");
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "endpoint_id").expect("endpoint_id"),
                row.try_get("", "url").expect("url"),
                row.try_get("", "kind").expect("kind"),
                row.try_get("", "method").expect("method"),
                row.try_get("", "no_body").expect("no_body"),
                row.try_get("", "timeout_ms").expect("timeout_ms"),
                row.try_get("", "traceparent").expect("traceparent"),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_event_becomes_one_message_and_one_delivery_per_subscribed_enabled_endpoint() {
    let service = TestService::start(test_settings("wh_consumer_fanout").await).await;
    let publisher = Publisher::new(&service).await;
    let every = endpoint(&service, "http://127.0.0.1:9/every", None, true).await;
    let registrations = endpoint(
        &service,
        "http://127.0.0.1:9/registered",
        Some(&["user.registered"]),
        true,
    )
    .await;
    endpoint(
        &service,
        "http://127.0.0.1:9/verified",
        Some(&["user.verified"]),
        true,
    )
    .await;
    endpoint(&service, "http://127.0.0.1:9/disabled", None, false).await;

    let (token, code) = ("s3cr3t-link-token-value", "407193");
    let event = user_registered(token, code);
    assert!(
        publisher.publish(&event).await,
        "the webhook queue is bound"
    );
    let id = event.event_id;
    eventually(WAIT, "the message and its deliveries", || async {
        count(&service, "SELECT COUNT(*) FROM deliveries").await == 2
    })
    .await;

    let mut expected = [
        (every, "http://127.0.0.1:9/every"),
        (registrations, "http://127.0.0.1:9/registered"),
    ];
    expected.sort();
    let deliveries = deliveries_of(&service, id).await;
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    for ((endpoint_id, url), delivery) in expected.iter().zip(&deliveries) {
        let timeout_ms =
            i64::try_from(service.settings.webhook_request_timeout.as_millis()).expect("timeout");
        assert_eq!(
            delivery,
            &(
                *endpoint_id,
                (*url).to_owned(),
                "webhook".to_owned(),
                "POST".to_owned(),
                true,
                timeout_ms,
                Some(TRACEPARENT.to_owned())
            )
        );
    }

    // The public message: the documented schema, the user's email, no secret.
    let row = service
        .db
        .query_one_raw(Statement::from_string(
            service.db.get_database_backend(),
            format!("SELECT event_type, payload, traceparent FROM messages WHERE id = '{id}'"),
        ))
        .await
        .expect("query")
        .expect("the message row, keyed by the event id");
    let event_type: String = row.try_get("", "event_type").expect("event_type");
    let payload: String = row.try_get("", "payload").expect("payload");
    assert_eq!(event_type, "user.registered");
    for secret in [token, code, "verify?token"] {
        assert!(!payload.contains(secret), "{secret} in {payload}");
    }
    let payload: serde_json::Value = serde_json::from_str(&payload).expect("JSON");
    assert_eq!(payload["type"], "user.registered");
    assert_eq!(payload["data"]["email"], "ann@example.com");
    assert_eq!(payload["data"]["first_name"], "Ann");
    assert_eq!(payload["data"]["user_id"], event.data.user_id.to_string());
    assert_eq!(payload["data"]["version"], 1);

    // The same event again (a redelivery after a crash, a second relay's copy): nothing new.
    assert!(publisher.publish(&event).await);
    let queue = common::topology::Topology::webhook_service(&service.settings.amqp_namespace);
    wait_until_settled(&queue.webhook_queue).await;
    assert_eq!(count(&service, "SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(count(&service, "SELECT COUNT(*) FROM deliveries").await, 2);

    // A `user.verified` goes to its subscriber and to the catch-all endpoint only.
    let verified = Envelope::new(
        Uuid::new_v4(),
        Utc::now(),
        UserVerifiedV1 {
            user_id: event.data.user_id,
            email: "ann@example.com".into(),
            first_name: Some("Ann".into()),
            last_name: None,
            verified_at: Utc::now(),
        },
    );
    assert!(publisher.publish(&verified).await);
    eventually(WAIT, "the verified event's deliveries", || async {
        deliveries_of(&service, verified.event_id).await.len() == 2
    })
    .await;
    let urls: Vec<String> = deliveries_of(&service, verified.event_id)
        .await
        .into_iter()
        .map(|d| d.1)
        .collect();
    assert!(
        urls.contains(&"http://127.0.0.1:9/every".to_owned()),
        "{urls:?}"
    );
    assert!(
        urls.contains(&"http://127.0.0.1:9/verified".to_owned()),
        "{urls:?}"
    );
    assert_eq!(publisher.ready(&queue.webhook_dlq).await, 0);
    service.stop().await;
}

#[tokio::test]
async fn an_undecodable_event_is_dead_lettered_and_stores_nothing() {
    let service = TestService::start(test_settings("wh_consumer_garbage").await).await;
    let publisher = Publisher::new(&service).await;
    endpoint(&service, "http://127.0.0.1:9/every", None, true).await;
    let topology = common::topology::Topology::webhook_service(&service.settings.amqp_namespace);

    let routed = publisher
        .publish_bytes(
            &topology.exchange,
            UserRegisteredV1::ROUTING_KEY,
            b"{not json, code 123456",
        )
        .await;
    assert!(routed);
    eventually(WAIT, "the garbage in the dead-letter queue", || async {
        publisher.ready(&topology.webhook_dlq).await == 1
    })
    .await;
    assert_eq!(count(&service, "SELECT COUNT(*) FROM messages").await, 0);
    assert_eq!(count(&service, "SELECT COUNT(*) FROM deliveries").await, 0);
    service.stop().await;
}

#[tokio::test]
async fn a_signup_attempt_is_never_published_as_a_webhook() {
    let service = TestService::start(test_settings("wh_consumer_attempt").await).await;
    let publisher = Publisher::new(&service).await;
    endpoint(&service, "http://127.0.0.1:9/every", None, true).await;
    let topology = common::topology::Topology::webhook_service(&service.settings.amqp_namespace);
    let attempt = signup_attempted(true);

    // The webhook queue is not even bound to it (no email queue in this namespace: unroutable).
    assert!(
        !publisher.publish(&attempt).await,
        "the webhook queue must not be bound to {}",
        SignupAttemptedV1::ROUTING_KEY
    );
    // Should one reach the queue anyway, it is acked without a message.
    let body = serde_json::to_vec(&attempt).expect("JSON");
    assert!(
        publisher
            .publish_bytes("", &topology.webhook_queue, &body)
            .await
    );
    wait_until_settled(&topology.webhook_queue).await;
    assert_eq!(count(&service, "SELECT COUNT(*) FROM messages").await, 0);
    assert_eq!(count(&service, "SELECT COUNT(*) FROM deliveries").await, 0);
    assert_eq!(
        publisher.ready(&topology.webhook_dlq).await,
        0,
        "acked, not dead-lettered"
    );
    service.stop().await;
}

/// Rolled-back transactions of the service's database so far (PostgreSQL's statistics, which
/// lag by up to a second).
async fn rollbacks(service: &TestService) -> i64 {
    count(
        service,
        "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .await
}

#[tokio::test]
async fn a_database_failure_stores_nothing_half_way_and_loses_no_event() {
    let service = TestService::start(test_settings("wh_consumer_db_failure").await).await;
    let publisher = Publisher::new(&service).await;
    endpoint(&service, "http://127.0.0.1:9/every", None, true).await;
    let before = rollbacks(&service).await;
    // The message insert works, the delivery insert fails: the transaction must take both back.
    service
        .db
        .execute_unprepared("ALTER TABLE deliveries RENAME TO deliveries_away")
        .await
        .expect("sabotage");

    let event = user_registered("t0ken-during-failure", "305172");
    assert!(publisher.publish(&event).await);
    eventually(WAIT, "a failed attempt", || async {
        rollbacks(&service).await > before
    })
    .await;
    assert_eq!(count(&service, "SELECT COUNT(*) FROM messages").await, 0);

    service
        .db
        .execute_unprepared("ALTER TABLE deliveries_away RENAME TO deliveries")
        .await
        .expect("repair");
    eventually(WAIT, "the event stored after the repair", || async {
        count(&service, "SELECT COUNT(*) FROM deliveries").await == 1
    })
    .await;
    assert_eq!(count(&service, "SELECT COUNT(*) FROM messages").await, 1);
    let topology = common::topology::Topology::webhook_service(&service.settings.amqp_namespace);
    assert_eq!(publisher.ready(&topology.webhook_dlq).await, 0);
    service.stop().await;
}

#[tokio::test]
async fn a_fan_out_larger_than_one_statement_can_bind_is_stored_whole() {
    // 22 values a delivery row: 3,000 rows are past PostgreSQL's 65,535 values a statement.
    const ENDPOINTS: i64 = 3_000;
    let service = TestService::start(webhook_service::Settings {
        // Refused addresses: the engine fails each delivery at once, without a call.
        webhook_allowed_nets: Vec::new(),
        ..test_settings("wh_consumer_wide").await
    })
    .await;
    service
        .db
        .execute_unprepared(&format!(
            "INSERT INTO endpoints (id, url, headers, secret, enabled, created_at, updated_at) \
             SELECT gen_random_uuid(), 'http://10.0.0.1/' || n, '{{}}', \
                    'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD', true, now(), now() \
             FROM generate_series(1, {ENDPOINTS}) AS n"
        ))
        .await
        .expect("endpoints inserted");
    let publisher = Publisher::new(&service).await;
    assert!(publisher.publish(&user_registered("t0ken", "123456")).await);
    eventually(WAIT, "one delivery per endpoint", || async {
        count(&service, "SELECT COUNT(*) FROM deliveries").await == ENDPOINTS
    })
    .await;
}
