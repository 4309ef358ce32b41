//! The claim cursor: where a relay's next PostgreSQL claim starts, so its concurrent
//! pipelines do not walk over each other's locked rows.

use std::time::Duration;

use outbox::OutboxRow;
use tokio::time::Instant;

/// How long a claim cursor is followed before claims start from the beginning again: the bound
/// on the extra wait of a row the cursor passed while it was not yet eligible (an aggregate's
/// next event, a row another relay abandoned) during a sustained backlog.
const CURSOR_REWIND: Duration = Duration::from_millis(250);

/// Where this relay's next PostgreSQL claim starts (the `after` hint of
/// [`outbox::claim_batch`]): past the last full batch it claimed, so concurrent pipelines do
/// not walk over each other's locked rows. Back at the beginning after a short batch (the
/// backlog is drained), after a failure (its rows are pending again) and every
/// [`CURSOR_REWIND`].
#[derive(Debug, Default)]
pub(super) struct ClaimCursor {
    after: Option<i64>,
    since: Option<Instant>,
}

impl ClaimCursor {
    /// Where a claim made at `now` starts.
    pub(super) fn start(&mut self, now: Instant) -> Option<i64> {
        if self
            .since
            .is_some_and(|since| now.saturating_duration_since(since) >= CURSOR_REWIND)
        {
            self.rewind();
        }
        self.after
    }

    /// Records a claim made at `now` that returned `rows`.
    pub(super) fn claimed(&mut self, rows: &[OutboxRow], batch_size: u32, now: Instant) {
        match rows.last() {
            Some(last) if rows.len() >= usize::try_from(batch_size).unwrap_or(usize::MAX) => {
                self.after = Some(last.seq);
                self.since.get_or_insert(now);
            }
            _ => self.rewind(),
        }
    }

    pub(super) fn rewind(&mut self) {
        self.after = None;
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn rows(seqs: std::ops::RangeInclusive<i64>) -> Vec<OutboxRow> {
        seqs.map(|seq| OutboxRow {
            seq,
            id: uuid::Uuid::new_v4(),
            aggregate_id: uuid::Uuid::new_v4(),
            event_type: "user.verified.v1".into(),
            routing_key: "user.verified.v1".into(),
            payload: "{}".into(),
            headers: "{}".into(),
            created_at: Utc::now(),
            attempts: 0,
        })
        .collect()
    }

    #[test]
    fn the_claim_cursor_follows_full_batches_and_rewinds() {
        let t0 = Instant::now();
        let mut cursor = ClaimCursor::default();
        assert_eq!(
            cursor.start(t0),
            None,
            "the first claim starts at the beginning"
        );
        cursor.claimed(&rows(1..=3), 3, t0);
        assert_eq!(cursor.start(t0), Some(3), "a full batch: start past it");
        cursor.claimed(&rows(4..=6), 3, t0 + Duration::from_millis(100));
        assert_eq!(cursor.start(t0 + Duration::from_millis(200)), Some(6));
        assert_eq!(
            cursor.start(t0 + CURSOR_REWIND),
            None,
            "rewound CURSOR_REWIND after it first moved, however full the batches"
        );
        cursor.claimed(&rows(7..=9), 3, t0 + CURSOR_REWIND);
        assert_eq!(cursor.start(t0 + CURSOR_REWIND), Some(9));
        cursor.claimed(&rows(10..=11), 3, t0 + CURSOR_REWIND);
        assert_eq!(
            cursor.start(t0 + CURSOR_REWIND),
            None,
            "a short batch: caught up"
        );
        cursor.claimed(&rows(1..=3), 3, t0 + CURSOR_REWIND);
        cursor.rewind();
        assert_eq!(cursor.start(t0 + CURSOR_REWIND), None, "a failure rewinds");
    }
}
