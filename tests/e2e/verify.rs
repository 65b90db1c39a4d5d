//! Verification against the storage data plane: the real handler checks datastore credentials
//! against Azurite (the Azure Storage emulator from npm), which the emulator restarts with the
//! new keys whenever one is regenerated.
//!
//! Tests that need Azurite skip with a message when it is not installed (`npm ci` at the
//! repository root installs it), unless `KEYSYNC_REQUIRE_AZURITE=1` (set by `.ci/run`) makes
//! that a failure.

use std::time::{Duration, Instant};

use keysync::emulator::Scenario;
use keysync::storage::sas::SasToken;
use serde_json::{Value, json};

use crate::helpers::*;

const ACCOUNT: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-verify/providers/Microsoft.Storage/storageAccounts/stverify01";
const LOCKED: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-verify/providers/Microsoft.Storage/storageAccounts/stlocked02";
const WORKSPACE: &str = "mlw-verify";

/// An account SAS and a container SAS with a far expiry, unsigned: the emulator signs them at
/// load with the key the scenario names.
const ACCOUNT_SAS: &str = "sv=2024-11-04&ss=b&srt=co&sp=rl&se=2099-01-01T00:00:00Z&spr=https,http";
const CONTAINER_SAS: &str = "sv=2024-11-04&sr=c&sp=rl&se=2099-01-01T00:00:00Z&spr=https,http";

fn blob(name: &str, container: &str, secrets: Value) -> Value {
    let credentials = match secrets.get("keyRef").or(secrets.get("key")) {
        Some(_) => "AccountKey",
        None => "Sas",
    };
    json!({
        "name": name,
        "properties": {
            "description": format!("{name} data"), "tags": {"n": name}, "properties": {},
            "isDefault": false,
            "datastoreType": "AzureBlob", "accountName": "stverify01", "containerName": container,
            "endpoint": "core.windows.net", "protocol": "https",
            "serviceDataAccessAuthIdentity": "None",
            "credentials": {"credentialsType": credentials}
        },
        "secrets": secrets
    })
}

/// `stverify01` on Azurite with blob, ADLS Gen2, file and SAS datastores, and `stlocked02` with
/// shared-key access disabled.
fn scenario() -> Scenario {
    let lake = json!({
        "name": "lake",
        "properties": {
            "datastoreType": "AzureDataLakeGen2", "accountName": "stverify01", "filesystem": "lake",
            "endpoint": "core.windows.net", "protocol": "https",
            "credentials": {"credentialsType": "AccountKey"}
        },
        "secrets": {"keyRef": "key2"}
    });
    let share = json!({
        "name": "share",
        "properties": {
            "datastoreType": "AzureFile", "accountName": "stverify01", "fileShareName": "share",
            "endpoint": "core.windows.net", "protocol": "https",
            "credentials": {"credentialsType": "AccountKey"}
        },
        "secrets": {"keyRef": "key2"}
    });
    let locked = |name: &str, secrets: Value| {
        let mut ds = blob(name, "locked", secrets);
        ds["properties"]["accountName"] = json!("stlocked02");
        ds
    };
    serde_json::from_value(json!({
        "storageAccounts": [
            {"id": ACCOUNT, "azurite": true, "allowSharedKeyAccess": true,
             "keyCreationTime": {"key1": "2026-01-01T00:00:00Z", "key2": "2025-12-01T00:00:00Z"}},
            {"id": LOCKED, "azurite": true, "allowSharedKeyAccess": false}
        ],
        "workspaces": [{
            "id": format!("/subscriptions/{SUB}/resourceGroups/rg-verify/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"),
            "storageAccount": ACCOUNT,
            "datastores": [
                blob("moved", "moved", json!({"keyRef": "key1"})),
                blob("steady", "steady", json!({"keyRef": "key2"})),
                lake,
                share,
                blob("exports", "exports", json!({"sasRef": {"key": "key1", "token": ACCOUNT_SAS}})),
                blob("shared", "shared", json!({"sasRef": {"key": "key1", "token": CONTAINER_SAS}})),
                locked("locked_key", json!({"keyRef": "key1"})),
                locked("locked_sas", json!({"sasRef": {"key": "key1", "token": ACCOUNT_SAS}}))
            ]
        }]
    }))
    .expect("scenario")
}

/// The emulator with Azurite attached and the handler running with `env`.
async fn start(binary: &std::path::Path, env: &[(&str, &str)]) -> TestApp {
    let options = Options {
        extra_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        azurite: Some(binary.to_path_buf()),
        ..Options::default()
    };
    TestApp::start_with(scenario(), options).await
}

fn verification<'a>(report: &'a Value, datastore: &str) -> &'a Value {
    &entry(report, WORKSPACE, datastore)["verification"]
}

fn stored_token(app: &TestApp, datastore: &str) -> String {
    app.state().datastore(WORKSPACE, datastore)["secrets"]["sasToken"]
        .as_str()
        .expect("a stored token")
        .to_string()
}

/// Sends a SAS request to Azurite straight from the test, without keysync's code.
async fn azurite_accepts(app: &TestApp, container: &str, query: &str, token: &str) -> u16 {
    let blob = app.state().account("stverify01")["blobEndpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{blob}{container}?{query}&{token}");
    reqwest::Client::new()
        .get(url)
        .header("x-ms-version", "2024-11-04")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn credentials_in_sync_verify_and_a_datastore_left_on_the_old_key_is_rejected() {
    let Some(binary) = azurite_or_skip(
        "credentials_in_sync_verify_and_a_datastore_left_on_the_old_key_is_rejected",
    ) else {
        return;
    };
    let app = start(&binary, &[]).await;
    app.regenerate(ACCOUNT, "key1").await;
    let fault = json!({"operation": "Datastores_CreateOrUpdate", "kind": "conflict", "count": 100});
    app.emulator
        .set_faults(vec![serde_json::from_value(fault).unwrap()]);

    let failed = app.deliver(&regeneration_event(ACCOUNT)).await;

    // The update failed (so the invocation fails and Event Grid retries); verification says
    // what the datastore's old key is worth, and the datastores on key2 work.
    assert_eq!(failed.status, 500, "{:#}", failed.body);
    let first = report(&failed);
    assert_eq!(entry(first, WORKSPACE, "moved")["outcome"], "failed");
    let moved = verification(first, "moved");
    assert_eq!(moved["outcome"], "rejected", "{moved:#}");
    assert_eq!(moved["credential"], "accountKey");
    // Azurite's answer to a bad Shared Key signature (Azure's is AuthenticationFailed).
    assert_eq!(moved["code"], "AuthorizationFailure", "{moved:#}");
    assert_eq!(
        moved["detail"],
        "Get Container Properties of 'moved': storage refused the credential"
    );
    assert_eq!(verification(first, "steady")["outcome"], "verified");
    assert_eq!(verification(first, "lake")["outcome"], "verified");
    let share = verification(first, "share");
    assert_eq!(share["outcome"], "notChecked", "{share:#}");
    assert!(
        share["detail"]
            .as_str()
            .unwrap()
            .contains("no file endpoint"),
        "{share:#}"
    );

    app.emulator.set_faults(vec![]);
    let repaired = app.deliver(&regeneration_event(ACCOUNT)).await;

    assert_eq!(repaired.status, 200, "{:#}", repaired.body);
    let report = report(&repaired);
    assert_eq!(entry(report, WORKSPACE, "moved")["outcome"], "updated");
    assert_eq!(verification(report, "moved")["outcome"], "verified");
    assert_eq!(app.state().held(WORKSPACE, "moved", "stverify01"), "key1");
    for ds in ["steady", "lake"] {
        assert_eq!(verification(report, ds)["outcome"], "verified", "{ds}");
    }
}

/// The ARM requests served since the first `skip`, as `METHOD operation path`.
fn requests_since(app: &TestApp, skip: usize) -> Vec<String> {
    app.emulator
        .requests()
        .into_iter()
        .skip(skip)
        .map(|r| format!("{} {} {}", r.method, r.operation, r.path))
        .collect()
}

#[tokio::test]
async fn checking_credentials_reads_nothing_the_run_already_read() {
    let Some(binary) = azurite_or_skip("checking_credentials_reads_nothing_the_run_already_read")
    else {
        return;
    };
    let app = start(&binary, &[]).await;
    app.regenerate(ACCOUNT, "key1").await;
    let before = app.emulator.requests().len();

    let record = app.deliver(&regeneration_event(ACCOUNT)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let report = report(&record);
    // Every check ran: the updated datastore, those in sync, and the SAS tokens.
    for (ds, outcome) in [
        ("moved", "verified"),
        ("steady", "verified"),
        ("lake", "verified"),
        ("exports", "rejected"),
        ("shared", "rejected"),
    ] {
        assert_eq!(verification(report, ds)["outcome"], outcome, "{ds}");
    }
    let served = requests_since(&app, before);
    let gets: Vec<&String> = served
        .iter()
        .filter(|r| r.contains(" Datastores_Get "))
        .collect();
    assert_eq!(
        gets,
        [&format!(
            "GET Datastores_Get /subscriptions/{SUB}/resourceGroups/rg-verify/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}/datastores/moved"
        )],
        "only the GET before the PUT"
    );
    let secrets = served
        .iter()
        .filter(|r| r.contains(" Datastores_ListSecrets "))
        .count();
    assert_eq!(
        secrets, 6,
        "four account keys and two SAS tokens: {served:#?}"
    );
    // No request twice; a long-running resync's status polls are the one exception.
    for request in &served {
        let times = served.iter().filter(|r| *r == request).count();
        assert!(
            times == 1 || request.contains("Workspaces_ResyncKeysStatus"),
            "{request} made {times} times: {served:#?}"
        );
    }
}

#[tokio::test]
async fn a_sas_signed_with_a_regenerated_key_is_reported_dead_and_left_alone_by_default() {
    let Some(binary) = azurite_or_skip(
        "a_sas_signed_with_a_regenerated_key_is_reported_dead_and_left_alone_by_default",
    ) else {
        return;
    };
    let app = start(&binary, &[]).await;

    let before = app.deliver(&regeneration_event(ACCOUNT)).await;
    for sas in ["exports", "shared"] {
        let v = verification(report(&before), sas);
        assert_eq!(
            (v["outcome"].as_str(), v["credential"].as_str()),
            (Some("verified"), Some("sas")),
            "{sas}: {v:#}"
        );
        assert_eq!(entry(report(&before), WORKSPACE, sas)["outcome"], "inSync");
    }
    let old_token = stored_token(&app, "exports");

    app.regenerate(ACCOUNT, "key1").await;
    let after = app.deliver(&regeneration_event(ACCOUNT)).await;

    assert_eq!(after.status, 200, "a dead SAS is reported, not retried");
    for sas in ["exports", "shared"] {
        let e = entry(report(&after), WORKSPACE, sas);
        assert_eq!(e["verification"]["outcome"], "rejected", "{e:#}");
        assert_eq!(e["verification"]["code"], "AuthorizationFailure", "{e:#}");
        assert_eq!(
            (&e["outcome"], &e["attention"]),
            (&json!("skipped"), &json!(true))
        );
        assert!(
            e["reason"].as_str().unwrap().contains("KEYSYNC_REMINT_SAS"),
            "{e:#}"
        );
    }
    assert_eq!(stored_token(&app, "exports"), old_token);
    let sas_writes = app
        .writes()
        .into_iter()
        .filter(|w| w.operation == "Datastores_CreateOrUpdate")
        .filter(|w| w.path.ends_with("/exports") || w.path.ends_with("/shared"))
        .count();
    assert_eq!(sas_writes, 0);
}

#[tokio::test]
async fn with_reminting_on_a_dead_sas_is_replaced_by_one_that_verifies_with_the_same_scope() {
    let Some(binary) = azurite_or_skip(
        "with_reminting_on_a_dead_sas_is_replaced_by_one_that_verifies_with_the_same_scope",
    ) else {
        return;
    };
    let env = [
        ("KEYSYNC_REMINT_SAS", "true"),
        ("KEYSYNC_SAS_LIFETIME_DAYS", "7"),
    ];
    let app = start(&binary, &env).await;
    let before = app.state();
    let old = SasToken::parse(&stored_token(&app, "exports")).unwrap();
    let old_service = SasToken::parse(&stored_token(&app, "shared")).unwrap();

    app.regenerate(ACCOUNT, "key1").await;
    let record = app.deliver(&regeneration_event(ACCOUNT)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    for sas in ["exports", "shared"] {
        let e = entry(report(&record), WORKSPACE, sas);
        assert_eq!(
            (
                e["outcome"].as_str(),
                e["action"].as_str(),
                e["key"].as_str()
            ),
            (Some("updated"), Some("updateSas"), Some("key1")),
            "{e:#}"
        );
        assert_eq!(e["verification"]["outcome"], "verified", "{e:#}");
    }
    let new_token = stored_token(&app, "exports");
    let new = SasToken::parse(&new_token).unwrap();
    for field in ["ss", "srt", "sp", "spr"] {
        assert_eq!(new.get(field), old.get(field), "{field}");
    }
    assert_ne!(new.get("sig"), old.get("sig"));
    let lifetime = new.expiry().unwrap() - time::OffsetDateTime::now_utc();
    assert!(
        lifetime > time::Duration::days(6) && lifetime <= time::Duration::days(7),
        "{lifetime}"
    );
    let new_service = SasToken::parse(&stored_token(&app, "shared")).unwrap();
    for field in ["sr", "sp", "spr"] {
        assert_eq!(new_service.get(field), old_service.get(field), "{field}");
    }
    // Azurite itself takes the new tokens, asked without keysync's code.
    assert_eq!(
        azurite_accepts(&app, "exports", "restype=container", &new_token).await,
        200
    );
    let service_token = stored_token(&app, "shared");
    assert_eq!(
        azurite_accepts(
            &app,
            "shared",
            "restype=container&comp=list",
            &service_token
        )
        .await,
        200
    );
    // Only the secret changed.
    assert_eq!(
        before.non_credential_fields(),
        app.state().non_credential_fields()
    );
}

#[tokio::test]
async fn a_workspace_is_resynced_after_its_sas_tokens_are_re_minted() {
    let Some(binary) =
        azurite_or_skip("a_workspace_is_resynced_after_its_sas_tokens_are_re_minted")
    else {
        return;
    };
    let app = start(&binary, &[("KEYSYNC_REMINT_SAS", "true")]).await;
    app.regenerate(ACCOUNT, "key1").await;
    let before = app.emulator.requests().len();

    let record = app.deliver(&regeneration_event(ACCOUNT)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let workspace = workspace_entry(report(&record), WORKSPACE).expect("workspace entry");
    assert_eq!(workspace["outcome"], "resynced", "{workspace:#}");
    assert_eq!(
        workspace["reason"], "resynced after its re-minted SAS tokens were stored",
        "{workspace:#}"
    );
    let served = requests_since(&app, before);
    let put = |datastore: &str| {
        served
            .iter()
            .position(|r| r.starts_with("PUT ") && r.ends_with(&format!("/datastores/{datastore}")))
            .unwrap_or_else(|| panic!("no PUT of {datastore}: {served:#?}"))
    };
    let resyncs: Vec<usize> = (0..served.len())
        .filter(|i| served[*i].starts_with("POST Workspaces_ResyncKeys "))
        .collect();
    // The run's resync follows the key update, as before; a second one follows the re-mints,
    // which only the storage check after it decides.
    assert_eq!(resyncs.len(), 2, "{served:#?}");
    assert!(put("moved") < resyncs[0], "{served:#?}");
    for sas in ["exports", "shared"] {
        assert!(
            put(sas) < resyncs[1],
            "{sas}'s PUT after the last resync: {served:#?}"
        );
    }
}

#[tokio::test]
async fn a_shared_key_disabled_account_is_reported_untouched_and_never_checked() {
    let Some(binary) =
        azurite_or_skip("a_shared_key_disabled_account_is_reported_untouched_and_never_checked")
    else {
        return;
    };
    let app = start(&binary, &[("KEYSYNC_REMINT_SAS", "true")]).await;
    app.regenerate(LOCKED, "key1").await;

    let record = app.deliver(&regeneration_event(LOCKED)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let report = report(&record);
    let note = report["notes"][0]["message"].as_str().unwrap();
    assert!(note.contains("account keys and SAS cannot work"), "{note}");
    for ds in ["locked_key", "locked_sas"] {
        let e = entry(report, WORKSPACE, ds);
        assert_eq!(e["outcome"], "skipped", "{e:#}");
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains("shared-key access is disabled"),
            "{e:#}"
        );
        assert!(e.get("verification").is_none(), "{e:#}");
        assert_eq!(app.state().datastore(WORKSPACE, ds)["writes"], 0);
    }
    assert!(
        app.writes()
            .iter()
            .all(|w| w.operation == "StorageAccounts_RegenerateKey")
    );
    let reads: Vec<String> = app
        .emulator
        .requests()
        .into_iter()
        .filter(|r| {
            matches!(
                r.operation.as_str(),
                "Datastores_Get" | "Datastores_ListSecrets"
            )
        })
        .map(|r| r.path)
        .collect();
    assert!(
        reads.is_empty(),
        "nothing to check, nothing read: {reads:?}"
    );
}

/// One account whose blob endpoint accepts connections and never answers, and one whose
/// endpoint refuses them.
fn unreachable_scenario(silent: u16, refused: u16) -> Scenario {
    let account = |name: &str, port: u16| {
        json!({
            "id": ACCOUNT.replace("stverify01", name),
            "primaryEndpoints": {"blob": format!("http://127.0.0.1:{port}/{name}/")}
        })
    };
    let datastore = |name: &str, account: &str| {
        let mut ds = blob(name, name, json!({"keyRef": "key1"}));
        ds["properties"]["accountName"] = json!(account);
        ds
    };
    serde_json::from_value(json!({
        "storageAccounts": [account("stsilent03", silent), account("strefused04", refused)],
        "workspaces": [{
            "id": format!("/subscriptions/{SUB}/resourceGroups/rg-verify/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"),
            "storageAccount": ACCOUNT.replace("stverify01", "stsilent03"),
            "datastores": [
                datastore("silent_a", "stsilent03"), datastore("silent_b", "stsilent03"),
                datastore("silent_c", "stsilent03"), datastore("refused", "strefused04")
            ]
        }]
    }))
    .expect("scenario")
}

#[tokio::test]
async fn an_unreachable_endpoint_is_reported_unreachable_within_the_timeout() {
    // A listener that never accepts: connections complete in the kernel and then hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_port = refused.local_addr().unwrap().port();
    drop(refused);
    let options = Options {
        extra_env: vec![
            ("KEYSYNC_VERIFY_TIMEOUT_SECS".into(), "1".into()),
            ("KEYSYNC_VERIFY_CONCURRENCY".into(), "1".into()),
        ],
        loopback_storage_checks: true,
        ..Options::default()
    };
    let scenario = unreachable_scenario(silent.local_addr().unwrap().port(), refused_port);
    let app = TestApp::start_with(scenario, options).await;
    let silent_account = ACCOUNT.replace("stverify01", "stsilent03");

    let started = Instant::now();
    let record = app.deliver(&regeneration_event(&silent_account)).await;
    let elapsed = started.elapsed();

    assert_eq!(record.status, 200, "{:#}", record.body);
    let silent_report = report(&record);
    for ds in ["silent_a", "silent_b", "silent_c"] {
        let v = verification(silent_report, ds);
        assert_eq!(v["outcome"], "unreachable", "{ds}: {v:#}");
    }
    let details: Vec<&str> = ["silent_a", "silent_b", "silent_c"]
        .iter()
        .map(|ds| verification(silent_report, ds)["detail"].as_str().unwrap())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("no answer within 1 s")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("not tried again")),
        "{details:?}"
    );
    // Three checks one at a time, but the endpoint costs one timeout, not three.
    assert!(elapsed < Duration::from_millis(2800), "took {elapsed:?}");
    drop(silent);

    let refused_account = ACCOUNT.replace("stverify01", "strefused04");
    let record = app.deliver(&regeneration_event(&refused_account)).await;
    let v = verification(report(&record), "refused");
    assert_eq!(v["outcome"], "unreachable", "{v:#}");
    assert!(
        v["detail"].as_str().unwrap().contains("could not connect"),
        "{v:#}"
    );
}

#[tokio::test]
async fn verification_can_be_turned_off() {
    // The same run with the checks on and then off, against an endpoint that accepts
    // connections and never answers: on, every datastore gets a verification and a connection
    // reaches the endpoint; off, neither.
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_port = refused.local_addr().unwrap().port();
    drop(refused);
    let account = ACCOUNT.replace("stverify01", "stsilent03");
    for (setting, on) in [("true", true), ("false", false)] {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        silent.set_nonblocking(true).unwrap();
        let scenario = unreachable_scenario(silent.local_addr().unwrap().port(), refused_port);
        let options = Options {
            extra_env: vec![
                ("KEYSYNC_VERIFY".into(), setting.into()),
                ("KEYSYNC_VERIFY_TIMEOUT_SECS".into(), "1".into()),
            ],
            ..Options::default()
        };
        let app = TestApp::start_with(scenario, options).await;

        let record = app.deliver(&regeneration_event(&account)).await;

        assert_eq!(record.status, 200, "{:#}", record.body);
        let report = report(&record);
        let checked: Vec<&str> = ["silent_a", "silent_b", "silent_c"]
            .into_iter()
            .filter(|ds| entry(report, WORKSPACE, ds).get("verification").is_some())
            .collect();
        let reached = silent.accept().is_ok();
        match on {
            true => {
                assert_eq!(checked, ["silent_a", "silent_b", "silent_c"], "{report:#}");
                for ds in checked {
                    assert_eq!(verification(report, ds)["outcome"], "unreachable", "{ds}");
                }
                assert!(reached, "a check connected to the endpoint");
            }
            false => {
                assert_eq!(checked, Vec::<&str>::new(), "{report:#}");
                assert!(!reached, "nothing connected to the endpoint");
            }
        }
    }
}

#[tokio::test]
async fn no_key_token_or_signature_reaches_any_output_at_trace_level() {
    let Some(binary) =
        azurite_or_skip("no_key_token_or_signature_reaches_any_output_at_trace_level")
    else {
        return;
    };
    let env = [("RUST_LOG", "trace"), ("KEYSYNC_REMINT_SAS", "true")];
    let app = start(&binary, &env).await;
    let mut secrets = app.state().secrets();
    app.regenerate(ACCOUNT, "key1").await;

    let record = app.deliver(&regeneration_event(ACCOUNT)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    assert_eq!(
        entry(report(&record), WORKSPACE, "exports")["action"],
        "updateSas"
    );
    secrets.extend(app.state().secrets());
    let new_token = SasToken::parse(&stored_token(&app, "exports")).unwrap();
    let signature = new_token.get("sig").unwrap().to_string();
    assert!(
        secrets.contains(&signature),
        "signatures are searched for on their own too"
    );
    let output = app.host.handler_output().join("\n");
    assert!(output.lines().count() > 20, "trace logging produced output");
    let reply = record.body.to_string();
    for secret in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "a secret reached the logs"
        );
        assert!(
            !reply.contains(secret.as_str()),
            "a secret reached the reply"
        );
    }
}

#[tokio::test]
async fn a_re_minted_token_azure_refuses_to_store_is_reported_failed_without_azures_words() {
    let Some(binary) = azurite_or_skip(
        "a_re_minted_token_azure_refuses_to_store_is_reported_failed_without_azures_words",
    ) else {
        return;
    };
    let app = start(&binary, &[("KEYSYNC_REMINT_SAS", "true")]).await;
    let old = stored_token(&app, "exports");
    app.regenerate(ACCOUNT, "key1").await;
    app.emulator.set_faults(vec![fault(
        json!({"operation": "Datastores_CreateOrUpdate", "kind": "error", "status": 403}),
    )]);

    let record = app.deliver(&regeneration_event(ACCOUNT)).await;

    assert_eq!(record.status, 500, "{:#}", record.body);
    let e = entry(report(&record), WORKSPACE, "exports");
    assert_eq!(
        (e["outcome"].as_str(), e["action"].as_str()),
        (Some("failed"), Some("updateSas")),
        "{e:#}"
    );
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("SAS token rejected by storage (")
            && reason.contains(
                "); storing a re-minted one failed: Datastores_CreateOrUpdate on /subscriptions/"
            )
            && reason.contains("/datastores/exports failed: HTTP 403"),
        "{reason}"
    );
    assert!(
        !reason.contains("The server encountered an error"),
        "{reason}"
    );
    assert_eq!(stored_token(&app, "exports"), old);
}

#[tokio::test]
async fn an_emulator_account_on_azures_own_endpoints_is_not_checked() {
    // The demo scenario names Azure's own endpoints (`stmlshared01.blob.core.windows.net`): with
    // the checks left on against the emulator, keysync must not send a signed request there.
    let options = Options {
        extra_env: vec![("KEYSYNC_VERIFY".into(), "true".into())],
        ..Options::default()
    };
    let app = TestApp::start_with(Scenario::demo(), options).await;
    app.regenerate(SHARED, "key1").await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let report = report(&record);
    for (ws, ds, service) in [
        ("mlw-vision", "workspaceblobstore", "blob"),
        ("mlw-vision", "workspacefilestore", "file"),
        ("mlw-forecast", "shared_features", "blob"),
    ] {
        let v = &entry(report, ws, ds)["verification"];
        assert_eq!(v["outcome"], "notChecked", "{ws}/{ds}: {v:#}");
        assert_eq!(
            v["detail"],
            format!(
                "ARM is a local emulator and the account's {service} endpoint is not on this \
                 machine, so no signed request is sent there"
            ),
            "{ws}/{ds}"
        );
    }
}
