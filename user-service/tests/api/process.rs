//! The real binary: bad configuration stops start-up naming the variable; SIGTERM lets an
//! in-flight request finish and exits 0.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::helpers::ann;

const BIN: &str = env!("CARGO_BIN_EXE_user-service");

#[test]
fn bad_configuration_names_the_variable() {
    for (var, value) in [
        ("HTTP_ADDR", "not-an-address"),
        ("DATABASE_URL", "mysql://x"),
        ("VERIFICATION_TTL", "forever"),
        ("REMINDER_INTERVAL", "100years"),
        ("ARGON2_MEMORY_KIB", "1"),
        ("LOG_FORMAT", "xml"),
    ] {
        let output = Command::new(BIN)
            .env(var, value)
            .env(
                "DATABASE_URL",
                if var == "DATABASE_URL" {
                    value
                } else {
                    "sqlite::memory:"
                },
            )
            .output()
            .unwrap();
        assert!(!output.status.success(), "{var}={value} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
}

#[tokio::test]
async fn sigterm_finishes_the_in_flight_request_and_exits_zero() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/u.db?mode=rwc", dir.path().display()),
        )
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info,tower_http=debug")
        // A deliberately slow hash keeps the request in flight while we signal.
        .env("ARGON2_ITERATIONS", "40")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut wait_for = async |needle: &str| {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = rx.recv().await {
                if line.contains(needle) {
                    return;
                }
            }
            panic!("the service exited before logging {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} within 30 s"));
    };
    wait_for("user-service listening").await;

    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/user/register"))
            .json(&ann())
            .send()
            .await
            .unwrap()
    });
    // The request is in flight once the trace layer logged it; only then signal.
    wait_for("started processing request").await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let response = request.await.unwrap();
    assert_eq!(response.status(), 201, "the in-flight request completed");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "pending_verification");
    wait_for("user-service stopped").await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
