//! One run per storage account at a time in this process, and duplicates folded together.
//!
//! Event Grid redelivers while a slow run is still going, an event and the timer can name the
//! same account, and one regeneration can reach keysync more than once. A request that arrives
//! while a run on its account is going waits for it; then, if a run that *started after the
//! request arrived* has finished meanwhile, it takes that run's result instead of running again.
//! Taking the result of the run already going when it arrived would be wrong: that run may have
//! read the keys before the regeneration the late request is about.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, MutexGuard};
use tokio::time::Instant;

use super::ReconcileError;
use crate::report::Report;
use crate::resource_id::StorageAccountId;

/// The result a shared run hands to the requests folded into it.
pub type RunResult = Result<Report, ReconcileError>;

/// The serialization state of one account.
#[derive(Default)]
pub struct AccountSlot {
    lock: AsyncMutex<()>,
    /// How many shareable runs have started.
    started: AtomicU64,
    /// The last shareable run to finish: its number and result.
    finished: Mutex<Option<(u64, RunResult)>>,
}

/// Every account's slot, created on first use.
#[derive(Default)]
pub struct Slots(Mutex<HashMap<String, Arc<AccountSlot>>>);

impl Slots {
    pub fn get(&self, account: &StorageAccountId) -> Arc<AccountSlot> {
        let mut slots = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(account.as_str().to_ascii_lowercase())
            .or_default()
            .clone()
    }
}

/// Where a request stands once it holds the account.
pub enum Turn<'a> {
    /// Run now; hand the result to [`Ticket::finish`].
    Run(Ticket<'a>),
    /// A run that started after this request arrived has the answer.
    Shared(RunResult),
}

/// Permission to run, holding the account's lock.
pub struct Ticket<'a> {
    slot: &'a AccountSlot,
    _guard: MutexGuard<'a, ()>,
    number: Option<u64>,
}

impl AccountSlot {
    /// Waits for the account (until `deadline`, if any). A `shareable` request may be answered
    /// by a run that started after it arrived; others always run.
    pub async fn enter(
        &self,
        shareable: bool,
        deadline: Option<Instant>,
    ) -> Result<Turn<'_>, ReconcileError> {
        let arrived = self.started.load(Ordering::SeqCst);
        let guard = self.acquire(deadline).await?;
        if shareable {
            let finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((number, result)) = finished.as_ref().filter(|(n, _)| *n > arrived) {
                tracing::debug!(
                    run = number,
                    "sharing the result of a run that started after this request"
                );
                return Ok(Turn::Shared(result.clone()));
            }
        }
        let number = shareable.then(|| self.started.fetch_add(1, Ordering::SeqCst) + 1);
        Ok(Turn::Run(Ticket {
            slot: self,
            _guard: guard,
            number,
        }))
    }

    /// Holds the account without sharing anything (a rotation).
    pub async fn hold(&self, deadline: Option<Instant>) -> Result<Ticket<'_>, ReconcileError> {
        let guard = self.acquire(deadline).await?;
        Ok(Ticket {
            slot: self,
            _guard: guard,
            number: None,
        })
    }

    async fn acquire(
        &self,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'_, ()>, ReconcileError> {
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.lock.lock())
                .await
                .map_err(|_| ReconcileError::Busy),
            None => Ok(self.lock.lock().await),
        }
    }
}

impl Ticket<'_> {
    /// Records the run's result for later arrivals (if shareable) and releases the account.
    pub fn finish(self, result: RunResult) -> RunResult {
        if let Some(number) = self.number {
            let mut finished = self.slot.finished.lock().unwrap_or_else(|p| p.into_inner());
            *finished = Some((number, result.clone()));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str) -> RunResult {
        Ok(Report::new(name, false))
    }

    #[tokio::test]
    async fn a_request_that_arrives_during_a_run_gets_the_next_runs_result() {
        let slot = AccountSlot::default();
        let Turn::Run(first) = slot.enter(true, None).await.unwrap() else {
            panic!()
        };

        // Two requests arrive while the first run is going.
        let (second, third) = tokio::join!(
            async {
                let turn = slot.enter(true, None).await.unwrap();
                match turn {
                    Turn::Run(ticket) => ticket.finish(report("second")),
                    Turn::Shared(result) => result,
                }
            },
            async {
                // Let the first run finish once both late requests are queued.
                tokio::task::yield_now().await;
                let _ = first.finish(report("first"));
                let turn = slot.enter(true, None).await.unwrap();
                match turn {
                    Turn::Run(ticket) => ticket.finish(report("third")),
                    Turn::Shared(result) => result,
                }
            }
        );

        assert_eq!(
            second.unwrap().account,
            "second",
            "it arrived during the first run, so it runs"
        );
        assert_eq!(
            third.unwrap().account,
            "second",
            "the second run started after it arrived"
        );
    }

    #[tokio::test]
    async fn waiting_past_the_deadline_is_an_error() {
        let slot = AccountSlot::default();
        let _held = slot.hold(None).await.unwrap();
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        assert!(matches!(
            slot.enter(true, Some(soon)).await,
            Err(ReconcileError::Busy)
        ));
    }
}
