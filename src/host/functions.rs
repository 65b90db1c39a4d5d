//! Reading the Function App the way the Functions host does: `host.json` for the custom handler,
//! and one `function.json` per function folder for its trigger and binding names.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

/// The custom-handler section of `host.json`.
#[derive(Debug, Clone)]
pub struct HostJson {
    /// `customHandler.description.defaultExecutablePath`, relative to the app root.
    pub executable: String,
    pub arguments: Vec<String>,
    /// `customHandler.enableForwardingHttpRequest`.
    pub forward_http: bool,
}

/// The trigger of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    EventGrid,
    Timer {
        schedule: String,
    },
    Http {
        route: Option<String>,
        methods: Vec<String>,
        auth_level: String,
    },
    Other(String),
}

/// One function folder.
#[derive(Debug, Clone)]
pub struct Function {
    /// The folder name, which is also the route the handler serves (`POST /<name>`).
    pub name: String,
    pub trigger: Trigger,
    /// The trigger binding's `name`: the key of its value in the invocation's `Data`.
    pub binding: String,
}

/// The whole app: `host.json` plus every function folder.
#[derive(Debug, Clone)]
pub struct FunctionApp {
    pub root: PathBuf,
    pub host: HostJson,
    pub functions: Vec<Function>,
}

impl FunctionApp {
    /// Loads `host.json` and `*/function.json` under `root`.
    pub fn load(root: &Path) -> anyhow::Result<Self> {
        let host = read_json(&root.join("host.json"))?;
        let host = parse_host(&host).context("host.json")?;
        let mut functions = Vec::new();
        for dir in function_dirs(root)? {
            let path = dir.join("function.json");
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let function = parse_function(name, &read_json(&path)?)
                .with_context(|| path.display().to_string())?;
            functions.push(function);
        }
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(FunctionApp {
            root: root.to_path_buf(),
            host,
            functions,
        })
    }

    /// The function with this exact (case-sensitive, as the handler's routes are) name.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }
}

fn function_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for base in [root.to_path_buf(), root.join("functions")] {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().join("function.json").is_file() {
                dirs.push(entry.path());
            }
        }
    }
    if dirs.is_empty() {
        bail!(
            "no function folders (*/function.json) under {}",
            root.display()
        );
    }
    Ok(dirs)
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn parse_host(host: &Value) -> anyhow::Result<HostJson> {
    let handler = &host["customHandler"];
    let description = &handler["description"];
    let executable = description["defaultExecutablePath"]
        .as_str()
        .context("customHandler.description.defaultExecutablePath is missing")?
        .to_string();
    let arguments = match &description["arguments"] {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Value::Null => Vec::new(),
        _ => bail!("customHandler.description.arguments must be an array of strings"),
    };
    let forward_http = handler["enableForwardingHttpRequest"]
        .as_bool()
        .unwrap_or(false);
    Ok(HostJson {
        executable,
        arguments,
        forward_http,
    })
}

fn parse_function(name: String, json: &Value) -> anyhow::Result<Function> {
    let bindings = json["bindings"].as_array().context("no bindings array")?;
    let trigger = bindings
        .iter()
        .find(|b| {
            b["direction"] == "in" && b["type"].as_str().is_some_and(|t| t.ends_with("Trigger"))
        })
        .context("no trigger binding (direction \"in\", type \"...Trigger\")")?;
    let binding = trigger["name"]
        .as_str()
        .context("the trigger binding has no name")?
        .to_string();
    let text = |key: &str| trigger[key].as_str().map(str::to_string);
    let trigger = match trigger["type"].as_str().unwrap_or_default() {
        "eventGridTrigger" => Trigger::EventGrid,
        "timerTrigger" => Trigger::Timer {
            schedule: text("schedule").context("timerTrigger without schedule")?,
        },
        "httpTrigger" => Trigger::Http {
            route: text("route"),
            methods: trigger["methods"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_lowercase)
                        .collect()
                })
                .unwrap_or_default(),
            auth_level: text("authLevel").unwrap_or_else(|| "function".into()),
        },
        other => Trigger::Other(other.to_string()),
    };
    Ok(Function {
        name,
        trigger,
        binding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_app_has_the_key_regenerated_function() {
        let app = FunctionApp::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(app.host.executable, "keysync");
        assert_eq!(app.host.arguments, vec!["serve".to_string()]);
        assert!(app.host.forward_http);
        let f = app.function("KeyRegenerated").unwrap();
        assert_eq!(f.trigger, Trigger::EventGrid);
        assert_eq!(f.binding, "event");
    }

    #[test]
    fn the_reconcile_function_is_an_http_trigger_with_an_http_output() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let app = FunctionApp::load(root).unwrap();
        let f = app.function("Reconcile").unwrap();
        assert_eq!(f.binding, "req");
        assert_eq!(
            f.trigger,
            Trigger::Http {
                route: Some("reconcile".into()),
                methods: vec!["post".into()],
                auth_level: "function".into(),
            }
        );
        let json = read_json(&root.join("functions/Reconcile/function.json")).unwrap();
        let output = &json["bindings"][1];
        assert_eq!(
            (&output["type"], &output["direction"], &output["name"]),
            (&"http".into(), &"out".into(), &"res".into())
        );
    }

    #[test]
    fn a_function_without_a_trigger_is_an_error() {
        let err = parse_function(
            "X".into(),
            &serde_json::json!({"bindings": [{"type": "blob", "direction": "out", "name": "b"}]}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no trigger binding"), "{err}");
    }
}
