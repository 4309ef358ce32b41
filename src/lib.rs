//! signup-outbox in one process: the user-service, the outbox-relay, the email-service and the
//! webhook-service built from their libraries and run side by side, for developers (`cargo run`
//! at the workspace root), the end-to-end tests and the end-to-end benchmark.
//!
//! It is deliberately thin: each service is configured exactly as its own binary would be (the
//! same environment variables), and only the names two services would otherwise share are split:
//! `EMAIL_DATABASE_URL` (the email-service inbox), `WEBHOOK_DATABASE_URL` and
//! `WEBHOOK_HTTP_ADDR` (the webhook-service's database and API), `USER_ADMIN_ADDR`,
//! `RELAY_ADMIN_ADDR` and `EMAIL_ADMIN_ADDR`.
//! `DATABASE_URL` is the user-service database, which the relay reads too.
//!
//! Two development defaults differ from the webhook-service binary's: unless
//! `WEBHOOK_ALLOWED_NETS` is set, the runner's webhook-service may call loopback addresses
//! ([`DEV_WEBHOOK_ALLOWED_NETS`]), so a receiver on the developer's machine gets its webhooks
//! (the binary, and docker compose, refuses them); and unless `SMS_DIR` is set, the SMS files
//! (`SMS_GATEWAY=file`, the default) go to `sms` next to the mails' `MAIL_DIR`.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// `WEBHOOK_ALLOWED_NETS` of the runner's webhook-service when the variable is unset: loopback
/// only (a development default, so local receivers work; never for a deployment).
pub const DEV_WEBHOOK_ALLOWED_NETS: &str = "127.0.0.0/8,::1/128";

/// Settings only the all-in-one runner reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RunnerSettings {
    /// `EMAIL_DATABASE_URL`: the email-service inbox database (printed without its password).
    pub email_database_url: common::settings::ConnectionUrl,
    /// `USER_ADMIN_ADDR`: health and metrics of the user-service.
    pub user_admin_addr: std::net::SocketAddr,
    /// `RELAY_ADMIN_ADDR`: health and metrics of the relay.
    pub relay_admin_addr: std::net::SocketAddr,
    /// `EMAIL_ADMIN_ADDR`: health and metrics of the email-service.
    pub email_admin_addr: std::net::SocketAddr,
    /// `WEBHOOK_DATABASE_URL`: the webhook-service database (printed without its password).
    pub webhook_database_url: common::settings::ConnectionUrl,
    /// `WEBHOOK_HTTP_ADDR`: the webhook-service API (endpoints, jobs), health and metrics.
    pub webhook_http_addr: std::net::SocketAddr,
}

impl common::settings::Validate for RunnerSettings {
    fn validate(&self) -> Result<(), common::settings::SettingsError> {
        common::settings::ensure_database_url("EMAIL_DATABASE_URL", &self.email_database_url)?;
        common::settings::ensure_database_url("WEBHOOK_DATABASE_URL", &self.webhook_database_url)
    }
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            email_database_url: "sqlite://email.db?mode=rwc".into(),
            user_admin_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 9100)),
            relay_admin_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 9101)),
            email_admin_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 9102)),
            webhook_database_url: "sqlite://webhook.db?mode=rwc".into(),
            webhook_http_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8090)),
        }
    }
}

/// The settings of the four services as the runner uses them.
#[derive(Debug, Clone)]
pub struct StackSettings {
    /// user-service settings.
    pub user: user_service::Settings,
    /// outbox-relay settings (its `DATABASE_URL` is the user-service's).
    pub relay: outbox_relay::Settings,
    /// email-service settings.
    pub email: email_service::Settings,
    /// webhook-service settings (its `DATABASE_URL` and `HTTP_ADDR` are the runner's
    /// `WEBHOOK_DATABASE_URL` and `WEBHOOK_HTTP_ADDR`).
    pub webhook: webhook_service::Settings,
}

impl StackSettings {
    /// Reads every service's settings from the environment (see the crate docs).
    ///
    /// # Errors
    /// A message naming the variable with a bad value.
    pub fn from_env() -> anyhow::Result<Self> {
        let runner: RunnerSettings = common::settings::load()?;
        let mut user: user_service::Settings = common::settings::load()?;
        let mut relay: outbox_relay::Settings = common::settings::load()?;
        let mut email: email_service::Settings = common::settings::load()?;
        user.admin_addr = runner.user_admin_addr;
        relay.database_url = user.database_url.clone();
        relay.admin_addr = runner.relay_admin_addr;
        let webhook = webhook_settings(&runner, &email.mail_dir)?;
        email.database_url = runner.email_database_url;
        email.admin_addr = runner.email_admin_addr;
        Ok(Self {
            user,
            relay,
            email,
            webhook,
        })
    }
}

/// The webhook-service's settings from the environment, with `DATABASE_URL` and `HTTP_ADDR`
/// replaced by the runner's `WEBHOOK_*` ones before they are validated, loopback allowed
/// when `WEBHOOK_ALLOWED_NETS` is unset, and `SMS_DIR` next to `mail_dir` when unset.
fn webhook_settings(
    runner: &RunnerSettings,
    mail_dir: &std::path::Path,
) -> Result<webhook_service::Settings, common::settings::SettingsError> {
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    if env.get("SMS_DIR").is_none_or(String::is_empty) {
        let sms_dir = mail_dir
            .parent()
            .unwrap_or(std::path::Path::new(""))
            .join("sms");
        env.insert("SMS_DIR".into(), sms_dir.display().to_string());
    }
    let allowed_nets_set = env.contains_key("WEBHOOK_ALLOWED_NETS");
    env.insert(
        "DATABASE_URL".into(),
        runner.webhook_database_url.expose().to_owned(),
    );
    env.insert("HTTP_ADDR".into(), runner.webhook_http_addr.to_string());
    if !allowed_nets_set {
        env.insert(
            "WEBHOOK_ALLOWED_NETS".into(),
            DEV_WEBHOOK_ALLOWED_NETS.into(),
        );
    }
    common::settings::load_from(env)
}

/// The four services, built and bound, ready to [`run`](Stack::run).
pub struct Stack {
    /// The user-service (HTTP API).
    pub user: user_service::Application,
    /// The outbox-relay.
    pub relay: outbox_relay::Application,
    /// The email-service.
    pub email: email_service::Application,
    /// The webhook-service (its API on `WEBHOOK_HTTP_ADDR`).
    pub webhook: webhook_service::Application,
}

impl Stack {
    /// Checks that RabbitMQ answers (one clear error if not), migrates the user database and
    /// builds the four services. The relay shares the user-service's connection pool and is
    /// woken in-process after each outbox commit (SQLite has no `NOTIFY`).
    ///
    /// # Errors
    /// [`common::amqp::ConnectError`] when RabbitMQ is unreachable; database or bind errors.
    pub async fn build(settings: StackSettings) -> anyhow::Result<Self> {
        let probe =
            common::amqp::connect(&settings.relay.amqp_url, "signup-outbox-startup-check").await?;
        probe.close(200, "ok".into()).await.ok();

        // One pool for both: the user-service's own connections, plus one per relay pipeline
        // (each holds a transaction while its batch is in flight), LISTEN and a spare.
        let relay_connections = u32::try_from(settings.relay.concurrent_batches()).unwrap_or(18);
        let db = user_service::migration::connect_and_migrate(
            &settings.user.database_url,
            settings.user.database_max_connections + relay_connections + 2,
        )
        .await?;
        let relay = outbox_relay::Application::build_with_db(settings.relay, db.clone())
            .await
            .context("building the outbox-relay")?;
        let wakeup = relay.wakeup();
        let user = user_service::Application::build_with_db(settings.user, db, wakeup)
            .await
            .context("building the user-service")?;
        let email = email_service::Application::build(settings.email)
            .await
            .context("building the email-service")?;
        let webhook = webhook_service::Application::build(settings.webhook)
            .await
            .context("building the webhook-service")?;
        Ok(Self {
            user,
            relay,
            email,
            webhook,
        })
    }

    /// Runs the four services until `shutdown`; if one fails, the others are stopped too.
    ///
    /// # Errors
    /// The first service failure.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let guard = |name: &'static str, shutdown: CancellationToken| {
            move |result: anyhow::Result<()>| {
                if result.is_err() {
                    shutdown.cancel();
                }
                result.with_context(|| format!("{name} failed"))
            }
        };
        let (user, relay, email, webhook) = tokio::join!(
            async {
                guard("user-service", shutdown.clone())(self.user.run(shutdown.clone()).await)
            },
            async {
                guard("outbox-relay", shutdown.clone())(self.relay.run(shutdown.clone()).await)
            },
            async {
                guard("email-service", shutdown.clone())(self.email.run(shutdown.clone()).await)
            },
            async {
                guard("webhook-service", shutdown.clone())(self.webhook.run(shutdown.clone()).await)
            },
        );
        user.and(relay).and(email).and(webhook)
    }
}
