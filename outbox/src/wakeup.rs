//! The in-process wake-up between an outbox writer and a relay in the same process.

use std::sync::Arc;

use tokio::sync::{Notify, futures::Notified};

/// A hint that outbox rows were committed, for a relay in the same process (the all-in-one
/// runner; on SQLite there is no `NOTIFY`). The writer calls [`wake`](Self::wake) after each
/// commit that enqueued events; the relay's pipelines wait on [`notified`](Self::notified).
///
/// Each signal wakes one idle pipeline. A pipeline that claims a full batch signals again, so a
/// burst recruits the others one by one while a single event costs one claim, not one per
/// pipeline. A signal sent while nobody waits is kept (one permit) and makes the next pipeline
/// to go idle look once more. Like `NOTIFY` it is only a hint: a lost one costs at most the
/// relay's poll interval, never a row. A writer with no relay attached signals nobody.
#[derive(Debug, Clone, Default)]
pub struct Wakeup {
    notify: Arc<Notify>,
}

impl Wakeup {
    /// Wakes one idle pipeline (or the next one to go idle).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next [`wake`](Self::wake) meant for this pipeline.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_wake_wakes_one_idle_pipeline_and_is_kept_when_none_waits() {
        let wakeup = Wakeup::default();
        wakeup.wake();
        assert!(
            wakeup.notified().now_or_never().is_some(),
            "a wake-up sent while every pipeline is busy is kept"
        );
        assert!(wakeup.notified().now_or_never().is_none(), "and kept once");

        let mut first = pin!(wakeup.notified());
        let mut second = pin!(wakeup.notified());
        first.as_mut().enable();
        second.as_mut().enable();
        wakeup.clone().wake();
        assert!(
            first.as_mut().now_or_never().is_some(),
            "one pipeline wakes"
        );
        assert!(second.as_mut().now_or_never().is_none(), "only one");
        wakeup.wake();
        assert!(second.now_or_never().is_some());
    }
}
