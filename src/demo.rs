//! `keysync demo`: the whole flow on one machine. The emulator plays Azure, the local host plays
//! the Functions host, and the real `keysync serve` binary does the work.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use secrecy::SecretString;

use crate::emulator::{EmulatorOptions, RunningEmulator, Scenario, azurite};
use crate::host::{BindingEncoding, HostOptions, InvocationRecord, LocalHost};
use crate::rotation::tick::TickReport;
use crate::storage::sas;
use crate::storage::shared_key::AccountKey;

const ACCOUNT: &str = "stmlshared01";
const FUNCTION: &str = "KeyRegenerated";

/// Runs the demo; the exit code says whether every AccountKey datastore ended on a valid key.
pub async fn run(app_root: Option<PathBuf>, verbose: bool) -> anyhow::Result<ExitCode> {
    let app_root = find_app_root(app_root)?;
    println!(
        "keysync demo: a storage key is regenerated, and keysync repairs everything that held it.\n"
    );

    let emulator = RunningEmulator::start(
        Scenario::demo(),
        EmulatorOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            event_webhook: None,
            https: false,
        },
    )
    .await?;
    println!(
        "1. Local Azure emulator (ARM, managed identity, Event Grid) at {}",
        emulator.base_url()
    );
    let azurite = attach_azurite(&app_root, &emulator).await?;
    let host = start_host(&app_root, &emulator, verbose, azurite).await?;
    let startup = host.handler_startup().unwrap_or_default();
    println!(
        "2. Local Functions host started `keysync serve` from {} (ready in {} ms)",
        app_root.join("host.json").display(),
        startup.as_millis()
    );
    emulator.set_event_webhook(Some(host.event_grid_webhook(FUNCTION)));

    println!("\nBefore: datastores on storage account {ACCOUNT}");
    print_datastores(&emulator.state());

    let mut finished = host.subscribe();
    println!("\n3. A portal user regenerates key1 of {ACCOUNT}.");
    regenerate_key1(&emulator).await?;
    let record = wait_for_invocation(&mut finished).await?;
    println!(
        "4. Event Grid delivered the event to {FUNCTION}; keysync answered HTTP {} in {} ms:\n",
        record.status,
        record.elapsed.as_millis()
    );
    print_report(&record);

    let state = emulator.state();
    println!("\nAfter: datastores on storage account {ACCOUNT}");
    print_datastores(&state);
    let mut problems = problems(&state);
    problems.extend(storage_problems(&record, azurite));

    problems.extend(rotation_act(&emulator, &host, &mut finished).await?);
    let exit_code = host.shutdown().await?;
    emulator.shutdown().await;
    verdict(&problems, exit_code, azurite)
}

/// The timer fires: the due, tagged account is rotated, the fresh one left alone, everything else
/// swept; then keysync's own regeneration comes back as an event and must write nothing.
async fn rotation_act(
    emulator: &RunningEmulator,
    host: &LocalHost,
    finished: &mut tokio::sync::broadcast::Receiver<InvocationRecord>,
) -> anyhow::Result<Vec<String>> {
    println!(
        "\n5. The timer fires RotateKeys (accounts tagged keysync-rotate=true rotate when their key in use is 90 days old)."
    );
    let before_tick = writes(emulator);
    let tick = host.tick("RotateKeys", false).await?;
    println!(
        "   keysync answered HTTP {} in {} ms:\n",
        tick.status,
        tick.elapsed.as_millis()
    );
    let report: TickReport = serde_json::from_value(tick.body["ReturnValue"].clone())
        .context("reading the tick's report")?;
    print_tick(&report);

    // The echo can be handled before the tick returns (the rotation lets go of the account
    // before the sweep), so its writes are those left once both are done and the tick's own,
    // as its report lists them, are taken out; its report must list none either.
    let echo = wait_for_invocation(finished).await?;
    let unreported = writes(emulator) as i64 - (before_tick + report.writes()) as i64;
    let echo_reported = writes_reported(&echo);
    println!(
        "\n6. keysync's own regeneration came back as an event: HTTP {}, {unreported} writes to Azure\n   (every other write is one the tick's report lists).",
        echo.status
    );

    let mut problems = Vec::new();
    let rotated: Vec<&str> = report
        .rotations
        .iter()
        .filter(|r| r.outcome == "rotated")
        .map(|r| short(&r.account))
        .collect();
    if rotated != ["stmlother02"] {
        problems.push(format!(
            "expected exactly stmlother02 to rotate, got {rotated:?}"
        ));
    }
    if unreported != 0 || echo_reported != 0 {
        problems.push(format!(
            "the echo of keysync's own regeneration wrote: {unreported} writes besides the tick's, {echo_reported} in its report"
        ));
    }
    if broken_by_rotation(&emulator.state()) {
        problems.push("a rotation regenerated a key that a datastore still held".into());
    }
    Ok(problems)
}

fn print_tick(report: &TickReport) {
    for rotation in &report.rotations {
        println!(
            "   rotation of {}: {} ({})",
            short(&rotation.account),
            rotation.outcome,
            rotation.reason
        );
        if let Some(r) = &rotation.report {
            println!("{}", indent(&indent(&r.to_table())));
        }
    }
    println!("   sweep of every other account in use:");
    for account in &report.sweep {
        println!("      {}: {}", short(&account.account), account.summary());
    }
}

fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// The entries of a `KeyRegenerated` reply's reports that stand for a write.
fn writes_reported(record: &InvocationRecord) -> usize {
    let results = record.body["ReturnValue"].as_array().cloned();
    let written = ["updated", "resynced", "accepted"];
    results
        .into_iter()
        .flatten()
        .flat_map(|r| {
            r["report"]["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|e| written.contains(&e["outcome"].as_str().unwrap_or_default()))
        .count()
}

/// ARM requests that changed something so far.
fn writes(emulator: &RunningEmulator) -> usize {
    let is_write = |op: &str| {
        matches!(
            op,
            "Datastores_CreateOrUpdate"
                | "Workspaces_ResyncKeys"
                | "StorageAccounts_RegenerateKey"
                | "Datastores_Delete"
        )
    };
    emulator
        .requests()
        .iter()
        .filter(|r| (200..300).contains(&r.status) && is_write(&r.operation))
        .count()
}

/// True when keysync's rotation invalidated a key a datastore held. The portal user's
/// regeneration in part 3 did, on purpose; it is the first regeneration.
fn broken_by_rotation(state: &Value) -> bool {
    let invalidations = state["keyInvalidations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    invalidations
        .iter()
        .skip(1)
        .any(|i| i["datastores"].as_array().is_some_and(|d| !d.is_empty()))
}

/// The folder holding `host.json` and the function folders: `given` (which must hold one),
/// else the current directory, the binary's folder or the source tree, whichever has one.
pub(crate) fn find_app_root(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    // A folder named by hand must be the app: never another one found in its place.
    if let Some(given) = given {
        anyhow::ensure!(
            given.join("host.json").is_file(),
            "--app-root {}: no host.json there",
            given.display()
        );
        return Ok(given);
    }
    let candidates = std::env::current_dir().ok().into_iter().chain(
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    );
    let candidates: Vec<PathBuf> = candidates
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR"))])
        .collect();
    candidates
        .iter()
        .find(|dir| dir.join("host.json").is_file())
        .cloned()
        .context("no host.json found: run from the repository root or pass --app-root")
}

/// Starts Azurite as the accounts' storage data plane when it is installed; true if it runs.
async fn attach_azurite(app_root: &Path, emulator: &RunningEmulator) -> anyhow::Result<bool> {
    let found = azurite::find(&[app_root.to_path_buf()]).or_else(azurite::find_default);
    let Some(binary) = found else {
        println!(
            "   Azurite (the Azure Storage emulator) is not installed, so keysync's storage checks are off: the\n   accounts' endpoints are Azure's own names. Install it with `npm ci` in the repository root\n   (Node.js 20+), or point {} at an azurite-blob executable, to see them.",
            azurite::AZURITE_ENV
        );
        return Ok(false);
    };
    let url = emulator
        .attach_azurite(&binary)
        .await
        .context("starting Azurite")?;
    println!(
        "   Azurite at {url} is the accounts' storage data plane; it is restarted with the new keys\n   whenever a key is regenerated."
    );
    Ok(true)
}

async fn start_host(
    app_root: &Path,
    emulator: &RunningEmulator,
    verbose: bool,
    azurite: bool,
) -> anyhow::Result<LocalHost> {
    let executable = std::env::current_exe().context("locating the keysync binary")?;
    let mut env = emulator.env();
    match azurite {
        // The demo shows a dead SAS token being replaced; by default keysync only reports it.
        true => env.push(("KEYSYNC_REMINT_SAS".into(), "true".into())),
        // Without Azurite the accounts' endpoints are Azure's own names
        // (`stmlshared01.blob.core.windows.net`): a check there would send a signed request to
        // whoever owns that name.
        false => env.push(("KEYSYNC_VERIFY".into(), "false".into())),
    }
    LocalHost::start(HostOptions {
        app_root: app_root.to_path_buf(),
        executable: Some(executable),
        env,
        env_remove: Vec::new(),
        echo_output: verbose,
        encoding: BindingEncoding::Object,
        listen: ([127, 0, 0, 1], 0).into(),
        function_key: None,
    })
    .await
}

/// Regenerates key1 through ARM with a portal user's token, as someone in the portal would.
async fn regenerate_key1(emulator: &RunningEmulator) -> anyhow::Result<()> {
    let account =
        account_id(&emulator.state()).context("the demo scenario has no shared account")?;
    emulator.regenerate_as_user(&account, "key1").await
}

async fn wait_for_invocation(
    finished: &mut tokio::sync::broadcast::Receiver<InvocationRecord>,
) -> anyhow::Result<InvocationRecord> {
    crate::host::next_invocation(finished, FUNCTION, Duration::from_secs(120)).await
}

fn print_report(record: &InvocationRecord) {
    let results = record.body["ReturnValue"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for result in results {
        match serde_json::from_value::<crate::report::Report>(result["report"].clone()) {
            Ok(report) => println!("{}", indent(&report.to_table())),
            Err(_) => println!("   {}", result["summary"].as_str().unwrap_or("(no report)")),
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("   {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn account_id(state: &Value) -> Option<String> {
    shared_account(state).and_then(|a| a["id"].as_str().map(str::to_string))
}

/// The demo's shared account, as the emulator's state shows it.
fn shared_account(state: &Value) -> Option<&Value> {
    state["storageAccounts"]
        .as_array()?
        .iter()
        .find(|a| a["id"].as_str().is_some_and(|id| id.ends_with(ACCOUNT)))
}

/// Each AccountKey datastore on the demo account: `(workspace/datastore, held)` where held is
/// `key1`, `key2` or `INVALID`.
fn key_datastores(state: &Value) -> Vec<(String, &'static str)> {
    let Some(account) = shared_account(state) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ws in state["workspaces"].as_array().into_iter().flatten() {
        let ws_name = ws["id"]
            .as_str()
            .and_then(|id| id.rsplit('/').next())
            .unwrap_or("?");
        for ds in ws["datastores"].as_array().into_iter().flatten() {
            let props = &ds["resource"]["properties"];
            let on_account = props["accountName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(ACCOUNT));
            if !on_account || props["credentials"]["credentialsType"] != "AccountKey" {
                continue;
            }
            let key = &ds["secrets"]["key"];
            let held = if *key == account["keys"]["key1"] {
                "key1"
            } else if *key == account["keys"]["key2"] {
                "key2"
            } else {
                "INVALID"
            };
            out.push((
                format!(
                    "{ws_name}/{}",
                    ds["resource"]["name"].as_str().unwrap_or("?")
                ),
                held,
            ));
        }
    }
    out
}

fn print_datastores(state: &Value) {
    // Which key1 a datastore holds is only told apart by when that key was created.
    if let Some(account) = shared_account(state) {
        let created = |slot: &str| {
            account["keyCreationTime"][slot]
                .as_str()
                .unwrap_or("never regenerated")
                .to_string()
        };
        println!(
            "   ({ACCOUNT}'s key1 was created {}, its key2 {})",
            created("key1"),
            created("key2")
        );
    }
    for (name, held) in key_datastores(state) {
        println!("   {name:<36} AccountKey  holds {held}");
    }
    for (name, signer) in sas_datastores(state) {
        println!("   {name:<36} SAS token   signed with {signer}");
    }
}

/// Each SAS datastore on the demo account: `(workspace/datastore, signer)` where signer is
/// `key1`, `key2` or `a regenerated key`, found by signing the token's fields again.
fn sas_datastores(state: &Value) -> Vec<(String, &'static str)> {
    let Some(account) = shared_account(state) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ws in state["workspaces"].as_array().into_iter().flatten() {
        let ws_name = short(ws["id"].as_str().unwrap_or("?"));
        for ds in ws["datastores"].as_array().into_iter().flatten() {
            let props = &ds["resource"]["properties"];
            let on_account = props["accountName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(ACCOUNT));
            let (Some(token), Some(container)) = (
                ds["secrets"]["sasToken"].as_str(),
                props["containerName"].as_str(),
            ) else {
                continue;
            };
            if !on_account {
                continue;
            }
            let signer = ["key1", "key2"]
                .into_iter()
                .find(|slot| signed_with(token, &account["keys"][*slot], container))
                .unwrap_or("a regenerated key");
            let name = ds["resource"]["name"].as_str().unwrap_or("?");
            out.push((format!("{ws_name}/{name}"), signer));
        }
    }
    out
}

/// True when `token`'s signature is what `key` gives for its fields.
fn signed_with(token: &str, key: &Value, container: &str) -> bool {
    let (Ok(parsed), Some(key)) = (sas::SasToken::parse(token), key.as_str()) else {
        return false;
    };
    let Ok(key) = AccountKey::new(ACCOUNT, &SecretString::from(key)) else {
        return false;
    };
    sas::is_signed_with(&parsed, &key, sas::SignedResource::Container(container)) == Ok(true)
}

/// With Azurite: every AccountKey datastore on the account verifies, and the SAS datastore was
/// re-minted and verifies.
fn storage_problems(record: &InvocationRecord, azurite: bool) -> Vec<String> {
    if !azurite {
        return Vec::new();
    }
    let report = &record.body["ReturnValue"][0]["report"];
    let mut problems = Vec::new();
    for entry in report["entries"].as_array().into_iter().flatten() {
        let Some(verification) = entry.get("verification") else {
            continue;
        };
        let name = entry["datastore"].as_str().unwrap_or("?");
        let workspace = short(entry["workspace"].as_str().unwrap_or("?"));
        let file_share = verification["outcome"] == "notChecked"
            && verification["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no file endpoint"));
        if verification["outcome"] != "verified" && !file_share {
            problems.push(format!(
                "{workspace}/{name}: storage said {}",
                verification["outcome"]
            ));
        }
        if verification["credential"] == "sas" && entry["action"] != "updateSas" {
            problems.push(format!(
                "{workspace}/{name}: the dead SAS token was not re-minted"
            ));
        }
    }
    problems
}

fn problems(state: &Value) -> Vec<String> {
    let mut problems: Vec<String> = key_datastores(state)
        .into_iter()
        .filter(|(_, held)| *held == "INVALID")
        .map(|(name, _)| format!("{name} still holds an invalid key"))
        .collect();
    for ws in state["workspaces"].as_array().into_iter().flatten() {
        let default_here = ws["storageAccount"]
            .as_str()
            .is_some_and(|id| id.ends_with(ACCOUNT));
        if default_here && ws["storageKeysInSync"] != Value::Bool(true) {
            problems.push(format!(
                "workspace {} was not resynced",
                ws["id"].as_str().unwrap_or("?")
            ));
        }
    }
    problems
}

fn verdict(
    problems: &[String],
    handler_exit: Option<i32>,
    azurite: bool,
) -> anyhow::Result<ExitCode> {
    println!();
    if handler_exit != Some(0) {
        println!("The handler exited with {handler_exit:?} on SIGTERM (expected 0).");
    }
    if problems.is_empty() && handler_exit == Some(0) {
        match azurite {
            true => println!(
                "Result: every AccountKey datastore on {ACCOUNT} holds a valid key, which storage (Azurite) accepts\n        for every blob datastore (Azurite has no Azure Files, so the file share is not checked),\n        the dead SAS token was re-minted and works, and the workspace is resynced;"
            ),
            false => println!(
                "Result: every AccountKey datastore on {ACCOUNT} holds a valid key and its workspace is resynced\n        (storage checks need Azurite: `npm ci`); the SAS datastore's token is still signed with the\n        regenerated key: keysync re-mints one only once storage has rejected it, so here a person\n        would replace it (with Azurite, the demo shows the re-mint);"
            ),
        }
        println!(
            "        the due account was rotated with no datastore ever on an invalid key, and the echo wrote nothing."
        );
        return Ok(ExitCode::SUCCESS);
    }
    for problem in problems {
        println!("Problem: {problem}");
    }
    Ok(ExitCode::FAILURE)
}
