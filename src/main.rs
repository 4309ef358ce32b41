//! `signup-outbox`: the whole pipeline in one process for development.
//!
//! Defaults: users in `./signup.db`, the inbox in `./email.db`, webhooks and jobs in
//! `./webhook.db`, mails as `.eml` files in `./mail` (or over SMTP when `SMTP_URL` is set), phone
//! verification SMS as files in `./sms` (or through `SMS_GATEWAY`), the webhook API on
//! `127.0.0.1:8090`, RabbitMQ at `amqp://127.0.0.1:5672`.

use std::process::ExitCode;

use signup_outbox::{Stack, StackSettings};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One readable line (with its causes), not a backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = StackSettings::from_env()?;
    common::telemetry::init(settings.user.log_format, "info,sqlx=warn,lapin=warn")?;
    let mail = match &settings.email.smtp_url {
        Some(_) => "over SMTP_URL".to_owned(),
        None => format!("as .eml files in {}", settings.email.mail_dir.display()),
    };
    let sms = match settings.webhook.sms_gateway {
        webhook_service::SmsGateway::File => {
            format!("as files in {}", settings.webhook.sms_dir.display())
        }
        gateway => format!("through the {} gateway", gateway.as_str()),
    };
    let stack = Stack::build(settings).await?;
    let api = stack.user.local_addr()?;
    tracing::info!(
        "signup-outbox is running: API http://{api} (try POST /user/register), mails {mail}, \
         SMS {sms}, webhook API http://{}/v1/endpoints, metrics http://{}/metrics, \
         http://{}/metrics and http://{}/metrics. Ctrl-C stops.",
        stack.webhook.http_addr()?,
        stack.user.admin_addr()?,
        stack.relay.admin_addr()?,
        stack.email.admin_addr()?,
    );
    let shutdown = common::shutdown::cancel_on_signal();
    stack.run(shutdown).await
}
