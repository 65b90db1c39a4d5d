//! Checks of `infra/` against the code: the custom role grants exactly the actions the ARM client
//! calls, the Event Grid subscription matches what the handler filters on, and the app settings
//! the Bicep sets are the ones keysync reads. (Checkov, in `.ci/run`, checks the Bicep itself.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use keysync::arm::Operation;
use serde_json::Value;

fn infra() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("infra")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.bicep` file under `infra/`, concatenated.
fn bicep() -> String {
    let mut files = vec![infra().join("main.bicep")];
    let mut modules: Vec<PathBuf> = std::fs::read_dir(infra().join("modules"))
        .expect("infra/modules")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bicep"))
        .collect();
    modules.sort();
    files.extend(modules);
    files.iter().map(|f| read(f)).collect::<Vec<_>>().join("\n")
}

fn role() -> Value {
    serde_json::from_str(&read(&infra().join("keysync-role.json"))).expect("role JSON")
}

#[test]
fn the_custom_role_grants_exactly_the_actions_keysync_calls() {
    let role = role();
    let listed: Vec<&str> = role["actions"]
        .as_array()
        .expect("an actions array")
        .iter()
        .map(|a| a.as_str().expect("each action is a string"))
        .collect();
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "an action is listed twice");
    let needed: BTreeSet<&str> = Operation::rbac_actions().into_iter().collect();
    let missing: Vec<_> = needed.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "infra/keysync-role.json differs from Operation::rbac_actions(): \
         missing {missing:?}, not needed {extra:?}"
    );
    assert!(listed.iter().all(|a| !a.contains('*')), "no wildcards");
}

#[test]
fn the_role_is_loaded_from_its_file_and_grants_no_data_actions() {
    let main = read(&infra().join("main.bicep"));
    assert!(main.contains("loadJsonContent('keysync-role.json')"));
    assert!(main.contains("actions: role.actions"));
    assert!(main.contains("dataActions: []"));
    let role = role();
    assert!(role["roleName"].as_str().is_some_and(|n| !n.is_empty()));
}

#[test]
fn no_built_in_contributor_or_owner_role_is_assigned() {
    const BROAD: [(&str, &str); 3] = [
        ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
        ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c"),
        (
            "User Access Administrator",
            "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        ),
    ];
    let bicep = bicep().to_ascii_lowercase();
    for (name, id) in BROAD {
        assert!(
            !bicep.contains(id),
            "infra/ assigns the built-in {name} role"
        );
    }
}

#[test]
fn the_event_subscription_sends_what_the_handler_acts_on_to_key_regenerated() {
    let bicep = bicep();
    let quoted = |s: &str| format!("'{s}'");
    assert!(bicep.contains(&quoted(keysync::events::RESOURCE_ACTION_SUCCESS)));
    assert!(bicep.contains(&quoted(keysync::events::REGENERATE_KEY_OPERATION)));
    assert!(bicep.contains("key: 'data.operationName'"));
    assert!(bicep.contains("topicType: 'Microsoft.Resources.Subscriptions'"));
    assert!(bicep.contains("endpointType: 'AzureFunction'"));
    assert!(bicep.contains("deadLetterWithResourceIdentity"));

    let function = "KeyRegenerated";
    assert!(bicep.contains(&format!("/functions/{function}'")));
    let binding = read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("functions/{function}/function.json")),
    );
    assert!(binding.contains("\"eventGridTrigger\""));
}

#[test]
fn the_app_settings_are_those_keysync_reads_and_the_readme_documents() {
    let bicep = bicep();
    let readme = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    let set: BTreeSet<String> = bicep
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name: '"))
        .filter_map(|rest| rest.strip_suffix('\''))
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_string)
        .collect();
    for needed in [
        "KEYSYNC_SUBSCRIPTIONS",
        "KEYSYNC_ROTATION_SCHEDULE",
        "KEYSYNC_ROTATE_AFTER_DAYS",
        "KEYSYNC_ROTATE_MIN_INTERVAL_HOURS",
        "KEYSYNC_ROTATE_ACCOUNTS",
        "AZURE_CLIENT_ID",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
    ] {
        assert!(set.contains(needed), "infra/ does not set {needed}");
    }
    for name in &set {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is set in infra/ but not documented in README.md"
        );
    }
    // The host reaches its storage with the identity: a connection string would carry a key.
    assert!(bicep.contains("name: 'AzureWebJobsStorage__accountName'"));
    assert!(!bicep.contains("name: 'AzureWebJobsStorage'\n"));
    assert!(bicep.contains("allowSharedKeyAccess: false"));
    assert!(!bicep.contains("listKeys("), "infra/ reads a storage key");
}
