//! Relay benchmark: throughput of the relay draining a backlog versus a raw lapin publisher
//! (same messages, same confirm pipelining, no database), and the wake-up latency
//! (commit → confirmed) at low load.
//!
//! ```text
//! cargo run --release -p outbox-relay --example relay-bench -- --rows 100000
//! ```
//! Options: `--rows N` (100000), `--batch B` (250), `--in-flight W` (1000), `--rounds R` (3),
//! `--samples K` (200), `--secrets` (rows are `UserRegisteredV1` events whose link and code the
//! mark blanks, instead of `UserVerifiedV1` without secrets).
//!
//! The backlog is written once through the outbox writer (`outbox::enqueue`). Each round then runs
//! both publishers on the same rows, each against a freshly declared exchange and quorum queue
//! (deleted afterwards), so neither inherits the other's queue log; the order alternates between
//! rounds so that whatever the broker does after a run weighs on both sides alike. Before each
//! relay run the rows are made pending again and the table vacuumed. The summary gives every
//! round's ratio and their median.
//!
//! Uses `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) to create a
//! scratch database (dropped at the end) and `AMQP_URL` for the broker.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use common::{
    events::{UserRegisteredV1, UserVerifiedV1, VerificationDetails},
    settings::Validate as _,
    topology::Topology,
    trace::TraceContext,
};
use lapin::options::ConfirmSelectOptions;
use outbox_relay::{Application, Outcome, Settings, publish_batch};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Relay throughput against a raw lapin publisher, and the wake-up latency.
#[derive(Parser)]
#[command(name = "relay-bench", about)]
struct Options {
    /// Rows in the backlog.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Rows claimed, published and marked per batch (`RELAY_BATCH_SIZE`).
    #[arg(long, default_value_t = 250)]
    batch: u32,
    /// Unconfirmed publishes at most (`RELAY_MAX_IN_FLIGHT`).
    #[arg(long, default_value_t = 1000)]
    in_flight: u32,
    /// Alternating rounds of relay and raw publisher.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Wake-up latency samples.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Events with secrets (`UserRegisteredV1`): each mark also swaps in the redacted payload.
    #[arg(long)]
    secrets: bool,
}

async fn write_backlog(db: &DatabaseConnection, rows: usize, secrets: bool) {
    let mut tasks = Vec::new();
    for part in 0..2 {
        let db = db.clone();
        let share = rows / 2 + if part == 0 { rows % 2 } else { 0 };
        tasks.push(tokio::spawn(async move {
            let mut left = share;
            while left > 0 {
                let n = left.min(500);
                let txn = db.begin().await.unwrap();
                for _ in 0..n {
                    enqueue(&txn, secrets).await;
                }
                txn.commit().await.unwrap();
                left -= n;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

async fn enqueue(conn: &impl ConnectionTrait, secrets: bool) -> Uuid {
    let user_id = Uuid::new_v4();
    let (email, trace) = (
        format!("{}@example.com", user_id.simple()),
        TraceContext::new_root(),
    );
    let written = if secrets {
        let verification = VerificationDetails {
            link: format!(
                "https://example.com/user/verify?token={}",
                Uuid::new_v4().simple()
            ),
            code: "123456".into(),
            expires_at: Utc::now(),
            code_expires_at: None,
        };
        let event = UserRegisteredV1 {
            user_id,
            email,
            first_name: Some("Ann".into()),
            last_name: Some("Example".into()),
            verification,
            registered_at: Some(Utc::now()),
        };
        outbox::enqueue(conn, Utc::now(), event, &trace).await
    } else {
        let event = UserVerifiedV1 {
            user_id,
            email,
            first_name: Some("Ann".into()),
            last_name: Some("Example".into()),
            verified_at: Utc::now(),
        };
        outbox::enqueue(conn, Utc::now(), event, &trace).await
    };
    written.unwrap()
}

async fn scalar_i64(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index(0).unwrap()
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A fresh namespace with its topology declared on `channel`.
async fn fresh_topology(channel: &lapin::Channel) -> anyhow::Result<(String, Topology)> {
    let namespace = common::testing::unique_namespace();
    let topology = Topology::new(&namespace);
    topology.declare(channel).await?;
    Ok((namespace, topology))
}

/// The raw publisher: the rows, already in memory, published with the relay's own
/// `publish_batch` (same properties, `mandatory`, confirms, window) and no database. Messages/s.
async fn raw_run(
    amqp: &lapin::Connection,
    rows: &[outbox::OutboxRow],
    o: &Options,
) -> anyhow::Result<f64> {
    let setup = amqp.create_channel().await?;
    let (_, topology) = fresh_topology(&setup).await?;
    let channel = amqp.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let outcome = publish_batch(
        &channel,
        &topology.exchange,
        rows,
        o.in_flight as usize,
        Duration::from_secs(60),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let confirmed = outcome
        .outcomes
        .iter()
        .filter(|o| **o == Outcome::Confirmed)
        .count();
    assert_eq!(
        confirmed,
        rows.len(),
        "raw publisher: every message confirmed"
    );
    let _ = channel.close(200, "done".into()).await;
    topology.delete(&setup).await?;
    Ok(rows.len() as f64 / elapsed)
}

/// Makes every row pending again, with the dead row versions vacuumed away and a checkpoint
/// taken: the same backlog as freshly written, and no background writing left over from it.
async fn reset_backlog(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_unprepared(
        // A published row of an event with secrets holds its redacted copy as payload: store
        // it as the copy again, so the next mark swaps it in as the first one did.
        "UPDATE outbox SET published_at = NULL, attempts = 0, last_error = NULL, \
         redacted_payload = CASE WHEN event_type = 'UserRegisteredV1' THEN payload END \
         WHERE published_at IS NOT NULL",
    )
    .await?;
    db.execute_unprepared("VACUUM (ANALYZE) outbox").await?;
    db.execute_unprepared("CHECKPOINT").await?;
    Ok(())
}

fn relay_settings(db_url: &str, namespace: &str, o: &Options) -> anyhow::Result<Settings> {
    let settings = Settings {
        database_url: db_url.into(),
        amqp_url: common::testing::amqp_url().into(),
        amqp_namespace: namespace.to_owned(),
        amqp_connection_name: "relay-bench-relay".into(),
        relay_batch_size: o.batch,
        relay_max_in_flight: o.in_flight,
        relay_poll_interval: Duration::from_millis(500),
        admin_addr: "127.0.0.1:0".parse()?,
        ..Settings::default()
    };
    settings.validate()?;
    Ok(settings)
}

/// A relay running in this process against a freshly declared topology.
struct RunningRelay {
    setup: lapin::Channel,
    topology: Topology,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningRelay {
    async fn start(amqp: &lapin::Connection, db_url: &str, o: &Options) -> anyhow::Result<Self> {
        let setup = amqp.create_channel().await?;
        let (namespace, topology) = fresh_topology(&setup).await?;
        let app = Application::build(relay_settings(db_url, &namespace, o)?).await?;
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(app.run(shutdown.clone()));
        Ok(Self {
            setup,
            topology,
            shutdown,
            running,
        })
    }

    /// Shuts the relay down and deletes its topology.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.running.await??;
        self.topology.delete(&self.setup).await?;
        Ok(())
    }
}

/// The relay draining the whole backlog: rows / (last `published_at` − start). Messages/s.
async fn relay_run(
    amqp: &lapin::Connection,
    db: &DatabaseConnection,
    db_url: &str,
    o: &Options,
) -> anyhow::Result<f64> {
    let start = Utc::now();
    let relay = RunningRelay::start(amqp, db_url, o).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    // A cheap check, rarely: the end time comes from the rows, not from this loop.
    while scalar_i64(
        db,
        "SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE published_at IS NULL LIMIT 1) p",
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "relay did not drain the backlog");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT MAX(published_at) AS last FROM outbox",
        ))
        .await?
        .expect("one row");
    let last: chrono::DateTime<Utc> = last.try_get("", "last")?;
    relay.stop().await?;
    Ok(o.rows as f64 / (last - start).as_seconds_f64())
}

/// Wake-up latency at low load: one event at a time, commit → `published_at` (taken by the relay
/// right after the confirm). Sorted milliseconds.
async fn wakeup_latencies(
    amqp: &lapin::Connection,
    db: &DatabaseConnection,
    db_url: &str,
    o: &Options,
) -> anyhow::Result<Vec<f64>> {
    let relay = RunningRelay::start(amqp, db_url, o).await?;
    let mut latencies = Vec::with_capacity(o.samples);
    // One more event first, not counted: it waits for the relay to connect to the broker.
    for sample in 0..=o.samples {
        let txn = db.begin().await?;
        let id = enqueue(&txn, o.secrets).await;
        txn.commit().await?;
        let committed = Utc::now();
        let deadline = Instant::now() + Duration::from_secs(5);
        let published: chrono::DateTime<Utc> = loop {
            let row = db
                .query_one_raw(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    "SELECT published_at FROM outbox WHERE id = $1",
                    [id.into()],
                ))
                .await?
                .expect("the row exists");
            if let Some(at) = row.try_get::<Option<chrono::DateTime<Utc>>>("", "published_at")? {
                break at;
            }
            assert!(Instant::now() < deadline, "event not published within 5 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if sample > 0 {
            latencies.push((published - committed).as_seconds_f64().max(0.0) * 1000.0);
        }
    }
    relay.stop().await?;
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Options::parse();
    let db_url = common::testing::fresh_postgres_database("relay_bench").await?;
    let db = common::database::connect(&db_url, common::database::PoolOptions::new(8)).await?;
    outbox::migrate_outbox_only(&db).await?;
    let amqp = common::amqp::connect(&common::testing::amqp_url(), "relay-bench").await?;
    println!(
        "relay-bench: {} rows, batch {}, in-flight {}, {} rounds, quorum queues, confirms on",
        o.rows, o.batch, o.in_flight, o.rounds
    );

    let started = Instant::now();
    write_backlog(&db, o.rows, o.secrets).await;
    println!("backlog written in {:.1?}", started.elapsed());
    let rows = outbox::claim_batch(&db, u32::try_from(o.rows)?, None).await?;
    assert_eq!(
        rows.len(),
        o.rows,
        "one event per user: every row is claimable"
    );

    let mut ratios = Vec::with_capacity(o.rounds);
    let mut relay_rates = Vec::with_capacity(o.rounds);
    for round in 0..o.rounds {
        // Both sides start from the same quiet database; alternate which side runs first.
        reset_backlog(&db).await?;
        let (raw_rate, relay_rate) = if round % 2 == 0 {
            let raw = raw_run(&amqp, &rows, &o).await?;
            (raw, relay_run(&amqp, &db, &db_url, &o).await?)
        } else {
            let relay = relay_run(&amqp, &db, &db_url, &o).await?;
            (raw_run(&amqp, &rows, &o).await?, relay)
        };
        let ratio = 100.0 * relay_rate / raw_rate;
        println!(
            "round {}: raw lapin publisher {raw_rate:>7.0} msg/s, outbox relay {relay_rate:>7.0} msg/s, relay / raw {ratio:>5.1} %",
            round + 1
        );
        ratios.push(ratio);
        relay_rates.push(relay_rate);
    }
    ratios.sort_by(f64::total_cmp);
    relay_rates.sort_by(f64::total_cmp);
    println!(
        "relay / raw: median {:.1} % (min {:.1} %, max {:.1} %); relay median {:.0} msg/s",
        median(&ratios),
        ratios[0],
        ratios[ratios.len() - 1],
        median(&relay_rates)
    );
    drop(rows);

    let latencies = wakeup_latencies(&amqp, &db, &db_url, &o).await?;
    println!(
        "wake-up latency (commit → confirmed), {} samples: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99)
    );

    let _ = amqp.close(200, "done".into()).await;
    db.close().await?;
    let (admin_url, name) = db_url.rsplit_once('/').expect("a database URL");
    let admin = sea_orm::Database::connect(format!("{admin_url}/postgres")).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await?;
    Ok(())
}
