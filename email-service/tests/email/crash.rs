//! SIGKILL of the real binary mid-stream, then a restart: no mail is lost, and duplicates come
//! only from sends in flight at the kill.

use std::{collections::HashMap, process::Stdio, time::Duration};

use common::topology::Topology;
use email_service::SmtpSink;
use tokio::process::{Child, Command};

use crate::helpers::*;

const EVENTS: usize = 600;
const CONCURRENCY: usize = 8;

fn spawn_service(env: &HashMap<&str, String>) -> Child {
    Command::new(env!("CARGO_BIN_EXE_email-service"))
        .arg("run")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn sigkill_mid_stream_loses_nothing_and_duplicates_only_in_flight_sends() {
    let sink = SmtpSink::start().await.unwrap();
    // A slower server widens the window in which a mail is received but not yet recorded.
    sink.set_latency(Duration::from_millis(10));
    let dir = temp_dir();
    let namespace = common::testing::unique_namespace();
    let admin_port = common::testing::free_port();
    let env: HashMap<&str, String> = HashMap::from([
        ("AMQP_URL", common::testing::amqp_url()),
        ("AMQP_NAMESPACE", namespace.clone()),
        ("DATABASE_URL", sqlite_url(&dir)),
        ("SMTP_URL", sink.url()),
        ("SMTP_TIMEOUT", "2s".into()),
        ("SMTP_POOL_SIZE", CONCURRENCY.to_string()),
        ("MAX_CONCURRENT_SENDS", CONCURRENCY.to_string()),
        ("PREFETCH", "50".into()),
        ("RETRY_DELAYS", "200ms,400ms,800ms".into()),
        ("INBOX_RETENTION", "24h".into()),
        ("ADMIN_ADDR", format!("127.0.0.1:{admin_port}")),
        ("RUST_LOG", "warn".into()),
        ("CONFIG_FILE", String::new()),
    ]);

    // The events are queued before the service starts.
    let mut settings = test_settings(&namespace, sqlite_url(&dir), &sink);
    settings.retry_delays = TEST_DELAYS.to_vec();
    let topology = Topology::new(&namespace).with_retry_delays(TEST_DELAYS.to_vec());
    let (connection, channel) = publisher(&settings).await;
    let declare = connection.create_channel().await.unwrap();
    topology.declare(&declare).await.unwrap();
    let events: Vec<_> = (0..EVENTS)
        .map(|i| registered(&format!("crash{i}@example.com"), None))
        .collect();
    for event in &events {
        publish_event(&channel, &topology, event).await;
    }

    let mut first = spawn_service(&env);
    eventually(Duration::from_secs(60), "a third of the mails", || async {
        (sink.count() >= EVENTS / 3).then_some(())
    })
    .await;
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    let at_kill = sink.count();
    assert!(at_kill < EVENTS, "the kill must land mid-stream");

    let mut second = spawn_service(&env);
    let mails = eventually(Duration::from_secs(90), "every event mailed", || async {
        let mails = sink.received();
        let mut ids = event_ids(&mails);
        ids.sort();
        ids.dedup();
        (ids.len() == EVENTS).then_some(mails)
    })
    .await;
    let duplicates = mails.len() - EVENTS;
    let resent = metric(admin_port, "email_resent_after_crash_total").await;
    println!(
        "killed after {at_kill} mails; {duplicates} duplicate(s); restart resent {resent} \
         send(s) that were in flight"
    );
    assert!(
        duplicates <= CONCURRENCY,
        "duplicates ({duplicates}) only for sends in flight at the kill (≤ {CONCURRENCY})"
    );
    assert!(
        duplicates as f64 <= resent,
        "each duplicate is a counted resend"
    );
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    delete_topology(&connection, &topology).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads a counter from the service's `/metrics` (0 when absent).
async fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
