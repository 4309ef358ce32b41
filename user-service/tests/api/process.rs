//! The real binary: bad configuration stops start-up naming the variable; SIGTERM lets an
//! in-flight request finish and exits 0; security events are logged with the client address.

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

/// The binary on a fresh SQLite database with `envs`, its stdout lines in a channel.
struct Running {
    child: Option<std::process::Child>,
    port: u16,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(envs: &[(&str, &str)]) -> Self {
        common::testing::install_crypto_provider();
        let port = common::testing::free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/u.db?mode=rwc", dir.path().display()),
            )
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child: Some(child),
            port,
            lines,
            _dir: dir,
        }
    }

    /// Waits (30 s at most) for a log line containing every one of `needles`; returns it.
    async fn wait_for(&mut self, needles: &[&str]) -> String {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.lines.recv().await {
                if needles.iter().all(|needle| line.contains(needle)) {
                    return line;
                }
            }
            panic!("the service exited before logging {needles:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {needles:?} within 30 s"))
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Waits for the process to exit.
    async fn exit_status(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
        }
    }
}

#[tokio::test]
async fn sigterm_finishes_the_in_flight_request_and_exits_zero() {
    let mut service = Running::start(&[
        ("RUST_LOG", "info,tower_http=debug"),
        // A deliberately slow hash keeps the request in flight while we signal.
        ("ARGON2_ITERATIONS", "40"),
    ]);
    service.wait_for(&["user-service listening"]).await;

    let url = service.url("/user/register");
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&ann())
            .send()
            .await
            .unwrap()
    });
    // The request is in flight once the trace layer logged it; only then signal.
    service.wait_for(&["started processing request"]).await;
    let killed = Command::new("kill")
        .args(["-TERM", &service.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let response = request.await.unwrap();
    assert_eq!(response.status(), 201, "the in-flight request completed");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "pending_verification");
    service.wait_for(&["user-service stopped"]).await;
    assert_eq!(service.exit_status().await.code(), Some(0));
}

#[tokio::test]
async fn security_events_are_logged_with_the_client_address() {
    let mut service = Running::start(&[
        ("ARGON2_MEMORY_KIB", "1024"),
        ("ARGON2_ITERATIONS", "1"),
        ("ARGON2_ALLOW_WEAK", "true"),
        ("MIN_RESPONSE_TIME", "0s"),
        ("RATE_LIMIT_RESEND", "1/1m"),
    ]);
    service.wait_for(&["user-service listening"]).await;
    let client = reqwest::Client::new();
    let base = service.url("");
    let post = |path: &str, body: Value| client.post(format!("{base}{path}")).json(&body).send();
    assert_eq!(post("/user/register", ann()).await.unwrap().status(), 201);
    // Five different codes: at most one could be right (one chance in 200,000).
    for guess in 0..5 {
        let code = format!("{guess:06}");
        let body = serde_json::json!({ "email": "ann@example.com", "code": code });
        assert_eq!(post("/user/verify", body).await.unwrap().status(), 400);
    }
    let locked = service
        .wait_for(&["verification code locked", "127.0.0.1"])
        .await;
    assert!(!locked.contains("ann@example.com"), "{locked}");

    let resend = || {
        post(
            "/user/verification/resend",
            serde_json::json!({"email": "a@x.com"}),
        )
    };
    assert_eq!(resend().await.unwrap().status(), 202);
    assert_eq!(resend().await.unwrap().status(), 429);
    service.wait_for(&["rate limited", "127.0.0.1"]).await;
}
