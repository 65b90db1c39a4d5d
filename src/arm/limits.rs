//! Per-subscription concurrency limits. ARM throttles per subscription (and per principal), so a
//! sweep over many datastores must not flood one subscription while another sits idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One semaphore per subscription, created on first use.
pub(super) struct SubscriptionLimits {
    permits: usize,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl SubscriptionLimits {
    /// Allows `permits` requests in flight per subscription (at least one).
    pub fn new(permits: usize) -> Self {
        SubscriptionLimits {
            permits: permits.max(1),
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot in `subscription`; the slot is free again when the permit drops.
    pub async fn acquire(&self, subscription: &str) -> Option<OwnedSemaphorePermit> {
        // The semaphores are never closed, so this is always `Some`.
        self.semaphore(subscription).acquire_owned().await.ok()
    }

    fn semaphore(&self, subscription: &str) -> Arc<Semaphore> {
        // Subscription ids compare case-insensitively, like everywhere else in ARM.
        let key = subscription.to_ascii_lowercase();
        // A panic while holding this lock cannot leave the map half-updated.
        let mut semaphores = self
            .semaphores
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let semaphore = semaphores
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.permits)));
        Arc::clone(semaphore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscriptions_have_separate_limits_that_ignore_case() {
        let limits = SubscriptionLimits::new(1);
        let held = limits.acquire("SUB-A").await;
        assert!(held.is_some());
        assert_eq!(limits.semaphore("sub-a").available_permits(), 0);
        assert_eq!(limits.semaphore("sub-b").available_permits(), 1);
        drop(held);
        assert_eq!(limits.semaphore("sub-a").available_permits(), 1);
    }
}
