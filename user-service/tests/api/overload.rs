//! Overload answers 503 `overloaded` with `Retry-After` at once, and clients that disconnect
//! mid-hash cannot make the service run more hashes than `MAX_CONCURRENT_HASHES`.

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::testing::{eventually, free_port, http_get};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_with, test_settings};

const BIN: &str = env!("CARGO_BIN_EXE_user-service");

fn user(n: usize) -> Value {
    json!({ "email": format!("user{n}@example.com"), "password": "correct horse battery" })
}

/// Real argon2 memory and enough iterations that one hash takes most of a second.
fn slow_hashes(settings: &mut user_service::Settings) {
    settings.argon2_memory_kib = 19 * 1024;
    settings.argon2_iterations = 40;
}

#[tokio::test]
async fn a_saturated_hasher_answers_503_with_retry_after_quickly() {
    let url = common::testing::fresh_postgres_database("hash_queue")
        .await
        .unwrap();
    let mut settings = test_settings(url);
    slow_hashes(&mut settings);
    settings.max_concurrent_hashes = 1;
    settings.hash_queue_timeout = Duration::from_millis(200);
    let app = spawn_with(settings, None).await;
    let requests = (0..4).map(|n| {
        let request = app.client.post(app.url("/user/register")).json(&user(n));
        async move {
            let started = Instant::now();
            let response = request.send().await.unwrap();
            (response, started.elapsed())
        }
    });
    let mut created = 0;
    let mut refused = 0;
    for (response, took) in futures::future::join_all(requests).await {
        match response.status().as_u16() {
            201 => created += 1,
            503 => {
                refused += 1;
                assert!(took < Duration::from_millis(1500), "503 after {took:?}");
                let retry_after: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry_after >= 1);
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "overloaded", "{body}");
                eprintln!("503 overloaded after {took:?}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(created >= 1, "the first registration is hashed");
    assert!(
        refused >= 1,
        "the others did not wait for a slot beyond HASH_QUEUE_TIMEOUT"
    );
    let metrics = app.admin_metrics().await;
    assert!(
        metrics.contains("password_hash_overloaded_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn past_max_concurrent_requests_the_api_sheds_load_but_the_admin_port_answers() {
    let url = common::testing::fresh_postgres_database("load_shed")
        .await
        .unwrap();
    let mut settings = test_settings(url);
    slow_hashes(&mut settings);
    settings.max_concurrent_requests = 1;
    let app = Arc::new(spawn_with(settings, None).await);
    let slow = tokio::spawn({
        let app = app.clone();
        async move {
            // Shed itself if a probe below holds the slot at that instant: try again.
            for _ in 0..50 {
                let status = app.register(&user(1)).await.status();
                if status != 503 {
                    return status;
                }
            }
            panic!("the registration was shed 50 times");
        }
    });
    // While the registration holds the only slot, every other request is shed at once.
    let shed = eventually(Duration::from_secs(5), "a shed request", || async {
        let response = app.get("/health/live").await;
        (response.status() == 503).then_some(response)
    })
    .await;
    assert!(shed.headers().contains_key("retry-after"));
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    let (admin_status, _) = http_get(&format!("http://{}/health/live", app.admin)).await;
    assert_eq!(admin_status, 200, "the admin port is not shed");
    assert_eq!(slow.await.unwrap(), 201);
    assert_eq!(app.get("/health/live").await.status(), 200);
}

/// The value of an unlabelled gauge in Prometheus text (0 when absent).
fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Peak resident memory (`VmHWM`) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One registration whose client gives up 10 ms after sending it.
async fn register_and_disconnect(api: std::net::SocketAddr, n: usize) {
    let body = user(n).to_string();
    let request = format!(
        "POST /user/register HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut stream) = tokio::net::TcpStream::connect(api).await else {
        return;
    };
    if stream.write_all(request.as_bytes()).await.is_ok() {
        let mut buffer = [0_u8; 256];
        let _ = tokio::time::timeout(Duration::from_millis(10), stream.read(&mut buffer)).await;
    }
}

/// The real binary with the OWASP argon2 memory cost, so memory is measured as deployed.
#[tokio::test]
async fn clients_that_disconnect_mid_hash_never_run_more_hashes_than_the_cap() {
    common::testing::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (api_port, admin_port) = (free_port(), free_port());
    let mut child = tokio::process::Command::from({
        let mut command = Command::new(BIN);
        command
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/u.db?mode=rwc", dir.path().display()),
            )
            .env("HTTP_ADDR", format!("127.0.0.1:{api_port}"))
            .env("ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("MAX_CONCURRENT_HASHES", "1")
            // The OWASP memory cost; more passes make each hash outlive many clients.
            .env("ARGON2_ITERATIONS", "8")
            .env("RATE_LIMIT_REGISTER", "off")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        command
    })
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let pid = child.id().unwrap();
    let api: std::net::SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let metrics_url = format!("http://127.0.0.1:{admin_port}/metrics");
    eventually(Duration::from_secs(30), "the user-service", || async {
        http_get(&format!("127.0.0.1:{admin_port}/health/live"))
            .await
            .0
            == 200
    })
    .await;
    let rss_before = peak_rss_kib(pid);

    // Sample the gauge of hashes in progress for the whole run.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (done, metrics_url) = (done.clone(), metrics_url.clone());
        async move {
            let (mut peak, mut samples) = (0.0_f64, 0_u32);
            while !done.load(Ordering::Relaxed) {
                let (_, metrics) = http_get(&metrics_url).await;
                peak = peak.max(gauge(&metrics, "password_hashes_in_progress"));
                samples += 1;
            }
            (peak, samples)
        }
    });
    // 200 registrations from 20 clients at a time, each giving up after 10 ms.
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..20 {
        clients.spawn(async move {
            for n in 0..10 {
                register_and_disconnect(api, worker * 10 + n).await;
            }
        });
    }
    clients.join_all().await;
    let burst = started.elapsed();
    // Every hash that started finishes; none is left running.
    eventually(Duration::from_secs(30), "no hash in progress", || async {
        gauge(
            &http_get(&metrics_url).await.1,
            "password_hashes_in_progress",
        ) == 0.0
    })
    .await;
    done.store(true, Ordering::Relaxed);
    let (peak, samples) = sampler.await.unwrap();
    let rss_after = peak_rss_kib(pid);
    eprintln!(
        "200 disconnecting registrations in {burst:?}: at most {peak} hashes at once \
         ({samples} samples), peak RSS {} MiB -> {} MiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(samples >= 10, "{samples} samples");
    assert!(
        peak <= 1.0,
        "{peak} hashes ran at once with MAX_CONCURRENT_HASHES=1"
    );
    assert!(
        peak >= 1.0,
        "no hash was observed: the test did not exercise the hasher"
    );
    // One 19 MiB hash at a time (plus allocator slack), not one per disconnected client.
    assert!(
        rss_after.saturating_sub(rss_before) < 120 * 1024,
        "peak RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The service still works for a normal client.
    let response = reqwest::Client::new()
        .post(format!("http://{api}/user/register"))
        .json(&user(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    child.kill().await.unwrap();
}
