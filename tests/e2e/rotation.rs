//! The `RotateKeys` timer: rotation without downtime, its guards, and the sweep.

use keysync::emulator::Scenario;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::*;

const RG: &str =
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-rot/providers";

fn account_id(name: &str) -> String {
    format!("{RG}/Microsoft.Storage/storageAccounts/{name}")
}

fn days_ago(days: i64) -> String {
    let at = OffsetDateTime::now_utc() - time::Duration::days(days);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn account(name: &str, key1_days: i64, key2_days: i64, tagged: bool, shared_key: bool) -> Value {
    let tags = if tagged {
        json!({"keysync-rotate": "true"})
    } else {
        json!({})
    };
    json!({
        "id": account_id(name), "location": "westeurope", "tags": tags, "allowSharedKeyAccess": shared_key,
        "keyCreationTime": {"key1": days_ago(key1_days), "key2": days_ago(key2_days)}
    })
}

fn store(name: &str, account: &str, key: &str) -> Value {
    json!({
        "name": name,
        "properties": {
            "datastoreType": "AzureBlob", "accountName": account, "containerName": name, "endpoint": "core.windows.net",
            "protocol": "https", "description": format!("{name} on {account}"), "tags": {"owner": "ml"},
            "credentials": {"credentialsType": "AccountKey"}
        },
        "secrets": {"keyRef": key}
    })
}

/// `stdue01`: key1 in use for 120 days (due). `stfresh02`: key1 in use for 10 days.
/// `stsplit03`: due, but its datastores hold both keys. `stnokey04`: shared keys disabled.
/// `stmissed05`: not tagged, with a datastore left stale by an event that never arrived.
fn rotation_scenario() -> Scenario {
    serde_json::from_value(json!({
        "storageAccounts": [
            account("stdue01", 120, 200, true, true),
            account("stfresh02", 10, 200, true, true),
            account("stsplit03", 120, 130, true, true),
            account("stnokey04", 120, 200, true, false),
            account("stmissed05", 300, 400, false, true),
        ],
        "workspaces": [
            {
                "id": format!("{RG}/Microsoft.MachineLearningServices/workspaces/ws-a"),
                "location": "westeurope",
                "storageAccount": account_id("stdue01"),
                "datastores": [store("due_a", "stdue01", "key1"), store("due_b", "stdue01", "key1"), store("fresh", "stfresh02", "key1")]
            },
            {
                "id": format!("{RG}/Microsoft.MachineLearningServices/workspaces/ws-b"),
                "location": "westeurope",
                "storageAccount": account_id("stmissed05"),
                "datastores": [
                    store("split_1", "stsplit03", "key1"), store("split_2", "stsplit03", "key2"),
                    store("due_c", "stdue01", "key1"), store("missed", "stmissed05", "stale"),
                    {"name": "nokey", "properties": {"datastoreType": "AzureBlob", "accountName": "stnokey04", "containerName": "c",
                        "endpoint": "core.windows.net", "credentials": {"credentialsType": "None"}}}
                ]
            }
        ]
    }))
    .expect("rotation scenario")
}

fn rotation<'a>(record: &'a keysync::host::InvocationRecord, name: &str) -> &'a Value {
    record.body["ReturnValue"]["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["account"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{name}"))
        })
        .unwrap_or_else(|| panic!("no rotation for {name}: {:#}", record.body))
}

fn regenerations(app: &TestApp, name: &str) -> u64 {
    app.state().account(name)["regenerations"].as_u64().unwrap()
}

#[tokio::test]
async fn a_due_account_is_rotated_once_and_no_datastore_ever_holds_an_invalid_key() {
    let app = TestApp::start(rotation_scenario()).await;

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    assert_eq!(tick.status, 200, "{:#}", tick.body);
    let due = rotation(&tick, "stdue01");
    assert_eq!(
        (due["outcome"].as_str(), due["regenerated"].as_str()),
        (Some("rotated"), Some("key2"))
    );
    let state = app.state();
    assert_eq!(regenerations(&app, "stdue01"), 1);
    for (ws, ds) in [("ws-a", "due_a"), ("ws-a", "due_b"), ("ws-b", "due_c")] {
        assert_eq!(state.held(ws, ds, "stdue01"), "key2", "{ws}/{ds}");
    }
    let invalidations = state.0["keyInvalidations"].as_array().unwrap();
    assert_eq!(invalidations.len(), 1);
    assert_eq!(
        invalidations[0]["datastores"],
        json!([]),
        "the regenerated key was held by no datastore"
    );
    assert_eq!(state.workspace("ws-a")["resyncCount"], 1);
    assert_eq!(state.workspace("ws-a")["storageKeysInSync"], true);
}

#[tokio::test]
async fn fresh_split_and_shared_key_disabled_accounts_are_left_with_a_reason() {
    let app = TestApp::start(rotation_scenario()).await;

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    let reason = |name| {
        rotation(&tick, name)["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(rotation(&tick, "stfresh02")["outcome"], "left");
    assert!(
        reason("stfresh02").starts_with("key1 (in use) is 10 days old"),
        "{}",
        reason("stfresh02")
    );
    assert_eq!(rotation(&tick, "stsplit03")["outcome"], "left");
    assert!(
        reason("stsplit03").contains("datastores hold both keys (1 on key1, 1 on key2)"),
        "{}",
        reason("stsplit03")
    );
    assert_eq!(rotation(&tick, "stsplit03")["attention"], true);
    assert!(
        reason("stnokey04").starts_with("shared-key access is disabled"),
        "{}",
        reason("stnokey04")
    );
    for name in ["stfresh02", "stsplit03", "stnokey04", "stmissed05"] {
        assert_eq!(regenerations(&app, name), 0, "{name}");
    }
    // The sweep moves the split account's datastores onto its newest key (key1), so that the next
    // tick can rotate it.
    assert_eq!(app.state().held("ws-b", "split_2", "stsplit03"), "key1");
    assert_eq!(app.state().held("ws-b", "split_1", "stsplit03"), "key1");
}

#[tokio::test]
async fn concurrent_late_and_repeated_ticks_never_rotate_twice() {
    let app = TestApp::start(rotation_scenario()).await;

    let (a, b) = tokio::join!(
        app.host.tick("RotateKeys", false),
        app.host.tick("RotateKeys", false)
    );
    let late = app.host.tick("RotateKeys", true).await.unwrap();

    assert_eq!(
        (a.unwrap().status, b.unwrap().status, late.status),
        (200, 200, 200)
    );
    assert_eq!(regenerations(&app, "stdue01"), 1);
    // The first tick's sweep aligns stsplit03 on its newest key, so a later tick may rotate it;
    // but no account is rotated twice, and no regeneration replaces a key a datastore holds.
    for name in [
        "stdue01",
        "stfresh02",
        "stsplit03",
        "stnokey04",
        "stmissed05",
    ] {
        assert!(regenerations(&app, name) <= 1, "{name}");
    }
    for invalidation in app.state().0["keyInvalidations"].as_array().unwrap() {
        assert_eq!(invalidation["datastores"], json!([]), "{invalidation}");
    }
    assert!(
        rotation(&late, "stdue01")["reason"]
            .as_str()
            .unwrap()
            .contains("minimum interval")
    );
    assert_eq!(app.state().held("ws-a", "due_a", "stdue01"), "key2");
}

#[tokio::test]
async fn the_sweep_repairs_a_stale_datastore_no_event_mentioned() {
    let app = TestApp::start(rotation_scenario()).await;

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    assert_eq!(app.state().held("ws-b", "missed", "stmissed05"), "key1");
    let swept = tick.body["ReturnValue"]["sweep"].as_array().unwrap();
    let missed = swept
        .iter()
        .find(|r| r["account"].as_str().unwrap().ends_with("/stmissed05"))
        .expect("stmissed05 swept");
    assert_eq!(entry(missed, "ws-b", "missed")["outcome"], "updated");
    let accounts: Vec<&str> = swept
        .iter()
        .map(|r| r["account"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert!(
        !accounts.contains(&"stdue01"),
        "the rotated account is not swept again: {accounts:?}"
    );
    assert_eq!(accounts.iter().filter(|a| **a == "stmissed05").count(), 1);
}

#[tokio::test]
async fn keysyncs_own_regeneration_comes_back_as_an_event_that_writes_nothing() {
    let app = TestApp::start_with(
        rotation_scenario(),
        Options {
            wire_events: true,
            ..Options::default()
        },
    )
    .await;
    let mut finished = app.host.subscribe();

    app.host.tick("RotateKeys", false).await.unwrap();
    let writes_after_tick = app.writes().len();
    let echo = loop {
        let record = tokio::time::timeout(std::time::Duration::from_secs(60), finished.recv())
            .await
            .unwrap()
            .unwrap();
        if record.function == FUNCTION {
            break record;
        }
    };

    assert_eq!(echo.status, 200, "{:#}", echo.body);
    assert!(
        report(&echo)["account"]
            .as_str()
            .unwrap()
            .ends_with("/stdue01")
    );
    assert_eq!(app.writes().len(), writes_after_tick, "{:?}", app.writes());
}

#[tokio::test]
async fn every_timer_payload_variant_leads_to_the_same_rotation() {
    let fixture: Value = fixture("envelope_timer.json");
    let timer = fixture["Data"]["timer"].clone();
    let mut null_status = timer.clone();
    null_status["ScheduleStatus"] = Value::Null;
    let mut no_offset = timer.clone();
    no_offset["ScheduleStatus"] = json!({"Last": "2026-11-19T03:00:00", "Next": "2026-11-20T03:00:00", "LastUpdated": "2026-11-19T03:00:00.0153321"});
    let mut zulu = timer.clone();
    zulu["ScheduleStatus"] = json!({"Last": "2026-11-19T03:00:00Z", "Next": "2026-11-20T03:00:00Z", "LastUpdated": "2026-11-19T03:00:00Z"});
    let mut past_due = timer.clone();
    past_due["IsPastDue"] = json!(true);
    let as_string = Value::String(timer.to_string());
    let variants = [
        timer,
        null_status,
        no_offset,
        zulu,
        past_due,
        as_string,
        Value::Null,
    ];

    for variant in variants {
        let app = TestApp::start(rotation_scenario()).await;
        let envelope = json!({"Data": {"timer": variant}, "Metadata": fixture["Metadata"]});
        let record = app
            .host
            .post_raw("RotateKeys", envelope.to_string().as_bytes())
            .await
            .unwrap();
        assert_eq!(record.status, 200, "{variant}: {:#}", record.body);
        assert_eq!(
            rotation(&record, "stdue01")["outcome"],
            "rotated",
            "{variant}"
        );
        assert_eq!(regenerations(&app, "stdue01"), 1, "{variant}");
    }
}

#[tokio::test]
async fn the_function_apps_own_storage_rotates_only_when_listed() {
    let host_storage = ("AzureWebJobsStorage".to_string(), "DefaultEndpointsProtocol=https;AccountName=stdue01;AccountKey=bm90LWEta2V5;EndpointSuffix=core.windows.net".to_string());
    let app = TestApp::start_with(
        rotation_scenario(),
        Options {
            extra_env: vec![host_storage.clone()],
            ..Options::default()
        },
    )
    .await;
    let tick = app.host.tick("RotateKeys", false).await.unwrap();
    assert_eq!(rotation(&tick, "stdue01")["outcome"], "left");
    assert!(
        rotation(&tick, "stdue01")["reason"]
            .as_str()
            .unwrap()
            .contains("Function App runs on this account")
    );
    assert_eq!(regenerations(&app, "stdue01"), 0);

    let listed = ("KEYSYNC_ROTATE_ACCOUNTS".to_string(), account_id("stdue01"));
    let app = TestApp::start_with(
        rotation_scenario(),
        Options {
            extra_env: vec![host_storage, listed],
            ..Options::default()
        },
    )
    .await;
    let tick = app.host.tick("RotateKeys", false).await.unwrap();
    assert_eq!(rotation(&tick, "stdue01")["outcome"], "rotated");
}

#[tokio::test]
async fn a_bad_rotation_setting_stops_the_handler_with_a_message_naming_it() {
    let emulator =
        keysync::emulator::RunningEmulator::start(rotation_scenario(), Default::default())
            .await
            .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .arg("serve")
        .envs(emulator.env())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("KEYSYNC_ROTATION_SCHEDULE", "* 0 3 * * *")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KEYSYNC_ROTATION_SCHEDULE") && stderr.contains("every second"),
        "{stderr}"
    );
}
