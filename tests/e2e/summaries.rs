//! The one-line summaries an invocation leaves in the host's `Logs`: when an invocation fails,
//! its summary says what failed rather than reading like a success.

use keysync::emulator::Scenario;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::*;

const RG: &str =
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-sum/providers";

fn account_id(name: &str) -> String {
    format!("{RG}/Microsoft.Storage/storageAccounts/{name}")
}

fn days_ago(days: i64) -> String {
    let at = OffsetDateTime::now_utc() - time::Duration::days(days);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A tagged account whose key1 (in use) is `key1_days` old; key2 is older still.
fn tagged_account(name: &str, key1_days: i64) -> Value {
    json!({
        "id": account_id(name),
        "tags": {"keysync-rotate": "true"},
        "keyCreationTime": {"key1": days_ago(key1_days), "key2": days_ago(400)}
    })
}

fn store(name: &str, account: &str) -> Value {
    json!({
        "name": name,
        "properties": {
            "datastoreType": "AzureBlob", "accountName": account, "containerName": name,
            "endpoint": "core.windows.net", "credentials": {"credentialsType": "AccountKey"}
        },
        "secrets": {"keyRef": "key1"}
    })
}

/// `stdue01` is due (key1 in use for 120 days), with two datastores; `styoung02` is not.
fn two_candidates() -> Scenario {
    serde_json::from_value(json!({
        "storageAccounts": [tagged_account("stdue01", 120), tagged_account("styoung02", 10)],
        "workspaces": [{
            "id": format!("{RG}/Microsoft.MachineLearningServices/workspaces/ws-sum"),
            "storageAccount": account_id("stdue01"),
            "datastores": [store("due_a", "stdue01"), store("due_b", "stdue01"), store("young", "styoung02")]
        }]
    }))
    .expect("scenario")
}

fn logs(record: &keysync::host::InvocationRecord) -> Vec<String> {
    record.body["Logs"]
        .as_array()
        .unwrap_or_else(|| panic!("no Logs in {:#}", record.body))
        .iter()
        .map(|line| line.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_tick_whose_datastore_moves_all_failed_says_the_rotation_is_incomplete() {
    let app = TestApp::start(two_candidates()).await;
    app.emulator.set_faults(vec![fault(
        json!({"operation": "Datastores_CreateOrUpdate", "kind": "error", "status": 403}),
    )]);

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    assert_eq!(tick.status, 500, "{:#}", tick.body);
    assert_eq!(
        logs(&tick),
        [
            "rotated 1 of 2 candidate accounts (1 incomplete); swept 1 accounts: 0 datastores updated, 0 with failures"
        ]
    );
    let rotation = tick.body["ReturnValue"]["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account"] == account_id("stdue01"))
        .unwrap();
    assert_eq!(rotation["outcome"], "incomplete", "{rotation:#}");
    assert_eq!(rotation["regenerated"], "key2");
    assert_eq!(rotation["attention"], true);
    let reason = rotation["reason"].as_str().unwrap();
    assert!(
        reason.ends_with(
            "but not everything moved to key2 (2 failed): the next tick completes the move"
        ),
        "{reason}"
    );
    // Nothing is broken meanwhile: the datastores still hold key1, now the standby key.
    let state = app.state();
    for ds in ["due_a", "due_b"] {
        assert_eq!(state.held("ws-sum", ds, "stdue01"), "key1", "{ds}");
    }
}

#[tokio::test]
async fn an_event_whose_workspace_listing_failed_says_so() {
    let app = TestApp::start(Scenario::demo()).await;
    app.emulator.set_faults(vec![fault(
        json!({"operation": "Workspaces_ListBySubscription", "kind": "error", "status": 403}),
    )]);

    let record = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(record.status, 500, "{:#}", record.body);
    let logs = logs(&record);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].starts_with(
            "account stmlshared01: failed: could not list all the workspaces: Workspaces_ListBySubscription on /subscriptions/"
        ) && logs[0].contains("HTTP 403"),
        "{}",
        logs[0]
    );
    assert!(app.writes().is_empty());
}
