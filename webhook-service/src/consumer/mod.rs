//! The event consumer. STUB.

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Consumes sign-up events until `shutdown`.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let _ = state;
    shutdown.cancelled().await;
}
