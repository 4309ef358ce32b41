//! Concurrency limits: at most `WEBHOOK_MAX_IN_FLIGHT` calls in this process, and at most
//! `WEBHOOK_ENDPOINT_CONCURRENCY` to one endpoint.
//!
//! Only the engine's claim loop takes slots, and it claims only as many rows as there are free
//! global slots, leaving saturated endpoints out of the claim. A claimed row whose endpoint
//! filled up meanwhile (the claim caps each endpoint at the limit, not at what is left of it) is
//! put back at once, so a hanging endpoint holds its own slots and no others. Every freed slot
//! wakes the loop: a row of a saturated endpoint may now be claimable.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, futures::Notified};
use uuid::Uuid;

/// The process's call slots.
#[derive(Debug)]
pub(super) struct Slots {
    global: Arc<Semaphore>,
    per_endpoint: usize,
    endpoints: Mutex<HashMap<Uuid, usize>>,
    freed: Notify,
}

/// A call in progress: frees its slots when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
    endpoint: Option<Uuid>,
    /// Taken (released) in `drop`, before the loop is woken.
    global: Option<OwnedSemaphorePermit>,
}

impl Slots {
    /// `max_in_flight` calls, `per_endpoint` of them to one endpoint.
    pub(super) fn new(max_in_flight: usize, per_endpoint: usize) -> Arc<Self> {
        Arc::new(Self {
            global: Arc::new(Semaphore::new(max_in_flight)),
            per_endpoint,
            endpoints: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        })
    }

    /// Free global slots: how many rows a claim may take.
    pub(super) fn free(&self) -> usize {
        self.global.available_permits()
    }

    /// The per-endpoint limit.
    pub(super) fn per_endpoint(&self) -> usize {
        self.per_endpoint
    }

    /// Endpoints at their limit: left out of the next claim.
    pub(super) fn saturated(&self) -> Vec<Uuid> {
        self.endpoints()
            .iter()
            .filter(|&(_, &n)| n >= self.per_endpoint)
            .map(|(&id, _)| id)
            .collect()
    }

    /// A slot for a call to `endpoint` (`None`: no endpoint limit), or `None` when no global
    /// slot is free or the endpoint is at its limit.
    pub(super) fn try_take(self: &Arc<Self>, endpoint: Option<Uuid>) -> Option<Slot> {
        let mut endpoints = self.endpoints();
        if let Some(id) = endpoint
            && endpoints.get(&id).is_some_and(|&n| n >= self.per_endpoint)
        {
            return None;
        }
        let permit = self.global.clone().try_acquire_owned().ok()?;
        if let Some(id) = endpoint {
            *endpoints.entry(id).or_insert(0) += 1;
        }
        Some(Slot {
            slots: self.clone(),
            endpoint,
            global: Some(permit),
        })
    }

    /// Resolves after a slot was freed (a freed slot while nobody waits is kept for the next
    /// wait).
    pub(super) fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        // The map stays consistent whatever panicked while it was held: one counter update.
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(id) = self.endpoint {
            let mut endpoints = self.slots.endpoints();
            if let Some(n) = endpoints.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    endpoints.remove(&id);
                }
            }
        }
        // Released before the wake-up: the loop (maybe on another worker thread already) must
        // see the slot free when it looks.
        drop(self.global.take());
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn global_and_endpoint_limits_hold_and_free_on_drop() {
        let slots = Slots::new(3, 2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = slots.try_take(Some(a)).expect("slot");
        let a2 = slots.try_take(Some(a)).expect("slot");
        assert!(slots.try_take(Some(a)).is_none(), "endpoint limit");
        assert_eq!(slots.saturated(), vec![a]);
        assert_eq!(slots.free(), 1);
        let job = slots.try_take(None).expect("slot");
        assert!(slots.try_take(Some(b)).is_none(), "global limit");
        drop(a1);
        assert!(slots.freed().now_or_never().is_some(), "a freed slot wakes");
        assert!(slots.saturated().is_empty());
        let b1 = slots.try_take(Some(b)).expect("slot");
        drop((a2, job, b1));
        assert_eq!(slots.free(), 3);
        assert!(slots.endpoints().is_empty(), "no entry left behind");
    }
}
