//! `outbox-relay` binary: settings, telemetry, run until Ctrl-C or SIGTERM.

use outbox_relay::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = common::settings::load()?;
    common::telemetry::init(settings.log_format, "info,sqlx=warn,lapin=warn")?;
    let app = Application::build(settings).await?;
    let shutdown = common::shutdown::cancel_on_signal();
    app.run(shutdown).await
}
