//! The lower bound on a run's wall time: what Azure's round trips physically allow for the
//! requests the run needed, at the concurrency cap it ran with.
//!
//! Two things bound it, and the larger wins:
//!
//! - **the longest chain of dependent requests**, each a full round trip, taken over every
//!   workspace of the estate: the token; the workspace listing up to the workspace's page and its
//!   datastore pages; then, when it has AccountKey datastores on a regenerated account, their
//!   `listSecrets` (and, no sooner, the keys: `listKeys`, after the account listing's pages up to
//!   the account in a sweep); then, when one of them is stale, the in-place update (`GET`,
//!   `PUT`); then, when the workspace is resynced, `resyncKeys` and its status polls, each after
//!   the `Retry-After` Azure asks for;
//! - **the requests divided by the cap**: a subscription serves at most `cap` requests at a time,
//!   so the `n` requests a correct run needs there (counted from the estate by
//!   [`Needed`](super::needed::Needed), not from what keysync sent, so that a needless request
//!   cannot raise the bound that would show it) take at least `n / cap` round trips. The cap is
//!   the run's own setting, so this part says how well keysync uses the concurrency it is given,
//!   not which cap is best.
//!
//! Datastore pages are as large as the scenario's `datastoresMaxPageSize` allows.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::needed::{Paging, last_segment, pages, subscription_of};

/// What one workspace needs, in the order the listing reaches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkspaceNeeds {
    /// The page of its subscription's workspace listing it is on (1 for the first).
    pub page: usize,
    /// Pages of its datastore listing.
    pub datastore_pages: usize,
    /// Round trips until the keys of the regenerated accounts it has datastores on are known
    /// (the account listing's pages and `listKeys`); `None` when it has none.
    pub keys: Option<usize>,
    /// One of those datastores holds a key that is no longer valid.
    pub stale: bool,
    /// Its default storage is a regenerated account.
    pub resynced: bool,
}

impl WorkspaceNeeds {
    /// The round trips one after the other, token included, with `polls` status polls a resync.
    pub fn round_trips(&self, polls: usize) -> usize {
        let listed = self.page + self.datastore_pages;
        let decided = match self.keys {
            Some(keys) => keys.max(listed + 1),
            None => listed,
        };
        let updated = decided + if self.stale { 2 } else { 0 };
        let resynced = if self.resynced {
            updated + 1 + polls
        } else {
            updated
        };
        1 + resynced
    }
}

/// The longest chain: its round trips and the waits Azure asked for along it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chain {
    pub round_trips: usize,
    pub waits: Duration,
}

impl Chain {
    /// The longest chain over `workspaces` at `latency`, with `polls` status polls per resync,
    /// each after `poll_wait`.
    pub fn longest(
        workspaces: &[WorkspaceNeeds],
        polls: usize,
        poll_wait: Duration,
        latency: Duration,
    ) -> Chain {
        let chain = |ws: &WorkspaceNeeds| Chain {
            round_trips: ws.round_trips(polls),
            waits: if ws.resynced {
                poll_wait * polls as u32
            } else {
                Duration::ZERO
            },
        };
        workspaces
            .iter()
            .map(chain)
            .max_by_key(|c| c.duration(latency))
            .unwrap_or_default()
    }

    pub fn duration(&self, latency: Duration) -> Duration {
        latency * u32::try_from(self.round_trips).unwrap_or(u32::MAX) + self.waits
    }
}

/// The lower bound and what it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowerBound {
    pub chain: Duration,
    pub throughput: Duration,
}

impl LowerBound {
    /// The bound for `chain`, with `per_subscription` needed requests against a cap of `cap` in
    /// flight per subscription, at `latency` per round trip.
    pub fn new(chain: &Chain, per_subscription: &[usize], cap: usize, latency: Duration) -> Self {
        let busiest = per_subscription.iter().copied().max().unwrap_or(0);
        let rounds = busiest as f64 / cap.max(1) as f64;
        LowerBound {
            chain: chain.duration(latency),
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

/// What every workspace of `scenario` (as JSON) needs when key1 of the `regenerated` accounts
/// (by name) was regenerated; `sweep` when the accounts come from the listing rather than an
/// event. Pages are as large as the scenario serves them.
pub fn needs(scenario: &Value, regenerated: &[String], sweep: bool) -> Vec<WorkspaceNeeds> {
    let paging = Paging::of(scenario);
    let keys = keys_round_trips(scenario, paging.accounts, sweep);
    let mut seen_in: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for ws in scenario["workspaces"].as_array().into_iter().flatten() {
        let id = ws["id"].as_str().unwrap_or_default();
        let position = seen_in.entry(subscription_of(id)).or_default();
        let page = *position / paging.workspaces + 1;
        *position += 1;
        let datastore_pages = |n: usize| pages(n, paging.datastores);
        out.push(workspace_needs(
            ws,
            page,
            datastore_pages,
            regenerated,
            &keys,
        ));
    }
    out
}

fn workspace_needs(
    ws: &Value,
    page: usize,
    datastore_pages: impl Fn(usize) -> usize,
    regenerated: &[String],
    keys: &BTreeMap<String, usize>,
) -> WorkspaceNeeds {
    let is_regenerated = |name: &str| regenerated.iter().any(|r| r.eq_ignore_ascii_case(name));
    let datastores = ws["datastores"].as_array().map_or(&[][..], Vec::as_slice);
    let mut needs = WorkspaceNeeds {
        page,
        datastore_pages: datastore_pages(datastores.len()),
        resynced: is_regenerated(last_segment(ws["storageAccount"].as_str())),
        ..WorkspaceNeeds::default()
    };
    for ds in datastores {
        let properties = &ds["properties"];
        let account = properties["accountName"].as_str().unwrap_or_default();
        let by_key = properties["credentials"]["credentialsType"] == "AccountKey";
        if !by_key || !is_regenerated(account) {
            continue;
        }
        let known = keys
            .get(&account.to_ascii_lowercase())
            .copied()
            .unwrap_or(1);
        needs.keys = Some(needs.keys.unwrap_or(0).max(known));
        needs.stale |= ds["secrets"]["keyRef"] == "key1";
    }
    needs
}

/// Round trips until each account's keys are known, by lower-case name: `listKeys` alone for
/// an event (it names the account), after the account listing's pages up to it in a sweep.
fn keys_round_trips(scenario: &Value, page_size: usize, sweep: bool) -> BTreeMap<String, usize> {
    let mut seen_in: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for account in scenario["storageAccounts"].as_array().into_iter().flatten() {
        let id = account["id"].as_str().unwrap_or_default();
        let position = seen_in.entry(subscription_of(id)).or_default();
        let pages = if sweep { *position / page_size + 1 } else { 0 };
        *position += 1;
        out.insert(last_segment(Some(id)).to_ascii_lowercase(), pages + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LATENCY: Duration = Duration::from_millis(25);

    #[test]
    fn a_workspace_waits_for_its_page_its_secrets_its_update_and_its_resync() {
        let ws = WorkspaceNeeds {
            page: 2,
            datastore_pages: 1,
            keys: Some(1),
            stale: true,
            resynced: true,
        };
        // token 1 + (2 pages + 1 + listSecrets 1) + GET and PUT 2 + resync 1 and 2 polls.
        assert_eq!(ws.round_trips(2), 10);
        let idle = WorkspaceNeeds {
            keys: None,
            stale: false,
            resynced: false,
            ..ws
        };
        assert_eq!(idle.round_trips(2), 1 + 3);
        // In a sweep the keys may come later than the secrets.
        let late_keys = WorkspaceNeeds {
            keys: Some(9),
            ..idle
        };
        assert_eq!(late_keys.round_trips(2), 1 + 9);
    }

    #[test]
    fn the_longest_chain_counts_the_waits_of_the_workspace_that_has_them() {
        let resynced = WorkspaceNeeds {
            page: 1,
            datastore_pages: 1,
            keys: Some(1),
            stale: true,
            resynced: true,
        };
        let deep = WorkspaceNeeds {
            page: 9,
            datastore_pages: 1,
            ..WorkspaceNeeds::default()
        };
        let chain = Chain::longest(&[resynced, deep], 2, Duration::from_secs(1), LATENCY);
        assert_eq!(chain.round_trips, 9);
        assert_eq!(chain.waits, Duration::from_secs(2));
        let no_wait = Chain::longest(&[resynced, deep], 2, Duration::ZERO, LATENCY);
        assert_eq!(no_wait.round_trips, 11);
    }

    #[test]
    fn many_requests_are_bound_by_the_cap_and_few_by_the_chain() {
        let chain = Chain {
            round_trips: 4,
            waits: Duration::ZERO,
        };
        let many = LowerBound::new(&chain, &[640, 10], 16, LATENCY);
        assert_eq!(many.value(), Duration::from_secs(1));
        assert_eq!(many.bound_by(), "throughput");
        let few = LowerBound::new(&chain, &[16], 16, LATENCY);
        assert_eq!(few.value(), LATENCY * 4);
        assert_eq!(few.bound_by(), "chain");
    }

    #[test]
    fn needs_are_read_from_the_scenario_page_by_page() {
        let sub = "/subscriptions/s/resourceGroups/g/providers";
        let account = |n: &str| format!("{sub}/Microsoft.Storage/storageAccounts/{n}");
        let ds = |account: &str, key: &str| json!({"properties": {"accountName": account, "credentials": {"credentialsType": "AccountKey"}}, "secrets": {"keyRef": key}});
        let workspace = |n: usize, home: &str, datastores: Vec<Value>| json!({"id": format!("{sub}/Microsoft.MachineLearningServices/workspaces/w{n}"), "storageAccount": account(home), "datastores": datastores});
        let scenario = json!({
            "workspacesPageSize": 2,
            "storageAccountsPageSize": 1,
            "datastoresMaxPageSize": 1,
            "storageAccounts": [{"id": account("a")}, {"id": account("b")}],
            "workspaces": [
                workspace(0, "a", vec![ds("a", "key1"), ds("b", "key2")]),
                workspace(1, "b", vec![ds("a", "key2")]),
                workspace(2, "b", vec![ds("b", "key1")]),
            ]
        });
        let event = needs(&scenario, &["A".to_string()], false);
        assert_eq!(
            event,
            vec![
                // Two datastores at one a page.
                WorkspaceNeeds {
                    page: 1,
                    datastore_pages: 2,
                    keys: Some(1),
                    stale: true,
                    resynced: true
                },
                WorkspaceNeeds {
                    page: 1,
                    datastore_pages: 1,
                    keys: Some(1),
                    stale: false,
                    resynced: false
                },
                WorkspaceNeeds {
                    page: 2,
                    datastore_pages: 1,
                    ..WorkspaceNeeds::default()
                },
            ]
        );
        // In a sweep, b's keys come after the second page of the account listing.
        let sweep = needs(&scenario, &["a".into(), "b".into()], true);
        assert_eq!(sweep[2].keys, Some(3));
        assert!(sweep[2].resynced && sweep[2].stale);
    }
}
