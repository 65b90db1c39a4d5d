//! Keeping the settings of whoever runs the tests out of the processes the tests start. keysync
//! takes its configuration, its credential, its log filter and its proxy from the environment,
//! so a `KEYSYNC_SUBSCRIPTIONS`, `AZURE_CLIENT_ID`, `IDENTITY_ENDPOINT`, `RUST_LOG` or
//! `HTTP_PROXY` left in a developer's shell would change what a test does. Every test that starts
//! keysync, directly or through the local host, removes them first and then sets what it wants.

// Each test binary uses only some of these.
#![allow(dead_code)]

/// Where the tests' own tools are: a child looks them up as the test does, so these stay.
const TOOLS: [&str; 2] = ["KEYSYNC_AZURITE", "KEYSYNC_BENCH_PYTHON"];

/// Variables keysync, `azure_identity` or `reqwest` read, by prefix (compared without case).
const PREFIXES: [&str; 7] = [
    "KEYSYNC_",
    "AZURE", // AZURE_CLIENT_ID, AZURE_TENANT_ID, ..., and the host's AzureWebJobsStorage
    "IDENTITY_",
    "MSI_",
    "IMDS_",
    "FUNCTIONS_",
    "WEBSITE_",
];

/// The same, by name (compared without case); every `*_PROXY` is one too.
const NAMES: [&str; 5] = [
    "RUST_LOG",
    "NO_COLOR",
    "DEPLOYMENT_STORAGE_CONNECTION_STRING",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Whether `name` is a variable that changes what keysync does.
pub fn is_setting(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if TOOLS.contains(&upper.as_str()) {
        return false;
    }
    PREFIXES.iter().any(|p| upper.starts_with(p))
        || NAMES.contains(&upper.as_str())
        || upper.ends_with("_PROXY")
}

/// The settings in this process's environment, by name: what a child must not inherit.
pub fn inherited_settings() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| is_setting(name))
        .collect()
}

/// The keysync binary, started in the crate's folder without [`inherited_settings`]; the test
/// adds what it wants.
pub fn keysync() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keysync"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    for name in inherited_settings() {
        command.env_remove(name);
    }
    command
}
