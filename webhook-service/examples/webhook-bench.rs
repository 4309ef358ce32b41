//! Benchmark of the webhook-service's delivery engine on PostgreSQL, against a local keep-alive
//! receiver in the same process.
//!
//! - throughput: N deliveries due now, until every outcome is recorded in the database;
//! - fan-out: one sign-up event to 100 subscribed endpoints, until all 100 arrived;
//! - scheduling lateness: 1,000 and 10,000 deliveries due at the same instant (arrival − due
//!   time, p50/p99/max), and single jobs posted through the API at light load;
//! - idle RSS of the service binary, when `--binary` names it.
//!
//! ```text
//! cargo run --release -p webhook-service --example webhook-bench -- --binary target/release/webhook-service
//! ```

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{Router, extract::State, http::HeaderMap};
use chrono::Utc;
use clap::Parser;
use common::{
    events::{Envelope, Event, UserRegisteredV1, VerificationDetails},
    topology::Topology,
};
use hdrhistogram::Histogram;
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use webhook_service::{ApiToken, Application, Settings};

const TOKEN: &str = "bench-token-0123456789abcdef";

/// Measures deliveries/s, fan-out and scheduling lateness.
#[derive(Parser)]
struct Args {
    /// Deliveries of the throughput run.
    #[arg(long, default_value_t = 20_000)]
    deliveries: usize,
    /// Endpoints of the fan-out run.
    #[arg(long, default_value_t = 100)]
    endpoints: usize,
    /// Single jobs of the light-load lateness run.
    #[arg(long, default_value_t = 30)]
    single: usize,
    /// `WEBHOOK_MAX_IN_FLIGHT`.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// `DATABASE_MAX_CONNECTIONS`.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// The `webhook-service` binary: measure its idle RSS (a separate process, SQLite).
    #[arg(long)]
    binary: Option<std::path::PathBuf>,
    /// `AMQP_URL`.
    #[arg(long, default_value = common::amqp::DEFAULT_URL)]
    amqp_url: String,
}

/// What the receiver saw: arrivals, and lateness (arrival − `x-due-ms`) in milliseconds.
#[derive(Default)]
struct Seen {
    count: AtomicUsize,
    lateness: Mutex<Vec<i64>>,
}

async fn receive(State(seen): State<Arc<Seen>>, headers: HeaderMap) -> &'static str {
    if let Some(due) = headers
        .get("x-due-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    {
        let late = Utc::now().timestamp_millis() - due;
        seen.lateness.lock().expect("lock").push(late);
    }
    seen.count.fetch_add(1, Ordering::Relaxed);
    "ok"
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    common::testing::install_crypto_provider();
    common::telemetry::init(common::settings::LogFormat::Pretty, "warn")?;
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(
        axum::serve(
            listener,
            Router::new().fallback(receive).with_state(seen.clone()),
        )
        .into_future(),
    );

    let database_url = common::testing::fresh_postgres_database("webhook_bench").await?;
    let namespace = format!("bench{}.", &Uuid::new_v4().simple().to_string()[..8]);
    let settings = Settings {
        amqp_url: args.amqp_url.clone().into(),
        amqp_namespace: namespace.clone(),
        database_url: database_url.clone().into(),
        database_max_connections: args.connections,
        http_addr: "127.0.0.1:0".parse()?,
        webhook_api_token: Some(ApiToken(TOKEN.into())),
        webhook_allowed_nets: vec!["127.0.0.0/8".parse()?],
        webhook_max_in_flight: args.in_flight,
        webhook_endpoint_concurrency: args.in_flight,
        ..Settings::default()
    };
    let app = Application::build(settings).await?;
    let api = format!("http://{}", app.http_addr()?);
    let db = app.db().clone();
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(app.run(shutdown.clone()));

    // Throughput: every delivery due now, until each outcome is recorded.
    let started = Instant::now();
    insert_due(&db, &target, args.deliveries, Utc::now()).await?;
    let inserted = started.elapsed();
    let started = Instant::now();
    // The receiver's count first (in memory), then the database: a `count(*)` every few
    // milliseconds during the run would be part of what is measured.
    wait_until(Duration::from_secs(600), || async {
        seen.count.load(Ordering::Relaxed) >= args.deliveries
    })
    .await?;
    wait_until(Duration::from_secs(600), || async {
        succeeded(&db).await >= args.deliveries as i64
    })
    .await?;
    let elapsed = started.elapsed();
    println!(
        "throughput: {} deliveries in {:.2} s = {:.0} deliveries/s (every outcome recorded; \
         inserting them took {:.2} s)",
        args.deliveries,
        elapsed.as_secs_f64(),
        args.deliveries as f64 / elapsed.as_secs_f64(),
        inserted.as_secs_f64()
    );

    // Scheduling lateness: a burst due at one instant.
    for burst in [1_000, 10_000] {
        seen.lateness.lock().expect("lock").clear();
        let before = succeeded(&db).await;
        let arrived = seen.count.load(Ordering::Relaxed);
        let due = Utc::now() + chrono::Duration::seconds(3);
        insert_due(&db, &target, burst, due).await?;
        wait_until(Duration::from_secs(120), || async {
            seen.count.load(Ordering::Relaxed) >= arrived + burst
        })
        .await?;
        wait_until(Duration::from_secs(120), || async {
            succeeded(&db).await >= before + burst as i64
        })
        .await?;
        let lateness = std::mem::take(&mut *seen.lateness.lock().expect("lock"));
        println!(
            "burst of {burst} due at one instant: {}",
            summary(&lateness)
        );
    }

    // Light load: single jobs through the API, one at a time.
    let client = reqwest::Client::new();
    seen.lateness.lock().expect("lock").clear();
    for _ in 0..args.single {
        let due = Utc::now() + chrono::Duration::milliseconds(300);
        let before = seen.count.load(Ordering::Relaxed);
        let response = client
            .post(format!("{api}/v1/jobs"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({
                "execute_at": due.to_rfc3339(),
                "request": {
                    "url": target,
                    "headers": {"x-due-ms": due.timestamp_millis().to_string()},
                    "body": {"hello": "world"},
                },
            }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 202,
            "POST /v1/jobs answered {}",
            response.status()
        );
        wait_until(Duration::from_secs(10), || async {
            seen.count.load(Ordering::Relaxed) > before
        })
        .await?;
    }
    let lateness = std::mem::take(&mut *seen.lateness.lock().expect("lock"));
    println!("single jobs at light load: {}", summary(&lateness));

    // Fan-out: one event to N endpoints.
    for _ in 0..args.endpoints {
        let response = client
            .post(format!("{api}/v1/endpoints"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"url": target, "event_types": ["user.registered"]}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 201,
            "POST /v1/endpoints: {}",
            response.status()
        );
    }
    let before = seen.count.load(Ordering::Relaxed);
    let started = Instant::now();
    publish_registration(&args.amqp_url, &namespace).await?;
    wait_until(Duration::from_secs(60), || async {
        seen.count.load(Ordering::Relaxed) >= before + args.endpoints
    })
    .await?;
    println!(
        "fan-out: one event to {} endpoints, all delivered in {:.0} ms (from the publish)",
        args.endpoints,
        started.elapsed().as_secs_f64() * 1000.0
    );

    shutdown.cancel();
    service.await??;
    if let Some(binary) = &args.binary {
        println!(
            "idle RSS of {}: {}",
            binary.display(),
            idle_rss(binary, &args.amqp_url).await?
        );
    }
    let channel = common::amqp::connect(&args.amqp_url, "webhook-bench-cleanup")
        .await?
        .create_channel()
        .await?;
    Topology::new(&namespace).delete(&channel).await.ok();
    Ok(())
}

/// Inserts `n` job deliveries to `url` due at `due` (one statement), each carrying its due time.
async fn insert_due(
    db: &DatabaseConnection,
    url: &str,
    n: usize,
    due: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO deliveries (id, kind, url, method, headers, body, timeout_ms, status, \
         attempts, next_attempt_at, created_at, updated_at) \
         SELECT gen_random_uuid(), 'job', $1, 'POST', \
                jsonb_build_array(jsonb_build_array('x-due-ms', $2::text)), '{}', 5000, \
                'pending', 0, $3, now(), now() \
         FROM generate_series(1, $4)",
        [
            url.into(),
            due.timestamp_millis().to_string().into(),
            due.into(),
            i64::try_from(n)?.into(),
        ],
    ))
    .await?;
    db.execute_unprepared("SELECT pg_notify('webhook_due', '')")
        .await?;
    Ok(())
}

async fn succeeded(db: &DatabaseConnection) -> i64 {
    common::testing::scalar(
        db,
        "SELECT count(*) FROM deliveries WHERE status = 'succeeded'",
    )
    .await
}

async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn summary(lateness_ms: &[i64]) -> String {
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for late in lateness_ms {
        histogram
            .record(u64::try_from(*late).unwrap_or(0))
            .expect("in range");
    }
    format!(
        "{} arrivals, lateness p50 {} ms, p99 {} ms, max {} ms (early arrivals: {})",
        lateness_ms.len(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max(),
        lateness_ms.iter().filter(|late| **late < 0).count()
    )
}

async fn publish_registration(amqp_url: &str, namespace: &str) -> anyhow::Result<()> {
    let topology = Topology::new(namespace);
    let connection = common::amqp::connect(amqp_url, "webhook-bench").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let now = Utc::now();
    let event = UserRegisteredV1 {
        user_id: Uuid::new_v4(),
        email: "bench@example.com".into(),
        first_name: Some("Bench".into()),
        last_name: Some("Mark".into()),
        registered_at: Some(now),
        verification: VerificationDetails {
            link: "http://127.0.0.1:8080/verify?token=secret".into(),
            code: "123456".into(),
            expires_at: now,
            code_expires_at: None,
        },
    };
    let body = serde_json::to_vec(&Envelope::new(Uuid::new_v4(), now, event))?;
    channel
        .basic_publish(
            topology.exchange.as_str().into(),
            UserRegisteredV1::ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await?
        .await?;
    Ok(())
}

/// Starts the binary on SQLite, waits for readiness, lets it idle 2 s and reads its VmRSS.
async fn idle_rss(binary: &std::path::Path, amqp_url: &str) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let port = common::testing::free_port();
    let mut child = tokio::process::Command::new(binary)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display()),
        )
        .env("AMQP_URL", amqp_url)
        .env(
            "AMQP_NAMESPACE",
            format!("rss{}.", &Uuid::new_v4().simple().to_string()[..8]),
        )
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id().context("no pid")?;
    wait_until(Duration::from_secs(30), || async move {
        common::testing::http_get(&format!("http://127.0.0.1:{port}/health/ready"))
            .await
            .0
            == 200
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|line| line.starts_with("VmRSS"))
        .map(|line| line.trim_start_matches("VmRSS:").trim().to_owned())
        .context("no VmRSS")?;
    child.kill().await.ok();
    Ok(rss)
}
