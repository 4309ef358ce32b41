//! `email-service` binary: run the consumer (default), operate the dead-letter queue, or run a
//! local SMTP sink (feature `sink`).

use clap::{Parser, Subcommand};
use email_service::{Application, DlqClient, ReplaySelection, Settings};

/// Sends the sign-up mails. Configured by environment variables (see `.env.template`).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events and send mails (the default).
    Run,
    /// Inspect and repair the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Run a local SMTP server that accepts and logs every mail (development only).
    #[cfg(feature = "sink")]
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:2525")]
        addr: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the dead letters (the queue is left unchanged).
    List,
    /// Send dead letters back to the work queue.
    Replay {
        /// Replay only the message with this id (the event id).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter.
    Purge,
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
        Command::Dlq { command } => {
            common::telemetry::init(settings.log_format, "warn")?;
            let client = DlqClient::connect(&settings).await?;
            let result = dlq(&client, command).await;
            client.close().await;
            result
        }
        #[cfg(feature = "sink")]
        Command::Sink { addr } => {
            common::telemetry::init(settings.log_format, "info,email_service::sink=debug")?;
            let sink = email_service::SmtpSink::bind(addr).await?;
            println!(
                "SMTP sink listening on {} (SMTP_URL={})",
                sink.addr(),
                sink.url()
            );
            common::shutdown::signal().await;
            println!("{} mail(s) received", sink.count());
            Ok(())
        }
    }
}

async fn dlq(client: &DlqClient, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List => {
            let letters = client.list().await?;
            print!(
                "{}",
                email_service::format_dead_letters(client.queue(), &letters)
            );
        }
        DlqCommand::Replay { id, all: _ } => {
            let selection = id.clone().map_or(ReplaySelection::All, ReplaySelection::Id);
            let replayed = client.replay(&selection).await?;
            for letter in &replayed {
                println!(
                    "replayed {} ({})",
                    letter.message_id.as_deref().unwrap_or("-"),
                    letter.event_type.as_deref().unwrap_or("-")
                );
            }
            println!("{} message(s) replayed to the work queue", replayed.len());
            if let Some(id) = id
                && replayed.is_empty()
            {
                anyhow::bail!("no dead letter with id {id} in {}", client.queue());
            }
        }
        DlqCommand::Purge => {
            let purged = client.purge().await?;
            println!("purged {purged} message(s) from {}", client.queue());
        }
    }
    Ok(())
}
