//! One claimed delivery: check its deadline, build the request, make the call, apply the retry
//! policy and record the outcome.

use std::time::Duration;

use chrono::Utc;
use tracing::Instrument as _;

use super::{
    metrics,
    record::{self, AttemptRow, Change, Health},
    request::{self, Prepared},
    slots::Slot,
};
use crate::{
    egress::{self, AttemptResult, ErrorKind, OutboundRequest},
    entity::delivery,
    retry::{self, Answer, FailReason, Policy, Verdict},
    state::AppState,
};

/// Time the egress client gets beyond the attempt's own timeout before the engine gives up on
/// it (the client bounds the attempt itself; this is a backstop).
const SEND_BACKSTOP: Duration = Duration::from_secs(5);

/// Recording tries before the attempt is left to its lease.
const RECORD_TRIES: u32 = 3;

/// Runs one claimed delivery in its span, then frees `slot`.
pub(super) async fn deliver(state: AppState, claimed: delivery::Model, slot: Slot) {
    let span = tracing::info_span!(
        "delivery",
        delivery_id = %claimed.id,
        kind = %claimed.kind,
        attempt = claimed.attempts,
    );
    attempt(&state, &claimed).instrument(span).await;
    drop(slot);
}

async fn attempt(state: &AppState, claimed: &delivery::Model) {
    let now = Utc::now();
    let change = if retry::past_deadline(claimed.deadline, now) {
        skip(claimed, delivery::status::FAILED, "deadline")
    } else {
        match request::prepare(&state.db, &state.settings, claimed, now).await {
            Ok(Prepared::Skip { status, reason }) => skip(claimed, status, reason),
            Ok(Prepared::Send { request, endpoint }) => {
                call(state, claimed, request, endpoint).await
            }
            Err(error) => {
                tracing::warn!(
                    error = %common::telemetry::error_chain(&error),
                    "cannot prepare the attempt; it is retried when its lease ends"
                );
                return;
            }
        }
    };
    let mut delay = Duration::from_millis(200);
    for tried in 1..=RECORD_TRIES {
        match record::record(&state.db, &change).await {
            Ok(recorded) => {
                after_commit(state, &change, &recorded);
                return;
            }
            Err(error) if tried < RECORD_TRIES => {
                tracing::warn!(
                    error = %common::telemetry::error_chain(&error),
                    "recording the attempt failed; trying again"
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => tracing::error!(
                error = %common::telemetry::error_chain(&error),
                "recording the attempt failed; it is made again when its lease ends"
            ),
        }
    }
}

/// A delivery ended without a call.
fn skip<'a>(
    claimed: &'a delivery::Model,
    status: &'static str,
    reason: &'static str,
) -> Change<'a> {
    tracing::info!(status, reason, "delivery ended without a call");
    metrics::skipped(reason);
    let now = Utc::now();
    Change {
        claimed,
        attempt: None,
        status,
        next_attempt_at: now,
        attempts: claimed.attempts - 1,
        last_status: claimed.last_status,
        last_error: Some(reason.to_owned()),
        health: None,
        now,
    }
}

/// Makes the call and decides what follows.
async fn call<'a>(
    state: &AppState,
    claimed: &'a delivery::Model,
    request: OutboundRequest,
    endpoint: Option<uuid::Uuid>,
) -> Change<'a> {
    let url = egress::redact_url(&request.url);
    let result = send(state, request).await;
    let now = Utc::now();
    let answer = Answer::of(&result);
    let policy = Policy::for_delivery(&state.settings, claimed);
    let attempt = u32::try_from(claimed.attempts).unwrap_or(1);
    let verdict = retry::decide(
        &policy,
        attempt,
        answer,
        now,
        claimed.deadline,
        retry::random_jitter(),
    );
    metrics::attempt(&claimed.kind, verdict.outcome(), result.duration);
    let error_kind = answer.error_kind();
    let (status, next_attempt_at, last_error) = match verdict {
        Verdict::Succeeded => (delivery::status::SUCCEEDED, now, None),
        Verdict::Retry(at) => (delivery::status::PENDING, at, error_kind.map(str::to_owned)),
        Verdict::Failed(FailReason::Deadline) => {
            (delivery::status::FAILED, now, Some("deadline".to_owned()))
        }
        Verdict::Failed(_) => (delivery::status::FAILED, now, error_kind.map(str::to_owned)),
    };
    if verdict == Verdict::Succeeded {
        tracing::debug!(%url, status = ?result.status, "delivered");
    } else {
        tracing::info!(
            %url,
            status = ?result.status,
            error_kind,
            verdict = ?verdict,
            "attempt failed"
        );
    }
    let health = endpoint.map(|id| {
        let health = match verdict {
            Verdict::Succeeded => Health::Succeeded,
            Verdict::Failed(FailReason::Gone) => Health::Gone,
            _ => Health::Failed,
        };
        (id, health, state.settings.webhook_disable_after)
    });
    Change {
        claimed,
        last_status: result.status.map(i32::from),
        attempt: Some(AttemptRow {
            url,
            result,
            error_kind,
        }),
        status,
        next_attempt_at,
        attempts: claimed.attempts,
        last_error,
        health,
        now,
    }
}

/// The egress call, with a backstop past its own timeout.
async fn send(state: &AppState, request: OutboundRequest) -> AttemptResult {
    let started_at = Utc::now();
    let started = std::time::Instant::now();
    let limit = request.timeout + SEND_BACKSTOP;
    match tokio::time::timeout(limit, state.egress.send(request)).await {
        Ok(result) => result,
        Err(_) => AttemptResult {
            started_at,
            duration: started.elapsed(),
            status: None,
            error: Some((
                ErrorKind::Timeout,
                format!("no result within {}s", limit.as_secs()),
            )),
            retry_after: None,
            response_headers: Vec::new(),
            response_body: String::new(),
        },
    }
}

/// Logs and counts what the commit did, and wakes the engine for a new `notify` delivery.
fn after_commit(state: &AppState, change: &Change<'_>, recorded: &record::Recorded) {
    if !recorded.applied {
        tracing::info!(
            "the delivery no longer holds this attempt's lease (cancelled, replayed, or claimed \
             again after the lease); the attempt is recorded, the newer state kept"
        );
    }
    if recorded.notify_inserted {
        state.due.wake();
    }
    if let (Some(disabled), Some((endpoint_id, _, _)), Some(attempt)) =
        (&recorded.disabled, change.health, &change.attempt)
    {
        tracing::warn!(
            %endpoint_id,
            url = %attempt.url,
            reason = disabled.reason,
            failing_since = ?disabled.failing_since,
            "endpoint disabled"
        );
        metrics::endpoint_disabled(disabled.reason);
    }
}
