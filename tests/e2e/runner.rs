//! The all-in-one binary, as a newcomer runs it: register → the verification `.eml` appears in
//! the mail folder with a working link → verify → the welcome `.eml` appears. Its logs (all four
//! services) carry the request's correlation id and never a token, code or password.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use crate::helpers::{eventually, has_code, token_of};

const BIN: &str = env!("CARGO_BIN_EXE_signup-outbox");

pub(crate) struct Runner {
    child: Child,
    /// The user-service API's port.
    pub(crate) http_port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// `GET /metrics` of each service: user-service, relay and email-service admin ports,
    /// the webhook-service API.
    pub(crate) metrics_urls: [String; 4],
    _cleanup: common::testing::AmqpCleanup,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the runner prints once its four services are bound and running.
const RUNNING: &str = "signup-outbox is running";

impl Runner {
    /// Starts the binary (mails to `smtp_url` if given, else to `dir/mail`) on free ports and
    /// waits until it says it is running. Tests run side by side, so a port `free_port` chose
    /// can be taken (by another test's listener or outgoing connection) before the runner binds
    /// it: then it starts again on new ports, up to three times. Any other early exit panics
    /// with the runner's output.
    pub(crate) async fn start(dir: &Path, rust_log: &str, smtp_url: Option<&str>) -> Self {
        const TRIES: usize = 3;
        for attempt in 1..=TRIES {
            let mut runner = Self::spawn(dir, rust_log, smtp_url);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                if runner.logs().iter().any(|l| l.contains(RUNNING)) {
                    return runner;
                }
                if let Some(status) = runner.child.try_wait().unwrap() {
                    // Its output is complete once both readers reached the end of the pipes.
                    for reader in runner.readers.drain(..) {
                        reader.join().unwrap();
                    }
                    let logs = runner.logs();
                    let port_taken = logs.iter().any(|l| l.contains("Address already in use"));
                    assert!(
                        port_taken && attempt < TRIES,
                        "the runner exited ({status}) before it was running:\n{}",
                        logs.join("\n")
                    );
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the runner is not running after 60 s:\n{}",
                    runner.logs().join("\n")
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        unreachable!("the last try panics")
    }

    fn spawn(dir: &Path, rust_log: &str, smtp_url: Option<&str>) -> Self {
        let http_port = common::testing::free_port();
        common::testing::install_crypto_provider();
        let namespace = common::testing::unique_namespace();
        // Every queue of the namespace: the email-service's retry queues and the
        // webhook-service's queues too.
        let topology = common::topology::Topology::new(&namespace)
            .with_retry_delays(email_service::Settings::default().retry_delays)
            .with_webhook_queue();
        let [user_admin, relay_admin, email_admin, webhook_http] =
            std::array::from_fn(|_| format!("127.0.0.1:{}", common::testing::free_port()));
        let metrics_urls = [&user_admin, &relay_admin, &email_admin, &webhook_http]
            .map(|addr| format!("http://{addr}/metrics"));
        let mut command = Command::new(BIN);
        if let Some(url) = smtp_url {
            command.env("SMTP_URL", url);
        }
        let mut child = command
            .current_dir(dir)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/signup.db?mode=rwc", dir.display()),
            )
            .env(
                "EMAIL_DATABASE_URL",
                format!("sqlite://{}/email.db?mode=rwc", dir.display()),
            )
            .env(
                "WEBHOOK_DATABASE_URL",
                format!("sqlite://{}/webhook.db?mode=rwc", dir.display()),
            )
            .env("WEBHOOK_HTTP_ADDR", &webhook_http)
            .env("MAIL_DIR", dir.join("mail"))
            .env("AMQP_URL", common::testing::amqp_url())
            .env("AMQP_NAMESPACE", &namespace)
            .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{http_port}"))
            .env("USER_ADMIN_ADDR", &user_admin)
            .env("RELAY_ADMIN_ADDR", &relay_admin)
            .env("EMAIL_ADMIN_ADDR", &email_admin)
            .env("ARGON2_MEMORY_KIB", "1024")
            .env("ARGON2_ITERATIONS", "1")
            .env("ARGON2_ALLOW_WEAK", "true")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        Self {
            child,
            http_port,
            lines,
            readers,
            metrics_urls,
            _cleanup: common::testing::AmqpCleanup::for_topology(&topology),
        }
    }

    fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub(crate) async fn wait_for_log(&self, needle: &str) {
        let lines = self.lines.clone();
        eventually(Duration::from_secs(60), needle, || {
            let found = lines.lock().unwrap().iter().any(|l| l.contains(needle));
            async move { found }
        })
        .await;
    }
}

fn eml_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

async fn wait_for_mails(dir: &Path, n: usize) -> Vec<String> {
    eventually(Duration::from_secs(30), "the mails", || {
        let ready = eml_files(dir).len() >= n;
        async move { ready }
    })
    .await;
    eml_files(dir)
}

fn has_standalone(line: &str, code: &str) -> bool {
    line.match_indices(code).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[tokio::test]
async fn the_all_in_one_runner_delivers_mails_to_a_folder_and_logs_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // Per-event relay lines are debug; everything else at its default level.
    let runner = Runner::start(dir.path(), "info,outbox_relay=debug", None).await;
    let port = runner.http_port;
    let client = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}");
    let password = "a very secret passphrase";
    let correlation_id = format!("corr-{}", uuid::Uuid::new_v4());

    let registered = client
        .post(format!("{api}/user/register"))
        .header("x-request-id", &correlation_id)
        .json(&json!({"email": "newcomer@example.com", "password": password, "first_name": "Nia"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    let mail_dir = dir.path().join("mail");
    let verification = wait_for_mails(&mail_dir, 1).await.remove(0);
    assert!(
        verification.contains("To: Nia <newcomer@example.com>"),
        "{verification}"
    );
    let link_start = verification
        .find(&format!("{api}/user/verify?token="))
        .expect("a working link");
    let link: String = verification[link_start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let code_at = verification.find("code: ").unwrap() + "code: ".len();
    let code = verification[code_at..code_at + 6].to_owned();

    let page = client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let token = token_of(&link);
    let verified: Value = client
        .post(format!("{api}/user/verify"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verified, json!({"status": "verified"}));
    let mails = wait_for_mails(&mail_dir, 2).await;
    assert!(mails.iter().any(|m| m.contains("Subject: Welcome!")));

    // The correlation id follows the sign-up through the four services' logs (the
    // webhook-service stores its public event concurrently with the mails: wait for it).
    runner.wait_for_log("event published").await;
    let lines = runner.lines.clone();
    eventually(
        Duration::from_secs(30),
        "the webhook-service's log line",
        || {
            let found =
                lines.lock().unwrap().iter().any(|l| {
                    l.contains(&correlation_id) && l.contains("\"target\":\"webhook_service")
                });
            async move { found }
        },
    )
    .await;
    let logs = runner.logs();
    let with_id: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains(&correlation_id))
        .collect();
    for service in [
        "user_service",
        "outbox_relay",
        "email_service",
        "webhook_service",
    ] {
        assert!(
            with_id
                .iter()
                .any(|l| l.contains(&format!("\"target\":\"{service}"))),
            "no {service} log line carries {correlation_id}: {with_id:#?}"
        );
    }
    // No secret in any line.
    for line in &logs {
        assert!(!line.contains(password), "password logged: {line}");
        assert!(!line.contains(&token), "token logged: {line}");
        assert!(!line.contains("$argon2"), "hash logged: {line}");
        // The timestamp's fraction of a second could equal the code by chance: leave it out.
        let without_time = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut fields)) => {
                fields.remove("timestamp");
                Value::Object(fields).to_string()
            }
            _ => line.clone(),
        };
        assert!(!has_standalone(&without_time, &code), "code logged: {line}");
    }

    let stopped = Command::new("kill")
        .args(["-TERM", &runner.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let mut runner = runner;
    let status = tokio::task::spawn_blocking(move || runner.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `secret` as text, and as the decimal byte list a `Debug` of `Vec<u8>` prints (how lapin
/// shows a frame body): `"12"` → `"49, 50"`.
fn forms_of(secret: &str) -> [String; 2] {
    let bytes: Vec<String> = secret.bytes().map(|b| b.to_string()).collect();
    [secret.to_owned(), bytes.join(", ")]
}

#[tokio::test]
async fn at_trace_level_no_log_line_of_the_three_services_carries_a_code_or_token() {
    let dir = tempfile::tempdir().unwrap();
    // Over SMTP, so the pooled SMTP transport and its TLS stack run at trace too.
    let sink = email_service::SmtpSink::start().await.unwrap();
    let runner = Runner::start(dir.path(), "trace", Some(&sink.url())).await;
    let port = runner.http_port;
    let client = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}");
    let registered = client
        .post(format!("{api}/user/register"))
        .json(&json!({"email": "tracy@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let verification = sink
        .wait_for(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0)
        .data;
    let link_start = verification
        .find(&format!("{api}/user/verify?token="))
        .unwrap();
    let link: String = verification[link_start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let token = token_of(&link);
    let code_at = verification.find("code: ").unwrap() + "code: ".len();
    let code = verification[code_at..code_at + 6].to_owned();
    let verified = client
        .post(format!("{api}/user/verify"))
        .json(&json!({"email": "tracy@example.com", "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    // The welcome mail went through the same three services after the secret ones.
    sink.wait_for(2, Duration::from_secs(30)).await.unwrap();

    let logs = runner.logs();
    // Trace level really is on, lapin included (its debug lines stay).
    assert!(logs.iter().any(|l| l.contains("TRACE")), "no trace line");
    assert!(logs.iter().any(|l| l.contains("lapin")), "no lapin line");
    let [token_text, token_bytes] = forms_of(&token);
    let [_, code_bytes] = forms_of(&code);
    for line in &logs {
        for leak in [&token_text, &token_bytes, &code_bytes] {
            assert!(!line.contains(leak.as_str()), "secret logged: {line}");
        }
        assert!(!has_code(line, &code), "code logged: {line}");
    }
    println!(
        "{} log lines at trace, none with the code or token",
        logs.len()
    );
}

#[test]
fn the_runner_says_in_one_line_how_to_start_rabbitmq_when_it_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .current_dir(dir.path())
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("USER_ADMIN_ADDR", "127.0.0.1:0")
        .env("RELAY_ADMIN_ADDR", "127.0.0.1:0")
        .env("EMAIL_ADMIN_ADDR", "127.0.0.1:0")
        .env("WEBHOOK_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("cannot connect to RabbitMQ"), "{stderr}");
    assert!(
        lines[0].contains("rabbitmq-server") && lines[0].contains("scripts/services.sh"),
        "{stderr}"
    );
}
