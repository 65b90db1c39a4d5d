//! The documented procedure as its users run it: `scripts/bench/sdk_procedure.py`, the Azure ML
//! Python SDK listing every workspace's datastores, re-registering each AccountKey datastore on
//! the regenerated account and syncing the workspace keys, against the same estate and latency.
//!
//! The SDK sends bearer tokens only over TLS, so this emulator also serves HTTPS, with a
//! certificate the script trusts through `REQUESTS_CA_BUNDLE`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::estate;
use super::run::{self, Convergence, Setup};
use crate::emulator::{CaFile, EmulatorOptions, RequestRecord, RunningEmulator};

/// Where the script is, from the app root.
const SCRIPT: &str = "scripts/bench/sdk_procedure.py";
/// The virtual environment `scripts/bench/setup-sdk.sh` makes, from the app root.
pub const VENV_PYTHON: &str = ".bench-venv/bin/python";
/// The longest the procedure may take (it walks every workspace one call at a time).
const LIMIT: Duration = Duration::from_secs(3600);

/// What the SDK run did.
#[derive(Debug, Clone)]
pub struct SdkRun {
    /// The script's own measure: from its first request to the end of the last key sync.
    pub wall: Duration,
    /// Of that, the time spent syncing the workspaces' keys: the resyncs' requests and the
    /// poller's waits between them.
    pub sync_wait: Duration,
    /// Of that, the time azure-core's poller slept between polls (30 s a wait when Azure asks
    /// for none or for 0, where keysync polls again at once), and how many times it slept.
    pub poller_wait: Duration,
    pub poller_waits: usize,
    pub requests: Vec<RequestRecord>,
    pub convergence: Convergence,
    pub field_changes: BTreeMap<String, usize>,
    /// Datastores whose still-valid key was overwritten.
    pub needless_writes: usize,
    pub reregistered: usize,
    pub synced: usize,
    /// The script's own failures, as it worded them (never with a key).
    pub errors: Vec<String>,
    pub sdk_version: Option<String>,
}

impl SdkRun {
    /// The procedure's time with the poller's waits taken out: its requests, and its own work
    /// between them.
    pub fn without_poller_waits(&self) -> Duration {
        self.wall.saturating_sub(self.poller_wait)
    }
}

/// The script's JSON answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    wall_seconds: f64,
    #[serde(default)]
    sync_seconds: f64,
    poller_wait_seconds: f64,
    poller_waits: usize,
    #[serde(default)]
    datastores_reregistered: Vec<String>,
    #[serde(default)]
    workspaces_synced: Vec<String>,
    #[serde(default)]
    errors: Vec<String>,
    #[serde(default)]
    sdk_version: Option<String>,
}

/// The Python to run the script with: `given`, else the benchmark's virtual environment.
pub fn find_python(given: Option<PathBuf>, app_root: &Path) -> Option<PathBuf> {
    given.or_else(|| Some(app_root.join(VENV_PYTHON)).filter(|p| p.is_file()))
}

/// Why the SDK cannot be run with `python`, if it cannot.
pub async fn unavailable(python: &Path) -> Option<String> {
    let probe = tokio::process::Command::new(python)
        .args(["-c", "import azure.ai.ml, azure.identity"])
        .output()
        .await;
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(_) => Some(format!(
            "{} cannot import azure.ai.ml and azure.identity",
            python.display()
        )),
        Err(e) => Some(format!("cannot run {}: {e}", python.display())),
    }
}

/// Regenerates key1 of the busiest account and runs the procedure on it.
pub async fn run(setup: &Setup, python: &Path) -> anyhow::Result<SdkRun> {
    let options = EmulatorOptions {
        https: true,
        ..EmulatorOptions::default()
    };
    let emulator = RunningEmulator::start(setup.scenario()?, options).await?;
    let before = emulator.state();
    let account = estate::account_id(&setup.shape, 0);
    emulator.regenerate_as_user(&account, "key1").await?;
    let mark = emulator.requests().len();

    let answer = run_script(setup, python, &emulator).await;
    let after = emulator.state();
    let requests = run::requests_since(&emulator, mark, 0);
    emulator.shutdown().await;
    let answer = answer?;

    let accounts = [account];
    Ok(SdkRun {
        wall: seconds(answer.wall_seconds)?,
        sync_wait: seconds(answer.sync_seconds)?,
        poller_wait: seconds(answer.poller_wait_seconds)?,
        poller_waits: answer.poller_waits,
        requests,
        convergence: run::convergence(&after, &accounts),
        field_changes: run::field_changes(&before, &after),
        needless_writes: run::needless_writes(&before, &after, &accounts),
        reregistered: answer.datastores_reregistered.len(),
        synced: answer.workspaces_synced.len(),
        errors: answer.errors,
        sdk_version: answer.sdk_version,
    })
}

/// A duration the script reported, refused when it is not one.
fn seconds(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("the SDK procedure reported {value} seconds"))
}

async fn run_script(
    setup: &Setup,
    python: &Path,
    emulator: &RunningEmulator,
) -> anyhow::Result<Answer> {
    let https = emulator
        .https_url()
        .context("the emulator serves no HTTPS")?;
    let pem = emulator
        .certificate_pem()
        .context("the emulator has no certificate")?;
    let ca_file = CaFile::write(pem)?;
    let env = emulator.env();
    let setting = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let output = tokio::process::Command::new(python)
        .arg(setup.app_root.join(SCRIPT))
        .args(["--arm-endpoint", https.as_str().trim_end_matches('/')])
        .args(["--subscription", &setting("KEYSYNC_SUBSCRIPTIONS")])
        .args(["--account", &estate::account_name(0)])
        .env("IDENTITY_ENDPOINT", setting("IDENTITY_ENDPOINT"))
        .env("IDENTITY_HEADER", setting("IDENTITY_HEADER"))
        .env("REQUESTS_CA_BUNDLE", ca_file.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(LIMIT, output)
        .await
        .context("the SDK procedure did not finish in time")?
        .context("running the SDK procedure")?;
    answer(&output)
}

/// The script's JSON line, or what its last lines of stderr said when there is none.
fn answer(output: &std::process::Output) -> anyhow::Result<Answer> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let found = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok());
    if let Some(answer) = found {
        return Ok(answer);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    tail.reverse();
    bail!(
        "the SDK procedure gave no result ({}): {}",
        output.status,
        tail.join(" / ")
    )
}
