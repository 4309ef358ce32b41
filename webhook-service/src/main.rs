//! `webhook-service` binary: run the service (default), or operate a running one through its
//! API: list endpoints, list an endpoint's failed messages, replay one, recover all failed since
//! a time (the counterpart of `email-service dlq`).

use clap::{Parser, Subcommand};
use webhook_service::{Application, Settings};

/// Delivers webhooks and scheduled HTTP requests. Configured by environment variables (see
/// `.env.template`); the operator commands reach the service at `HTTP_ADDR` with
/// `WEBHOOK_API_TOKEN`.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events, serve the API and deliver (the default).
    Run,
    /// List the endpoints.
    Endpoints,
    /// List an endpoint's messages (deliveries), failed ones by default.
    Messages {
        /// The endpoint id.
        endpoint: String,
        /// `pending`, `succeeded`, `failed` or `cancelled`.
        #[arg(long, default_value = "failed")]
        status: String,
    },
    /// Send one message to an endpoint again.
    Retry {
        /// The endpoint id.
        endpoint: String,
        /// The message id.
        message: String,
    },
    /// Send every failed message of an endpoint created since a time again.
    Recover {
        /// The endpoint id.
        endpoint: String,
        /// RFC 3339 time, e.g. `2026-12-07T00:00:00Z`.
        #[arg(long)]
        since: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // reqwest is built without a default TLS provider (the workspace uses ring); the operator
    // commands' client needs one. An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings: Settings = common::settings::load()?;
    let api = Api::new(&settings);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            common::telemetry::init(settings.log_format, "info,sqlx=warn,lapin=warn")?;
            let app = Application::build(settings).await?;
            let shutdown = common::shutdown::cancel_on_signal();
            app.run(shutdown).await
        }
        Command::Endpoints => api.call(reqwest::Method::GET, "/v1/endpoints", None).await,
        Command::Messages { endpoint, status } => {
            let path = format!("/v1/endpoints/{endpoint}/messages?status={status}");
            api.call(reqwest::Method::GET, &path, None).await
        }
        Command::Retry { endpoint, message } => {
            let path = format!("/v1/endpoints/{endpoint}/messages/{message}/retry");
            api.call(reqwest::Method::POST, &path, None).await
        }
        Command::Recover { endpoint, since } => {
            chrono::DateTime::parse_from_rfc3339(&since)
                .map_err(|e| anyhow::anyhow!("--since {since:?} is not an RFC 3339 time: {e}"))?;
            let path = format!("/v1/endpoints/{endpoint}/recover");
            let body = serde_json::json!({ "since": since });
            api.call(reqwest::Method::POST, &path, Some(body)).await
        }
    }
}

/// The running service's API, as the operator commands call it.
struct Api {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    fn new(settings: &Settings) -> Self {
        let mut addr = settings.http_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Self {
            base: format!("http://{addr}"),
            token: settings.webhook_api_token.as_ref().map(|t| t.0.clone()),
            client: reqwest::Client::new(),
        }
    }

    /// Calls the API and prints the answer (pretty JSON); a non-2xx answer is an error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "calling the webhook-service at {}: {}",
                self.base,
                common::telemetry::error_chain(&e)
            )
        })?;
        let status = response.status();
        let text = response.text().await?;
        let shown = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or(text);
        println!("{shown}");
        anyhow::ensure!(status.is_success(), "the webhook-service answered {status}");
        Ok(())
    }
}
