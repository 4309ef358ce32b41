//! End-to-end throughput benchmark of the email-service.
//!
//! Queues N `UserRegisteredV1` events (publisher-confirmed) in a fresh namespace, then starts the
//! service in-process against the in-process SMTP sink and measures until every mail was
//! accepted: mails/s, and the p50/p99 of queue → SMTP accepted (from each event's publish
//! confirm to the sink's acceptance, so with a pre-filled queue it includes the wait in the
//! backlog) and of consume start → accepted.
//!
//! ```text
//! cargo run --release -p email-service --example email-bench -- --events 10000
//! ```

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use common::{
    events::{Envelope, Event, UserRegisteredV1, VerificationDetails},
    topology::Topology,
};
use email_service::{Application, Settings, SmtpSink, SmtpUrl};
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Measures mails/s and queue → SMTP latency.
#[derive(Parser)]
struct Args {
    /// Events to queue before the service starts.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// SMTP connections (`SMTP_POOL_SIZE`).
    #[arg(long, default_value_t = 16)]
    pool: usize,
    /// Deliveries in progress at once (`MAX_CONCURRENT_SENDS`).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// `PREFETCH`.
    #[arg(long, default_value_t = 256)]
    prefetch: u16,
    /// Inbox database; default: a fresh SQLite file in a temporary folder.
    #[arg(long)]
    database_url: Option<String>,
    /// `AMQP_URL`.
    #[arg(long, default_value = common::amqp::DEFAULT_URL)]
    amqp_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    common::telemetry::init(common::settings::LogFormat::Pretty, "warn")?;
    let sink = SmtpSink::start().await?;
    let dir = std::env::temp_dir().join(format!("email-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let namespace = format!("bench{}.", &Uuid::new_v4().simple().to_string()[..8]);
    let settings = Settings {
        amqp_url: args.amqp_url.clone().into(),
        amqp_namespace: namespace.clone(),
        database_url: args
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("inbox.db").display()))
            .into(),
        smtp_url: Some(SmtpUrl(sink.url())),
        smtp_pool_size: args.pool,
        max_concurrent_sends: args.concurrency,
        prefetch: args.prefetch,
        admin_addr: "127.0.0.1:0".parse()?,
        ..Settings::default()
    };
    let topology = settings.topology();

    let connection = common::amqp::connect(&settings.amqp_url, "email-bench").await?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    println!("queueing {} events …", args.events);
    let published = publish(&channel, &topology, args.events).await?;

    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let service = tokio::spawn(app.run(shutdown.clone()));
    let mails = sink
        .wait_for(args.events, Duration::from_secs(3600))
        .await
        .context("waiting for the mails")?;
    let elapsed = started.elapsed();
    shutdown.cancel();
    service.await??;

    let mut from_queue = Vec::with_capacity(mails.len());
    let mut from_start = Vec::with_capacity(mails.len());
    for mail in &mails {
        let id = mail
            .header("Message-ID")
            .and_then(|m| {
                m.trim_matches(['<', '>'])
                    .split('@')
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        if let Some(at) = published.get(&id) {
            from_queue.push(mail.received_at.saturating_duration_since(*at));
        }
        from_start.push(mail.received_at.saturating_duration_since(started));
    }
    println!(
        "{} mails in {:.2} s: {:.0} mails/s (pool {}, concurrency {}, prefetch {})",
        mails.len(),
        elapsed.as_secs_f64(),
        mails.len() as f64 / elapsed.as_secs_f64(),
        args.pool,
        args.concurrency,
        args.prefetch
    );
    println!(
        "queue → SMTP accepted:          p50 {:>8.1} ms   p99 {:>8.1} ms",
        percentile(&mut from_queue, 0.50),
        percentile(&mut from_queue, 0.99)
    );
    println!(
        "consume start → SMTP accepted:  p50 {:>8.1} ms   p99 {:>8.1} ms",
        percentile(&mut from_start, 0.50),
        percentile(&mut from_start, 0.99)
    );

    let _ = topology.delete(&channel).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Publishes `n` events, pipelining up to 500 confirms; returns each event's confirm instant.
async fn publish(
    channel: &lapin::Channel,
    topology: &Topology,
    n: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut published = HashMap::with_capacity(n);
    let mut pending = Vec::with_capacity(500);
    for i in 0..n {
        let event = Envelope::new(
            Uuid::new_v4(),
            Utc::now(),
            UserRegisteredV1 {
                user_id: Uuid::new_v4(),
                email: format!("bench{i}@example.com"),
                first_name: Some("Bench".into()),
                last_name: None,
                verification: VerificationDetails {
                    link: format!("http://127.0.0.1:8080/user/verify?token={}", Uuid::new_v4()),
                    code: format!("{:06}", i % 1_000_000),
                    expires_at: Utc::now() + chrono::Duration::hours(24),
                    code_expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
                },
                registered_at: Some(Utc::now()),
            },
        );
        let properties = BasicProperties::default()
            .with_message_id(event.event_id.to_string().into())
            .with_type(UserRegisteredV1::EVENT_TYPE.into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                topology.exchange.as_str().into(),
                UserRegisteredV1::ROUTING_KEY.into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(&event)?,
                properties,
            )
            .await?;
        pending.push((event.event_id.to_string(), confirm));
        if pending.len() == 500 || i + 1 == n {
            for (id, confirm) in pending.drain(..) {
                anyhow::ensure!(confirm.await?.is_ack(), "publish nacked");
                published.insert(id, Instant::now());
            }
        }
    }
    Ok(published)
}

fn percentile(values: &mut [Duration], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[rank.min(values.len() - 1)].as_secs_f64() * 1000.0
}
