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

fn hours_ago(hours: i64) -> String {
    let at = OffsetDateTime::now_utc() - time::Duration::hours(hours);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// `stdue01`: key1 in use for 120 days (due). `stfresh02`: key1 in use for 10 days.
/// `stsplit03`: due, but its datastores have held both keys for months. `stnokey04`: shared keys
/// disabled. `stmissed05`: not tagged, with a datastore left stale by an event that never
/// arrived. `stcut06`: a rotation regenerated key2 two hours ago and was cut short after moving
/// one of its two datastores.
/// Every account of [`rotation_scenario`], in its order.
const ACCOUNTS: [&str; 6] = [
    "stdue01",
    "stfresh02",
    "stsplit03",
    "stnokey04",
    "stmissed05",
    "stcut06",
];

fn rotation_scenario() -> Scenario {
    let mut cut = account("stcut06", 200, 0, true, true);
    cut["keyCreationTime"]["key2"] = json!(hours_ago(2));
    serde_json::from_value(json!({
        "storageAccounts": [
            account("stdue01", 120, 200, true, true),
            account("stfresh02", 10, 200, true, true),
            account("stsplit03", 120, 130, true, true),
            account("stnokey04", 120, 200, true, false),
            account("stmissed05", 300, 400, false, true),
            cut,
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
                    store("cut_1", "stcut06", "key1"), store("cut_2", "stcut06", "key2"),
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

/// The sweep's report of one account.
fn sweep_of<'a>(record: &'a keysync::host::InvocationRecord, name: &str) -> &'a Value {
    record.body["ReturnValue"]["sweep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["account"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{name}"))
        })
        .unwrap_or_else(|| panic!("{name} not swept: {:#}", record.body))
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

/// `regenerateKey` answers with the new key list; a rotation works on from it rather than
/// asking `listKeys` again (the request log is what the emulator's control surface serves).
#[tokio::test]
async fn a_rotation_regenerates_once_and_works_on_from_the_key_list_it_answers() {
    let app = TestApp::start(rotation_scenario()).await;

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    assert_eq!(rotation(&tick, "stdue01")["outcome"], "rotated");
    let url = app.emulator.base_url().join("/_emulator/requests").unwrap();
    let log: Vec<Value> = reqwest::get(url).await.unwrap().json().await.unwrap();
    let keys_of_due: Vec<&str> = log
        .iter()
        .filter(|r| {
            let path = r["path"].as_str().unwrap();
            path.ends_with("/storageAccounts/stdue01/listKeys")
                || path.ends_with("/storageAccounts/stdue01/regenerateKey")
        })
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys_of_due,
        ["StorageAccounts_ListKeys", "StorageAccounts_RegenerateKey"]
    );
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
        reason("stsplit03").starts_with(
            "datastores hold both keys (1 on key1, 1 on key2): both are in use, so neither is regenerated;"
        ),
        "{}",
        reason("stsplit03")
    );
    assert!(
        reason("stsplit03").ends_with(
            "Move every datastore to one key (re-register those on key1 with key2) and the next run rotates the account"
        ),
        "{}",
        reason("stsplit03")
    );
    assert_eq!(rotation(&tick, "stsplit03")["attention"], true);
    assert!(
        reason("stnokey04").starts_with("shared-key access is disabled"),
        "{}",
        reason("stnokey04")
    );
    for name in [
        "stfresh02",
        "stsplit03",
        "stnokey04",
        "stmissed05",
        "stcut06",
    ] {
        assert_eq!(regenerations(&app, name), 0, "{name}");
    }
    // The fresh account's datastore is not written either (its workspace is resynced, for the
    // rotation of stdue01, its default storage).
    let on_fresh: Vec<String> = app
        .writes()
        .into_iter()
        .filter(|w| w.path.contains("/datastores/fresh"))
        .map(|w| format!("{} {}", w.operation, w.path))
        .collect();
    assert_eq!(on_fresh, Vec::<String>::new());
}

/// Datastores that have disagreed for months are someone's choice: the sweep must not move the
/// ones on the other key, or the next tick would regenerate the key they held.
#[tokio::test]
async fn a_long_standing_split_is_left_alone_by_the_sweep_and_the_next_tick() {
    let app = TestApp::start(rotation_scenario()).await;

    let first = app.host.tick("RotateKeys", false).await.unwrap();
    let second = app.host.tick("RotateKeys", false).await.unwrap();

    for tick in [&first, &second] {
        assert_eq!(rotation(tick, "stsplit03")["outcome"], "left");
        assert_eq!(rotation(tick, "stsplit03")["attention"], true);
        let swept = sweep_of(tick, "stsplit03");
        for ds in ["split_1", "split_2"] {
            assert_eq!(entry(swept, "ws-b", ds)["outcome"], "inSync", "{ds}");
        }
    }
    assert_eq!(regenerations(&app, "stsplit03"), 0);
    let state = app.state();
    assert_eq!(state.held("ws-b", "split_1", "stsplit03"), "key1");
    assert_eq!(state.held("ws-b", "split_2", "stsplit03"), "key2");
    let touched: Vec<String> = app
        .writes()
        .into_iter()
        .filter(|w| w.path.contains("/datastores/split_"))
        .map(|w| w.path)
        .collect();
    assert_eq!(touched, Vec::<String>::new());
}

/// A rotation cut short after `regenerateKey` (deadline, failed write) leaves datastores on both
/// keys, the newer one created within the completion window: the next tick finishes the move.
#[tokio::test]
async fn a_split_left_by_a_rotation_cut_short_is_completed() {
    let app = TestApp::start(rotation_scenario()).await;

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    assert_eq!(tick.status, 200, "{:#}", tick.body);
    let cut = rotation(&tick, "stcut06");
    assert_eq!(cut["outcome"], "completed", "{cut:#}");
    assert_eq!(
        cut["reason"],
        "key2 was created 2 hours ago, within the 24 hours in which keysync completes a rotation it cut short, and 1 datastore still holds key1: completing that rotation by moving it to key2"
    );
    assert_eq!(entry(&cut["report"], "ws-b", "cut_1")["outcome"], "updated");
    assert_eq!(entry(&cut["report"], "ws-b", "cut_2")["outcome"], "inSync");
    let state = app.state();
    assert_eq!(state.held("ws-b", "cut_1", "stcut06"), "key2");
    assert_eq!(state.held("ws-b", "cut_2", "stcut06"), "key2");
    assert_eq!(regenerations(&app, "stcut06"), 0);

    // Completed, it is an ordinary account within the minimum interval.
    let next = app.host.tick("RotateKeys", false).await.unwrap();
    assert_eq!(rotation(&next, "stcut06")["outcome"], "left");
    assert_eq!(regenerations(&app, "stcut06"), 0);
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
    for name in [
        "stfresh02",
        "stsplit03",
        "stnokey04",
        "stmissed05",
        "stcut06",
    ] {
        assert_eq!(regenerations(&app, name), 0, "{name}");
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
    let missed = sweep_of(&tick, "stmissed05");
    assert_eq!(entry(missed, "ws-b", "missed")["outcome"], "updated");
}

/// One tick reads each account's keys once: the rotations read those of the candidates (and the
/// sweep reuses the keys of the ones left alone), the sweep those of the others. An account
/// whose rotation reconciled it is not swept again.
#[tokio::test]
async fn every_account_is_read_once_per_tick_and_the_rotated_one_is_not_swept_again() {
    let app = TestApp::start(rotation_scenario()).await;

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    assert_eq!(tick.status, 200, "{:#}", tick.body);
    let requests = app.emulator.requests();
    let list_keys = |name: &str| {
        let path = format!("/storageAccounts/{name}/listKeys");
        requests
            .iter()
            .filter(|r| r.operation == "StorageAccounts_ListKeys" && r.path.ends_with(&path))
            .count()
    };
    let counts: Vec<(&str, usize)> = ACCOUNTS.iter().map(|a| (*a, list_keys(a))).collect();
    assert_eq!(
        counts,
        [
            ("stdue01", 1),
            ("stfresh02", 1),
            ("stsplit03", 1),
            // Shared-key access is disabled: its keys are of no use, so they are never read.
            ("stnokey04", 0),
            ("stmissed05", 1),
            ("stcut06", 1),
        ]
    );
    let mut swept: Vec<&str> = tick.body["ReturnValue"]["sweep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["account"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    swept.sort_unstable();
    // stdue01 (rotated) and stcut06 (completed) were reconciled by their rotation.
    assert_eq!(swept, ["stfresh02", "stmissed05", "stnokey04", "stsplit03"]);
}

/// `stsas07`: due (key1 in use for 120 days), with an AccountKey datastore on key1 and a SAS
/// datastore whose token is signed with `signed_with`. On Azurite when `azurite` is set.
fn sas_scenario(signed_with: &str, azurite: bool) -> Scenario {
    sas_scenario_with(signed_with, ACCOUNT_SAS, azurite)
}

/// An account SAS for reading the account's blobs, unsigned (the scenario signs it at load).
const ACCOUNT_SAS: &str = "sv=2024-11-04&ss=b&srt=co&sp=rl&se=2099-01-01T00:00:00Z&spr=https,http";

fn sas_scenario_with(signed_with: &str, token: &str, azurite: bool) -> Scenario {
    let mut account = account("stsas07", 120, 200, true, true);
    account["azurite"] = json!(azurite);
    if !azurite {
        // Nothing listens on the discard port: a storage check there is refused at once, and
        // no signed request leaves this machine.
        account["primaryEndpoints"] = json!({"blob": "http://127.0.0.1:9/stsas07/"});
    }
    let exports = json!({
        "name": "exports",
        "properties": {
            "datastoreType": "AzureBlob", "accountName": "stsas07", "containerName": "exports",
            "endpoint": "core.windows.net", "protocol": "https",
            "credentials": {"credentialsType": "Sas"}
        },
        "secrets": {"sasRef": {"key": signed_with, "token": token}}
    });
    serde_json::from_value(json!({
        "storageAccounts": [account],
        "workspaces": [{
            "id": format!("{RG}/Microsoft.MachineLearningServices/workspaces/ws-s"),
            "location": "westeurope",
            "storageAccount": account_id("stsas07"),
            "datastores": [store("models", "stsas07", "key1"), exports]
        }]
    }))
    .expect("SAS scenario")
}

/// The scenario's app, on Azurite when it is installed (the SAS then has to work against
/// storage too); without it the tests recompute who signed the token, which is enough to know
/// whether storage would take it.
async fn start_sas(signed_with: &str, env: &[(&str, &str)]) -> (TestApp, bool) {
    let azurite = keysync::emulator::azurite::find(&[env!("CARGO_MANIFEST_DIR").into()]);
    let options = Options {
        extra_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        loopback_storage_checks: azurite.is_none(),
        azurite: azurite.clone(),
        ..Options::default()
    };
    let app = TestApp::start_with(sas_scenario(signed_with, azurite.is_some()), options).await;
    (app, azurite.is_some())
}

/// The token of `stsas07`'s SAS datastore.
fn exports_token(app: &TestApp) -> String {
    app.state().datastore("ws-s", "exports")["secrets"]["sasToken"]
        .as_str()
        .expect("a stored token")
        .to_string()
}

/// Which current key of `stsas07` signed `token`, found by signing its fields again.
fn signed_by(app: &TestApp, token: &str) -> Option<&'static str> {
    use keysync::storage::sas::{SasToken, SignedResource, sign};
    use keysync::storage::shared_key::AccountKey;
    use secrecy::{ExposeSecret, SecretString};
    let parsed = SasToken::parse(token).unwrap();
    let state = app.state();
    ["key1", "key2"].into_iter().find(|slot| {
        let key = state.account("stsas07")["keys"][*slot].as_str().unwrap();
        let key = AccountKey::new("stsas07", &SecretString::from(key)).unwrap();
        let again = sign(&parsed, &key, SignedResource::Container("exports")).unwrap();
        SasToken::parse(again.expose_secret()).unwrap().get("sig") == parsed.get("sig")
    })
}

#[tokio::test]
async fn a_sas_token_signed_with_the_standby_key_keeps_the_account_from_rotating() {
    let (app, _) = start_sas("key2", &[]).await;
    let token = exports_token(&app);

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    let left = rotation(&tick, "stsas07");
    assert_eq!(left["outcome"], "left", "{left:#}");
    assert_eq!(left["attention"], true);
    assert_eq!(
        left["reason"],
        "nothing regenerated: the SAS token of ws-s/exports is signed with key2, which the rotation would regenerate: re-sign it with key1 (the key in use), or set KEYSYNC_REMINT_SAS=true to have keysync re-mint it with key1 before rotating"
    );
    assert_eq!(regenerations(&app, "stsas07"), 0);
    assert_eq!(exports_token(&app), token);
    assert_eq!(signed_by(&app, &token), Some("key2"));
    let body = tick.body.to_string();
    let signature = keysync::storage::sas::SasToken::parse(&token)
        .unwrap()
        .get("sig")
        .unwrap()
        .to_string();
    assert!(!body.contains(&signature), "the token reached the report");
}

#[tokio::test]
async fn a_sas_token_signed_with_the_active_key_survives_the_rotation() {
    let (app, azurite) = start_sas("key1", &[]).await;
    let token = exports_token(&app);

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    let rotated = rotation(&tick, "stsas07");
    assert_eq!(rotated["outcome"], "rotated", "{rotated:#}");
    assert_eq!(rotated["regenerated"], "key2");
    assert_eq!(exports_token(&app), token, "nothing to re-mint");
    assert_eq!(signed_by(&app, &token), Some("key1"));
    let exports = entry(&rotated["report"], "ws-s", "exports");
    if azurite {
        assert_eq!(
            exports["verification"]["outcome"], "verified",
            "{exports:#}"
        );
    }
}

#[tokio::test]
async fn with_reminting_a_token_on_the_standby_key_is_reminted_with_the_active_key_first() {
    let (app, azurite) = start_sas("key2", &[("KEYSYNC_REMINT_SAS", "true")]).await;
    let token = exports_token(&app);

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    let rotated = rotation(&tick, "stsas07");
    assert_eq!(rotated["outcome"], "rotated", "{rotated:#}");
    assert_eq!(rotated["regenerated"], "key2");
    let reminted = exports_token(&app);
    assert_ne!(reminted, token);
    assert_eq!(signed_by(&app, &reminted), Some("key1"));
    let exports = entry(&rotated["report"], "ws-s", "exports");
    assert_eq!(
        (&exports["outcome"], &exports["action"], &exports["key"]),
        (&json!("updated"), &json!("updateSas"), &json!("key1")),
        "{exports:#}"
    );
    assert!(
        exports["reason"].as_str().unwrap().starts_with(
            "SAS token signed with key2, which the rotation regenerated: re-minted with key1 first, as a account SAS ss=b srt=co sp=rl spr=https,http se="
        ),
        "{exports:#}"
    );
    if azurite {
        assert_eq!(
            exports["verification"]["outcome"], "verified",
            "{exports:#}"
        );
    }
    // The token was replaced before the key that signed it was regenerated.
    let writes: Vec<String> = app.writes().into_iter().map(|w| w.operation).collect();
    assert_eq!(
        writes[..2],
        ["Datastores_CreateOrUpdate", "StorageAccounts_RegenerateKey"],
        "{writes:?}"
    );
}

/// The ARM writes a tick's report accounts for: each regeneration, each datastore updated (key
/// or re-minted SAS) and each workspace resynced, in the rotations' reports and the sweep's.
fn writes_reported(tick: &keysync::host::InvocationRecord) -> usize {
    let value = &tick.body["ReturnValue"];
    let rotations = value["rotations"].as_array().unwrap();
    let regenerations = rotations
        .iter()
        .filter(|r| r["regenerated"].is_string())
        .count();
    let reports = rotations
        .iter()
        .map(|r| &r["report"])
        .chain(value["sweep"].as_array().unwrap());
    regenerations + reports.map(|r| writes_in(r).len()).sum::<usize>()
}

/// The entries of a report that stand for a write.
fn writes_in(report: &Value) -> Vec<&Value> {
    let written = ["updated", "resynced", "accepted"];
    report["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| written.contains(&e["outcome"].as_str().unwrap_or_default()))
        .collect()
}

/// The event of keysync's own `regenerateKey` can be handled before the tick that caused it
/// returns (the rotation releases the account before the sweep), so counting writes from the
/// tick's return would miss the echo's. Once both are done, every write must be one the tick
/// reported, and the echo must report none.
/// A token bound to a stored access policy cannot be re-minted with the same scope: with
/// re-minting on, the rotation is still refused, and nothing is written.
#[tokio::test]
async fn a_token_on_the_standby_key_that_cannot_be_reminted_keeps_the_account_from_rotating() {
    let token = "sv=2024-11-04&sr=c&si=readers&sp=rl&se=2099-01-01T00:00:00Z";
    let scenario = sas_scenario_with("key2", token, false);
    let options = Options {
        extra_env: vec![("KEYSYNC_REMINT_SAS".into(), "true".into())],
        loopback_storage_checks: true,
        ..Options::default()
    };
    let app = TestApp::start_with(scenario, options).await;

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    let left = rotation(&tick, "stsas07");
    assert_eq!(left["outcome"], "left", "{left:#}");
    assert_eq!(left["attention"], true);
    assert_eq!(
        left["reason"],
        "nothing regenerated: the SAS token of ws-s/exports is signed with key2, which the rotation would regenerate, and keysync cannot re-mint it (the token refers to a stored access policy ('si'), which keysync does not re-mint): re-sign it with key1"
    );
    assert_eq!(regenerations(&app, "stsas07"), 0);
    let written: Vec<String> = app.writes().into_iter().map(|w| w.path).collect();
    assert_eq!(written, Vec::<String>::new());
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

    let tick = app.host.tick("RotateKeys", false).await.unwrap();
    let limit = std::time::Duration::from_secs(60);
    let echo = keysync::host::next_invocation(&mut finished, FUNCTION, limit)
        .await
        .unwrap();

    assert_eq!(tick.status, 200, "{:#}", tick.body);
    assert_eq!(echo.status, 200, "{:#}", echo.body);
    let echoed = report(&echo);
    assert!(echoed["account"].as_str().unwrap().ends_with("/stdue01"));
    assert_eq!(writes_in(echoed), Vec::<&Value>::new(), "{echoed:#}");
    for ds in ["due_a", "due_b"] {
        assert_eq!(entry(echoed, "ws-a", ds)["outcome"], "inSync", "{ds}");
    }
    let writes: Vec<String> = app
        .writes()
        .into_iter()
        .map(|w| format!("{} {}", w.operation, w.path))
        .collect();
    // stdue01: regenerateKey, due_a, due_b, due_c, ws-a's resync; stcut06: cut_1; the sweep:
    // missed and ws-b's resync.
    assert_eq!(writes_reported(&tick), 8, "{:#}", tick.body);
    assert_eq!(writes.len(), writes_reported(&tick), "{writes:#?}");
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
async fn a_tick_without_the_time_to_move_every_datastore_regenerates_nothing() {
    // Five seconds is less than the least margin a regeneration must leave before the deadline.
    let short = ("KEYSYNC_TIMER_DEADLINE_SECS".to_string(), "5".to_string());
    let app = TestApp::start_with(
        rotation_scenario(),
        Options {
            extra_env: vec![short],
            ..Options::default()
        },
    )
    .await;

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    let due = rotation(&tick, "stdue01");
    assert_eq!(due["outcome"], "left", "{due:#}");
    assert_eq!(
        due["reason"],
        "too little time was left before the invocation's deadline to move every datastore to a \
         new key; the next tick rotates it"
    );
    assert_eq!(regenerations(&app, "stdue01"), 0);
    assert_eq!(app.state().held("ws-a", "due_a", "stdue01"), "key1");
}

#[tokio::test]
async fn a_datastore_whose_stored_key_is_not_found_keeps_its_account_from_rotating() {
    // Both keys are old and in use; a passing 404 on one datastore's listSecrets must not make
    // the rotation take the other key for the only one in use and regenerate this one's.
    let scenario = serde_json::from_value(json!({
        "storageAccounts": [account("stsplit07", 200, 150, true, true)],
        "workspaces": [{
            "id": format!("{RG}/Microsoft.MachineLearningServices/workspaces/ws-s"),
            "location": "westeurope",
            "storageAccount": account_id("stsplit07"),
            "datastores": [store("on_key1", "stsplit07", "key1"), store("on_key2", "stsplit07", "key2")]
        }]
    }))
    .unwrap();
    let app = TestApp::start(scenario).await;
    app.emulator.set_faults(vec![fault(
        json!({"operation": "Datastores_ListSecrets", "kind": "error", "status": 404, "count": 1}),
    )]);

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    let left = rotation(&tick, "stsplit07");
    assert_eq!(left["outcome"], "left", "{left:#}");
    assert!(
        left["reason"]
            .as_str()
            .unwrap()
            .starts_with("a datastore on the account has no stored key"),
        "{left:#}"
    );
    assert_eq!(regenerations(&app, "stsplit07"), 0);
    let state = app.state();
    assert_ne!(state.held("ws-s", "on_key1", "stsplit07"), "stale");
    assert_ne!(state.held("ws-s", "on_key2", "stsplit07"), "stale");
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
    let output = environment::keysync()
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
