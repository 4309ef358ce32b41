//! An SMTP outage longer than the whole retry ladder: the circuit breaker pauses sending, so no
//! mail spends its attempts or reaches the dead-letter queue, readiness says the mail server is
//! down, and every mail goes out once the server is back.

use std::time::Duration;

use email_service::SinkBehaviour;

use crate::helpers::{event_ids, eventually, http_get, registered, spawn_app_with};

#[tokio::test]
async fn an_smtp_outage_longer_than_the_retry_ladder_dead_letters_nothing() {
    const TOTAL: usize = 40;
    const CONCURRENCY: usize = 4;
    const THRESHOLD: u32 = 5;
    // Ladder 200 ms, 400 ms, 800 ms and 3 attempts: without the breaker every mail would be
    // dead-lettered about 0.6 s into the outage.
    let app = spawn_app_with(|settings| {
        settings.max_attempts = 3;
        settings.max_concurrent_sends = CONCURRENCY;
        settings.smtp_breaker_threshold = THRESHOLD;
        settings.smtp_breaker_cooldown = Duration::from_millis(500);
    })
    .await;
    let ready = format!("http://{}/health/ready", app.admin);
    // 451 to every recipient: the server is there but says "try later" (each try counts as a
    // transaction of the sink).
    app.sink.set_behaviour(SinkBehaviour::TempFail);
    for n in 0..TOTAL {
        app.publish(&registered(&format!("user{n}@example.com"), None))
            .await;
    }
    eventually(
        Duration::from_secs(10),
        "readiness: smtp unavailable",
        || async {
            let (status, body) = http_get(&ready).await;
            status == 503 && body.contains(r#""smtp":"unavailable""#)
        },
    )
    .await;
    // Stay down for several times the ladder (and several probes).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let attempts_during_outage = app.sink.transactions();
    assert!(attempts_during_outage >= THRESHOLD as usize);
    println!("{attempts_during_outage} send attempts during a 4 s outage");
    // The failures that open the breaker, the sends in flight then, and one probe per
    // cool-down (500 ms doubling: at most 4 in 4 s).
    let bound = THRESHOLD as usize + CONCURRENCY + 4;
    assert!(
        attempts_during_outage <= bound,
        "{attempts_during_outage} attempts > {bound}"
    );

    app.sink.set_behaviour(SinkBehaviour::Accept);
    let attempts_before = app.sink.transactions();
    let mails = app
        .sink
        .wait_for(TOTAL, Duration::from_secs(30))
        .await
        .unwrap();
    let mut ids = event_ids(&mails);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), TOTAL, "every mail arrived");
    println!(
        "{} send attempts after the server came back",
        app.sink.transactions() - attempts_before
    );
    eventually(Duration::from_secs(10), "ready again", || async {
        http_get(&ready).await.0 == 200
    })
    .await;
    let dlq = app.dlq().await;
    assert!(
        dlq.list().await.unwrap().is_empty(),
        "nothing dead-lettered"
    );
    dlq.close().await;
    app.stop().await;
}
