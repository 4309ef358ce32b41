//! `outbox-relay` binary: settings, telemetry, run until Ctrl-C or SIGTERM.

use outbox_relay::{Application, Settings};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    common::telemetry::init(settings.log_format, "info,sqlx=warn,lapin=warn")?;
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            common::shutdown::signal().await;
            shutdown.cancel();
        }
    });
    app.run(shutdown).await
}
