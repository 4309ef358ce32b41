//! The delivery engine: claims due deliveries, sends them, records each attempt and reschedules
//! it by the retry policy ([`crate::retry`]).
//!
//! - `claim`: the claim statement (lease, per-endpoint cap, `SKIP LOCKED`), putting rows back,
//!   the next due time.
//! - `slots`: `WEBHOOK_MAX_IN_FLIGHT` and `WEBHOOK_ENDPOINT_CONCURRENCY`.
//! - `request`: the request of an attempt, by delivery kind (signing included).
//! - `attempt`: one claimed delivery from deadline check to recording.
//! - `record`: the transaction of attempts (attempt rows, delivery states, endpoint health,
//!   the jobs' `notify` deliveries).
//! - `recorder`: the task that records the attempts ending together in one transaction.
//! - `retention`: purging old attempts, deliveries and messages.
//! - `metrics`: the engine's Prometheus series.
//!
//! **Delivery guarantee.** A claim leases the row (its `next_attempt_at` and `leased_until` move
//! past the attempt's timeout plus a margin) in the statement that counts the attempt; the
//! outcome is recorded in one transaction, only while the row still holds that lease. No call
//! starts unless it and its recording fit in what is left of the lease. A crash between the two loses nothing: the lease ends, the row is due
//! again, and it is sent again with the same `webhook-id` (at-least-once; duplicates bounded by
//! the calls in flight). Several instances share the table: the claim skips rows another
//! instance is claiming.
//!
//! **Wake-up.** The loop sleeps until the earliest `next_attempt_at` of a pending row (a due
//! time or a lease end), at most [`BACKSTOP_POLL`], and wakes early on the in-process
//! [`DueSignal`](crate::store::DueSignal), a PostgreSQL `NOTIFY` on
//! [`NOTIFY_CHANNEL`](crate::store::NOTIFY_CHANNEL) (another instance inserted deliveries), or a
//! freed call slot. Each wake claims as many rows as there are free slots; a claim that took
//! rows is followed at once by another.

mod attempt;
mod claim;
mod metrics;
#[cfg(test)]
mod plans;
mod record;
mod recorder;
mod request;
mod retention;
mod slots;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use common::{backoff::Backoff, shutdown::sleep_or_cancel};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{state::AppState, store::NOTIFY_CHANNEL};
use claim::Claim;
use recorder::Recorder;
use slots::Slots;

/// The longest the loop sleeps without looking: covers a lost `NOTIFY` and rows another
/// instance put back.
const BACKSTOP_POLL: Duration = Duration::from_secs(5);

/// The most rows one claim statement takes.
const CLAIM_BATCH: usize = 100;

/// How often the backlog gauges are sampled.
const BACKLOG_SAMPLE: Duration = Duration::from_secs(5);

/// Claims due deliveries and sends them until `shutdown`, then lets in-flight calls finish
/// (each is bounded by its timeout) and returns.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    metrics::register();
    crate::sms::register_metrics(&state.settings);
    let mut background = JoinSet::new();
    let due = state.due.clone();
    background.spawn(common::database::listen(
        state.db.clone(),
        NOTIFY_CHANNEL,
        move || due.wake(),
        shutdown.clone(),
    ));
    background.spawn(retention::run(
        state.db.clone(),
        state.settings.webhook_attempt_retention,
        shutdown.clone(),
    ));
    background.spawn(sample_backlog(state.db.clone(), shutdown.clone()));

    let slots = Slots::new(
        state.settings.webhook_max_in_flight,
        state.settings.webhook_endpoint_concurrency,
    );
    let (recorder, mut recording) = Recorder::start(state.db.clone());
    let mut calls = JoinSet::new();
    let mut backoff = Backoff::default();
    tracing::info!(
        max_in_flight = state.settings.webhook_max_in_flight,
        endpoint_concurrency = state.settings.webhook_endpoint_concurrency,
        "delivery engine started"
    );
    while !shutdown.is_cancelled() {
        while calls.try_join_next().is_some() {}
        let wait = match claim_and_start(&state, &recorder, &slots, &mut calls).await {
            Ok(wait) => {
                if backoff.is_failing() {
                    tracing::info!("the delivery engine reaches its database again");
                }
                backoff.reset();
                wait
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = %common::telemetry::error_chain(&error),
                    retry_in_ms = delay.as_millis(),
                    "claiming deliveries failed"
                );
                delay
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = state.due.notified() => {}
            () = slots.freed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    if !calls.is_empty() {
        tracing::info!(batches = calls.len(), "waiting for the calls in flight");
    }
    while calls.join_next().await.is_some() {}
    drop(recorder);
    while recording.join_next().await.is_some() {}
    while background.join_next().await.is_some() {}
    tracing::info!("delivery engine stopped");
}

/// Claims as many due rows as there are free slots and starts their calls. Returns how long to
/// wait before looking again: zero after a claim that took rows (there may be more).
async fn claim_and_start(
    state: &AppState,
    recorder: &Recorder,
    slots: &Arc<Slots>,
    calls: &mut JoinSet<()>,
) -> Result<Duration, DbErr> {
    let limit = slots.free().min(CLAIM_BATCH);
    if limit == 0 {
        // Every slot is busy: a freed one wakes the loop.
        return Ok(BACKSTOP_POLL);
    }
    let started = Instant::now();
    let now = claim::database_now(&state.db).await?;
    let saturated = slots.saturated();
    let claimed = claim::claim(
        &state.db,
        &Claim {
            now,
            started,
            limit,
            per_endpoint: slots.per_endpoint(),
            saturated: &saturated,
            max_timeout: state.settings.webhook_max_request_timeout,
        },
    )
    .await?;
    if claimed.is_empty() {
        // Nothing claimable is due at `now`; the next due time (or lease end) is after it.
        // Both times are on the claim's clock; the wait is measured from `started`.
        let next = claim::next_due_after(&state.db, now).await?;
        return Ok(next.map_or(BACKSTOP_POLL, |at| {
            (at - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .saturating_sub(started.elapsed())
                .min(BACKSTOP_POLL)
        }));
    }
    let mut put_back = Vec::new();
    let mut batch = Vec::with_capacity(claimed.len());
    for claimed in claimed {
        match slots.try_take(claimed.row.endpoint_id) {
            Some(slot) => batch.push((claimed, slot)),
            None => put_back.push(claimed.row),
        }
    }
    if !batch.is_empty() {
        calls.spawn(start_batch(state.clone(), recorder.clone(), batch));
    }
    if !put_back.is_empty() {
        tracing::debug!(
            rows = put_back.len(),
            "endpoint at its limit: rows put back"
        );
        if let Err(error) = claim::put_back(&state.db, &put_back).await {
            // They stay leased: due again when the lease ends.
            tracing::warn!(
                error = %common::telemetry::error_chain(&error),
                "putting back rows failed; they are retried when their lease ends"
            );
        }
    }
    Ok(Duration::ZERO)
}

/// Reads what the batch's webhooks need ([`request::prefetch`]) and runs its attempts, each in
/// its own task. Off the claim loop: a read waiting for a lock delays this batch only.
async fn start_batch(
    state: AppState,
    recorder: Recorder,
    batch: Vec<(claim::Claimed, slots::Slot)>,
) {
    let prefetched = match request::prefetch(&state.db, batch.iter().map(|(c, _)| &c.row)).await {
        Ok(prefetched) => Arc::new(prefetched),
        Err(error) => {
            tracing::warn!(
                error = %common::telemetry::error_chain(&error),
                rows = batch.len(),
                "reading the claimed webhooks' endpoints and messages failed; putting them back"
            );
            let rows: Vec<_> = batch.into_iter().map(|(claimed, _)| claimed.row).collect();
            if let Err(error) = claim::put_back(&state.db, &rows).await {
                tracing::warn!(
                    error = %common::telemetry::error_chain(&error),
                    "putting back rows failed; they are retried when their lease ends"
                );
            }
            return;
        }
    };
    let mut attempts = JoinSet::new();
    for (claimed, slot) in batch {
        attempts.spawn(attempt::deliver(
            state.clone(),
            recorder.clone(),
            prefetched.clone(),
            claimed,
            slot,
        ));
    }
    while attempts.join_next().await.is_some() {}
}

/// Samples `webhook_due_backlog` and `webhook_oldest_due_age_seconds` until `shutdown`.
async fn sample_backlog(db: DatabaseConnection, shutdown: CancellationToken) {
    loop {
        let now = Utc::now();
        match claim::due_backlog(&db, now).await {
            Ok((due, oldest)) => {
                let age = oldest
                    .and_then(|oldest| (now - oldest).to_std().ok())
                    .unwrap_or_default();
                metrics::backlog(due, age);
            }
            Err(error) => tracing::debug!(
                error = %common::telemetry::error_chain(&error),
                "sampling the delivery backlog failed"
            ),
        }
        if !sleep_or_cancel(BACKLOG_SAMPLE, &shutdown).await {
            return;
        }
    }
}
