//! `webhook-service` binary: run the service (default).

use clap::{Parser, Subcommand};
use webhook_service::{Application, Settings};

/// Delivers webhooks and scheduled HTTP requests. Configured by environment variables (see
/// `.env.template`).
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = common::settings::load()?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            common::telemetry::init(settings.log_format, "info,sqlx=warn,lapin=warn")?;
            let app = Application::build(settings).await?;
            let shutdown = common::shutdown::cancel_on_signal();
            app.run(shutdown).await
        }
    }
}
