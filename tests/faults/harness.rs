//! The system under test as separate processes, the load, and the mail accounting.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use email_service::{ReceivedMail, SmtpSink};
use tokio::process::{Child, Command};

/// Cheap password hashing: the pipeline, not argon2, is under test.
const CHEAP_ARGON2: [(&str, &str); 3] = [
    ("ARGON2_MEMORY_KIB", "1024"),
    ("ARGON2_ITERATIONS", "1"),
    ("ARGON2_ALLOW_WEAK", "true"),
];

/// One system: its databases, namespace, sink and processes.
pub(crate) struct System {
    pub(crate) users_db: String,
    pub(crate) inbox_db: String,
    pub(crate) namespace: String,
    pub(crate) sink: SmtpSink,
    pub(crate) http_port: u16,
    /// The processes' logs (kept after the test, for a failure's post-mortem).
    pub(crate) logs: PathBuf,
    processes: Mutex<HashMap<String, Child>>,
    /// Extra variables for every process (short ladders, timeouts).
    env: Vec<(String, String)>,
    _cleanup: common::testing::AmqpCleanup,
}

impl System {
    pub(crate) async fn new(label: &str, env: &[(&str, &str)]) -> Self {
        common::testing::init_tracing();
        let users_db = common::testing::fresh_postgres_database(&format!("{label}_users"))
            .await
            .unwrap();
        let inbox_db = common::testing::fresh_postgres_database(&format!("{label}_inbox"))
            .await
            .unwrap();
        let namespace = common::testing::unique_namespace();
        let topology = common::topology::Topology::new(&namespace).with_retry_delays(vec![
            Duration::from_millis(200),
            Duration::from_millis(400),
            Duration::from_secs(1),
        ]);
        Self {
            users_db,
            inbox_db,
            sink: SmtpSink::start().await.unwrap(),
            http_port: common::testing::free_port(),
            logs: {
                let dir = std::env::temp_dir().join(format!("{label}-{}", &namespace[1..9]));
                std::fs::create_dir_all(&dir).unwrap();
                dir
            },
            processes: Mutex::default(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            _cleanup: common::testing::AmqpCleanup::for_topology(&topology),
            namespace,
        }
    }

    fn command(&self, binary_name: &str, name: &str) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .unwrap();
        let mut command = Command::new(common::testing::service_binary(binary_name));
        command
            .env_clear()
            .env("AMQP_URL", common::testing::amqp_url())
            .env("AMQP_NAMESPACE", &self.namespace)
            .env("AMQP_CONNECTION_NAME", format!("{}{name}", self.namespace))
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .env("RETRY_DELAYS", "200ms,400ms,1s")
            .envs(CHEAP_ARGON2)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        command
    }

    /// Starts (or restarts) the process `name`: `user-service`, `relay-N` or `email-N`.
    pub(crate) fn start(&self, name: &str) {
        let mut command = match name.split('-').next().unwrap() {
            "user" => {
                let mut command = self.command("user-service", name);
                command
                    .env("DATABASE_URL", &self.users_db)
                    .env("HTTP_ADDR", format!("127.0.0.1:{}", self.http_port))
                    .env("REMINDER_INTERVAL", "1h")
                    // One load generator, one address: the limits would refuse the load.
                    .env("RATE_LIMIT_REGISTER", "off");
                command
            }
            "relay" => {
                let mut command = self.command("outbox-relay", name);
                command
                    .env("DATABASE_URL", &self.users_db)
                    .env("RELAY_POLL_INTERVAL", "200ms");
                command
            }
            "email" => {
                let mut command = self.command("email-service", name);
                command
                    .env("DATABASE_URL", &self.inbox_db)
                    .env("SMTP_URL", self.sink.url())
                    .env("SMTP_TIMEOUT", "5s");
                command
            }
            other => panic!("unknown process {other}"),
        };
        let child = command.spawn().unwrap();
        self.processes
            .lock()
            .unwrap()
            .insert(name.to_owned(), child);
    }

    /// SIGKILLs the process `name`.
    pub(crate) async fn kill(&self, name: &str) {
        let child = self.processes.lock().unwrap().remove(name);
        let mut child = child.unwrap_or_else(|| panic!("{name} is not running"));
        child.kill().await.unwrap();
    }

    /// The user-service answers `/health/ready`.
    pub(crate) async fn wait_for_user_service(&self) {
        let url = format!("http://127.0.0.1:{}/health/ready", self.http_port);
        common::testing::eventually(Duration::from_secs(60), "the user-service", || async {
            common::testing::http_get(&url).await.0 == 200
        })
        .await;
    }

    /// Signs up `emails` at about 40 a second (4 clients, 100 ms apart), so the load spans the
    /// outages, each retried until accepted (201, or the replayed 201
    /// of its `Idempotency-Key`): a sign-up sent while the user-service or its database is down
    /// is retried the way a client would.
    pub(crate) async fn sign_up(self: &Arc<Self>, emails: Vec<String>) {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/user/register", self.http_port);
        let emails = Arc::new(Mutex::new(emails));
        let workers = (0..4).map(|_| {
            let (client, url, emails) = (client.clone(), url.clone(), emails.clone());
            async move {
                loop {
                    let Some(email) = emails.lock().unwrap().pop() else {
                        return;
                    };
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let body = serde_json::json!({"email": email, "password": "correct horse"});
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                    loop {
                        let sent = client
                            .post(&url)
                            .header("Idempotency-Key", &email)
                            .json(&body)
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await;
                        if sent.is_ok_and(|r| r.status() == 201) {
                            break;
                        }
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "{email} not accepted within 120 s"
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        futures::future::join_all(workers).await;
    }

    /// Waits until every address in `emails` got its mail; returns (mails, duplicates).
    pub(crate) async fn wait_for_mails(
        &self,
        emails: &[String],
        timeout: Duration,
    ) -> (Vec<ReceivedMail>, usize) {
        let expected: HashSet<&str> = emails.iter().map(String::as_str).collect();
        let started = tokio::time::Instant::now();
        loop {
            let mails = self.sink.received();
            let reached: HashSet<&str> = mails
                .iter()
                .flat_map(|m| m.to.iter().map(String::as_str))
                .filter(|to| expected.contains(to))
                .collect();
            if reached.len() == expected.len() {
                let ids: HashSet<String> = mails
                    .iter()
                    .filter_map(|m| m.header("Message-ID"))
                    .collect();
                let duplicates = mails.len() - ids.len();
                return (mails, duplicates);
            }
            assert!(
                started.elapsed() < timeout,
                "{} of {} sign-ups never got their mail within {timeout:?} (logs in {})",
                expected.len() - reached.len(),
                expected.len(),
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Messages in the dead-letter queue.
    pub(crate) async fn dead_letters(&self) -> u32 {
        let connection = common::amqp::connect(&common::testing::amqp_url(), "faults-dlq")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                format!("{}email-service.dlq", self.namespace)
                    .as_str()
                    .into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "done".into()).await;
        queue.message_count()
    }
}

/// `n` fresh addresses for this run.
pub(crate) fn addresses(label: &str, n: usize) -> Vec<String> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    (0..n)
        .map(|i| format!("{label}-{i}-{}@example.com", &run[..8]))
        .collect()
}

/// Restarts the local RabbitMQ node (`stop_app`, `pause`, `start_app`) and waits until it
/// serves again; the node is started even if the test panics meanwhile.
pub(crate) async fn restart_broker(pause: Duration) {
    struct StartOnDrop;
    impl Drop for StartOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("rabbitmqctl")
                .arg("start_app")
                .status();
        }
    }
    let _guard = StartOnDrop;
    common::testing::rabbitmqctl(&["stop_app"]).await;
    tokio::time::sleep(pause).await;
    common::testing::rabbitmqctl(&["start_app"]).await;
    common::testing::rabbitmqctl(&["await_startup"]).await;
}

/// Restarts the local PostgreSQL cluster and waits until it accepts connections.
pub(crate) async fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .unwrap();
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "pg_ctlcluster restart: {status}");
    common::testing::eventually(Duration::from_secs(30), "PostgreSQL back", || async {
        Command::new("pg_isready")
            .args(["-q", "-h", "127.0.0.1"])
            .status()
            .await
            .is_ok_and(|s| s.success())
    })
    .await;
}
