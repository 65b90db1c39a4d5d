//! The requests any correct run must send on the estate, counted from the estate itself rather
//! than from what keysync sent, so that a request keysync need not make shows as a surplus next
//! to this count instead of raising the lower bound that hides it.
//!
//! A run needs, per subscription in scope: the workspace listing's pages (and, in a sweep, the
//! storage account listing's); the datastore listing's pages of every workspace; for each account
//! it reconciles, the account's properties (a `GET` on the event path; a sweep has them from the
//! listing) and one `listKeys`; `listSecrets` for each AccountKey datastore on those accounts;
//! `GET` and `PUT` for each one whose key was regenerated; `resyncKeys` and its status polls for
//! each workspace whose default storage was regenerated. And one token for the whole run.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

const LIST_WORKSPACES: &str = "Workspaces_ListBySubscription";
const LIST_ACCOUNTS: &str = "StorageAccounts_List";
const GET_ACCOUNT: &str = "StorageAccounts_GetProperties";
const LIST_KEYS: &str = "StorageAccounts_ListKeys";
const LIST_DATASTORES: &str = "Datastores_List";
const LIST_SECRETS: &str = "Datastores_ListSecrets";
const GET_DATASTORE: &str = "Datastores_Get";
const PUT_DATASTORE: &str = "Datastores_CreateOrUpdate";
const RESYNC: &str = "Workspaces_ResyncKeys";
const RESYNC_STATUS: &str = "Workspaces_ResyncKeysStatus";

/// The page sizes the emulator serves the scenario with (its defaults when the scenario names
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub workspaces: usize,
    pub accounts: usize,
    /// `datastoresMaxPageSize`: the most datastores a page holds, the largest page the API
    /// allows.
    pub datastores: usize,
}

impl Paging {
    pub fn of(scenario: &Value) -> Paging {
        let size = |name: &str, default: u64| {
            let size = scenario[name].as_u64().unwrap_or(default).max(1);
            usize::try_from(size).unwrap_or(usize::MAX)
        };
        Paging {
            workspaces: size("workspacesPageSize", 20),
            accounts: size("storageAccountsPageSize", 100),
            datastores: size("datastoresMaxPageSize", 100),
        }
    }
}

/// The pages a listing of `items` takes at `size` a page: one at least, even when empty.
pub fn pages(items: usize, size: usize) -> usize {
    items.div_ceil(size.max(1)).max(1)
}

/// The status requests of one resync: the status says "still running" `resyncPolls` times, then
/// "done".
pub fn status_polls(scenario: &Value) -> usize {
    let running = scenario["resyncPolls"].as_u64().unwrap_or(1);
    usize::try_from(running)
        .unwrap_or(usize::MAX)
        .saturating_add(1)
}

/// What a correct run needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needed {
    /// ARM requests by lower-case subscription id, then by operation.
    by_subscription: BTreeMap<String, BTreeMap<&'static str, usize>>,
    /// Managed identity tokens: one for the whole run.
    pub tokens: u64,
    /// Storage requests the storage checks send when they are on (the default): one per
    /// AccountKey and SAS datastore on an account the run reconciles.
    pub storage_checks: usize,
}

impl Needed {
    /// What a run needs on `scenario` (as JSON) when key1 of the `regenerated` accounts (by
    /// name) was regenerated; `sweep` when the accounts come from the listing (every account in
    /// use is reconciled) rather than from an event (only its account is).
    pub fn of(scenario: &Value, regenerated: &[String], sweep: bool) -> Needed {
        let estate = Estate::read(scenario, regenerated, sweep);
        let mut needed = Needed {
            tokens: 1,
            ..Needed::default()
        };
        needed.listings(&estate, sweep);
        needed.accounts(&estate, sweep);
        for ws in &estate.workspaces {
            needed.workspace(&estate, ws);
        }
        needed
    }

    fn add(&mut self, subscription: &str, operation: &'static str, n: usize) {
        if n > 0 {
            let counts = self.by_subscription.entry(subscription.into()).or_default();
            *counts.entry(operation).or_default() += n;
        }
    }

    fn listings(&mut self, estate: &Estate, sweep: bool) {
        for subscription in &estate.subscriptions {
            let workspaces = in_subscription(estate.workspaces.iter().map(|w| &w.id), subscription);
            let pages_of_workspaces = pages(workspaces, estate.paging.workspaces);
            self.add(subscription, LIST_WORKSPACES, pages_of_workspaces);
            if sweep {
                let accounts = in_subscription(estate.accounts.values(), subscription);
                let pages_of_accounts = pages(accounts, estate.paging.accounts);
                self.add(subscription, LIST_ACCOUNTS, pages_of_accounts);
            }
        }
    }

    fn accounts(&mut self, estate: &Estate, sweep: bool) {
        for name in &estate.reconciled {
            let Some(id) = estate.accounts.get(name) else {
                continue;
            };
            let subscription = subscription_of(id);
            self.add(&subscription, GET_ACCOUNT, usize::from(!sweep));
            self.add(&subscription, LIST_KEYS, 1);
        }
    }

    fn workspace(&mut self, estate: &Estate, ws: &Workspace) {
        let subscription = subscription_of(&ws.id);
        let add = |needed: &mut Needed, operation, n| needed.add(&subscription, operation, n);
        add(
            self,
            LIST_DATASTORES,
            pages(ws.datastores.len(), estate.paging.datastores),
        );
        if estate.regenerated.contains(&ws.home) {
            add(self, RESYNC, 1);
            add(self, RESYNC_STATUS, estate.polls);
        }
        for ds in &ws.datastores {
            if !estate.reconciled.contains(&ds.account) {
                continue;
            }
            match ds.credentials.as_str() {
                "AccountKey" => {
                    let stale = ds.holds_key1 && estate.regenerated.contains(&ds.account);
                    add(self, LIST_SECRETS, 1);
                    add(self, GET_DATASTORE, usize::from(stale));
                    add(self, PUT_DATASTORE, usize::from(stale));
                    self.storage_checks += 1;
                }
                "Sas" => self.storage_checks += 1,
                _ => {}
            }
        }
    }

    /// ARM requests by operation, over every subscription.
    pub fn by_operation(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (operation, n) in self.by_subscription.values().flatten() {
            *out.entry(operation.to_string()).or_default() += n;
        }
        out
    }

    /// ARM requests per subscription, busiest first.
    pub fn per_subscription(&self) -> Vec<usize> {
        let mut counts: Vec<usize> = self
            .by_subscription
            .values()
            .map(|ops| ops.values().sum())
            .collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts
    }

    pub fn total(&self) -> usize {
        self.per_subscription().iter().sum()
    }

    /// The operations `made` (requests by operation) holds more (positive) or fewer (negative)
    /// of than needed; empty when they are the same.
    pub fn surplus(&self, made: &BTreeMap<String, usize>) -> BTreeMap<String, i64> {
        let needed = self.by_operation();
        let signed = |n: Option<&usize>| n.map_or(0, |&n| i64::try_from(n).unwrap_or(i64::MAX));
        needed
            .keys()
            .chain(made.keys())
            .map(|op| (op.clone(), signed(made.get(op)) - signed(needed.get(op))))
            .filter(|(_, difference)| *difference != 0)
            .collect()
    }
}

/// The parts of the scenario the count reads, names and ids in lower case.
struct Estate {
    paging: Paging,
    polls: usize,
    subscriptions: BTreeSet<String>,
    /// Account ids by name.
    accounts: BTreeMap<String, String>,
    regenerated: BTreeSet<String>,
    /// The accounts the run reconciles, by name.
    reconciled: BTreeSet<String>,
    workspaces: Vec<Workspace>,
}

struct Workspace {
    id: String,
    /// The name of its default storage account.
    home: String,
    datastores: Vec<Datastore>,
}

struct Datastore {
    account: String,
    credentials: String,
    holds_key1: bool,
}

impl Estate {
    fn read(scenario: &Value, regenerated: &[String], sweep: bool) -> Estate {
        let list = |name: &str| scenario[name].as_array().map_or(&[][..], Vec::as_slice);
        let accounts: BTreeMap<String, String> = list("storageAccounts")
            .iter()
            .map(|a| a["id"].as_str().unwrap_or_default().to_ascii_lowercase())
            .map(|id| (last_segment(Some(&id)).to_string(), id))
            .collect();
        let workspaces: Vec<Workspace> = list("workspaces").iter().map(Workspace::read).collect();
        let regenerated: BTreeSet<String> =
            regenerated.iter().map(|n| n.to_ascii_lowercase()).collect();
        let reconciled = if sweep {
            in_use(&workspaces, &accounts)
        } else {
            regenerated.clone()
        };
        let subscriptions = accounts
            .values()
            .chain(workspaces.iter().map(|w| &w.id))
            .map(|id| subscription_of(id))
            .collect();
        Estate {
            paging: Paging::of(scenario),
            polls: status_polls(scenario),
            subscriptions,
            accounts,
            regenerated,
            reconciled,
            workspaces,
        }
    }
}

impl Workspace {
    fn read(ws: &Value) -> Workspace {
        let home = last_segment(ws["storageAccount"].as_str()).to_ascii_lowercase();
        let datastores = ws["datastores"].as_array().map_or(&[][..], Vec::as_slice);
        Workspace {
            id: ws["id"].as_str().unwrap_or_default().to_ascii_lowercase(),
            home,
            datastores: datastores.iter().map(Datastore::read).collect(),
        }
    }
}

impl Datastore {
    fn read(ds: &Value) -> Datastore {
        let properties = &ds["properties"];
        Datastore {
            account: properties["accountName"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase(),
            credentials: properties["credentials"]["credentialsType"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            holds_key1: ds["secrets"]["keyRef"] == "key1",
        }
    }
}

/// The accounts of the estate that a workspace has as default storage or a datastore is on: those
/// a sweep reconciles.
fn in_use(workspaces: &[Workspace], accounts: &BTreeMap<String, String>) -> BTreeSet<String> {
    workspaces
        .iter()
        .flat_map(|ws| std::iter::once(&ws.home).chain(ws.datastores.iter().map(|d| &d.account)))
        .filter(|name| accounts.contains_key(*name))
        .cloned()
        .collect()
}

/// How many of `ids` are in `subscription`.
fn in_subscription<'a>(ids: impl Iterator<Item = &'a String>, subscription: &str) -> usize {
    ids.filter(|id| subscription_of(id) == subscription).count()
}

/// The lower-case subscription id of an ARM id.
pub fn subscription_of(id: &str) -> String {
    id.split('/')
        .nth(2)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The last segment of an ARM id: the resource's name.
pub fn last_segment(id: Option<&str>) -> &str {
    id.and_then(|id| id.rsplit('/').next()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(sub: &str, kind: &str, name: &str) -> String {
        format!("/subscriptions/{sub}/resourceGroups/g/providers/{kind}/{name}")
    }

    fn account(sub: &str, name: &str) -> String {
        id(sub, "Microsoft.Storage/storageAccounts", name)
    }

    fn ds(account: &str, credentials: &str, key: &str) -> Value {
        json!({
            "properties": {"accountName": account, "credentials": {"credentialsType": credentials}},
            "secrets": {"keyRef": key},
        })
    }

    fn workspace(sub: &str, n: usize, home: &str, datastores: Vec<Value>) -> Value {
        let ws = id(
            sub,
            "Microsoft.MachineLearningServices/workspaces",
            &format!("w{n}"),
        );
        json!({"id": ws, "storageAccount": account(sub, home), "datastores": datastores})
    }

    /// Two subscriptions: `s` holds accounts a and b and three workspaces, `t` account c and one.
    fn scenario() -> Value {
        json!({
            "workspacesPageSize": 2,
            "datastoresMaxPageSize": 2,
            "resyncPolls": 2,
            "storageAccounts": [{"id": account("s", "a")}, {"id": account("s", "b")}, {"id": account("t", "c")}],
            "workspaces": [
                workspace("s", 0, "a", vec![ds("a", "AccountKey", "key1"), ds("A", "AccountKey", "key2"), ds("a", "Sas", "")]),
                workspace("s", 1, "b", vec![ds("b", "AccountKey", "key1")]),
                workspace("s", 2, "b", vec![]),
                workspace("t", 3, "c", vec![ds("a", "AccountKey", "key1"), ds("c", "None", "")]),
            ]
        })
    }

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn an_event_needs_its_account_the_listings_and_the_stale_datastores_on_it() {
        let needed = Needed::of(&scenario(), &["A".to_string()], false);
        let expected = counts(&[
            // Two pages of s's three workspaces, one of t's.
            (LIST_WORKSPACES, 3),
            (GET_ACCOUNT, 1),
            (LIST_KEYS, 1),
            // w0's three datastores take two pages at two a page; the empty w2 still one.
            (LIST_DATASTORES, 5),
            (LIST_SECRETS, 3),
            (GET_DATASTORE, 2),
            (PUT_DATASTORE, 2),
            (RESYNC, 1),
            (RESYNC_STATUS, 3),
        ]);
        assert_eq!(needed.by_operation(), expected);
        assert_eq!(needed.tokens, 1);
        // The AccountKey and SAS datastores on a.
        assert_eq!(needed.storage_checks, 4);
        // s: 2 listing pages, 2 for a, 4 datastore pages, 4 for w0's datastores on a and 4 for
        // its resync; t: 1 listing page, 1 datastore page, 3 for w3's datastore on a.
        assert_eq!(needed.per_subscription(), vec![16, 5]);
        assert_eq!(needed.total(), 21);
    }

    #[test]
    fn a_sweep_lists_the_accounts_and_reconciles_every_one_in_use_without_a_get() {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let needed = Needed::of(&scenario(), &names, true).by_operation();
        assert_eq!(needed[LIST_ACCOUNTS], 2);
        assert_eq!(needed.get(GET_ACCOUNT), None);
        assert_eq!(needed[LIST_KEYS], 3);
        assert_eq!(needed[LIST_SECRETS], 4);
        assert_eq!(needed[PUT_DATASTORE], 3);
        assert_eq!(needed[RESYNC], 4);
        // A sweep reads every AccountKey datastore, though only a was regenerated.
        let only_a = Needed::of(&scenario(), &["a".to_string()], true).by_operation();
        assert_eq!(only_a[LIST_SECRETS], 4);
        assert_eq!(only_a[PUT_DATASTORE], 2);
        assert_eq!(only_a[RESYNC], 1);
    }

    #[test]
    fn a_surplus_names_each_operation_by_how_many_more_or_fewer_were_made() {
        let needed = Needed::of(&scenario(), &["a".to_string()], false);
        let mut made = needed.by_operation();
        assert!(needed.surplus(&made).is_empty());
        *made.get_mut(GET_DATASTORE).unwrap() += 3;
        made.remove(RESYNC);
        made.insert("Workspaces_Get".into(), 1);
        let expected: BTreeMap<String, i64> =
            [(GET_DATASTORE, 3), (RESYNC, -1), ("Workspaces_Get", 1)]
                .map(|(k, v)| (k.to_string(), v))
                .into();
        assert_eq!(needed.surplus(&made), expected);
    }

    #[test]
    fn paging_takes_the_scenarios_sizes_and_the_emulators_defaults() {
        assert_eq!(
            Paging::of(&scenario()),
            Paging {
                workspaces: 2,
                accounts: 100,
                datastores: 2
            }
        );
        assert_eq!(pages(0, 100), 1);
        assert_eq!(pages(100, 100), 1);
        assert_eq!(pages(101, 100), 2);
        assert_eq!(status_polls(&json!({})), 2);
    }
}
