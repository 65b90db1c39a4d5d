//! Starting the emulator and the local host for a test, and reading what happened.

use std::collections::BTreeMap;
use std::path::PathBuf;

use keysync::emulator::{EmulatorOptions, RequestRecord, RunningEmulator, Scenario};
use keysync::host::{BindingEncoding, HostOptions, InvocationRecord, LocalHost};
use serde_json::{Map, Value, json};

#[path = "../shared/azurite.rs"]
mod azurite;
#[path = "../shared/environment.rs"]
pub mod environment;
#[path = "../shared/secrets.rs"]
mod secrets;

pub use azurite::azurite_or_skip;

pub const SUB: &str = "11111111-2222-3333-4444-555555555555";
pub const SHARED: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlshared01";
pub const FUNCTION: &str = "KeyRegenerated";

/// The emulator and a host running the real handler against it.
pub struct TestApp {
    pub emulator: RunningEmulator,
    pub host: LocalHost,
    /// The secrets at the start: keys that a regeneration replaces are secrets too.
    initial_secrets: Vec<String>,
}

pub struct Options {
    pub encoding: BindingEncoding,
    pub extra_env: Vec<(String, String)>,
    /// Post the emulator's Event Grid events to the host's webhook.
    pub wire_events: bool,
    /// Azurite's executable: attached before the handler starts, it serves the accounts flagged
    /// `azurite`, and when it serves them all, storage checks are on.
    pub azurite: Option<PathBuf>,
    /// Storage checks on although Azurite does not serve the accounts: for a test whose blob
    /// endpoints are listeners of its own on loopback.
    pub loopback_storage_checks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            encoding: BindingEncoding::Object,
            extra_env: Vec::new(),
            wire_events: false,
            azurite: None,
            loopback_storage_checks: false,
        }
    }
}

/// Whether the handler may check credentials against the accounts' storage endpoints. A
/// scenario's endpoints are Azure's own (`https://<account>.blob.core.windows.net/`) unless
/// Azurite or the scenario says otherwise, and checks there would send signed requests to
/// whoever owns those names, and wait on DNS. So they are off unless Azurite serves every
/// account or the test points the accounts at loopback listeners and asks for them.
fn storage_checks(scenario: &Scenario, options: &Options) -> bool {
    let scenario = serde_json::to_value(scenario).expect("a scenario serializes");
    let accounts = scenario["storageAccounts"].as_array().unwrap();
    if options.loopback_storage_checks {
        for account in accounts {
            let blob = account["primaryEndpoints"]["blob"].as_str().unwrap_or("");
            let host = url::Url::parse(blob)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string));
            assert!(
                matches!(host.as_deref(), Some("127.0.0.1" | "localhost")),
                "{}: storage checks need a loopback blob endpoint, not '{blob}'",
                account["id"]
            );
        }
        return true;
    }
    options.azurite.is_some() && accounts.iter().all(|a| a["azurite"] == true)
}

impl TestApp {
    pub async fn start(scenario: Scenario) -> TestApp {
        Self::start_with(scenario, Options::default()).await
    }

    pub async fn start_with(scenario: Scenario, options: Options) -> TestApp {
        let checks = storage_checks(&scenario, &options);
        let emulator = RunningEmulator::start(
            scenario,
            EmulatorOptions {
                listen: ([127, 0, 0, 1], 0).into(),
                event_webhook: None,
                https: false,
            },
        )
        .await
        .expect("emulator starts");
        if let Some(binary) = &options.azurite {
            emulator
                .attach_azurite(binary)
                .await
                .expect("Azurite starts");
        }
        let mut env = emulator.env();
        // Everything the handler can log, so that every test also checks that no secret leaks.
        env.push(("RUST_LOG".into(), "trace".into()));
        if !checks {
            env.push(("KEYSYNC_VERIFY".into(), "false".into()));
        }
        env.extend(options.extra_env);
        let host = LocalHost::start(HostOptions {
            app_root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            executable: Some(PathBuf::from(env!("CARGO_BIN_EXE_keysync"))),
            env,
            env_remove: environment::inherited_settings(),
            echo_output: std::env::var_os("KEYSYNC_TEST_ECHO").is_some(),
            encoding: options.encoding,
            listen: ([127, 0, 0, 1], 0).into(),
            function_key: None,
        })
        .await
        .expect("host starts the handler");
        if options.wire_events {
            emulator.set_event_webhook(Some(host.event_grid_webhook(FUNCTION)));
        }
        let initial_secrets = State(emulator.state()).secrets();
        TestApp {
            emulator,
            host,
            initial_secrets,
        }
    }

    /// Delivers one event to `KeyRegenerated` as the host would.
    pub async fn deliver(&self, event: &Value) -> InvocationRecord {
        let metadata = keysync::host::invoke::event_grid_metadata(event);
        self.host
            .invoke(FUNCTION, event, metadata)
            .await
            .expect("invocation sent")
    }

    /// Regenerates a key through ARM as a portal user would.
    pub async fn regenerate(&self, account: &str, key: &str) {
        if let Err(e) = self.emulator.regenerate_as_user(account, key).await {
            panic!("regenerateKey: {e:#}");
        }
    }

    pub fn state(&self) -> State {
        State(self.emulator.state())
    }

    /// ARM requests that change something (everything but GET and the read-only POSTs).
    pub fn writes(&self) -> Vec<RequestRecord> {
        self.emulator
            .requests()
            .into_iter()
            .filter(is_write)
            .collect()
    }
}

pub fn is_write(r: &RequestRecord) -> bool {
    (200..300).contains(&r.status)
        && matches!(
            r.operation.as_str(),
            "Datastores_CreateOrUpdate"
                | "Datastores_Delete"
                | "Workspaces_ResyncKeys"
                | "StorageAccounts_RegenerateKey"
        )
}

/// A fault rule from its JSON form (see the emulator's SCENARIO.md).
pub fn fault(value: Value) -> keysync::emulator::FaultRule {
    serde_json::from_value(value).expect("fault rule")
}

/// Values from the event fixtures that stand for a caller's personal data.
pub const CLAIMS: [&str; 3] = ["operator@example.com", "Operator Example", "192.0.2.10"];

impl Drop for TestApp {
    /// Every test ends by searching all the handler printed for every secret the emulator holds
    /// (account keys, stored datastore secrets, the identity header) and for event claims.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // The real host fails an invocation whose 2xx reply it cannot read; the stand-in records
        // why, and no reply of the handler may be one.
        for record in self.host.invocations() {
            assert_eq!(
                record.unreadable, None,
                "{}: the host could not read the handler's {} reply",
                record.function, record.status
            );
        }
        let output = self.host.handler_output().join("\n");
        let mut secrets = self.state().secrets();
        secrets.extend(self.initial_secrets.iter().cloned());
        secrets.extend(
            self.emulator
                .env()
                .into_iter()
                .filter(|(k, _)| k == "IDENTITY_HEADER")
                .map(|(_, v)| v),
        );
        secrets::assert_none_in(&output, &secrets, "the handler's output");
        for claim in CLAIMS {
            assert!(
                !output.contains(claim),
                "{claim} reached the handler's output"
            );
        }
    }
}

/// A regeneration event for `account` in the Event Grid schema (from the contract fixture).
pub fn regeneration_event(account: &str) -> Value {
    let mut event = fixture("regenerate_key_egschema.json")[0].clone();
    retarget(&mut event, account);
    event
}

/// The same in the CloudEvents 1.0 schema.
pub fn regeneration_cloud_event(account: &str) -> Value {
    let mut event = fixture("regenerate_key_cloudevents.json");
    retarget(&mut event, account);
    event
}

fn retarget(event: &mut Value, account: &str) {
    event["subject"] = json!(account);
    event["data"]["resourceUri"] = json!(account);
    event["data"]["authorization"]["scope"] = json!(account);
}

pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/azure-contract/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture exists"))
        .expect("fixture is JSON")
}

/// The emulator's state, with helpers to find things in it.
pub struct State(pub Value);

impl State {
    pub fn account(&self, name: &str) -> &Value {
        self.0["storageAccounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"].as_str().unwrap().ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("no account {name}"))
    }

    pub fn workspace(&self, name: &str) -> &Value {
        self.0["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"].as_str().unwrap().ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("no workspace {name}"))
    }

    pub fn datastore(&self, workspace: &str, name: &str) -> &Value {
        self.workspace(workspace)["datastores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["resource"]["name"] == name)
            .unwrap_or_else(|| panic!("no datastore {workspace}/{name}"))
    }

    /// `key1`, `key2` or `stale`: which key of `account` the datastore's stored secret is.
    pub fn held(&self, workspace: &str, name: &str, account: &str) -> &'static str {
        let key = &self.datastore(workspace, name)["secrets"]["key"];
        let keys = &self.account(account)["keys"];
        if *key == keys["key1"] {
            "key1"
        } else if *key == keys["key2"] {
            "key2"
        } else {
            "stale"
        }
    }

    /// Every datastore resource (as GET returns it) without `properties.credentials.secrets` and
    /// `systemData` (which records the write), by lower-case id: all that an in-place update must
    /// keep, `credentialsType` and a service principal's ids included. As JSON text, not values,
    /// so that a comparison also catches a field moved or a number rewritten.
    pub fn non_credential_fields(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for ws in self.0["workspaces"].as_array().unwrap() {
            for ds in ws["datastores"].as_array().unwrap() {
                let mut resource: Map<String, Value> = ds["resource"].as_object().unwrap().clone();
                resource.remove("systemData");
                if let Some(credentials) = resource
                    .get_mut("properties")
                    .and_then(|p| p.get_mut("credentials"))
                    .and_then(Value::as_object_mut)
                {
                    credentials.remove("secrets");
                }
                out.insert(
                    ds["id"].as_str().unwrap().to_lowercase(),
                    Value::Object(resource).to_string(),
                );
            }
        }
        out
    }

    /// Every secret value the emulator holds: account keys, datastore secrets (and each SAS
    /// token's signature on its own) and the bearer tokens it issued.
    pub fn secrets(&self) -> Vec<String> {
        secrets::secrets(&self.0)
    }
}

/// The report inside a `KeyRegenerated` reply (the first event's).
pub fn report(record: &InvocationRecord) -> &Value {
    &record.body["ReturnValue"][0]["report"]
}

/// The report entry for a datastore.
pub fn entry<'a>(report: &'a Value, workspace: &str, datastore: &str) -> &'a Value {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["workspace"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{workspace}"))
                && e["datastore"] == datastore
        })
        .unwrap_or_else(|| panic!("no entry for {workspace}/{datastore} in {report:#}"))
}

/// The report entry for a workspace, if any.
pub fn workspace_entry<'a>(report: &'a Value, workspace: &str) -> Option<&'a Value> {
    report["entries"].as_array().unwrap().iter().find(|e| {
        e["kind"] == "workspace"
            && e["workspace"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{workspace}"))
    })
}
