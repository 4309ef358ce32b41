//! Phone verification end to end, black-box on the separate binaries (the Temporal "verify
//! phone" sample's story): a registration with a phone becomes, via the outbox, the relay and
//! the webhook-service, an SMS in the file gateway's folder; two wrong codes, a SIGKILL of the
//! user-service and a restart, and the third wrong code ends the verification; a right code
//! after a SIGKILL and restart verifies the number, and `user.phone_verified` reaches a webhook
//! endpoint. Every process logs at `RUST_LOG=trace`: no code appears in any log line, nor in
//! any webhook payload, nor any number in full in a log line.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{
    helpers::eventually,
    webhooks::{receiver, webhooks_of},
};

const WAIT: Duration = Duration::from_secs(60);
/// Ten digits: a code this long does not turn up by chance in megabytes of trace logs (a
/// six-digit one could, in a timestamp or a port).
const CODE_LENGTH: &str = "10";

struct Processes {
    dir: tempfile::TempDir,
    users_db: String,
    webhooks_db: String,
    namespace: String,
    user_port: u16,
    webhook_port: u16,
    user: Option<Child>,
    others: Vec<Child>,
    _cleanup: common::testing::AmqpCleanup,
}

impl Processes {
    async fn start() -> Self {
        common::testing::init_tracing();
        let namespace = common::testing::unique_namespace();
        let topology = common::topology::Topology::new(&namespace).with_webhook_queue();
        let mut processes = Self {
            dir: tempfile::tempdir().unwrap(),
            users_db: common::testing::fresh_postgres_database("phone_users")
                .await
                .unwrap(),
            webhooks_db: common::testing::fresh_postgres_database("phone_hooks")
                .await
                .unwrap(),
            user_port: common::testing::free_port(),
            webhook_port: common::testing::free_port(),
            user: None,
            others: Vec::new(),
            _cleanup: common::testing::AmqpCleanup::for_topology(&topology),
            namespace,
        };
        std::fs::create_dir_all(processes.sms_dir()).unwrap();
        let relay = processes
            .command("outbox-relay", "relay")
            .env("DATABASE_URL", &processes.users_db)
            .env("RELAY_POLL_INTERVAL", "200ms")
            .spawn()
            .unwrap();
        let webhooks = processes
            .command("webhook-service", "webhook")
            .env("DATABASE_URL", &processes.webhooks_db)
            .env("HTTP_ADDR", format!("127.0.0.1:{}", processes.webhook_port))
            .env("WEBHOOK_ALLOWED_NETS", "127.0.0.0/8")
            .env("SMS_GATEWAY", "file")
            .env("SMS_DIR", processes.sms_dir())
            .spawn()
            .unwrap();
        processes.others = vec![relay, webhooks];
        processes.start_user_service().await;
        let webhook_api = format!("http://127.0.0.1:{}/health/ready", processes.webhook_port);
        eventually(WAIT, "the webhook-service is ready", || async {
            reqwest::get(&webhook_api)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        processes
    }

    fn sms_dir(&self) -> PathBuf {
        self.dir.path().join("sms")
    }

    fn command(&self, binary_name: &str, name: &str) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        let mut command = Command::new(common::testing::service_binary(binary_name));
        command
            .env_clear()
            .env("AMQP_URL", common::testing::amqp_url())
            .env("AMQP_NAMESPACE", &self.namespace)
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "trace")
            .env("LOG_FORMAT", "json")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        command
    }

    async fn start_user_service(&mut self) {
        let child = self
            .command("user-service", "user")
            .env("DATABASE_URL", &self.users_db)
            .env("HTTP_ADDR", format!("127.0.0.1:{}", self.user_port))
            .env("CODE_HMAC_KEY", "k".repeat(40))
            .env("PHONE_CODE_LENGTH", CODE_LENGTH)
            .env("PHONE_CODE_MAX_ATTEMPTS", "3")
            .env("ARGON2_MEMORY_KIB", "1024")
            .env("ARGON2_ITERATIONS", "1")
            .env("ARGON2_ALLOW_WEAK", "true")
            .env("MIN_RESPONSE_TIME", "0s")
            .env("REMINDER_INTERVAL", "1h")
            .spawn()
            .unwrap();
        self.user = Some(child);
        let ready = self.user_url("/health/ready");
        eventually(WAIT, "the user-service is ready", || async {
            reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    /// SIGKILL, then a new process on the same port and database.
    async fn kill_and_restart_user_service(&mut self) {
        let mut child = self.user.take().unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        self.start_user_service().await;
    }

    fn user_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.user_port)
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.user_url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn check(&self, phone: &str, code: &str) -> String {
        let (status, body) = self
            .post("/user/phone/verify", &json!({"phone": phone, "code": code}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["status"].as_str().unwrap().to_owned()
    }

    /// Registers `email` with `phone` and returns the code of the SMS that follows.
    async fn register_and_read_sms(&self, email: &str, phone: &str) -> String {
        let (status, body) = self
            .post(
                "/user/register",
                &json!({"email": email, "password": "correct horse battery", "phone": phone}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let dir = self.sms_dir();
        let text = eventually(WAIT, "the SMS in the file gateway's folder", || {
            let dir = dir.clone();
            async move { sms_to(&dir, phone) }
        })
        .await;
        code_in(&text)
    }

    fn logs(&self) -> String {
        ["user", "relay", "webhook"]
            .iter()
            .map(|name| std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))))
            .map(|log| log.unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The text of the SMS to `phone` in `dir`, once there is one.
fn sms_to(dir: &Path, phone: &str) -> Option<String> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "txt"))
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .find(|text| text.contains(&format!("To: {phone}")))
}

/// The code in an SMS text: its run of `CODE_LENGTH` digits.
fn code_in(text: &str) -> String {
    let length: usize = CODE_LENGTH.parse().unwrap();
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == length)
        .unwrap_or_else(|| panic!("no {length}-digit code in {text:?}"))
        .to_owned()
}

/// `code` with its last digit changed.
fn wrong(code: &str) -> String {
    let (head, last) = code.split_at(code.len() - 1);
    let last = (last.parse::<u8>().unwrap() + 1) % 10;
    format!("{head}{last}")
}

#[tokio::test]
async fn the_seed_story_survives_sigkill_and_no_code_reaches_a_log_or_a_webhook() {
    let mut system = Processes::start().await;
    let (base, received) = receiver().await;
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/endpoints",
            system.webhook_port
        ))
        .json(&json!({"url": format!("{base}/hook")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    // Two wrong codes, a crash, a third wrong code: the verification is over.
    let (ann, ann_phone) = ("ann@example.com", "+447400123456");
    let ann_code = system.register_and_read_sms(ann, ann_phone).await;
    let ann_wrong = wrong(&ann_code);
    assert_eq!(system.check(ann_phone, &ann_wrong).await, "incorrect");
    assert_eq!(system.check(ann_phone, &ann_wrong).await, "incorrect");
    system.kill_and_restart_user_service().await;
    assert_eq!(
        system.check(ann_phone, &ann_wrong).await,
        "max_attempts_reached"
    );
    assert_eq!(
        system.check(ann_phone, &ann_code).await,
        "max_attempts_reached",
        "the right code after the last attempt must not verify"
    );

    // A crash between the SMS and the check: the right code still verifies.
    let (bob, bob_phone) = ("bob@example.com", "+447400123457");
    let bob_code = system.register_and_read_sms(bob, bob_phone).await;
    system.kill_and_restart_user_service().await;
    assert_eq!(system.check(bob_phone, &bob_code).await, "verified");
    assert_eq!(system.check(bob_phone, &bob_code).await, "already_verified");

    let verified = webhooks_of(&received, "user.phone_verified").await;
    let verified = verified[0].1.to_string();
    assert!(verified.contains(bob_phone), "{verified}");

    // Nothing secret in what the receiver got (every event type went to it) ...
    let payloads: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .collect();
    let payloads = payloads.join("\n");
    assert!(payloads.contains("user.registered"), "{payloads}");
    for code in [&ann_code, &bob_code] {
        assert!(!payloads.contains(code.as_str()), "a code in a webhook");
    }
    // ... nor in any log line of the three processes, at trace level.
    let logs = system.logs();
    assert!(
        logs.lines().count() > 100,
        "trace logs expected, got {} lines",
        logs.lines().count()
    );
    for secret in [&ann_code, &bob_code, &ann_wrong] {
        let line = logs.lines().find(|line| line.contains(secret.as_str()));
        assert!(line.is_none(), "a code in a log line: {line:?}");
    }
    for phone in [ann_phone, bob_phone] {
        // Also without its `+` (a URL-encoded or digits-only form).
        let line = logs.lines().find(|line| line.contains(&phone[1..]));
        assert!(
            line.is_none(),
            "a phone number in full in a log line: {line:?}"
        );
    }
}
