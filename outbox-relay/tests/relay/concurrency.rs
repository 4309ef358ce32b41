//! Several relays against one outbox: nothing lost, per-aggregate order, no duplicates.

use std::time::Duration;

use outbox_relay::Application;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestContext, assert_per_aggregate_order, collect, duplicates, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_publish_every_event_once_in_per_aggregate_order() {
    const AGGREGATES: usize = 1_000;
    const EVENTS_PER_AGGREGATE: usize = 10;
    let ctx = TestContext::new("three_relays").await;
    let mut consumer = ctx.bind_test_queue().await;
    let shutdown = CancellationToken::new();
    let mut relays = Vec::new();
    for _ in 0..3 {
        let app = Application::build(ctx.settings()).await.unwrap();
        relays.push(tokio::spawn(app.run(shutdown.clone())));
    }

    // Written while the relays run: round r holds every aggregate's r-th event, so each
    // aggregate's events are spread over the whole sequence.
    let aggregates: Vec<Uuid> = (0..AGGREGATES).map(|_| Uuid::new_v4()).collect();
    for _ in 0..EVENTS_PER_AGGREGATE {
        for chunk in aggregates.chunks(100) {
            ctx.write_events(chunk).await;
        }
    }
    let total = AGGREGATES * EVENTS_PER_AGGREGATE;
    let deliveries = collect(&mut consumer, total, Duration::from_secs(120)).await;
    eventually(Duration::from_secs(10), "every row marked", || async {
        ctx.published_count().await == (total as i64, total as i64)
    })
    .await;

    let duplicated = duplicates(&deliveries);
    println!("{total} events, {duplicated} duplicates");
    assert_eq!(duplicated, 0, "no crash, so no duplicate");
    assert_per_aggregate_order(&ctx.expected_order().await, &deliveries);
    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn an_aggregates_next_event_follows_its_first_at_once_not_at_the_next_poll() {
    let ctx = TestContext::new("relay_successor").await;
    let mut consumer = ctx.bind_test_queue().await;
    let shutdown = CancellationToken::new();
    let settings = outbox_relay::Settings {
        // Far beyond the wait below: only the relay's own claim can publish the second event.
        relay_poll_interval: Duration::from_secs(600),
        ..ctx.settings()
    };
    let app = Application::build(settings).await.unwrap();
    let relay = tokio::spawn(app.run(shutdown.clone()));

    // One commit, one wake-up: the claim takes the first event only (the second waits for it),
    // a short batch; its mark finds the second pending and the pipeline claims again.
    let user = Uuid::new_v4();
    for _ in 0..5 {
        ctx.write_events(&[user, user, Uuid::new_v4()]).await;
    }
    let deliveries = collect(&mut consumer, 15, Duration::from_secs(20)).await;
    assert_eq!(duplicates(&deliveries), 0);
    assert_per_aggregate_order(&ctx.expected_order().await, &deliveries);
    shutdown.cancel();
    relay.await.unwrap().unwrap();
}
