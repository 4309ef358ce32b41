//! `AppState`: what the API handlers, the engine and the consumer share.

use std::sync::Arc;

use common::{amqp::Broker, consumer::ConsumerHealth};
use sea_orm::DatabaseConnection;

use crate::{egress::Egress, settings::Settings, store::DueSignal};

/// Shared, cheaply cloned state.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) db: DatabaseConnection,
    /// Settings, validated at start-up.
    pub(crate) settings: Arc<Settings>,
    /// The guarded outbound HTTP client (also checks URLs when they are saved).
    pub(crate) egress: Arc<Egress>,
    /// Wakes the engine after a commit that inserted deliveries.
    pub(crate) due: DueSignal,
    /// The broker connection the consumer uses (readiness).
    pub(crate) broker: Arc<Broker>,
    /// The consumer loop's progress: liveness fails when it is stalled for longer than
    /// [`crate::consumer::CONSUMER_STALL_TIMEOUT`].
    pub(crate) consumer: Arc<ConsumerHealth>,
}
