//! End-to-end benchmark: N registrations at concurrency C through the whole pipeline
//! (HTTP → user-service → outbox → relay → RabbitMQ → email-service → SMTP), in one process
//! against a local SMTP sink, a fresh PostgreSQL database and a fresh AMQP namespace.
//!
//! Reports accepted registrations/s, HTTP latency p50/p99, register → mail-accepted latency
//! p50/p99, and lost and duplicated mails.
//!
//! ```text
//! cargo run --release --example e2e-bench -- --registrations 2000 --concurrency 32
//! ```
//!
//! Registration throughput is bounded by argon2id (OWASP cost: ~33 ms of CPU per hash); pass
//! `--argon2-memory-kib 1024 --argon2-iterations 1` to measure the pipeline behind it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use email_service::{SmtpSink, SmtpUrl};
use futures::StreamExt;
use hdrhistogram::Histogram;
use signup_outbox::{Stack, StackSettings};
use tokio_util::sync::CancellationToken;

/// Measures the whole sign-up pipeline.
#[derive(Parser)]
struct Args {
    /// Registrations to send.
    #[arg(long, default_value_t = 2000)]
    registrations: usize,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Argon2id memory cost (KiB); the default is the production (OWASP) cost.
    #[arg(long, default_value_t = 19_456)]
    argon2_memory_kib: u32,
    /// Argon2id iterations.
    #[arg(long, default_value_t = 2)]
    argon2_iterations: u32,
    /// How long to wait for the last mails after the last registration.
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    drain_timeout: Duration,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink = SmtpSink::start().await?;
    let dir = tempfile::tempdir()?;
    let settings = bench_settings(&args, &sink, &dir).await?;
    let stack = Stack::build(settings).await?;
    let api = format!("http://{}", stack.user.local_addr()?);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(stack.run(shutdown.clone()));

    println!(
        "e2e-bench: {} registrations, concurrency {}, argon2id m={} KiB t={}",
        args.registrations, args.concurrency, args.argon2_memory_kib, args.argon2_iterations
    );
    common::testing::install_crypto_provider();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let results: Vec<(String, Instant, Duration, bool)> =
        futures::stream::iter(0..args.registrations)
            .map(|i| {
                let (client, api) = (&client, &api);
                async move {
                    let email = format!("bench-{i}@example.com");
                    let sent = Instant::now();
                    let ok = client
                        .post(format!("{api}/user/register"))
                        .json(
                            &serde_json::json!({"email": email, "password": "benchmark password"}),
                        )
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 201);
                    (email, sent, sent.elapsed(), ok)
                }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
    let http_elapsed = started.elapsed();
    let accepted = results.iter().filter(|r| r.3).count();

    // Wait until every accepted registration's mail arrived (or the drain timeout).
    let _ = sink.wait_for(accepted, args.drain_timeout).await;
    let mails = sink.received();
    let all_mailed = started.elapsed();
    shutdown.cancel();
    running.await.context("stack task")??;

    let mut per_address: HashMap<&str, Vec<Instant>> = HashMap::new();
    for mail in &mails {
        for to in &mail.to {
            per_address
                .entry(to.as_str())
                .or_default()
                .push(mail.received_at);
        }
    }
    let mut http = Histogram::<u64>::new(3)?;
    let mut end_to_end = Histogram::<u64>::new(3)?;
    let (mut lost, mut duplicated) = (0, 0);
    for (email, sent, latency, ok) in &results {
        http.record(micros(*latency))?;
        if !ok {
            continue;
        }
        match per_address.get(email.as_str()) {
            None => lost += 1,
            Some(arrivals) => {
                duplicated += arrivals.len() - 1;
                let first = arrivals.iter().min().copied().unwrap_or(*sent);
                end_to_end.record(micros(first.saturating_duration_since(*sent)))?;
            }
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "accepted:       {accepted} of {} in {:.2} s = {:.1} registrations/s",
        results.len(),
        http_elapsed.as_secs_f64(),
        accepted as f64 / http_elapsed.as_secs_f64()
    );
    println!(
        "HTTP latency:   p50 {:>8.1} ms   p99 {:>8.1} ms",
        ms(&http, 0.5),
        ms(&http, 0.99)
    );
    println!(
        "register → mail accepted: p50 {:>8.1} ms   p99 {:>8.1} ms",
        ms(&end_to_end, 0.5),
        ms(&end_to_end, 0.99)
    );
    println!(
        "mails:          {} received in {:.2} s, lost {lost}, duplicated {duplicated}",
        mails.len(),
        all_mailed.as_secs_f64()
    );
    Ok(())
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

async fn bench_settings(
    args: &Args,
    sink: &SmtpSink,
    dir: &tempfile::TempDir,
) -> anyhow::Result<StackSettings> {
    let user_db = common::testing::fresh_postgres_database("e2e_bench").await?;
    let namespace = common::testing::unique_namespace();
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    Ok(StackSettings {
        user: user_service::Settings {
            database_url: user_db.clone().into(),
            database_max_connections: 32,
            http_addr: any_port,
            admin_addr: any_port,
            argon2_memory_kib: args.argon2_memory_kib,
            argon2_iterations: args.argon2_iterations,
            // The benchmark measures whatever cost it is given.
            argon2_allow_weak: true,
            max_reminders: 0,
            // One load generator, one address.
            rate_limit_register: user_service::RateLimit::OFF,
            rate_limit_verify: user_service::RateLimit::OFF,
            rate_limit_resend: user_service::RateLimit::OFF,
            ..Default::default()
        },
        relay: outbox_relay::Settings {
            database_url: user_db.into(),
            amqp_url: common::testing::amqp_url().into(),
            amqp_namespace: namespace.clone(),
            admin_addr: any_port,
            ..Default::default()
        },
        email: email_service::Settings {
            amqp_url: common::testing::amqp_url().into(),
            amqp_namespace: namespace.clone(),
            database_url: format!("sqlite://{}/email.db?mode=rwc", dir.path().display()).into(),
            smtp_url: Some(SmtpUrl(sink.url())),
            admin_addr: any_port,
            ..Default::default()
        },
        // No endpoint is subscribed: it stores each public event and sends nothing.
        webhook: webhook_service::Settings {
            amqp_url: common::testing::amqp_url().into(),
            amqp_namespace: namespace,
            database_url: format!("sqlite://{}/webhook.db?mode=rwc", dir.path().display()).into(),
            http_addr: any_port,
            ..Default::default()
        },
    })
}
