//! The broker drops the email-service's connection while deliveries are in flight: in-flight
//! work is abandoned cleanly (the broker redelivers it, the inbox recognises what was sent), the
//! service reconnects and consumes again, and every mail arrives.

use std::{collections::HashSet, time::Duration};

use crate::helpers::{event_ids, eventually, http_get, registered, spawn_app_with};

#[tokio::test]
async fn a_dropped_broker_connection_mid_flight_loses_nothing_and_consuming_resumes() {
    const TOTAL: usize = 200;
    let name = format!("email-test-{}", uuid::Uuid::new_v4().simple());
    let app = spawn_app_with(|settings| {
        settings.amqp_connection_name = name.clone();
        settings.max_concurrent_sends = 16;
    })
    .await;
    // A slow server keeps deliveries in flight when the connection drops.
    app.sink.set_latency(Duration::from_millis(20));
    for n in 0..TOTAL {
        app.publish(&registered(&format!("user{n}@example.com"), None))
            .await;
    }
    eventually(Duration::from_secs(30), "some mails out", || async {
        app.sink.count() >= TOTAL / 5
    })
    .await;
    let dropped = common::testing::close_amqp_connection(&name).await;

    let mails = eventually(Duration::from_secs(60), "every event mailed", || async {
        let mails = app.sink.received();
        let distinct: HashSet<String> = event_ids(&mails).into_iter().collect();
        (distinct.len() >= TOTAL).then_some(mails)
    })
    .await;
    let duplicates = mails.len() - TOTAL;
    println!("connection dropped mid-flight; {duplicates} duplicates");
    assert!(
        duplicates <= 16,
        "{duplicates} duplicates > the 16 sends in flight"
    );
    let base = format!("http://{}", app.admin);
    eventually(Duration::from_secs(10), "ready again", || async {
        http_get(&format!("{base}/health/ready")).await.0 == 200
    })
    .await;
    assert_eq!(http_get(&format!("{base}/health/live")).await.0, 200);
    let reconnected = common::testing::amqp_connection_pid(&name)
        .await
        .expect("the email-service reconnected");
    assert_ne!(reconnected, dropped, "a new connection, not the closed one");
}
