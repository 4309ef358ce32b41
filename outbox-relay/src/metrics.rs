//! The relay's Prometheus metrics, described and created at start-up ([`register`]) so every
//! series is in the first scrape: an alert on `increase(outbox_relay_published_total[…]) == 0`
//! or on a failure rate must see a zero, not a missing series.
//!
//! - `outbox_relay_backlog`, `outbox_relay_oldest_unpublished_age_seconds`: sampled by each
//!   `GET /metrics` (two indexed queries, `admin`).
//! - `outbox_relay_published_total`, `outbox_relay_purged_total`.
//! - `outbox_relay_confirm_latency_seconds`: publish → broker confirm of each row.
//! - `outbox_relay_batch_duration_seconds`: claim → publish → mark of a batch.
//! - `outbox_relay_publish_failures_total{reason}`, `outbox_relay_errors_total{kind}`.

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::publish::FailureKind;

/// Every `reason` of `outbox_relay_publish_failures_total`.
const FAILURE_KINDS: [FailureKind; 4] = [
    FailureKind::Nack,
    FailureKind::Returned,
    FailureKind::Timeout,
    FailureKind::Channel,
];

/// Every `kind` of `outbox_relay_errors_total` (`RelayError::kind`).
const ERROR_KINDS: [&str; 3] = ["database", "broker", "outbox_missing"];

/// Describes every series and creates it at zero.
pub(crate) fn register() {
    describe_gauge!(
        "outbox_relay_backlog",
        Unit::Count,
        "Outbox rows not yet published (sampled at scrape time)"
    );
    describe_gauge!(
        "outbox_relay_oldest_unpublished_age_seconds",
        Unit::Seconds,
        "Age of the oldest unpublished outbox row, 0 when none (sampled at scrape time)"
    );
    describe_counter!(
        "outbox_relay_published_total",
        Unit::Count,
        "Outbox rows published, confirmed by the broker and marked"
    );
    describe_histogram!(
        "outbox_relay_confirm_latency_seconds",
        Unit::Seconds,
        "Time from publishing a row to the broker's confirm"
    );
    describe_histogram!(
        "outbox_relay_batch_duration_seconds",
        Unit::Seconds,
        "Duration of one claim, publish and mark batch"
    );
    describe_counter!(
        "outbox_relay_publish_failures_total",
        Unit::Count,
        "Rows left pending after a publish: nacked, returned (unroutable), timed out, channel lost"
    );
    describe_counter!(
        "outbox_relay_errors_total",
        Unit::Count,
        "Failed batches, by kind (database, broker, outbox_missing)"
    );
    describe_counter!(
        "outbox_relay_purged_total",
        Unit::Count,
        "Published rows deleted by retention (RELAY_RETENTION)"
    );
    gauge!("outbox_relay_backlog").set(0.0);
    gauge!("outbox_relay_oldest_unpublished_age_seconds").set(0.0);
    counter!("outbox_relay_published_total").absolute(0);
    counter!("outbox_relay_purged_total").absolute(0);
    // Touching a histogram registers it: it is rendered (with zero counts) from then on.
    let _ = histogram!("outbox_relay_confirm_latency_seconds");
    let _ = histogram!("outbox_relay_batch_duration_seconds");
    for kind in FAILURE_KINDS {
        counter!("outbox_relay_publish_failures_total", "reason" => kind.as_str()).absolute(0);
    }
    for kind in ERROR_KINDS {
        counter!("outbox_relay_errors_total", "kind" => kind).absolute(0);
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn every_series_is_rendered_before_anything_happened() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, register);
        let text = handle.render();
        for series in [
            "outbox_relay_backlog 0",
            "outbox_relay_oldest_unpublished_age_seconds 0",
            "outbox_relay_published_total 0",
            "outbox_relay_purged_total 0",
            "outbox_relay_confirm_latency_seconds_count 0",
            "outbox_relay_batch_duration_seconds_count 0",
            "outbox_relay_publish_failures_total{reason=\"returned\"} 0",
            "outbox_relay_errors_total{kind=\"broker\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        for kind in FAILURE_KINDS {
            assert!(text.contains(&format!("reason=\"{}\"", kind.as_str())));
        }
    }
}
