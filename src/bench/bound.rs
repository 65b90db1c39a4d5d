//! The lower bound on a run's wall time: what Azure's round trips physically allow for the
//! requests the run actually needed, whatever the client does.
//!
//! Two things bound it, and the larger wins:
//!
//! - **the longest chain of dependent requests**, each a full round trip: the token; then the
//!   keys (`listKeys`, after the account listing's pages in a sweep) alongside the datastores'
//!   stored secrets (the workspace list's pages, one workspace's datastore pages, `listSecrets`);
//!   then, when something was stale, the in-place update (`GET`, `PUT`); then, when a workspace
//!   was resynced, `resyncKeys` and its status polls, each after the `Retry-After` Azure asked
//!   for;
//! - **the requests divided by the concurrency cap**: a subscription serves at most `cap`
//!   requests of keysync's at a time, so its `n` requests take at least `n / cap` round trips.

use std::time::Duration;

/// The dependent round trips of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chain {
    /// Pages of the storage account listing before `listKeys` can be sent (0 when the account
    /// is known, as for an event).
    pub account_pages: usize,
    /// Pages of the longest workspace listing.
    pub workspace_pages: usize,
    /// Pages of the longest datastore listing of one workspace.
    pub datastore_pages: usize,
    /// Whether any datastore was updated (a `GET` and a `PUT`).
    pub updated: bool,
    /// Status polls of one resync, when a workspace was resynced.
    pub resync_polls: Option<usize>,
    /// The `Retry-After` Azure asks for before each status poll.
    pub poll_wait: Duration,
}

impl Chain {
    /// The waits Azure asks for along the chain: one `Retry-After` before each status poll.
    pub fn waits(&self) -> Duration {
        let polls = self.resync_polls.unwrap_or(0);
        self.poll_wait * u32::try_from(polls).unwrap_or(u32::MAX)
    }

    /// The number of round trips one after the other.
    pub fn round_trips(&self) -> usize {
        let token = 1;
        let keys = self.account_pages + 1;
        let secrets = self.workspace_pages + self.datastore_pages + 1;
        let update = if self.updated { 2 } else { 0 };
        let resync = self.resync_polls.map_or(0, |polls| 1 + polls);
        token + keys.max(secrets) + update + resync
    }
}

/// The lower bound and what it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowerBound {
    pub chain: Duration,
    pub throughput: Duration,
}

impl LowerBound {
    /// The bound for `chain`, with `per_subscription` requests against a cap of `cap` in flight
    /// per subscription, at `latency` per round trip.
    pub fn new(chain: &Chain, per_subscription: &[usize], cap: usize, latency: Duration) -> Self {
        let busiest = per_subscription.iter().copied().max().unwrap_or(0);
        let rounds = busiest as f64 / cap.max(1) as f64;
        LowerBound {
            chain: latency * u32::try_from(chain.round_trips()).unwrap_or(u32::MAX) + chain.waits(),
            throughput: latency.mul_f64(rounds),
        }
    }

    /// The larger of the two.
    pub fn value(&self) -> Duration {
        self.chain.max(self.throughput)
    }

    /// Which of the two decides the bound.
    pub fn bound_by(&self) -> &'static str {
        if self.chain >= self.throughput {
            "chain"
        } else {
            "throughput"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATENCY: Duration = Duration::from_millis(25);

    #[test]
    fn an_event_chain_counts_token_listings_secrets_update_and_resync() {
        let chain = Chain {
            account_pages: 0,
            workspace_pages: 5,
            datastore_pages: 1,
            updated: true,
            resync_polls: Some(2),
            poll_wait: Duration::from_secs(1),
        };
        // token 1 + (5 + 1 + listSecrets 1) + GET and PUT 2 + resync 1 and 2 polls.
        assert_eq!(chain.round_trips(), 13);
        let bound = LowerBound::new(&chain, &[13], 100, LATENCY);
        assert_eq!(bound.chain, LATENCY * 13 + Duration::from_secs(2));
    }

    #[test]
    fn a_sweep_waits_for_whichever_listing_is_longer() {
        let chain = Chain {
            account_pages: 9,
            workspace_pages: 2,
            datastore_pages: 1,
            updated: false,
            resync_polls: None,
            poll_wait: Duration::ZERO,
        };
        assert_eq!(chain.round_trips(), 1 + 10);
    }

    #[test]
    fn many_requests_are_bound_by_the_cap_and_few_by_the_chain() {
        let chain = Chain {
            workspace_pages: 1,
            datastore_pages: 1,
            ..Chain::default()
        };
        let many = LowerBound::new(&chain, &[640, 10], 16, LATENCY);
        assert_eq!(many.value(), Duration::from_secs(1));
        assert_eq!(many.bound_by(), "throughput");
        let few = LowerBound::new(&chain, &[16], 16, LATENCY);
        assert_eq!(few.value(), LATENCY * 4);
        assert_eq!(few.bound_by(), "chain");
    }
}
