//! The estate the benchmark runs on: many workspaces, many datastores, many storage accounts, and
//! one busy account that datastores across many workspaces use, generated from a seed so that
//! every run (and every way of running it) sees the same shape.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::emulator::Scenario;

/// The subscription of the first part of the estate; more subscriptions count up from it.
const SUBSCRIPTION_PREFIX: &str = "22222222-3333-4444-5555-";
const GROUP: &str = "rg-bench";
/// Every datastore's stored fields besides credentials carry this, so a test can see them kept.
const ORIGIN: &str = "keysync-bench";

/// How big the estate is and how it is spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub workspaces: usize,
    pub datastores_per_workspace: usize,
    pub accounts: usize,
    /// Datastores (of any credential kind) on the busiest account.
    pub busy_datastores: usize,
    /// Workspaces those datastores are spread over (the first ones).
    pub busy_workspaces: usize,
    /// Subscriptions the workspaces and accounts are spread over, round robin.
    pub subscriptions: usize,
    pub seed: u64,
}

impl Shape {
    /// Checks that the numbers describe an estate that can exist; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--workspaces", self.workspaces),
            ("--accounts", self.accounts),
            ("--busy-workspaces", self.busy_workspaces),
            ("--subscriptions", self.subscriptions),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, n)| *n == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        if self.datastores_per_workspace < 2 {
            return Err("--datastores must be at least 2 (every workspace has a default blob and file datastore)".into());
        }
        if self.accounts < 2 {
            return Err("--accounts must be at least 2 (the busy account and others)".into());
        }
        if self.busy_workspaces > self.workspaces {
            return Err("--busy-workspaces cannot exceed --workspaces".into());
        }
        let room = self.busy_workspaces * self.datastores_per_workspace;
        if self.busy_datastores > room {
            return Err(format!(
                "--busy-datastores {} do not fit in {} workspaces of {} datastores",
                self.busy_datastores, self.busy_workspaces, self.datastores_per_workspace
            ));
        }
        Ok(())
    }

    /// How many datastores workspace `w` has on the busy account (all in the first ones).
    fn busy_in(&self, w: usize) -> usize {
        if w >= self.busy_workspaces {
            return 0;
        }
        let base = self.busy_datastores / self.busy_workspaces;
        base + usize::from(w < self.busy_datastores % self.busy_workspaces)
    }
}

/// How the emulator serves the estate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    /// Added to every answer, in milliseconds.
    pub latency_ms: u64,
    /// The `Retry-After` of a resync and its status polls, in seconds.
    pub retry_after: u64,
    /// The most datastores one page of a datastore listing holds (`datastoresMaxPageSize`).
    pub datastores_page: usize,
}

/// The name of account `a`; account 0 is the busy one.
pub fn account_name(a: usize) -> String {
    format!("stbench{a:03}")
}

fn subscription(index: usize) -> String {
    format!("{SUBSCRIPTION_PREFIX}{:012}", index + 1)
}

/// The ARM id of account `a`.
pub fn account_id(shape: &Shape, a: usize) -> String {
    let subscription = subscription(a % shape.subscriptions);
    format!(
        "/subscriptions/{subscription}/resourceGroups/{GROUP}/providers/Microsoft.Storage/storageAccounts/{}",
        account_name(a)
    )
}

fn workspace_id(shape: &Shape, w: usize) -> String {
    let subscription = subscription(w % shape.subscriptions);
    format!(
        "/subscriptions/{subscription}/resourceGroups/{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/mlw-bench-{w:03}"
    )
}

/// The default storage of workspace `w`: the busy account for the first two (when they have room
/// for their two default datastores on it), then the others in turn, so that (as in most
/// estates) each account is the default storage of a few workspaces.
fn default_account(shape: &Shape, w: usize) -> usize {
    if w < 2 && shape.busy_in(w) >= 2 {
        0
    } else {
        1 + w % (shape.accounts - 1)
    }
}

/// The emulator scenario of the estate, served as `serving` says.
pub fn scenario(shape: &Shape, serving: Serving) -> anyhow::Result<Scenario> {
    let mut rng = StdRng::seed_from_u64(shape.seed);
    let accounts: Vec<Value> = (0..shape.accounts).map(|a| account(shape, a)).collect();
    let workspaces: Vec<Value> = (0..shape.workspaces)
        .map(|w| workspace(shape, w, &mut rng))
        .collect();
    let value = json!({
        "storageAccounts": accounts,
        "workspaces": workspaces,
        "latencyMs": serving.latency_ms,
        "lroRetryAfterSeconds": serving.retry_after,
        "datastoresMaxPageSize": serving.datastores_page,
        // The event is posted as soon as the regeneration is answered: the benchmark times the
        // handler, not a delivery delay of its own choosing.
        "eventDelivery": {"delayMs": 0},
    });
    Ok(serde_json::from_value(value)?)
}

fn account(shape: &Shape, a: usize) -> Value {
    json!({
        "id": account_id(shape, a),
        "location": "westeurope",
        "tags": {"origin": ORIGIN},
        "allowSharedKeyAccess": true,
        "keyCreationTime": {"key1": "2026-06-01T00:00:00Z", "key2": null},
    })
}

fn workspace(shape: &Shape, w: usize, rng: &mut StdRng) -> Value {
    let home = default_account(shape, w);
    let mut datastores = vec![
        datastore(
            "workspaceblobstore",
            "AzureBlob",
            home,
            Credentials::Key1,
            true,
        ),
        datastore(
            "workspacefilestore",
            "AzureFile",
            home,
            Credentials::Key1,
            false,
        ),
    ];
    datastores.extend(others(shape, w, home, rng));
    json!({
        "id": workspace_id(shape, w),
        "location": "westeurope",
        "storageAccount": account_id(shape, home),
        "properties": {"friendlyName": format!("Bench workspace {w}")},
        "datastores": datastores,
    })
}

/// The datastores of workspace `w` besides its two defaults: its share of the busy account's
/// first, the rest on other accounts picked at random.
fn others(shape: &Shape, w: usize, home: usize, rng: &mut StdRng) -> Vec<Value> {
    // The default datastores of a workspace whose home is the busy account count among its busy
    // datastores (`default_account` only makes it the home when they fit).
    let busy_home = if home == 0 { 2 } else { 0 };
    let busy = shape.busy_in(w) - busy_home;
    (2..shape.datastores_per_workspace)
        .map(|d| {
            let account = if d - 2 < busy {
                0
            } else {
                rng.random_range(1..shape.accounts)
            };
            let (kind, credentials) = pick(rng);
            datastore(&format!("ds_{d:03}"), kind, account, credentials, false)
        })
        .collect()
}

/// What a datastore authenticates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credentials {
    Key1,
    Key2,
    Sas,
    Identity,
    ServicePrincipal,
}

/// Mostly account keys (as real estates are), some holding key2, and a few of the other kinds.
fn pick(rng: &mut StdRng) -> (&'static str, Credentials) {
    let kind = match rng.random_range(0..10) {
        0..=5 => "AzureBlob",
        6 | 7 => "AzureFile",
        _ => "AzureDataLakeGen2",
    };
    let credentials = match rng.random_range(0..20) {
        0..=13 => Credentials::Key1,
        14 | 15 => Credentials::Key2,
        16 => Credentials::Sas,
        17 | 18 => Credentials::Identity,
        _ => Credentials::ServicePrincipal,
    };
    match (kind, credentials) {
        // Azure ML registers ADLS Gen2 with a service principal or identity, not a key or SAS.
        ("AzureDataLakeGen2", Credentials::Key1 | Credentials::Key2 | Credentials::Sas) => {
            ("AzureBlob", credentials)
        }
        // A file share has no identity-based access in Azure ML, nor service principals.
        ("AzureFile", Credentials::Identity | Credentials::ServicePrincipal) => {
            ("AzureFile", Credentials::Key1)
        }
        other => other,
    }
}

fn datastore(
    name: &str,
    kind: &str,
    account: usize,
    credentials: Credentials,
    is_default: bool,
) -> Value {
    let location = match kind {
        "AzureFile" => ("fileShareName", format!("share-{name}")),
        "AzureDataLakeGen2" => ("filesystem", format!("fs-{name}")),
        _ => ("containerName", format!("data-{}", name.replace('_', "-"))),
    };
    let (credentials, secrets) = credentials_json(credentials);
    json!({
        "name": name,
        "properties": {
            "datastoreType": kind,
            "accountName": account_name(account),
            location.0: location.1,
            "endpoint": "core.windows.net",
            "protocol": "https",
            "isDefault": is_default,
            "description": format!("{name} on {}", account_name(account)),
            "tags": {"origin": ORIGIN, "owner": "ml-platform"},
            "properties": {"origin": ORIGIN},
            "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
            "credentials": credentials,
        },
        "secrets": secrets,
    })
}

fn credentials_json(credentials: Credentials) -> (Value, Value) {
    match credentials {
        Credentials::Key1 => (
            json!({"credentialsType": "AccountKey"}),
            json!({"keyRef": "key1"}),
        ),
        Credentials::Key2 => (
            json!({"credentialsType": "AccountKey"}),
            json!({"keyRef": "key2"}),
        ),
        Credentials::Sas => (
            json!({"credentialsType": "Sas"}),
            json!({"sasRef": {"key": "key1", "token": "sv=2024-11-04&ss=b&srt=co&sp=rl&se=2099-01-01T00:00:00Z&spr=https"}}),
        ),
        Credentials::Identity => (json!({"credentialsType": "None"}), Value::Null),
        Credentials::ServicePrincipal => (
            json!({
                "credentialsType": "ServicePrincipal",
                "tenantId": "aaaaaaaa-0000-4000-8000-00000000000a",
                "clientId": "bbbbbbbb-0000-4000-8000-00000000000b",
                "authorityUrl": "https://login.microsoftonline.com",
                "resourceUrl": "https://storage.azure.com/",
            }),
            json!({"clientSecret": "bench-service-principal-secret-value"}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            workspaces: 100,
            datastores_per_workspace: 20,
            accounts: 50,
            busy_datastores: 200,
            busy_workspaces: 40,
            subscriptions: 1,
            seed: 7,
        }
    }

    fn serving(latency_ms: u64) -> Serving {
        Serving {
            latency_ms,
            retry_after: 0,
            datastores_page: 100,
        }
    }

    fn on_account(value: &Value, account: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for ws in value["workspaces"].as_array().unwrap() {
            for ds in ws["datastores"].as_array().unwrap() {
                if ds["properties"]["accountName"] == account {
                    let ws = ws["id"].as_str().unwrap().to_string();
                    found.push((ws, ds["name"].as_str().unwrap().to_string()));
                }
            }
        }
        found
    }

    #[test]
    fn the_default_estate_has_the_shape_the_benchmark_promises() {
        let shape = shape();
        let value = serde_json::to_value(scenario(&shape, serving(25)).unwrap()).unwrap();
        let workspaces = value["workspaces"].as_array().unwrap();
        assert_eq!(workspaces.len(), 100);
        let datastores: usize = workspaces
            .iter()
            .map(|w| w["datastores"].as_array().unwrap().len())
            .sum();
        assert_eq!(datastores, 2000);
        assert_eq!(value["storageAccounts"].as_array().unwrap().len(), 50);

        let busy = on_account(&value, "stbench000");
        assert_eq!(busy.len(), 200);
        let mut busy_workspaces: Vec<&String> = busy.iter().map(|(w, _)| w).collect();
        busy_workspaces.dedup();
        assert_eq!(busy_workspaces.len(), 40);
        // Every other account is used far less.
        for a in 1..50 {
            assert!(on_account(&value, &account_name(a)).len() < 100);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_estate_and_another_seed_another() {
        let one = serde_json::to_value(scenario(&shape(), serving(0)).unwrap()).unwrap();
        let again = serde_json::to_value(scenario(&shape(), serving(0)).unwrap()).unwrap();
        let other = Shape { seed: 8, ..shape() };
        let other = serde_json::to_value(scenario(&other, serving(0)).unwrap()).unwrap();
        assert_eq!(one, again);
        assert_ne!(one["workspaces"], other["workspaces"]);
    }

    #[test]
    fn impossible_shapes_are_refused_naming_the_flag() {
        let too_many = Shape {
            busy_datastores: 900,
            ..shape()
        };
        assert!(
            too_many
                .validate()
                .unwrap_err()
                .contains("--busy-datastores")
        );
        let none = Shape {
            accounts: 0,
            ..shape()
        };
        assert!(none.validate().unwrap_err().contains("--accounts"));
        assert_eq!(shape().validate(), Ok(()));
    }

    #[test]
    fn subscriptions_take_the_workspaces_and_accounts_in_turn() {
        let shape = Shape {
            subscriptions: 3,
            ..shape()
        };
        let value = serde_json::to_value(scenario(&shape, serving(0)).unwrap()).unwrap();
        let subscriptions: std::collections::BTreeSet<&str> = value["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().split('/').nth(2).unwrap())
            .collect();
        assert_eq!(subscriptions.len(), 3);
    }
}
