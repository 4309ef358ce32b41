//! Relay benchmark: throughput of the relay draining a backlog versus a raw lapin publisher
//! (same messages, same confirm pipelining, no database), and the wake-up latency
//! (commit → confirmed) at low load.
//!
//! ```text
//! cargo run --release -p outbox-relay --example relay-bench -- --rows 100000
//! ```
//! Options: `--rows N` (100000), `--batch B` (250), `--in-flight W` (1000), `--samples K` (200).
//! Uses `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) to create a
//! scratch database (dropped at the end) and `AMQP_URL` for the broker; exchanges and queues live
//! in a fresh namespace and are deleted at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use chrono::Utc;
use common::{events::UserVerifiedV1, topology::Topology};
use lapin::options::{ConfirmSelectOptions, QueuePurgeOptions};
use outbox_relay::{
    Application, Settings,
    broker::{Outcome, publish_batch},
    outbox,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use tokio_util::sync::CancellationToken;
use user_service::trace::TraceContext;
use uuid::Uuid;

struct Options {
    rows: usize,
    batch: u32,
    in_flight: u32,
    samples: usize,
}

fn options() -> Options {
    let mut o = Options {
        rows: 100_000,
        batch: 250,
        in_flight: 1000,
        samples: 200,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--rows" => o.rows = value.parse().expect("--rows N"),
            "--batch" => o.batch = value.parse().expect("--batch B"),
            "--in-flight" => o.in_flight = value.parse().expect("--in-flight W"),
            "--samples" => o.samples = value.parse().expect("--samples K"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

async fn write_backlog(db: &DatabaseConnection, rows: usize) {
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
                    enqueue(&txn).await;
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

async fn enqueue(conn: &impl ConnectionTrait) -> Uuid {
    let user_id = Uuid::new_v4();
    let event = UserVerifiedV1 {
        user_id,
        email: format!("{}@example.com", user_id.simple()),
        first_name: Some("Ann".into()),
        last_name: Some("Example".into()),
        verified_at: Utc::now(),
    };
    user_service::outbox::enqueue(conn, Utc::now(), event, &TraceContext::new_root())
        .await
        .unwrap()
}

async fn scalar_i64(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index(0).unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options();
    let db_url = common::testing::fresh_postgres_database("relay_bench").await?;
    let db = user_service::migration::connect_and_migrate(&db_url, 8).await?;
    let namespace = common::testing::unique_namespace();
    let topology = Topology::new(&namespace, vec![Duration::from_secs(1)]);
    let amqp = common::amqp::connect(&common::testing::amqp_url(), "relay-bench").await?;
    let channel = amqp.create_channel().await?;
    topology.declare(&channel).await?;
    println!(
        "relay-bench: {} rows, batch {}, in-flight {}, quorum queue {}, confirms on",
        o.rows, o.batch, o.in_flight, topology.email_queue
    );

    let started = Instant::now();
    write_backlog(&db, o.rows).await;
    println!("backlog written in {:.1?}", started.elapsed());

    // Raw baseline: the same rows, read once into memory, published with the same pipelining.
    let rows = outbox::claim_batch(&db, u32::try_from(o.rows)?).await?;
    let raw_channel = amqp.create_channel().await?;
    raw_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let outcome = publish_batch(
        &raw_channel,
        &topology.exchange,
        &rows,
        o.in_flight as usize,
        Duration::from_secs(60),
    )
    .await;
    let raw_elapsed = started.elapsed().as_secs_f64();
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
    let raw_rate = rows.len() as f64 / raw_elapsed;
    println!("raw lapin publisher: {raw_rate:>9.0} msg/s ({raw_elapsed:.2} s)");
    drop(rows);
    channel
        .queue_purge(
            topology.email_queue.as_str().into(),
            QueuePurgeOptions::default(),
        )
        .await?;

    // The relay draining the same backlog.
    let settings = Settings {
        database_url: db_url.clone(),
        amqp_url: common::testing::amqp_url(),
        amqp_namespace: namespace.clone(),
        amqp_connection_name: "relay-bench-relay".into(),
        retry_delays: topology.retry_delays.clone(),
        relay_batch_size: o.batch,
        relay_max_in_flight: o.in_flight,
        relay_poll_interval: Duration::from_millis(500),
        admin_addr: "127.0.0.1:0".parse()?,
        ..Settings::default()
    };
    settings.validate()?;
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    let start = Utc::now();
    let running = tokio::spawn(app.run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(600);
    while scalar_i64(
        &db,
        "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL",
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "relay did not drain the backlog");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT MAX(published_at) AS last FROM outbox",
        ))
        .await?
        .expect("one row");
    let last: chrono::DateTime<Utc> = last.try_get("", "last")?;
    let relay_elapsed = (last - start).as_seconds_f64();
    let relay_rate = o.rows as f64 / relay_elapsed;
    println!("outbox relay:        {relay_rate:>9.0} msg/s ({relay_elapsed:.2} s)");
    println!(
        "relay / raw:         {:>9.1} %",
        100.0 * relay_rate / raw_rate
    );
    channel
        .queue_purge(
            topology.email_queue.as_str().into(),
            QueuePurgeOptions::default(),
        )
        .await?;

    // Wake-up latency at low load: one event at a time, commit → published_at (taken by the
    // relay right after the confirm).
    let mut latencies = Vec::with_capacity(o.samples);
    for _ in 0..o.samples {
        let txn = db.begin().await?;
        let id = enqueue(&txn).await;
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
        latencies.push((published - committed).as_seconds_f64().max(0.0) * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "wake-up latency (commit → confirmed), {} samples: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99)
    );

    shutdown.cancel();
    running.await??;
    topology.delete(&channel).await?;
    db.close().await?;
    let (admin_url, name) = db_url.rsplit_once('/').expect("a database URL");
    let admin = sea_orm::Database::connect(format!("{admin_url}/postgres")).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await?;
    Ok(())
}
