//! Checks of `infra/` against the code: the custom role grants exactly the actions the ARM client
//! calls, the Event Grid subscription matches what the handler filters on, and every setting
//! keysync reads is written from a parameter of `main.bicep` that the README's configuration
//! reference names, with the default it documents. (Checkov, in `.ci/run`, checks the Bicep.)

use std::collections::{BTreeMap, BTreeSet};
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

/// The app settings `infra/modules/app.bicep` writes: name → value expression.
fn app_settings() -> BTreeMap<String, String> {
    let app = read(&infra().join("modules/app.bicep"));
    let lines: Vec<&str> = app.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter_map(|pair| {
            let name = pair[0].strip_prefix("name: '")?.strip_suffix('\'')?;
            let value = pair[1].strip_prefix("value: ")?;
            Some((name.to_string(), value.to_string()))
        })
        .filter(|(name, _)| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect()
}

/// The settings `Config` looks up (`get("NAME")` in `src/config/`, tests left out).
fn settings_keysync_reads() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src/config").flatten() {
        let source = read(&entry.path());
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        for rest in code.split("get(\"").skip(1) {
            let name = rest.split('"').next().unwrap_or_default();
            names.insert(name.to_string());
        }
    }
    assert!(
        names.contains("KEYSYNC_SUBSCRIPTIONS"),
        "no setting found in src/config/"
    );
    names
}

/// A row of the README's configuration reference: variables, default, infra parameter.
struct Documented {
    variables: Vec<String>,
    default: String,
    parameter: Option<String>,
}

fn configuration_reference(readme: &str) -> Vec<Documented> {
    let section = readme
        .split("\n## Configuration reference\n")
        .nth(1)
        .expect("README has a configuration reference");
    let backticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    section
        .lines()
        .skip_while(|l| !l.starts_with("| variable |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            assert!(cells.len() >= 4, "a short row: {row}");
            Documented {
                variables: backticked(cells[0]),
                default: cells[1].trim().to_string(),
                parameter: cells[2]
                    .starts_with('`')
                    .then(|| backticked(cells[2]).remove(0)),
            }
        })
        .collect()
}

/// A `param` of main.bicep and its default, as written (`30`, `'info'`, `true`).
fn main_parameter_default(main: &str, name: &str) -> Option<String> {
    main.lines().find_map(|l| {
        let rest = l.strip_prefix(&format!("param {name} "))?;
        Some(rest.split_once(" = ").map_or("", |(_, d)| d).to_string())
    })
}

#[test]
fn every_setting_keysync_reads_is_set_from_a_parameter_of_main_bicep() {
    let readme = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    let main = read(&infra().join("main.bicep"));
    let set = app_settings();
    let rows = configuration_reference(&readme);

    for name in settings_keysync_reads() {
        let row = rows
            .iter()
            .find(|r| r.variables.contains(&name))
            .unwrap_or_else(|| {
                panic!("{name} is read but not in README's configuration reference")
            });
        if row.default == "set by Functions" {
            assert!(
                !set.contains_key(&name),
                "infra/ sets {name}, the platform's"
            );
            continue;
        }
        assert!(set.contains_key(&name), "infra/ does not set {name}");
    }
    for row in &rows {
        let Some(parameter) = &row.parameter else {
            continue;
        };
        let default = main_parameter_default(&main, parameter)
            .unwrap_or_else(|| panic!("main.bicep has no param {parameter}"));
        assert!(
            main.contains(&format!("    {parameter}: {parameter}\n")),
            "main.bicep does not pass {parameter} to its app module"
        );
        for variable in &row.variables {
            let value = set
                .get(variable)
                .unwrap_or_else(|| panic!("infra/ does not set {variable}"));
            assert!(
                value.contains(parameter.as_str()),
                "{variable} is not set from {parameter}"
            );
        }
        let plain = |s: &str| s.trim_matches(|c| c == '`' || c == '\'').to_string();
        if !matches!(row.default.as_str(), "required" | "none") {
            assert_eq!(
                plain(&row.default),
                plain(&default),
                "README and main.bicep disagree on the default of {parameter}"
            );
        }
    }
}

#[test]
fn the_app_settings_infra_writes_are_documented_and_keyless() {
    let bicep = bicep();
    let readme = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    for name in app_settings().keys() {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is set in infra/ but not documented in README.md"
        );
    }
    assert!(app_settings().contains_key("APPLICATIONINSIGHTS_CONNECTION_STRING"));
    // The host reaches its storage with the identity: a connection string would carry a key.
    assert!(bicep.contains("name: 'AzureWebJobsStorage__accountName'"));
    assert!(!bicep.contains("name: 'AzureWebJobsStorage'\n"));
    assert!(bicep.contains("allowSharedKeyAccess: false"));
    assert!(!bicep.contains("listKeys("), "infra/ reads a storage key");
}
