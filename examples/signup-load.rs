//! Black-box load harness (issue 15, "cost per sign-up"): the service binaries as separate
//! processes on fresh PostgreSQL databases and a fresh AMQP namespace, an SMTP sink in a process
//! of its own (this example re-executed with `--smtp-sink`), and unique sign-ups over HTTP.
//!
//! It reports accepted sign-ups/s (first send → last verification mail), HTTP latency and
//! register → verification-mail latency (p50/p90/p99/max), lost and duplicated mails, non-201
//! answers, and what each sign-up cost: CPU milliseconds per process from the kernel's
//! accounting (the services, every PostgreSQL and RabbitMQ process, the harness, the sink),
//! log bytes per process, and PostgreSQL transactions and tuples per database. Warm-up sign-ups
//! are excluded from every number. It exits non-zero when a mail was lost.
//!
//! ```text
//! cargo build --release --workspace --bins --example signup-load
//! target/release/examples/signup-load --concurrency 16 --signups 5000          # closed loop
//! target/release/examples/signup-load --rate 300 --duration 30s               # open loop
//! cargo build --workspace --bins && cargo run --example signup-load -- --signups 300 --warmup 50  # debug
//! ```
//!
//! In the open loop each request is sent at its scheduled time whatever happened to the earlier
//! ones, and both latencies count from that time, so a stall shows up in them instead of
//! slowing the arrivals down (no coordinated omission). The password hash (argon2id) is cheap by
//! default (`--argon2-memory-kib 1024 --argon2-iterations 1`) and part of the user-service's CPU;
//! `--production-argon2` uses the production cost.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "signup-load/accounting.rs"]
mod accounting;
#[path = "signup-load/load.rs"]
mod load;
#[path = "signup-load/processes.rs"]
mod processes;
#[path = "signup-load/report.rs"]
mod report;
#[path = "signup-load/sink.rs"]
mod sink;

use std::{path::PathBuf, sync::Arc, time::Duration};

use accounting::{CpuSnapshot, Group, PgStats};
use clap::Parser;
use processes::Process;
use tokio::process::Command;

/// Drives the sign-up pipeline's binaries over HTTP and reports throughput, latency and the
/// CPU, log bytes and database work per sign-up.
#[derive(Parser)]
pub(crate) struct Args {
    /// Measured sign-ups (closed loop; the open loop sends rate × duration unless this is set).
    #[arg(long)]
    signups: Option<usize>,
    /// Closed loop: sign-ups in flight at once (also used by the warm-up).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop: sign-ups per second, each sent at its scheduled time.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to send (both loops); the closed loop defaults to 2000 sign-ups instead.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Sign-ups before the measured ones, excluded from every number.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Argon2id memory cost (KiB).
    #[arg(long, default_value_t = 1024)]
    argon2_memory_kib: u32,
    /// Argon2id iterations.
    #[arg(long, default_value_t = 1)]
    argon2_iterations: u32,
    /// Production argon2id cost (19456 KiB, 2 iterations) instead of the cheap one.
    #[arg(long)]
    production_argon2: bool,
    /// Also run the webhook-service (no endpoint: it stores each public event).
    #[arg(long)]
    with_webhooks: bool,
    /// Folder of the service binaries (default: next to this example's executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// How long to wait for the last verification mails after the last sign-up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Pause before each read of pg_stat_database: a backend flushes its counters at most once
    /// a second, and an idle one within 10 s (PostgreSQL 15's PGSTAT_IDLE_INTERVAL).
    #[arg(long, default_value = "11s", value_parser = humantime::parse_duration)]
    stats_settle: Duration,
    /// RUST_LOG of every service (default: each service's own default, info).
    #[arg(long)]
    rust_log: Option<String>,
    /// LOG_FORMAT of every service.
    #[arg(long, default_value = "json")]
    log_format: String,
    /// Extra NAME=VALUE for every service (repeatable), e.g. RELAY_BATCH_SIZE=100.
    #[arg(long = "env", value_parser = parse_env)]
    envs: Vec<(String, String)>,
    /// Print one JSON line instead of the summary.
    #[arg(long)]
    json: bool,
    /// Internal: run the SMTP sink and print one line per accepted mail.
    #[arg(long, hide = true)]
    smtp_sink: bool,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok((name.to_owned(), value.to_owned()))
}

fn service_command(binary: PathBuf, args: &Args, namespace: &str, base_url: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("AMQP_URL", common::testing::amqp_url())
        .env("AMQP_NAMESPACE", namespace)
        .env("LOG_FORMAT", &args.log_format)
        .env("PUBLIC_BASE_URL", base_url);
    if let Some(filter) = &args.rust_log {
        command.env("RUST_LOG", filter);
    }
    command.envs(args.envs.iter().map(|(k, v)| (k, v)));
    command
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smtp_sink {
        return sink::run().await;
    }
    if args.production_argon2 {
        (args.argon2_memory_kib, args.argon2_iterations) = (19_456, 2);
    }
    anyhow::ensure!(
        args.rate.is_none() || args.duration.is_some() || args.signups.is_some(),
        "--rate needs --duration or --signups"
    );
    anyhow::ensure!(args.rate.is_none_or(|r| r > 0.0), "--rate must be positive");
    common::testing::install_crypto_provider();
    let lost = run(&args).await?;
    if lost > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Runs the whole measurement; returns the number of lost mails.
async fn run(args: &Args) -> anyhow::Result<usize> {
    let bin_dir = processes::binary_dir(args.bin_dir.as_deref())?;
    let binary = |name: &str| processes::binary(&bin_dir, name);
    let (user_bin, relay_bin, email_bin) = (
        binary("user-service")?,
        binary("outbox-relay")?,
        binary("email-service")?,
    );
    let webhook_bin = args
        .with_webhooks
        .then(|| binary("webhook-service"))
        .transpose()?;

    // Fresh databases and namespace; the cleanup is declared first so it runs after the
    // processes (dropped first) are gone.
    let namespace = common::testing::unique_namespace();
    let mut topology = email_service::Settings {
        amqp_namespace: namespace.clone(),
        ..Default::default()
    }
    .topology();
    if args.with_webhooks {
        topology = topology.with_webhook_queue();
    }
    let _cleanup = common::testing::AmqpCleanup::for_topology(&topology);
    let users_db = common::testing::fresh_postgres_database("load_users").await?;
    let inbox_db = common::testing::fresh_postgres_database("load_inbox").await?;
    let webhooks_db = match args.with_webhooks {
        true => Some(common::testing::fresh_postgres_database("load_hooks").await?),
        false => None,
    };
    let db_name = |url: &str| url.rsplit('/').next().unwrap_or_default().to_owned();
    let databases: Vec<String> = [Some(&users_db), Some(&inbox_db), webhooks_db.as_ref()]
        .into_iter()
        .flatten()
        .map(|url| db_name(url))
        .collect();
    let pg = PgStats::connect().await?;
    let result = measure(
        args,
        &namespace,
        [user_bin, relay_bin, email_bin],
        webhook_bin.zip(webhooks_db.clone()),
        (&users_db, &inbox_db),
        &databases,
        &pg,
    )
    .await;
    pg.drop_databases(&databases).await;
    result
}

async fn measure(
    args: &Args,
    namespace: &str,
    [user_bin, relay_bin, email_bin]: [PathBuf; 3],
    webhooks: Option<(PathBuf, String)>,
    (users_db, inbox_db): (&str, &str),
    databases: &[String],
    pg: &PgStats,
) -> anyhow::Result<usize> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?;
    let port = common::testing::free_port;
    let (http, user_admin, relay_admin, email_admin) = (port(), port(), port(), port());
    let base_url = format!("http://127.0.0.1:{http}");

    // The sink first: the email-service needs its address.
    let (sink, smtp_url, mails) = sink::start().await?;

    let command = |binary: &PathBuf| service_command(binary.clone(), args, namespace, &base_url);
    let mut user = command(&user_bin);
    user.env("DATABASE_URL", users_db)
        .env("HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("ADMIN_ADDR", format!("127.0.0.1:{user_admin}"))
        .env("ARGON2_MEMORY_KIB", args.argon2_memory_kib.to_string())
        .env("ARGON2_ITERATIONS", args.argon2_iterations.to_string())
        .env("ARGON2_ALLOW_WEAK", "true")
        // One load generator, one client address: the limit would refuse the load.
        .env("RATE_LIMIT_REGISTER", "off");
    let mut relay = command(&relay_bin);
    relay
        .env("DATABASE_URL", users_db)
        .env("ADMIN_ADDR", format!("127.0.0.1:{relay_admin}"));
    let mut email = command(&email_bin);
    email
        .env("DATABASE_URL", inbox_db)
        .env("ADMIN_ADDR", format!("127.0.0.1:{email_admin}"))
        .env("SMTP_URL", &smtp_url);
    let mut services = vec![
        (Process::spawn("user-service", user, false)?.0, http),
        (Process::spawn("outbox-relay", relay, false)?.0, relay_admin),
        (
            Process::spawn("email-service", email, false)?.0,
            email_admin,
        ),
    ];
    if let Some((binary, database)) = &webhooks {
        let webhook_http = port();
        let mut webhook = command(binary);
        webhook
            .env("DATABASE_URL", database)
            .env("HTTP_ADDR", format!("127.0.0.1:{webhook_http}"));
        services.push((
            Process::spawn("webhook-service", webhook, false)?.0,
            webhook_http,
        ));
    }
    for (process, port) in &mut services {
        let url = format!("http://127.0.0.1:{port}/health/ready");
        process.wait_ready(&client, &url).await?;
    }
    let mut processes: Vec<Process> = services.into_iter().map(|(p, _)| p).collect();
    processes.push(sink);

    let run: Arc<str> = uuid::Uuid::new_v4().simple().to_string()[..8].into();
    let url: Arc<str> = format!("{base_url}/user/register").into();
    let warmup = load::closed_loop(
        &client,
        &url,
        &run,
        0,
        Some(args.warmup),
        args.concurrency,
        None,
    );
    let warmup = tokio::select! {
        samples = warmup => samples,
        error = processes::watch(&mut processes) => return Err(error),
    };
    if !sink::wait_for_mails(&mails, &warmup, args.drain_timeout, &mut processes).await? {
        anyhow::bail!("the warm-up's mails did not all arrive within the drain timeout");
    }
    // Let the warm-up's statistics reach pg_stat_database before the first snapshot.
    tokio::time::sleep(args.stats_settle).await;

    let mut groups: Vec<Group> = processes.iter().map(|p| Group::Pid(p.pid)).collect();
    groups.push(Group::Pid(std::process::id()));
    groups.push(Group::Comm(accounting::POSTGRES));
    groups.push(Group::Comm(accounting::RABBITMQ));
    let pg_start = pg.read(databases).await?;
    let logs_start: Vec<u64> = processes.iter().map(|p| p.tap.bytes()).collect();
    let cpu_start = CpuSnapshot::take(&groups, databases);
    let clock = sink::Clock::now();

    let load = async {
        match args.rate {
            Some(rate) => {
                let count = args.signups.unwrap_or_else(|| {
                    (rate * args.duration.unwrap_or_default().as_secs_f64()).round() as usize
                });
                load::open_loop(&client, &url, &run, args.warmup, count, rate).await
            }
            None => {
                let count = args.signups.or(args.duration.is_none().then_some(2000));
                let first = args.warmup;
                load::closed_loop(
                    &client,
                    &url,
                    &run,
                    first,
                    count,
                    args.concurrency,
                    args.duration,
                )
                .await
            }
        }
    };
    let samples = tokio::select! {
        samples = load => samples,
        error = processes::watch(&mut processes) => return Err(error),
    };
    sink::wait_for_mails(&mails, &samples, args.drain_timeout, &mut processes).await?;
    let cpu_end = CpuSnapshot::take(&groups, databases);
    let window = clock.instant.elapsed();
    let logs_end: Vec<u64> = processes.iter().map(|p| p.tap.bytes()).collect();
    tokio::time::sleep(args.stats_settle).await;
    let pg_end = pg.read(databases).await?;

    let mails = std::mem::take(&mut *mails.lock().unwrap());
    let mut names: Vec<&str> = processes.iter().map(|p| p.name).collect();
    names.extend(["harness", "postgres", "rabbitmq"]);
    let report = report::Report::new(
        args,
        &samples,
        &mails,
        clock,
        report::Costs {
            names: &names,
            ticks: &cpu_end.since(&cpu_start),
            backend_ticks: cpu_end.backends_since(&cpu_start),
            machine_ticks: cpu_end.machine_since(&cpu_start),
            clock_ticks: accounting::clock_ticks(),
            window,
            log_bytes: &logs_end
                .iter()
                .zip(&logs_start)
                .map(|(end, start)| end - start)
                .collect::<Vec<_>>(),
            databases,
            pg_stats: &pg_end
                .iter()
                .zip(&pg_start)
                .map(|(end, start)| std::array::from_fn(|i| end[i] - start[i]))
                .collect::<Vec<_>>(),
        },
    )?;
    drop(processes);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(report.lost)
}
