//! `keysync plan`, `sync` and `rotate` run as a person or a pipeline would: the real binary as a
//! subprocess, against the local emulator, checked through its output, its exit code and the
//! requests the emulator served.

use std::ops::Deref;

use keysync::emulator::{EmulatorOptions, FaultKind, FaultRule, RunningEmulator, Scenario};
use serde_json::{Value, json};

#[path = "shared/azurite.rs"]
mod azurite;
#[path = "shared/secrets.rs"]
mod secrets;

use azurite::azurite_or_skip;

const SHARED: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlshared01";

/// Operations that change something in Azure.
const WRITES: [&str; 3] = [
    "Datastores_CreateOrUpdate",
    "Workspaces_ResyncKeys",
    "StorageAccounts_RegenerateKey",
];

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `keysync` with exactly `env` as its environment, logging everything it can
/// (`RUST_LOG=trace`) unless `env` says otherwise, so that the secrets scan sees it all.
async fn keysync(env: &[(String, String)], args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .args(args)
        .env_clear()
        .env("RUST_LOG", "trace")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("keysync runs");
    Output {
        code: output.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The emulator with the demo scenario, and the secrets it held at the start (a regeneration
/// replaces a key, which stays a secret).
struct Emulator {
    running: RunningEmulator,
    initial_secrets: Vec<String>,
}

impl Deref for Emulator {
    type Target = RunningEmulator;

    fn deref(&self) -> &RunningEmulator {
        &self.running
    }
}

impl Emulator {
    /// Runs `keysync` against the emulator with `env`, then searches its stdout and stderr for
    /// every secret the emulator holds or held: account keys, stored datastore secrets and SAS
    /// signatures, the bearer tokens it issued (to this process too), the identity header.
    async fn run(&self, env: &[(String, String)], args: &[&str]) -> Output {
        let out = keysync(env, args).await;
        let mut secrets = secrets::secrets(&self.state());
        secrets.extend(self.initial_secrets.iter().cloned());
        secrets.extend(
            self.env()
                .into_iter()
                .filter(|(k, _)| k == "IDENTITY_HEADER")
                .map(|(_, v)| v),
        );
        let output = format!("{}\n{}", out.stdout, out.stderr);
        // Named by the command alone: the arguments may be what the scan is looking for.
        let command = args.first().copied().unwrap_or_default();
        secrets::assert_none_in(
            &output,
            &secrets,
            &format!("the output of keysync {command}"),
        );
        out
    }
}

async fn emulator() -> Emulator {
    let running = RunningEmulator::start(Scenario::demo(), EmulatorOptions::default())
        .await
        .expect("emulator starts");
    let initial_secrets = secrets::secrets(&running.state());
    Emulator {
        running,
        initial_secrets,
    }
}

/// Regenerates key1 of the shared account as a portal user would, so that there is work to do.
async fn regenerate_key1(emulator: &RunningEmulator) {
    if let Err(e) = emulator.regenerate_as_user(SHARED, "key1").await {
        panic!("regenerateKey: {e:#}");
    }
}

/// Every request the emulator served that is not a read, failed ones included: any method but
/// `GET`, except the two `POST`s that only read and that a plan needs (`listKeys` for the
/// target key, `listSecrets` for the key each datastore holds).
fn non_reads(emulator: &RunningEmulator) -> Vec<String> {
    const READING_POSTS: [&str; 2] = ["StorageAccounts_ListKeys", "Datastores_ListSecrets"];
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .filter(|r| !(r.method == "POST" && READING_POSTS.contains(&r.operation.as_str())))
        .map(|r| format!("{} {} {} -> {}", r.method, r.operation, r.path, r.status))
        .collect()
}

/// The successful writes the emulator served so far.
fn writes(emulator: &RunningEmulator) -> Vec<String> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| (200..300).contains(&r.status) && WRITES.contains(&r.operation.as_str()))
        .map(|r| r.operation)
        .collect()
}

/// Which key of the shared account a datastore's stored secret is.
fn held(emulator: &RunningEmulator, workspace: &str, datastore: &str) -> &'static str {
    let state = emulator.state();
    let account = state["storageAccounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == SHARED)
        .unwrap();
    let ws = state["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"].as_str().unwrap().ends_with(workspace))
        .unwrap();
    let ds = ws["datastores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["resource"]["name"] == datastore)
        .unwrap();
    let key = &ds["secrets"]["key"];
    match () {
        _ if *key == account["keys"]["key1"] => "key1",
        _ if *key == account["keys"]["key2"] => "key2",
        _ => "stale",
    }
}

fn account<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["account"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{name}"))
        })
        .unwrap_or_else(|| panic!("no report for {name}"))
}

fn entry<'a>(report: &'a Value, datastore: &str) -> &'a Value {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["datastore"] == datastore)
        .unwrap_or_else(|| panic!("no entry for {datastore}"))
}

#[tokio::test]
async fn plan_shows_what_a_reconcile_would_do_and_writes_nothing() {
    let emulator = emulator().await;
    regenerate_key1(&emulator).await;
    let before = non_reads(&emulator).len();

    let out = emulator
        .run(&emulator.env(), &["plan", "--account", "stmlshared01"])
        .await;

    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for line in [
        "storage account stmlshared01, target key1 (dry run: nothing written)",
        "  workspace mlw-vision",
        "    workspaceblobstore  stale    would update to key1",
        "    curated             key2     inSync",
        "    images_identity              skipped  (identity-based access: no key stored)",
        "    (workspace)                  would resync",
        "  workspace mlw-forecast",
        "    shared_features     stale    would update to key1",
        "ok: 1 account: 4 planned, 1 inSync, 6 skipped",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains('\u{1b}'), "colour on a pipe");
    assert!(
        !out.stderr.contains('\r'),
        "progress on a pipe: {}",
        out.stderr
    );
    let since = non_reads(&emulator).split_off(before);
    assert_eq!(
        since,
        Vec::<String>::new(),
        "a plan sends nothing but reads"
    );
}

#[tokio::test]
async fn plan_as_json_covers_the_whole_scope_and_writes_nothing() {
    let emulator = emulator().await;
    regenerate_key1(&emulator).await;
    let before = non_reads(&emulator).len();

    let out = emulator.run(&emulator.env(), &["plan", "--json"]).await;

    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.json();
    assert_eq!(run["dryRun"], true);
    assert_eq!(run["outcome"], "ok");
    assert_eq!(run["accounts"].as_array().unwrap().len(), 3);
    let shared = account(&run, "stmlshared01");
    let blob = entry(shared, "workspaceblobstore");
    assert_eq!(
        (
            &blob["held"],
            &blob["action"],
            &blob["key"],
            &blob["outcome"]
        ),
        (
            &json!("stale"),
            &json!("updateKey"),
            &json!("key1"),
            &json!("planned")
        )
    );
    assert_eq!(
        entry(account(&run, "stmlother02"), "archive_other")["outcome"],
        "inSync"
    );
    // A plan checks no SAS token, so it has nothing for a person to do about one.
    let sas = entry(shared, "exports_sas");
    assert_eq!(sas["outcome"], "skipped");
    assert!(sas.get("attention").is_none(), "{sas:#}");
    assert!(
        sas["reason"]
            .as_str()
            .unwrap()
            .ends_with("checked against storage by sync, not by a plan"),
        "{sas:#}"
    );
    let since = non_reads(&emulator).split_off(before);
    assert_eq!(
        since,
        Vec::<String>::new(),
        "a plan sends nothing but reads"
    );
}

#[tokio::test]
async fn sync_fixes_what_plan_showed_and_a_second_sync_writes_no_datastore() {
    let emulator = emulator().await;
    regenerate_key1(&emulator).await;

    let out = emulator
        .run(&emulator.env(), &["sync", "--account", SHARED])
        .await;

    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("workspaceblobstore  stale    updated to key1")
    );
    assert!(out.stdout.contains("(workspace)                  resynced"));
    assert!(
        out.stdout
            .contains("ok: 1 account: 3 updated, 1 resynced, 1 inSync, 6 skipped")
    );
    for (ws, ds) in [
        ("mlw-vision", "workspaceblobstore"),
        ("mlw-vision", "workspacefilestore"),
        ("mlw-forecast", "shared_features"),
    ] {
        assert_eq!(held(&emulator, ws, ds), "key1", "{ws}/{ds}");
    }

    let before = writes(&emulator).len();
    let again = emulator.run(&emulator.env(), &["sync", "--json"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let run = again.json();
    assert_eq!(
        (&run["dryRun"], &run["outcome"]),
        (&json!(false), &json!("ok"))
    );
    assert_eq!(
        entry(account(&run, "stmlshared01"), "workspaceblobstore")["outcome"],
        "inSync"
    );
    // A new process cannot know that the workspace was resynced (Azure does not say), so within
    // the hour after a regeneration it resyncs again; no datastore is written.
    let since: Vec<String> = writes(&emulator).split_off(before);
    assert!(
        since.iter().all(|op| op == "Workspaces_ResyncKeys") && since.len() <= 1,
        "{since:?}"
    );
}

#[tokio::test]
async fn rotate_rotates_a_due_account_leaves_a_young_one_and_force_lifts_the_age_check() {
    let emulator = emulator().await;
    let env = emulator.env();

    let due = emulator
        .run(&env, &["rotate", "--account", "stmlother02", "--json"])
        .await;
    assert_eq!(due.code, 0, "{}{}", due.stdout, due.stderr);
    let rotation = due.json();
    assert_eq!(rotation["outcome"], "rotated");
    assert_eq!(rotation["regenerated"], "key2");
    assert_eq!(rotation["report"]["targetKey"], "key2");

    let young = emulator
        .run(&env, &["rotate", "--account", "stmlfresh03"])
        .await;
    assert_eq!(young.code, 0, "{}", young.stderr);
    assert!(
        young.stdout.starts_with(
            "rotation of storage account stmlfresh03: left (key1 (in use) is 10 days old"
        ),
        "{}",
        young.stdout
    );
    // The regeneration first; then each workspace's datastores, and mlw-forecast's resync after
    // its own datastore (the workspaces run side by side, so the other one's write may come
    // before or after that resync).
    let written: Vec<(String, String)> = emulator
        .requests()
        .into_iter()
        .filter(|r| (200..300).contains(&r.status) && WRITES.contains(&r.operation.as_str()))
        .map(|r| (r.operation, r.path))
        .collect();
    let operations: Vec<&str> = written.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(operations[0], "StorageAccounts_RegenerateKey");
    let mut rest = operations[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(
        rest,
        [
            "Datastores_CreateOrUpdate",
            "Datastores_CreateOrUpdate",
            "Workspaces_ResyncKeys"
        ]
    );
    let position = |op: &str, path: &str| {
        written
            .iter()
            .position(|(o, p)| o == op && p.contains(path))
            .unwrap()
    };
    assert!(
        position("Workspaces_ResyncKeys", "/workspaces/mlw-forecast")
            > position("Datastores_CreateOrUpdate", "/workspaces/mlw-forecast/"),
        "{written:#?}"
    );

    let forced = emulator
        .run(
            &env,
            &["rotate", "--account", "stmlfresh03", "--force", "--json"],
        )
        .await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let rotation = forced.json();
    assert_eq!(rotation["outcome"], "rotated");
    assert!(
        rotation["reason"]
            .as_str()
            .unwrap()
            .starts_with("rotation forced")
    );
    assert_eq!(
        entry(&rotation["report"], "scratch_fresh")["outcome"],
        "updated"
    );
}

/// The lines of stderr that say why the command exits 1 (the rest is logging).
fn reasons(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect()
}

#[tokio::test]
async fn sync_exits_1_while_a_credential_storage_refused_is_left_in_place() {
    let Some(azurite) =
        azurite_or_skip("sync_exits_1_while_a_credential_storage_refused_is_left_in_place")
    else {
        return;
    };
    let emulator = emulator().await;
    emulator
        .attach_azurite(&azurite)
        .await
        .expect("Azurite starts");
    regenerate_key1(&emulator).await;

    let out = emulator
        .run(&emulator.env(), &["sync", "--account", "stmlshared01"])
        .await;

    // The key1 datastores were fixed, but the SAS token signed with the old key1 still does not
    // work, and keysync was not allowed to replace it.
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let sas = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("exports_sas"))
        .unwrap_or_else(|| panic!("no exports_sas line in\n{}", out.stdout));
    assert!(
        sas.contains("skipped, storage rejected (AuthorizationFailure)"),
        "{sas}"
    );
    assert_eq!(
        out.stdout.lines().last(),
        Some("attention: 1 account: 3 updated, 1 resynced, 1 inSync, 6 skipped")
    );
    assert_eq!(
        reasons(&out),
        ["error: not everything is in sync: 1 needs a person (mlw-forecast/exports_sas)"]
    );

    let mut remint = emulator.env();
    remint.push(("KEYSYNC_REMINT_SAS".into(), "true".into()));
    let fixed = emulator
        .run(&remint, &["sync", "--account", "stmlshared01", "--json"])
        .await;

    assert_eq!(fixed.code, 0, "{}{}", fixed.stdout, fixed.stderr);
    let run = fixed.json();
    assert_eq!(run["outcome"], "ok");
    assert_eq!(
        entry(account(&run, "stmlshared01"), "exports_sas")["action"],
        "updateSas"
    );
    assert_eq!(reasons(&fixed), Vec::<&str>::new());
}

#[tokio::test]
async fn a_failure_exits_1_and_says_what_to_do() {
    let emulator = emulator().await;
    regenerate_key1(&emulator).await;
    let mut forbidden = FaultRule::new("Datastores_CreateOrUpdate", FaultKind::Error);
    forbidden.status = Some(403);
    emulator.set_faults(vec![forbidden]);

    let out = emulator
        .run(&emulator.env(), &["sync", "--account", "stmlshared01"])
        .await;

    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(
        "grant keysync's identity Microsoft.MachineLearningServices/workspaces/datastores/write on this resource"
    ));
    assert!(
        out.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("failed: 1 account")
    );
    assert_eq!(
        reasons(&out),
        [
            "error: not everything is in sync: 3 failed (mlw-vision/workspaceblobstore, mlw-vision/workspacefilestore, mlw-forecast/shared_features)"
        ]
    );

    let mut unreadable = FaultRule::new("StorageAccounts_GetProperties", FaultKind::Error);
    unreadable.status = Some(403);
    emulator.set_faults(vec![unreadable]);
    let out = emulator
        .run(
            &emulator.env(),
            &["plan", "--account", "stmlshared01", "--json"],
        )
        .await;
    assert_eq!(out.code, 1);
    assert!(
        out.json()["error"]
            .as_str()
            .unwrap()
            .contains("grant keysync's identity Microsoft.Storage/storageAccounts/read"),
        "{}",
        out.stdout
    );
    let reasons = reasons(&out);
    assert_eq!(reasons.len(), 1, "{}", out.stderr);
    assert!(
        reasons[0].starts_with("error: StorageAccounts_GetProperties on /subscriptions/"),
        "{}",
        reasons[0]
    );
}

#[tokio::test]
async fn usage_errors_exit_2_and_say_what_to_set() {
    let emulator = emulator().await;
    let env = emulator.env();
    let without_scope: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "KEYSYNC_SUBSCRIPTIONS")
        .cloned()
        .collect();

    let out = emulator.run(&without_scope, &["plan"]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("KEYSYNC_SUBSCRIPTIONS: required")
            && out
                .stderr
                .contains("pass --subscriptions or set KEYSYNC_SUBSCRIPTIONS"),
        "{}",
        out.stderr
    );

    let out = emulator
        .run(&env, &["sync", "--account", "stnothere99", "--json"])
        .await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("no storage account named 'stnothere99'")
    );
    assert!(out.json()["error"].as_str().is_some());

    let elsewhere = SHARED.replace("11111111", "99999999");
    let out = emulator
        .run(&env, &["rotate", "--account", &elsewhere])
        .await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("outside keysync's scope"),
        "{}",
        out.stderr
    );

    for args in [
        &["rotate"][..],
        &["plan", "--bogus"],
        &["plan", "--account"],
    ] {
        assert_eq!(emulator.run(&env, args).await.code, 2, "{args:?}");
    }
    assert_eq!(non_reads(&emulator), Vec::<String>::new());
}

#[tokio::test]
async fn a_setting_that_is_not_utf8_is_refused_by_name_not_read_as_absent() {
    use std::os::unix::ffi::OsStrExt;
    let emulator = emulator().await;
    let garbled = std::ffi::OsStr::from_bytes(b"http://127.0.0.1:1\xff");
    for (setting, args) in [
        ("KEYSYNC_ARM_ENDPOINT", &["plan"][..]),
        ("KEYSYNC_MAX_CONCURRENCY", &["plan"][..]),
        ("KEYSYNC_VERIFY", &["sync"][..]),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
            .args(args)
            .env_clear()
            .envs(emulator.env())
            .env(setting, garbled)
            .output()
            .await
            .expect("keysync runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{setting}: {stderr}");
        assert!(
            stderr.contains(&format!("{setting}: the value is not valid UTF-8 text")),
            "{setting}: {stderr}"
        );
    }
    // Refused at start-up: not a request sent, to the emulator or to Azure's default address.
    assert!(emulator.requests().is_empty(), "{:?}", emulator.requests());
}

#[tokio::test]
async fn a_setting_with_a_line_break_cannot_forge_a_second_log_line() {
    let emulator = emulator().await;
    let mut env = emulator.env();
    env.push((
        "KEYSYNC_MAX_CONCURRENCY".into(),
        "1\n2026-12-04T00:00:00Z  INFO forged line".into(),
    ));

    let out = keysync(&env, &["plan"]).await;

    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("KEYSYNC_MAX_CONCURRENCY"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr
            .lines()
            .any(|l| l.starts_with("2026-12-04T00:00:00Z")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn flags_win_over_the_environment() {
    let emulator = emulator().await;
    let env: Vec<(String, String)> = emulator
        .env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "KEYSYNC_ARM_ENDPOINT" => (k, "http://127.0.0.1:9".to_string()),
            "KEYSYNC_SUBSCRIPTIONS" => (k, "99999999-2222-3333-4444-555555555555".to_string()),
            _ => (k, v),
        })
        .collect();
    let endpoint = emulator
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_string();

    let out = emulator
        .run(
            &env,
            &[
                "plan",
                "--arm-endpoint",
                &endpoint,
                "--subscriptions",
                "11111111-2222-3333-4444-555555555555",
                "--account",
                "stmlshared01",
                "--json",
            ],
        )
        .await;

    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["outcome"], "ok");
}

#[tokio::test]
async fn every_command_explains_itself_with_an_example() {
    for command in ["plan", "sync", "rotate"] {
        let out = keysync(&[], &[command, "--help"]).await;
        assert_eq!(out.code, 0);
        assert!(
            out.stdout.contains("Examples:"),
            "{command}: {}",
            out.stdout
        );
        assert!(out.stdout.contains("--json"), "{command}");
        assert!(out.stdout.contains("KEYSYNC_SUBSCRIPTIONS"), "{command}");
    }
    let top = keysync(&[], &["--help"]).await;
    assert_eq!(top.code, 0);
    assert!(
        top.stdout.contains("Examples:\n  keysync demo"),
        "{}",
        top.stdout
    );
    assert!(
        top.stdout.contains("Exit codes: 0 success"),
        "{}",
        top.stdout
    );
}

#[tokio::test]
async fn rotate_refuses_the_function_apps_own_storage_unless_it_is_listed() {
    let emulator = emulator().await;
    let mut env = emulator.env();
    env.push((
        "AzureWebJobsStorage".into(),
        "DefaultEndpointsProtocol=https;AccountName=stmlother02;EndpointSuffix=core.windows.net"
            .into(),
    ));

    let refused = emulator
        .run(&env, &["rotate", "--account", "stmlother02"])
        .await;
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stdout
            .contains("left (the Function App runs on this account"),
        "{}",
        refused.stdout
    );
    assert_eq!(non_reads(&emulator), Vec::<String>::new());

    let other = SHARED.replace("stmlshared01", "stmlother02");
    env.push(("KEYSYNC_ROTATE_ACCOUNTS".into(), other));
    let listed = emulator
        .run(&env, &["rotate", "--account", "stmlother02", "--json"])
        .await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json()["outcome"], "rotated");
}

#[tokio::test]
async fn serve_without_a_port_names_the_variable_the_host_sets() {
    let out = keysync(&[], &["serve"]).await;

    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(
            "error: no port to listen on: the Functions host sets FUNCTIONS_CUSTOMHANDLER_PORT"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Usage: keysync serve"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn the_secrets_scan_sees_trace_logs_and_the_token_keysync_was_given_and_catches_a_leak() {
    let emulator = emulator().await;

    let out = emulator
        .run(&emulator.env(), &["plan", "--account", "stmlshared01"])
        .await;

    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.lines().count() > 20,
        "trace logging reached stderr:\n{}",
        out.stderr
    );
    let state = emulator.state();
    let token = state["issuedTokens"][0]
        .as_str()
        .expect("keysync was given a token");
    assert!(secrets::secrets(&state).iter().any(|s| s == token));
    // clap quotes an unknown flag back: with the identity header in it (a key has `=` in it,
    // where clap cuts a flag), the scan must fail the command.
    let header = emulator
        .env()
        .into_iter()
        .find(|(k, _)| k == "IDENTITY_HEADER")
        .map(|(_, v)| v)
        .expect("the identity header");
    let flag = format!("--x{header}");
    let (env, args) = (emulator.env(), ["plan", flag.as_str()]);
    let leak = std::panic::AssertUnwindSafe(emulator.run(&env, &args));
    let caught = futures::FutureExt::catch_unwind(leak).await;
    assert!(caught.is_err(), "the scan let a key through");
}

/// How many requests of `operation` the emulator has answered with success.
fn succeeded(emulator: &RunningEmulator, operation: &str) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.operation == operation && (200..300).contains(&r.status))
        .count()
}

/// Waits up to 30 s for `done`, checking every 50 ms.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `keysync host` runs `keysync serve` with its own environment as app settings, prints where
/// the host's endpoints are, passes the emulator's events, a timer run and a Reconcile request to
/// the handler, and stops it and itself on SIGTERM, as the Functions host does on shutdown.
#[tokio::test]
async fn host_starts_the_handler_serves_its_functions_and_stops_on_sigterm() {
    let emulator = emulator().await;
    let (mut child, settings) = host(&emulator.env()).await;

    let webhook = url::Url::parse(&settings["KEYSYNC_EVENT_WEBHOOK"]).unwrap();
    assert!(
        webhook
            .as_str()
            .ends_with("/runtime/webhooks/eventgrid?functionName=KeyRegenerated")
    );
    emulator.set_event_webhook(Some(webhook));
    regenerate_key1(&emulator).await;
    eventually("the event's three datastore updates and the resync", || {
        succeeded(&emulator, "Datastores_CreateOrUpdate") == 3
            && succeeded(&emulator, "Workspaces_ResyncKeys") == 1
    })
    .await;

    let client = reqwest::Client::new();
    let timer = client
        .post(&settings["KEYSYNC_TIMER_URL"])
        .send()
        .await
        .unwrap();
    assert_eq!(timer.status(), 202);
    eventually("the timer's rotation of stmlother02", || {
        emulator.state()["storageAccounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| {
                a["id"]
                    .as_str()
                    .is_some_and(|id| id.ends_with("/stmlother02"))
                    && a["regenerations"] == 1
            })
    })
    .await;

    let plan = client
        .post(&settings["KEYSYNC_RECONCILE_URL"])
        .header("x-functions-key", &settings["KEYSYNC_FUNCTION_KEY"])
        .json(&json!({"account": "stmlshared01", "dryRun": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(plan.status(), 200);
    let plan: Value = plan.json().await.unwrap();
    assert_eq!(plan["outcome"], "ok", "{plan:#}");

    let pid = nix::unistd::Pid::from_raw(child.0.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), child.0.wait())
        .await
        .expect("keysync host exits on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Starts `keysync host` with exactly `env` (and no storage checks: the demo accounts' endpoints
/// are Azure's own names); returns it and the `NAME=value` lines it printed.
/// `keysync host`, stopped as the Functions host is stopped when it is dropped: SIGTERM, so
/// that it stops its handler too (a SIGKILL would leave `keysync serve` running, parentless),
/// then SIGKILL if it has not exited within a few seconds.
struct HostProcess(tokio::process::Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let Some(id) = self.0.id() else { return };
        let pid = nix::unistd::Pid::from_raw(id as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..250 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.start_kill();
    }
}

async fn host(
    env: &[(String, String)],
) -> (HostProcess, std::collections::HashMap<String, String>) {
    use tokio::io::AsyncBufReadExt;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .args(["host", "--listen", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("KEYSYNC_VERIFY", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("keysync host starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut settings = std::collections::HashMap::new();
    while settings.len() < 4 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("keysync host prints its endpoints")
            .expect("stdout reads")
            .expect("keysync host printed four lines");
        let (name, value) = line.split_once('=').expect("a NAME=value line");
        settings.insert(name.to_string(), value.to_string());
    }
    (HostProcess(child), settings)
}

/// A proxy in the environment (a developer's shell, an app setting) is for the way out to Azure:
/// the host still calls the handler on loopback directly, for readiness and for invocations.
#[tokio::test]
async fn host_reaches_the_handler_directly_when_a_proxy_is_set() {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let proxied = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = proxied.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut connection, _)) = proxy.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let reply = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n";
            let _ = connection.write_all(reply).await;
        }
    });
    let emulator = emulator().await;
    let mut env = emulator.env();
    for name in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        env.push((name.to_string(), proxy_url.clone()));
    }
    let (_child, settings) = host(&env).await;

    // Not a regeneration: the handler answers without calling ARM (whose client does honour
    // the proxy, as it must on the way to Azure).
    let mut event: Value = serde_json::from_str(include_str!(
        "fixtures/azure-contract/events/regenerate_key_egschema.json"
    ))
    .unwrap();
    event[0]["data"]["operationName"] = json!("Microsoft.Storage/storageAccounts/listKeys/action");
    let delivery = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(&settings["KEYSYNC_EVENT_WEBHOOK"])
        .header("aeg-event-type", "Notification")
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(delivery.status(), 200);
    assert_eq!(
        proxied.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the host went through the proxy"
    );
}

#[tokio::test]
async fn the_emulator_refuses_a_scenario_that_is_not_an_object_or_sets_two_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path.to_string_lossy().into_owned()
    };
    let array = write("array.json", &json!([]));
    let sub = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers";
    let both = write(
        "both.json",
        &json!({
            "storageAccounts": [{"id": format!("{sub}/Microsoft.Storage/storageAccounts/sta")}],
            "workspaces": [{
                "id": format!("{sub}/Microsoft.MachineLearningServices/workspaces/w1"),
                "storageAccount": format!("{sub}/Microsoft.Storage/storageAccounts/sta"),
                "datastores": [{
                    "name": "blob1",
                    "properties": {"datastoreType": "AzureBlob", "accountName": "sta", "credentials": {"credentialsType": "AccountKey"}},
                    "secrets": {"key": "not-a-real-key", "keyRef": "key1"}
                }]
            }]
        }),
    );

    let out = exits_soon(&["emulator", "--scenario", &array], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("array.json: a scenario is a JSON object, such as {\"storageAccounts\""),
        "{}",
        out.stderr
    );
    let out = exits_soon(&["emulator", "--scenario", &both], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "workspace 'w1': datastore 'blob1': secrets sets key and keyRef: set exactly one of"
        ),
        "{}",
        out.stderr
    );
}

/// Runs `keysync` with exactly `env`, for a command that must refuse to start: one that started
/// would serve until stopped, so it is given ten seconds and then stopped.
async fn exits_soon(args: &[&str], env: &[(&str, &str)]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .unwrap_or_else(|_| panic!("keysync {args:?} started instead of refusing"))
        .expect("keysync runs");
    Output {
        code: output.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn serve_refuses_to_start_with_a_rotation_it_could_never_carry_out() {
    let sub = "11111111-2222-3333-4444-555555555555";
    let base = [
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "0"),
        ("KEYSYNC_SUBSCRIPTIONS", sub),
    ];
    let elsewhere = SHARED.replace("11111111", "99999999");
    for (setting, value, words) in [
        (
            "KEYSYNC_ROTATE_ACCOUNTS",
            elsewhere.as_str(),
            "KEYSYNC_ROTATE_ACCOUNTS: stmlshared01 is in subscription 99999999-2222-3333-4444-555555555555, which KEYSYNC_SUBSCRIPTIONS does not list",
        ),
        (
            "KEYSYNC_ROTATION_SCHEDULE",
            "0 0 3 31 2 *",
            "KEYSYNC_ROTATION_SCHEDULE: '0 0 3 31 2 *' never fires in the next four years",
        ),
    ] {
        let mut env = base.to_vec();
        env.push((setting, value));
        let out = exits_soon(&["serve"], &env).await;
        assert_ne!(out.code, 0, "{setting}: {}", out.stderr);
        assert!(out.stderr.contains(words), "{setting}: {}", out.stderr);
    }
}
