//! Per-test isolation: a fresh PostgreSQL database with the outbox table alone, an AMQP
//! namespace, a bound test queue, and rows written through `outbox::enqueue`.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::Utc;
use common::{events::UserVerifiedV1, topology::Topology, trace::TraceContext};
use futures::StreamExt;
use lapin::{
    Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use outbox_relay::Settings;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use tokio::time::Instant;
use uuid::Uuid;

pub(crate) use common::testing::{eventually, http_get};

/// One test's database and broker namespace.
pub(crate) struct TestContext {
    pub(crate) db: DatabaseConnection,
    pub(crate) db_url: String,
    pub(crate) namespace: String,
    pub(crate) topology: Topology,
    pub(crate) amqp: Connection,
    pub(crate) channel: Channel,
    test_queues: std::sync::Mutex<Vec<String>>,
}

impl Drop for TestContext {
    fn drop(&mut self) {
        let mut cleanup = common::testing::AmqpCleanup::for_topology(&self.topology);
        for queue in self.test_queues.lock().unwrap().drain(..) {
            cleanup.add_queue(queue);
        }
    }
}

impl TestContext {
    pub(crate) async fn new(label: &str) -> Self {
        let db_url = common::testing::fresh_postgres_database(label)
            .await
            .unwrap();
        Self::with_db_url(db_url).await
    }

    pub(crate) async fn with_db_url(db_url: String) -> Self {
        common::testing::init_tracing();
        let db = common::database::connect(&db_url, common::database::PoolOptions::new(5))
            .await
            .unwrap();
        outbox::migrate_outbox_only(&db).await.unwrap();
        let namespace = common::testing::unique_namespace();
        let topology = Topology::new(&namespace);
        let amqp = common::amqp::connect(&common::testing::amqp_url(), "relay-test-client")
            .await
            .unwrap();
        let channel = amqp.create_channel().await.unwrap();
        topology.declare(&channel).await.unwrap();
        Self {
            db,
            db_url,
            namespace,
            topology,
            amqp,
            channel,
            test_queues: std::sync::Mutex::default(),
        }
    }

    /// Relay settings for this test: its database, namespace and a unique connection name.
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            database_url: self.db_url.clone().into(),
            amqp_url: common::testing::amqp_url().into(),
            amqp_namespace: self.namespace.clone(),
            amqp_connection_name: format!("relay-{}", Uuid::new_v4().simple()),
            relay_batch_size: 100,
            relay_max_in_flight: 200,
            relay_poll_interval: Duration::from_millis(100),
            relay_confirm_timeout: Duration::from_secs(5),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            ..Settings::default()
        }
    }

    /// Deletes `queue` with the namespace when the test ends.
    pub(crate) fn track_queue(&self, queue: &str) {
        self.test_queues.lock().unwrap().push(queue.to_owned());
    }

    /// A fresh queue bound to the namespace's exchange with `#`, and a consumer on it.
    pub(crate) async fn bind_test_queue(&self) -> Consumer {
        let queue = format!("{}test.{}", self.namespace, Uuid::new_v4().simple());
        self.channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.channel
            .queue_bind(
                queue.as_str().into(),
                self.topology.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.test_queues.lock().unwrap().push(queue.clone());
        let consumer_channel = self.amqp.create_channel().await.unwrap();
        consumer_channel
            .basic_qos(1000, BasicQosOptions::default())
            .await
            .unwrap();
        consumer_channel
            .basic_consume(
                queue.as_str().into(),
                "relay-test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
    }

    /// See [`write_events`].
    pub(crate) async fn write_events(&self, aggregates: &[Uuid]) -> Vec<Uuid> {
        write_events(&self.db, aggregates).await
    }

    /// `(published, total)` row counts.
    pub(crate) async fn published_count(&self) -> (i64, i64) {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT COUNT(published_at) AS published, COUNT(*) AS total FROM outbox",
            ))
            .await
            .unwrap()
            .unwrap();
        (
            row.try_get("", "published").unwrap(),
            row.try_get("", "total").unwrap(),
        )
    }

    /// Event ids grouped by aggregate, in outbox sequence order.
    pub(crate) async fn expected_order(&self) -> HashMap<Uuid, Vec<Uuid>> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT id, aggregate_id FROM outbox ORDER BY seq",
            ))
            .await
            .unwrap();
        let mut order: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for row in rows {
            let id: Uuid = row.try_get("", "id").unwrap();
            let aggregate: Uuid = row.try_get("", "aggregate_id").unwrap();
            order.entry(aggregate).or_default().push(id);
        }
        order
    }
}

/// Writes one event per aggregate in one transaction, through the outbox writer.
/// Returns the event ids in outbox order.
pub(crate) async fn write_events(db: &DatabaseConnection, aggregates: &[Uuid]) -> Vec<Uuid> {
    let txn = db.begin().await.unwrap();
    let mut ids = Vec::with_capacity(aggregates.len());
    for aggregate in aggregates {
        let event = UserVerifiedV1 {
            user_id: *aggregate,
            email: format!("{}@example.com", aggregate.simple()),
            first_name: Some("Ann".into()),
            last_name: None,
            verified_at: Utc::now(),
        };
        let id = outbox::enqueue(&txn, Utc::now(), event, &TraceContext::new_root())
            .await
            .unwrap();
        ids.push(id);
    }
    txn.commit().await.unwrap();
    ids
}

/// Deliveries read until `expected` distinct message ids arrived (panics after `timeout`), then
/// until the queue stays quiet for 300 ms, so late duplicates are counted too.
pub(crate) async fn collect(
    consumer: &mut Consumer,
    expected: usize,
    timeout: Duration,
) -> Vec<Delivery> {
    let deadline = Instant::now() + timeout;
    let mut deliveries = Vec::new();
    let mut distinct = HashSet::new();
    while distinct.len() < expected {
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {expected} events arrived in {timeout:?}",
                    distinct.len()
                )
            });
        let delivery = next.unwrap().unwrap();
        distinct.insert(message_id(&delivery));
        deliveries.push(delivery);
    }
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(300), consumer.next()).await
    {
        deliveries.push(delivery);
    }
    deliveries
}

pub(crate) fn message_id(delivery: &Delivery) -> Uuid {
    delivery
        .properties
        .message_id()
        .as_ref()
        .unwrap()
        .as_str()
        .parse()
        .unwrap()
}

/// Number of deliveries beyond the first of each message id.
pub(crate) fn duplicates(deliveries: &[Delivery]) -> usize {
    let distinct: HashSet<Uuid> = deliveries.iter().map(message_id).collect();
    deliveries.len() - distinct.len()
}

/// Asserts that each aggregate's events arrived (first occurrences) in outbox order.
pub(crate) fn assert_per_aggregate_order(
    expected: &HashMap<Uuid, Vec<Uuid>>,
    deliveries: &[Delivery],
) {
    let aggregate_of: HashMap<Uuid, Uuid> = expected
        .iter()
        .flat_map(|(aggregate, ids)| ids.iter().map(move |id| (*id, *aggregate)))
        .collect();
    let mut seen = HashSet::new();
    let mut arrived: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for delivery in deliveries {
        let id = message_id(delivery);
        if seen.insert(id) {
            arrived.entry(aggregate_of[&id]).or_default().push(id);
        }
    }
    for (aggregate, ids) in expected {
        assert_eq!(
            arrived.get(aggregate),
            Some(ids),
            "events of aggregate {aggregate} out of order or missing"
        );
    }
}

/// Builds and runs a relay with `settings`, waits until its admin port answers live, and returns
/// that port's address with a guard that stops the relay when dropped.
pub(crate) async fn spawn_live_relay(
    settings: Settings,
) -> (std::net::SocketAddr, tokio_util::sync::DropGuard) {
    let app = outbox_relay::Application::build(settings).await.unwrap();
    let admin = app.admin_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone().drop_guard();
    tokio::spawn(app.run(shutdown));
    let live = format!("{admin}/health/live");
    eventually(Duration::from_secs(10), "live", || async {
        http_get(&live).await.0 == 200
    })
    .await;
    (admin, stop)
}
