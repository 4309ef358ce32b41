//! One claimed delivery: check its deadline, build the request, check the deadline again and
//! that the call still fits in the lease, make the call (an SMS of the `file` gateway: write
//! it), apply the retry policy and record the outcome.
//!
//! **Within the lease.** Past its lease the row may be claimed again (by this process or
//! another) and sent a second time. So a call starts only if its timeout and
//! [`RECORD_BUDGET`] fit in what is left of the lease (building the request reads the database
//! and may wait for a pool connection); otherwise the row is put back, uncounted. The call's
//! backstop ends [`RECORD_BUDGET`] before the lease, and recording is not retried past it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use tracing::Instrument as _;

use super::{
    claim::{self, Claimed, LEASE_MARGIN},
    metrics,
    record::{self, AttemptRow, Change, Health},
    recorder::Recorder,
    request::{self, Prefetched, Prepared},
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

/// Time kept at the end of the lease for recording the attempt: a call starts only if its
/// timeout and this still fit in the lease.
const RECORD_BUDGET: Duration = Duration::from_secs(5);

// The margin of a lease leaves room for building the request before the budget.
const _: () = assert!(RECORD_BUDGET.as_millis() < LEASE_MARGIN.as_millis());

/// Recording tries before the attempt is left to its lease.
const RECORD_TRIES: u32 = 3;

/// Runs one claimed delivery in its span, then frees `slot`.
pub(super) async fn deliver(
    state: AppState,
    recorder: Recorder,
    prefetched: Arc<Prefetched>,
    claimed: Claimed,
    slot: Slot,
) {
    let span = tracing::info_span!(
        "delivery",
        delivery_id = %claimed.row.id,
        kind = %claimed.row.kind,
        attempt = claimed.row.attempts,
    );
    attempt(&state, &recorder, &prefetched, claimed)
        .instrument(span)
        .await;
    drop(slot);
}

async fn attempt(state: &AppState, recorder: &Recorder, prefetched: &Prefetched, claimed: Claimed) {
    let Claimed { row, lease_end } = claimed;
    let deadline_passed = || Prepared::Skip {
        status: delivery::status::FAILED,
        reason: "deadline",
    };
    let now = Utc::now();
    let prepared = if retry::past_deadline(row.deadline, now) {
        Ok(deadline_passed())
    } else {
        request::prepare(&state.db, &state.settings, &row, prefetched, now)
            .await
            .map(|prepared| match prepared {
                // Building the request may have waited for the database: no call starts after
                // the deadline.
                Prepared::Send { .. } if retry::past_deadline(row.deadline, Utc::now()) => {
                    deadline_passed()
                }
                prepared => prepared,
            })
    };
    let change = match prepared {
        Ok(Prepared::Skip { status, reason }) => {
            crate::sms::count_skipped(&state.settings, &row, reason);
            skip(row, status, reason)
        }
        Ok(Prepared::Send { request, endpoint }) => {
            if !fits_in_lease(Instant::now(), request.timeout, lease_end) {
                put_back(state, &row).await;
                return;
            }
            call(state, row, request, endpoint, lease_end).await
        }
        Err(error) => {
            tracing::warn!(
                error = %common::telemetry::error_chain(&error),
                "cannot prepare the attempt; it is retried when its lease ends"
            );
            return;
        }
    };
    let change = Arc::new(change);
    let mut delay = Duration::from_millis(200);
    for tried in 1..=RECORD_TRIES {
        match recorder.record(change.clone()).await {
            Ok(recorded) => {
                after_commit(state, &change, &recorded);
                return;
            }
            Err(error)
                if tried < RECORD_TRIES && fits_in_lease(Instant::now(), delay, lease_end) =>
            {
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

/// Whether `needed`, starting at `now`, ends before `lease_end` (a call: its timeout plus
/// [`RECORD_BUDGET`]).
fn fits_in_lease(now: Instant, needed: Duration, lease_end: Instant) -> bool {
    now.checked_add(needed).is_some_and(|end| end <= lease_end)
}

/// Gives the row back (due now, the attempt uncounted): too little of its lease is left for
/// the call.
async fn put_back(state: &AppState, row: &delivery::Model) {
    metrics::lease_put_back();
    match claim::put_back(&state.db, std::slice::from_ref(row)).await {
        Ok(()) => tracing::warn!(
            "too little of the lease left to make the call (building the request was slow); \
             not called, put back unless claimed again already"
        ),
        Err(error) => tracing::warn!(
            error = %common::telemetry::error_chain(&error),
            "too little of the lease left to make the call, and putting it back failed; it is \
             retried when its lease ends"
        ),
    }
}

/// A delivery ended without a call.
fn skip(claimed: delivery::Model, status: &'static str, reason: &'static str) -> Change {
    tracing::info!(status, reason, "delivery ended without a call");
    metrics::skipped(reason);
    let now = Utc::now();
    Change {
        attempt: None,
        status,
        next_attempt_at: now,
        attempts: claimed.attempts - 1,
        last_status: claimed.last_status,
        last_error: Some(reason.to_owned()),
        health: None,
        now,
        claimed,
    }
}

/// Makes the call and decides what follows.
async fn call(
    state: &AppState,
    claimed: delivery::Model,
    request: OutboundRequest,
    endpoint: Option<uuid::Uuid>,
    lease_end: Instant,
) -> Change {
    let url = egress::redact_url(&request.url);
    // The backstop ends the call in time to record it within the lease.
    let room = lease_end
        .saturating_duration_since(Instant::now())
        .saturating_sub(RECORD_BUDGET);
    let mut result = match crate::sms::file::target(&claimed, &request) {
        Some(path) => crate::sms::file::write(&path, &request.body).await,
        None => send(state, request, room).await,
    };
    crate::sms::gateway::scrub(&claimed, &mut result);
    let now = Utc::now();
    let answer = Answer::of(&result);
    let policy = Policy::for_delivery(&state.settings, &claimed);
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
    crate::sms::count_verdict(&state.settings, &claimed, verdict);
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
        claimed,
    }
}

/// The egress call, with a backstop past its own timeout (at most `room`).
async fn send(state: &AppState, request: OutboundRequest, room: Duration) -> AttemptResult {
    let started_at = Utc::now();
    let started = Instant::now();
    let limit = (request.timeout + SEND_BACKSTOP).min(room);
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
fn after_commit(state: &AppState, change: &Change, recorded: &record::Recorded) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_fits_only_if_it_ends_by_the_lease_end() {
        let now = Instant::now();
        let lease_end = now + Duration::from_secs(11);
        assert!(fits_in_lease(now, Duration::from_secs(6), lease_end));
        assert!(fits_in_lease(now, Duration::from_secs(11), lease_end));
        assert!(!fits_in_lease(
            now,
            Duration::from_millis(11_001),
            lease_end
        ));
        assert!(!fits_in_lease(now, Duration::MAX, lease_end), "no overflow");
    }
}
