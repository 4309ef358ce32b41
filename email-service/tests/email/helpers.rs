//! `spawn_app`, event builders, publishing and bounded polling.

use std::{path::PathBuf, time::Duration};

use chrono::Utc;
use common::{
    events::{Envelope, Event, UserRegisteredV1, UserVerifiedV1},
    topology::Topology,
};
use email_service::{Application, DlqClient, ReceivedMail, Settings, SmtpSink, SmtpUrl};
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) use common::testing::{eventually, http_get};

/// Short retry ladder for tests.
pub(crate) const TEST_DELAYS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
];

pub(crate) fn test_settings(namespace: &str, database_url: String, sink: &SmtpSink) -> Settings {
    Settings {
        amqp_url: common::testing::amqp_url().into(),
        amqp_namespace: namespace.to_owned(),
        database_url: database_url.into(),
        smtp_url: Some(SmtpUrl(sink.url())),
        smtp_timeout: Duration::from_secs(2),
        retry_delays: TEST_DELAYS.to_vec(),
        max_attempts: 6,
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        // At least a day: the daily mail cap counts a day of inbox rows.
        inbox_retention: Duration::from_secs(24 * 3600),
        ..Settings::default()
    }
}

/// A fresh SQLite file in its own temporary folder.
pub(crate) fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("inbox.db").display())
}

pub(crate) fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("email-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running email-service plus everything a test needs to drive it.
pub(crate) struct TestApp {
    pub(crate) sink: SmtpSink,
    pub(crate) settings: Settings,
    pub(crate) topology: Topology,
    pub(crate) db: DatabaseConnection,
    pub(crate) admin: std::net::SocketAddr,
    pub(crate) dir: PathBuf,
    connection: Connection,
    publisher: Channel,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    // Last field: dropped after the service was told to stop.
    _cleanup: common::testing::AmqpCleanup,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the service before the namespace's queues are deleted (`_cleanup`).
        self.shutdown.cancel();
    }
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub(crate) async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    common::testing::init_tracing();
    let sink = SmtpSink::start().await.unwrap();
    let dir = temp_dir();
    let mut settings = test_settings(
        &common::testing::unique_namespace(),
        sqlite_url(&dir),
        &sink,
    );
    configure(&mut settings);
    let app = Application::build(settings.clone()).await.unwrap();
    let (db, admin, topology) = (
        app.db().clone(),
        app.admin_addr().unwrap(),
        app.topology().clone(),
    );
    let topology_for_cleanup = topology.clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let (connection, publisher) = publisher(&settings).await;
    TestApp {
        sink,
        settings,
        topology,
        db,
        admin,
        dir,
        connection,
        publisher,
        shutdown,
        task: Some(task),
        _cleanup: common::testing::AmqpCleanup::for_topology(&topology_for_cleanup),
    }
}

pub(crate) async fn publisher(settings: &Settings) -> (Connection, Channel) {
    let connection = common::amqp::connect(&settings.amqp_url, "email-test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (connection, channel)
}

impl TestApp {
    pub(crate) async fn publish<T: Event>(&self, envelope: &Envelope<T>) {
        publish_event(&self.publisher, &self.topology, envelope).await;
    }

    /// Publishes raw bytes with the routing key of `UserRegisteredV1`.
    pub(crate) async fn publish_raw(&self, body: &[u8], event_type: &str) {
        publish_bytes(
            &self.publisher,
            &self.topology.exchange,
            UserRegisteredV1::ROUTING_KEY,
            body,
            properties(&Uuid::new_v4().to_string(), event_type),
        )
        .await;
    }

    pub(crate) async fn dlq(&self) -> DlqClient {
        DlqClient::connect(&self.settings).await.unwrap()
    }

    /// Stops the service (graceful) and removes the test's queues and exchange.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("graceful shutdown within 20 s")
                .unwrap()
                .unwrap();
        }
        delete_topology(&self.connection, &self.topology).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) async fn delete_topology(connection: &Connection, topology: &Topology) {
    let channel = connection.create_channel().await.unwrap();
    let _ = topology.delete(&channel).await;
}

pub(crate) fn properties(message_id: &str, event_type: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "correlation_id".into(),
        AMQPValue::LongString("test-correlation".into()),
    );
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    );
    BasicProperties::default()
        .with_message_id(message_id.into())
        .with_type(event_type.into())
        .with_content_type("application/json".into())
        .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap())
        .with_delivery_mode(2)
        .with_headers(headers)
}

pub(crate) async fn publish_event<T: Event>(
    channel: &Channel,
    topology: &Topology,
    envelope: &Envelope<T>,
) {
    publish_bytes(
        channel,
        &topology.exchange,
        T::ROUTING_KEY,
        &serde_json::to_vec(envelope).unwrap(),
        properties(&envelope.event_id.to_string(), T::EVENT_TYPE),
    )
    .await;
}

pub(crate) async fn publish_bytes(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    assert!(confirm.take_message().is_none(), "unroutable");
}

/// A `user.registered.v1` event of `email` with a fresh token and code.
pub(crate) fn registered(email: &str, first_name: Option<&str>) -> Envelope<UserRegisteredV1> {
    let token = Uuid::new_v4().simple().to_string();
    let mut event = common::testing::user_registered(&token, &format!("{:06}", rand_code()));
    event.data.email = email.into();
    event.data.first_name = first_name.map(Into::into);
    event
}

fn rand_code() -> u32 {
    u32::try_from(Uuid::new_v4().as_u128() % 1_000_000).unwrap()
}

/// The `Message-ID`s of `mails`, one per event id.
pub(crate) fn event_ids(mails: &[ReceivedMail]) -> Vec<String> {
    mails
        .iter()
        .map(|m| {
            m.header("Message-ID")
                .unwrap()
                .trim_matches(['<', '>'])
                .split('@')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// A `UserVerifiedV1` (the welcome mail) for `email`.
pub(crate) fn welcome(email: &str) -> Envelope<UserVerifiedV1> {
    Envelope::new(
        Uuid::new_v4(),
        Utc::now(),
        UserVerifiedV1 {
            user_id: Uuid::new_v4(),
            email: email.into(),
            first_name: None,
            last_name: None,
            verified_at: Utc::now(),
        },
    )
}
