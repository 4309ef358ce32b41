//! An in-process stack per test, and small helpers to read mails.

use std::{net::SocketAddr, time::Duration};

use email_service::{ReceivedMail, SmtpSink};
use sea_orm::DatabaseConnection;
use serde_json::Value;
use signup_outbox::{Stack, StackSettings};
use tokio_util::sync::CancellationToken;

pub(crate) use common::testing::eventually;

pub(crate) const MAIL_WAIT: Duration = Duration::from_secs(30);

pub(crate) struct TestStack {
    pub(crate) api: SocketAddr,
    pub(crate) relay_admin: SocketAddr,
    pub(crate) email_admin: SocketAddr,
    pub(crate) user_db: DatabaseConnection,
    /// The webhook-service database (SQLite in the stack's folder).
    pub(crate) webhook_db: DatabaseConnection,
    pub(crate) settings: StackSettings,
    pub(crate) sink: SmtpSink,
    pub(crate) client: reqwest::Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
    _cleanup: common::testing::AmqpCleanup,
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings of a stack with its own user database, inbox, namespace and sink.
pub(crate) async fn stack_settings(
    label: &str,
    sink: &SmtpSink,
    dir: &tempfile::TempDir,
) -> StackSettings {
    let user_db = common::testing::fresh_postgres_database(label)
        .await
        .unwrap();
    let namespace = common::testing::unique_namespace();
    let amqp_url = common::testing::amqp_url();
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let retry_delays = vec![Duration::from_millis(200), Duration::from_millis(400)];
    let sqlite = |name: &str| format!("sqlite://{}/{name}?mode=rwc", dir.path().display());
    StackSettings {
        user: user_service::Settings {
            database_url: user_db.clone().into(),
            http_addr: any_port,
            admin_addr: any_port,
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_allow_weak: true,
            min_response_time: Duration::ZERO,
            rate_limit_register: user_service::RateLimit::OFF,
            rate_limit_verify: user_service::RateLimit::OFF,
            rate_limit_resend: user_service::RateLimit::OFF,
            reminder_poll_interval: Duration::from_millis(100),
            ..Default::default()
        },
        relay: outbox_relay::Settings {
            database_url: user_db.into(),
            amqp_url: amqp_url.clone().into(),
            amqp_namespace: namespace.clone(),
            relay_poll_interval: Duration::from_millis(200),
            admin_addr: any_port,
            ..Default::default()
        },
        email: email_service::Settings {
            amqp_url: amqp_url.clone().into(),
            amqp_namespace: namespace.clone(),
            database_url: sqlite("email.db").into(),
            smtp_url: Some(email_service::SmtpUrl(sink.url())),
            retry_delays,
            admin_addr: any_port,
            ..Default::default()
        },
        webhook: webhook_service::Settings {
            amqp_url: amqp_url.into(),
            amqp_namespace: namespace,
            database_url: sqlite("webhook.db").into(),
            http_addr: any_port,
            // Receivers of the tests listen on loopback.
            webhook_allowed_nets: vec!["127.0.0.0/8".parse().unwrap()],
            webhook_retry_schedule: vec![Duration::from_millis(200), Duration::from_millis(400)],
            ..Default::default()
        },
    }
}

pub(crate) async fn spawn_stack(label: &str) -> TestStack {
    spawn_stack_with(label, |_| {}).await
}

pub(crate) async fn spawn_stack_with(
    label: &str,
    tweak: impl FnOnce(&mut StackSettings),
) -> TestStack {
    common::testing::init_tracing();
    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = stack_settings(label, &sink, &dir).await;
    tweak(&mut settings);
    let stack = Stack::build(settings.clone()).await.unwrap();
    let api = stack.user.local_addr().unwrap();
    let relay_admin = stack.relay.admin_addr().unwrap();
    let email_admin = stack.email.admin_addr().unwrap();
    let user_db = stack.user.db().clone();
    let webhook_db = stack.webhook.db().clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(stack.run(shutdown.clone()));
    // Every queue of the namespace: the email-service's retry queues and the webhook-service's
    // queues too.
    let topology = common::topology::Topology::new(&settings.email.amqp_namespace)
        .with_retry_delays(settings.email.retry_delays.clone())
        .with_webhook_queue();
    TestStack {
        _cleanup: common::testing::AmqpCleanup::for_topology(&topology),
        api,
        relay_admin,
        email_admin,
        user_db,
        webhook_db,
        settings,
        sink,
        client: reqwest::Client::new(),
        shutdown,
        _dir: dir,
    }
}

impl TestStack {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /user/register`.
    pub(crate) async fn register(&self, body: &Value) -> reqwest::Response {
        self.post("/user/register", body).await
    }

    /// `POST /user/verify` with a link token.
    pub(crate) async fn verify_token(&self, token: &str) -> reqwest::Response {
        self.post("/user/verify", &serde_json::json!({ "token": token }))
            .await
    }

    /// `POST /user/verify` with an email and a code.
    pub(crate) async fn verify_code(&self, email: &str, code: &str) -> reqwest::Response {
        let body = serde_json::json!({ "email": email, "code": code });
        self.post("/user/verify", &body).await
    }

    /// `POST /user/verification/resend`.
    pub(crate) async fn resend(&self, email: &str) -> reqwest::Response {
        self.post(
            "/user/verification/resend",
            &serde_json::json!({ "email": email }),
        )
        .await
    }

    /// `SELECT COUNT(*) …` on the user database.
    pub(crate) async fn count(&self, sql: &str) -> i64 {
        common::testing::scalar(&self.user_db, sql).await
    }

    /// Waits until `n` mails were accepted in total, and returns them all.
    pub(crate) async fn mails(&self, n: usize) -> Vec<ReceivedMail> {
        self.sink.wait_for(n, MAIL_WAIT).await.unwrap()
    }
}

pub(crate) fn subject(mail: &ReceivedMail) -> String {
    mail.header("Subject").unwrap_or_default()
}

/// The verification link in a mail (mails go out 7bit, so the link is literal).
pub(crate) fn link_in(mail: &ReceivedMail) -> String {
    let start = mail.data.find("http://").expect("a link");
    mail.data[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}

pub(crate) fn token_of(link: &str) -> String {
    link.split("token=").nth(1).unwrap().to_owned()
}

/// The six-digit code in a mail ("Or enter this code: 123456").
pub(crate) fn code_in(mail: &ReceivedMail) -> String {
    let at = mail.data.find("code: ").expect("a code") + "code: ".len();
    mail.data[at..at + 6].to_owned()
}

/// Whether `text` holds `code` outside a longer number or a fraction of a second (`.123456`).
pub(crate) fn has_code(text: &str, code: &str) -> bool {
    text.match_indices(code).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}
