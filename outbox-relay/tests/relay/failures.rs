//! Crashes and broker connection loss: nothing lost, duplicates bounded by the batches in flight.

use std::{process::Stdio, time::Duration};

use outbox_relay::Application;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestContext, collect, duplicates, eventually, http_get, write_events};

const BATCH: usize = 50;

fn spawn_relay_process(ctx: &TestContext) -> Child {
    Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .env_clear()
        .env("DATABASE_URL", &ctx.db_url)
        .env("AMQP_URL", common::testing::amqp_url())
        .env("AMQP_NAMESPACE", &ctx.namespace)
        .env(
            "AMQP_CONNECTION_NAME",
            format!("relay-{}", Uuid::new_v4().simple()),
        )
        .env("RELAY_BATCH_SIZE", BATCH.to_string())
        .env("RELAY_MAX_IN_FLIGHT", BATCH.to_string())
        .env("RELAY_POLL_INTERVAL", "100ms")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_killed_relay_process_loses_nothing_and_duplicates_at_most_its_batches_in_flight() {
    const TOTAL: usize = 3_000;
    let ctx = TestContext::new("sigkill").await;
    let mut consumer = ctx.bind_test_queue().await;
    for _ in 0..TOTAL / 100 {
        let aggregates: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
        ctx.write_events(&aggregates).await;
    }

    let mut first = spawn_relay_process(&ctx);
    eventually(Duration::from_secs(30), "the relay to publish", || async {
        ctx.published_count().await.0 >= 300
    })
    .await;
    first.kill().await.unwrap(); // SIGKILL
    let at_kill = ctx.published_count().await.0;
    assert!(
        (at_kill as usize) < TOTAL,
        "killed too late to be mid-run ({at_kill} published)"
    );

    let mut second = spawn_relay_process(&ctx);
    let deliveries = collect(&mut consumer, TOTAL, Duration::from_secs(60)).await;
    eventually(Duration::from_secs(10), "every row marked", || async {
        ctx.published_count().await.0 == TOTAL as i64
    })
    .await;
    let duplicated = duplicates(&deliveries);
    println!("killed after {at_kill} marked rows; {duplicated} duplicates");
    // Published but not yet marked at the kill: at most every batch the process had claimed
    // (one publishing through the window of BATCH, the spare pipelines claiming or marking).
    let settings = outbox_relay::Settings {
        relay_batch_size: BATCH as u32,
        relay_max_in_flight: BATCH as u32,
        ..ctx.settings()
    };
    let bound = BATCH * settings.concurrent_batches();
    assert!(
        duplicated <= bound,
        "{duplicated} duplicates > the {bound} rows of the batches in flight"
    );

    // Graceful shutdown of the second process: SIGTERM, clean exit.
    let pid = second.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), second.wait())
        .await
        .expect("relay exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "relay exited with {exit}");
}

#[tokio::test]
async fn the_relay_recovers_when_the_broker_closes_its_connection() {
    const TOTAL: usize = 2_000;
    let ctx = TestContext::new("connection_drop").await;
    let mut consumer = ctx.bind_test_queue().await;
    let settings = ctx.settings();
    let name = settings.amqp_connection_name.clone();
    let app = Application::build(settings).await.unwrap();
    let ready_url = format!("{}/health/ready", app.admin_addr().unwrap());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));

    let writer = {
        let db = ctx.db.clone();
        tokio::spawn(async move {
            for _ in 0..TOTAL / 50 {
                let aggregates: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
                write_events(&db, &aggregates).await;
            }
        })
    };
    eventually(Duration::from_secs(30), "some rows published", || async {
        ctx.published_count().await.0 >= 200
    })
    .await;
    let pid = common::testing::close_amqp_connection(&name).await;
    writer.await.unwrap();

    let deliveries = collect(&mut consumer, TOTAL, Duration::from_secs(60)).await;
    eventually(Duration::from_secs(10), "every row marked", || async {
        ctx.published_count().await.0 == TOTAL as i64
    })
    .await;
    eventually(Duration::from_secs(10), "ready again", || async {
        http_get(&ready_url).await.0 == 200
    })
    .await;
    let reconnected = common::testing::amqp_connection_pid(&name)
        .await
        .expect("the relay reconnected");
    assert_ne!(reconnected, pid, "a new connection, not the closed one");
    let duplicated = duplicates(&deliveries);
    println!("connection dropped; {duplicated} duplicates");
    assert!(
        duplicated <= 200,
        "{duplicated} duplicates > in-flight limit"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
