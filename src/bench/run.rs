//! One measured run: a fresh emulator holding the estate, the real `keysync serve` behind the
//! local Functions host, one trigger (an Event Grid event, or a timer tick that sweeps), and what
//! it took: wall time, ARM requests by operation, whether the estate converged, and memory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::estate::{self, Shape};
use super::footprint::{self, Memory};
use crate::emulator::{EmulatorOptions, RequestRecord, RunningEmulator};
use crate::host::{BindingEncoding, HostOptions, LocalHost};

/// The function an Event Grid event goes to, and the timer that sweeps.
const EVENT_FUNCTION: &str = "KeyRegenerated";
const TIMER_FUNCTION: &str = "RotateKeys";
/// The longest a measured invocation may take before the run is abandoned.
const INVOCATION_LIMIT: Duration = Duration::from_secs(3600);

/// What a run reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// key1 of the busiest account is regenerated; the event reaches `KeyRegenerated`.
    Event,
    /// key1 of every account is regenerated with no event delivered; `RotateKeys` sweeps.
    Sweep,
}

/// What every run shares.
#[derive(Debug, Clone)]
pub struct Setup {
    pub shape: Shape,
    pub latency: Duration,
    /// The `Retry-After` of a resync and its status polls, in seconds.
    pub retry_after: u64,
    /// The most datastores in one page of a datastore listing.
    pub datastores_page: usize,
    /// The folder with `host.json` and the function folders.
    pub app_root: PathBuf,
    /// The `keysync` binary the host starts.
    pub executable: PathBuf,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// From the invocation's start to keysync's answer.
    pub wall: Duration,
    /// The ARM requests keysync sent, in order (the regenerations that set the run up left out).
    pub requests: Vec<RequestRecord>,
    /// Managed identity tokens keysync asked for.
    pub tokens: u64,
    /// The handler answered 2xx.
    pub succeeded: bool,
    pub convergence: Convergence,
    /// The handler's memory before the trigger and after it.
    pub idle: Option<Memory>,
    pub after: Option<Memory>,
    /// The emulator's own time per ARM request, the added latency left out.
    pub emulator_overhead: Option<Duration>,
    /// The size of the handler's answer to the host (the report travels in it).
    pub reply_bytes: usize,
    /// Lines the handler printed during the run (the host ships each to the logs).
    pub log_lines: usize,
    /// Datastore fields besides the credentials that the run changed, with how many datastores
    /// each changed in (see [`field_changes`]).
    pub field_changes: BTreeMap<String, usize>,
    /// Datastores whose still-valid key was overwritten (see [`needless_writes`]).
    pub needless_writes: usize,
}

impl Measured {
    /// Requests by operation name.
    pub fn by_operation(&self) -> BTreeMap<String, usize> {
        by_operation(&self.requests)
    }

    /// Requests per subscription, busiest first.
    pub fn per_subscription(&self) -> Vec<usize> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for request in &self.requests {
            let subscription = request.path.split('/').nth(2).unwrap_or_default();
            *counts.entry(subscription.to_ascii_lowercase()).or_default() += 1;
        }
        let mut counts: Vec<usize> = counts.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts
    }

    /// The number of requests for `operation`.
    pub fn count(&self, operation: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.operation == operation)
            .count()
    }
}

/// How many of `requests` each operation had.
pub fn by_operation(requests: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts.entry(request.operation.clone()).or_default() += 1;
    }
    counts
}

/// Whether the run left the estate repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Convergence {
    /// AccountKey datastores on the regenerated accounts.
    pub key_datastores: usize,
    /// Of those, the ones holding neither current key afterwards.
    pub invalid: usize,
    /// Workspaces whose default storage is a regenerated account.
    pub workspaces: usize,
    /// Of those, the ones whose cached keys are still old.
    pub unsynced: usize,
}

impl Convergence {
    pub fn converged(&self) -> bool {
        self.invalid == 0 && self.unsynced == 0
    }
}

/// Runs keysync on `path` with `concurrency` ARM requests in flight per subscription.
pub async fn keysync(setup: &Setup, path: Path, concurrency: usize) -> anyhow::Result<Measured> {
    let emulator = start_emulator(setup).await?;
    let accounts = regenerated_accounts(setup, path);
    if path == Path::Sweep {
        // Lost events: the sweep has to find every stale datastore by itself.
        regenerate(&emulator, &accounts).await?;
    }
    let host = start_host(setup, &emulator, concurrency).await?;
    let before = Snapshot::take(&emulator, &host);
    let record = match path {
        Path::Event => {
            emulator.set_event_webhook(Some(host.event_grid_webhook(EVENT_FUNCTION)));
            let mut finished = host.subscribe();
            regenerate(&emulator, &accounts).await?;
            crate::host::next_invocation(&mut finished, EVENT_FUNCTION, INVOCATION_LIMIT).await?
        }
        Path::Sweep => host.tick(TIMER_FUNCTION, false).await?,
    };
    let after = pid_memory(&host);
    let log_lines = settled_output(&host).await.saturating_sub(before.lines);
    // The event path's own regeneration is the run's first request; keysync's come after it.
    let ours = usize::from(path == Path::Event);
    let after_state = emulator.state();
    let measured = Measured {
        wall: record.elapsed,
        requests: requests_since(&emulator, before.requests, ours),
        emulator_overhead: overhead_since(&emulator, before.overhead),
        tokens: tokens(&after_state).saturating_sub(tokens(&before.state)),
        succeeded: record.succeeded(),
        reply_bytes: record.body.to_string().len(),
        log_lines,
        convergence: convergence(&after_state, &accounts),
        field_changes: field_changes(&before.state, &after_state),
        needless_writes: needless_writes(&before.state, &after_state, &accounts),
        idle: before.memory,
        after,
    };
    let _ = host.shutdown().await;
    emulator.shutdown().await;
    Ok(measured)
}

/// What the emulator and the handler looked like just before the trigger.
struct Snapshot {
    state: Value,
    requests: usize,
    lines: usize,
    overhead: (u64, Duration),
    memory: Option<Memory>,
}

impl Snapshot {
    fn take(emulator: &RunningEmulator, host: &LocalHost) -> Snapshot {
        Snapshot {
            state: emulator.state(),
            requests: emulator.requests().len(),
            lines: host.handler_output().len(),
            overhead: emulator.overhead(),
            memory: pid_memory(host),
        }
    }
}

fn pid_memory(host: &LocalHost) -> Option<Memory> {
    host.handler_pid().and_then(footprint::memory)
}

/// The number of lines the handler has printed, once its output has stopped arriving: the
/// host reads the pipes on their own tasks, so the last lines can land after the answer.
async fn settled_output(host: &LocalHost) -> usize {
    let mut lines = host.handler_output().len();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = host.handler_output().len();
        if now == lines {
            break;
        }
        lines = now;
    }
    lines
}

impl Setup {
    /// The estate as an emulator scenario, with the setup's latency, `Retry-After` and pages.
    pub fn scenario(&self) -> anyhow::Result<crate::emulator::Scenario> {
        estate::scenario(&self.shape, self.serving())
    }

    pub fn serving(&self) -> estate::Serving {
        estate::Serving {
            latency_ms: u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX),
            retry_after: self.retry_after,
            datastores_page: self.datastores_page,
        }
    }
}

/// The emulator, serving the estate with the setup's latency.
pub async fn start_emulator(setup: &Setup) -> anyhow::Result<RunningEmulator> {
    RunningEmulator::start(setup.scenario()?, EmulatorOptions::default()).await
}

/// The ids of the accounts whose key1 the run regenerates.
pub fn regenerated_accounts(setup: &Setup, path: Path) -> Vec<String> {
    match path {
        Path::Event => vec![estate::account_id(&setup.shape, 0)],
        Path::Sweep => (0..setup.shape.accounts)
            .map(|a| estate::account_id(&setup.shape, a))
            .collect(),
    }
}

/// The settings of the handler: the emulator's, plus what keeps the measurement about ARM.
pub fn handler_env(emulator: &RunningEmulator, concurrency: usize) -> Vec<(String, String)> {
    let mut env = emulator.env();
    env.extend(
        [
            ("KEYSYNC_MAX_CONCURRENCY", concurrency.to_string()),
            // The estate's storage endpoints are fictional; checking credentials against them
            // would time the network stack's failures, not keysync.
            ("KEYSYNC_VERIFY", "false".to_string()),
            // One call at a time takes far longer than Event Grid's 30 s; the deadlines would cut
            // the sequential runs short, and the comparison needs them complete.
            ("KEYSYNC_EVENT_DEADLINE_SECS", "600".to_string()),
            ("KEYSYNC_TIMER_DEADLINE_SECS", "3600".to_string()),
            ("RUST_LOG", "info".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env
}

async fn start_host(
    setup: &Setup,
    emulator: &RunningEmulator,
    concurrency: usize,
) -> anyhow::Result<LocalHost> {
    LocalHost::start(HostOptions {
        app_root: setup.app_root.clone(),
        executable: Some(setup.executable.clone()),
        env: handler_env(emulator, concurrency),
        env_remove: Vec::new(),
        echo_output: false,
        encoding: BindingEncoding::Object,
        listen: ([127, 0, 0, 1], 0).into(),
        function_key: None,
    })
    .await
    .context("starting the handler behind the local host")
}

/// Regenerates key1 of every account in `accounts` as a portal user would, all at once.
pub async fn regenerate(emulator: &RunningEmulator, accounts: &[String]) -> anyhow::Result<()> {
    let calls = accounts
        .iter()
        .map(|account| emulator.regenerate_as_user(account, "key1"));
    futures::future::try_join_all(calls).await?;
    Ok(())
}

/// The ARM requests after the first `mark`, without the first `ours` regenerations among them
/// (the benchmark's own, which set the run up).
pub fn requests_since(emulator: &RunningEmulator, mark: usize, ours: usize) -> Vec<RequestRecord> {
    let mut ours = ours;
    let mut requests = emulator.requests();
    requests.drain(..mark.min(requests.len()));
    requests.retain(|r| {
        let setup = ours > 0 && r.operation == "StorageAccounts_RegenerateKey";
        ours -= usize::from(setup);
        !setup
    });
    requests
}

fn tokens(state: &Value) -> u64 {
    state["managedIdentityTokensIssued"].as_u64().unwrap_or(0)
}

fn overhead_since(emulator: &RunningEmulator, before: (u64, Duration)) -> Option<Duration> {
    let (requests, spent) = emulator.overhead();
    let requests = u32::try_from(requests.checked_sub(before.0)?).ok()?;
    (requests > 0).then(|| spent.saturating_sub(before.1) / requests)
}

/// Reads the emulator's state: does every AccountKey datastore on `accounts` hold a current key,
/// and has every workspace on them been resynced?
pub fn convergence(state: &Value, accounts: &[String]) -> Convergence {
    let keys = current_keys(state, accounts);
    let mut found = Convergence::default();
    for ws in state["workspaces"].as_array().into_iter().flatten() {
        let home = ws["storageAccount"].as_str().unwrap_or_default();
        if accounts.iter().any(|a| a.eq_ignore_ascii_case(home)) {
            found.workspaces += 1;
            found.unsynced += usize::from(ws["storageKeysInSync"] != true);
        }
        for ds in ws["datastores"].as_array().into_iter().flatten() {
            let properties = &ds["resource"]["properties"];
            let account = properties["accountName"].as_str().unwrap_or_default();
            let Some(current) = keys.get(&account.to_ascii_lowercase()) else {
                continue;
            };
            if properties["credentials"]["credentialsType"] != "AccountKey" {
                continue;
            }
            found.key_datastores += 1;
            let held = &ds["secrets"]["key"];
            found.invalid += usize::from(!current.contains(held));
        }
    }
    found
}

/// Every change a run made to a datastore other than to its secret (which is meant to change)
/// and `systemData` (which Azure stamps): `properties.<name> removed`, `... changed`, `...
/// added`, `datastore deleted` or `datastore added`, each with the number of datastores it
/// happened to.
pub fn field_changes(before: &Value, after: &Value) -> BTreeMap<String, usize> {
    let mut changes: BTreeMap<String, usize> = BTreeMap::new();
    let before = resources(before);
    let after = resources(after);
    for (id, old) in &before {
        let Some(new) = after.get(id) else {
            *changes.entry("datastore deleted".to_string()).or_default() += 1;
            continue;
        };
        for change in differences(old, new) {
            *changes.entry(change).or_default() += 1;
        }
    }
    let added = after.keys().filter(|id| !before.contains_key(*id)).count();
    if added > 0 {
        changes.insert("datastore added".to_string(), added);
    }
    changes
}

/// Each datastore resource by lower-case id, without `systemData` and the secret.
fn resources(state: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for ws in state["workspaces"].as_array().into_iter().flatten() {
        for ds in ws["datastores"].as_array().into_iter().flatten() {
            let mut resource = ds["resource"].clone();
            if let Some(map) = resource.as_object_mut() {
                map.remove("systemData");
            }
            let credentials = resource
                .get_mut("properties")
                .and_then(|p| p.get_mut("credentials"))
                .and_then(Value::as_object_mut);
            if let Some(credentials) = credentials {
                credentials.remove("secrets");
            }
            let id = ds["id"].as_str().unwrap_or_default().to_ascii_lowercase();
            out.insert(id, resource);
        }
    }
    out
}

/// The fields (top level, and one level into `properties`) that differ between two resources.
fn differences(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let fields = |v: &Value| {
        let mut fields: Vec<(String, Value)> = Vec::new();
        for (k, val) in v.as_object().unwrap_or(&empty) {
            match (k.as_str(), val.as_object()) {
                ("properties", Some(props)) => fields.extend(
                    props
                        .iter()
                        .map(|(p, pv)| (format!("properties.{p}"), pv.clone())),
                ),
                _ => fields.push((k.clone(), val.clone())),
            }
        }
        fields.into_iter().collect::<BTreeMap<String, Value>>()
    };
    let (old, new) = (fields(old), fields(new));
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| match (old.get(name), new.get(name)) {
            (Some(_), None) => Some(format!("{name} removed")),
            (None, Some(_)) => Some(format!("{name} added")),
            (Some(a), Some(b)) if a != b => Some(format!("{name} changed")),
            _ => None,
        })
        .collect()
}

/// AccountKey datastores on `accounts` whose key was still valid at the end and was rewritten
/// anyway: writes a careful run does not make (and, on a real estate, a moment in which a
/// consumer may read a half-updated datastore for nothing).
pub fn needless_writes(before: &Value, after: &Value, accounts: &[String]) -> usize {
    let keys = current_keys(after, accounts);
    let secrets_after: BTreeMap<String, &Value> = key_datastores(after)
        .map(|(id, _, secret)| (id, secret))
        .collect();
    key_datastores(before)
        .filter(|(id, account, secret)| {
            let valid = keys.get(account).is_some_and(|k| k.contains(secret));
            valid && secrets_after.get(id).is_some_and(|now| now != secret)
        })
        .count()
}

/// Every AccountKey datastore: its lower-case id, lower-case account name and stored key.
fn key_datastores(state: &Value) -> impl Iterator<Item = (String, String, &Value)> {
    let workspaces = state["workspaces"].as_array().into_iter().flatten();
    workspaces
        .flat_map(|ws| ws["datastores"].as_array().into_iter().flatten())
        .filter(|ds| ds["resource"]["properties"]["credentials"]["credentialsType"] == "AccountKey")
        .map(|ds| {
            let id = ds["id"].as_str().unwrap_or_default().to_ascii_lowercase();
            let account = ds["resource"]["properties"]["accountName"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            (id, account, &ds["secrets"]["key"])
        })
}

/// Both current keys of each of `accounts`, by lower-case account name.
fn current_keys(state: &Value, accounts: &[String]) -> BTreeMap<String, [Value; 2]> {
    let mut keys = BTreeMap::new();
    for account in state["storageAccounts"].as_array().into_iter().flatten() {
        let id = account["id"].as_str().unwrap_or_default();
        if !accounts.iter().any(|a| a.eq_ignore_ascii_case(id)) {
            continue;
        }
        let name = id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let pair = [
            account["keys"]["key1"].clone(),
            account["keys"]["key2"].clone(),
        ];
        keys.insert(name, pair);
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ACCOUNT: &str =
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/sta";

    fn state(held: &str, in_sync: bool) -> Value {
        json!({
            "storageAccounts": [{"id": ACCOUNT, "keys": {"key1": "new-one", "key2": "two"}}],
            "workspaces": [{
                "storageAccount": ACCOUNT.to_uppercase(),
                "storageKeysInSync": in_sync,
                "datastores": [
                    {"id": "w/one", "resource": {"properties": {"accountName": "STA", "credentials": {"credentialsType": "AccountKey"}}}, "secrets": {"key": held}},
                    {"id": "w/two", "resource": {"properties": {"accountName": "sta", "credentials": {"credentialsType": "None"}}}},
                    {"id": "w/three", "resource": {"properties": {"accountName": "other", "credentials": {"credentialsType": "AccountKey"}}}, "secrets": {"key": "old"}}
                ]
            }]
        })
    }

    #[test]
    fn a_datastore_with_an_old_key_or_an_unsynced_workspace_is_not_converged() {
        let accounts = [ACCOUNT.to_string()];
        let done = convergence(&state("two", true), &accounts);
        assert_eq!(
            done,
            Convergence {
                key_datastores: 1,
                invalid: 0,
                workspaces: 1,
                unsynced: 0
            }
        );
        assert!(done.converged());
        assert_eq!(convergence(&state("old", true), &accounts).invalid, 1);
        assert!(!convergence(&state("new-one", false), &accounts).converged());
    }

    #[test]
    fn changed_removed_and_deleted_datastores_are_counted_but_credentials_are_not() {
        let state = |datastores: Value| json!({"workspaces": [{"datastores": datastores}]});
        let ds = |id: &str, props: Value| json!({"id": id, "resource": {"name": "ds", "systemData": {"lastModifiedAt": id}, "properties": props}});
        let before = state(json!([
            ds(
                "A",
                json!({"description": "d", "tags": {"t": "1"}, "credentials": {"credentialsType": "AccountKey", "secrets": {"key": 1}}})
            ),
            ds("B", json!({"description": "d"})),
            ds("C", json!({"description": "d"}))
        ]));
        let after = state(json!([
            ds(
                "a",
                json!({"tags": {"t": "2"}, "credentials": {"credentialsType": "AccountKey", "secrets": {"key": 2}}})
            ),
            ds("D", json!({})),
            ds("B", json!({"description": "d", "isDefault": false}))
        ]));
        let changes = field_changes(&before, &after);
        let expected: BTreeMap<String, usize> = [
            ("datastore added", 1),
            ("datastore deleted", 1),
            ("properties.description removed", 1),
            ("properties.isDefault added", 1),
            ("properties.tags changed", 1),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        assert_eq!(changes, expected);
        assert!(field_changes(&before, &before).is_empty());
    }

    #[test]
    fn rewriting_a_key_that_is_still_valid_is_a_needless_write() {
        let accounts = [ACCOUNT.to_string()];
        // Before: the first datastore holds "two", which stays valid.
        let before = state("two", true);
        assert_eq!(
            needless_writes(&before, &state("new-one", true), &accounts),
            1
        );
        assert_eq!(needless_writes(&before, &state("two", true), &accounts), 0);
        // A stale key moved to a current one is the point of the run.
        let stale = state("old", true);
        assert_eq!(
            needless_writes(&stale, &state("new-one", true), &accounts),
            0
        );
    }

    #[test]
    fn requests_are_counted_per_subscription_and_operation() {
        let record = |path: &str, operation: &str| RequestRecord {
            method: "GET".into(),
            path: path.into(),
            operation: operation.into(),
            status: 200,
        };
        let measured = Measured {
            wall: Duration::ZERO,
            requests: vec![
                record("/subscriptions/A/x", "Datastores_List"),
                record("/subscriptions/a/y", "Datastores_Get"),
                record("/subscriptions/b/y", "Datastores_Get"),
            ],
            tokens: 1,
            succeeded: true,
            convergence: Convergence::default(),
            idle: None,
            after: None,
            emulator_overhead: None,
            reply_bytes: 0,
            log_lines: 0,
            field_changes: BTreeMap::new(),
            needless_writes: 0,
        };
        assert_eq!(measured.per_subscription(), vec![2, 1]);
        assert_eq!(measured.count("Datastores_Get"), 2);
        assert_eq!(measured.by_operation()["Datastores_List"], 1);
    }
}
