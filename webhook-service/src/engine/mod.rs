//! The delivery engine. STUB.

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Claims due deliveries and sends them until `shutdown`, then lets in-flight calls finish.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let _ = state;
    shutdown.cancelled().await;
}
