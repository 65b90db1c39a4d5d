//! The one-line summaries an invocation leaves in the host's `Logs`: when an invocation fails,
//! its summary says what failed rather than reading like a success.

use keysync::emulator::Scenario;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::*;

const SUB1: &str = "11111111-2222-3333-4444-555555555555";
const SUB2: &str = "22222222-2222-3333-4444-555555555555";

fn account_id(name: &str) -> String {
    account_in(SUB1, name)
}

fn account_in(subscription: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/rg-sum/providers/Microsoft.Storage/storageAccounts/{name}"
    )
}

fn workspace_in(subscription: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/rg-sum/providers/Microsoft.MachineLearningServices/workspaces/{name}"
    )
}

fn days_ago(days: i64) -> String {
    let at = OffsetDateTime::now_utc() - time::Duration::days(days);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A tagged account whose key1 (in use) is `key1_days` old; key2 is older still.
fn tagged_account(name: &str, key1_days: i64) -> Value {
    tagged_account_in(SUB1, name, key1_days)
}

fn tagged_account_in(subscription: &str, name: &str, key1_days: i64) -> Value {
    json!({
        "id": account_in(subscription, name),
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
            "id": workspace_in(SUB1, "ws-sum"),
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
            "rotated 1 of 2 candidate accounts (1 incomplete); swept 1 account: 0 datastores updated, 0 with failures"
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

/// Two subscriptions alike: each with a due account and a workspace with a datastore on it.
fn two_subscriptions() -> Scenario {
    let half = |subscription: &str, n: u32| {
        let account = format!("stdue0{n}");
        (
            tagged_account_in(subscription, &account, 120),
            json!({
                "id": workspace_in(subscription, &format!("ws-{n}")),
                "storageAccount": account_in(subscription, &account),
                "datastores": [store(&format!("data_{n}"), &account)]
            }),
        )
    };
    let (account1, workspace1) = half(SUB1, 1);
    let (account2, workspace2) = half(SUB2, 2);
    serde_json::from_value(json!({
        "storageAccounts": [account1, account2],
        "workspaces": [workspace1, workspace2]
    }))
    .expect("scenario")
}

/// The workspaces of one of the two subscriptions (whichever is asked second) cannot be listed.
fn one_workspace_listing_fails(app: &TestApp) {
    app.emulator.set_faults(vec![fault(json!({
        "operation": "Workspaces_ListBySubscription", "kind": "error", "status": 403, "skip": 1
    }))]);
}

#[tokio::test]
async fn a_whole_scope_plan_reports_a_failed_listing_once() {
    let app = TestApp::start(two_subscriptions()).await;
    one_workspace_listing_fails(&app);

    let response = reqwest::Client::new()
        .post(app.host.http_url("reconcile"))
        .header("x-functions-key", app.host.function_key())
        .body("{}")
        .send()
        .await
        .expect("the host answers");

    assert_eq!(response.status().as_u16(), 502);
    let body: Value = response.json().await.unwrap();
    let text = body.to_string();
    assert_eq!(
        text.matches("could not list the workspaces").count(),
        1,
        "{body:#}"
    );
    assert_eq!(body["notes"].as_array().unwrap().len(), 1, "{body:#}");
    let accounts = body["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{body:#}");
    assert!(accounts[0].get("notes").is_none(), "{body:#}");
    assert_eq!(body["summary"], "1 account: 2 inSync, 1 failed (see notes)");
}

#[tokio::test]
async fn a_tick_reports_a_failed_listing_once_and_rotates_nothing() {
    let app = TestApp::start(two_subscriptions()).await;
    one_workspace_listing_fails(&app);

    let tick = app.host.tick("RotateKeys", false).await.unwrap();

    assert_eq!(tick.status, 500, "{:#}", tick.body);
    assert_eq!(
        logs(&tick),
        [
            "rotated 0 of 2 candidate accounts; swept 1 account: 0 datastores updated, 0 with failures; 1 of the scope's listings failed"
        ]
    );
    let value = &tick.body["ReturnValue"];
    assert_eq!(
        value
            .to_string()
            .matches("could not list the workspaces")
            .count(),
        1,
        "{value:#}"
    );
    for rotation in value["rotations"].as_array().unwrap() {
        assert_eq!(rotation["outcome"], "left", "{rotation:#}");
        assert!(
            rotation["reason"]
                .as_str()
                .unwrap()
                .starts_with("the scope could not be listed in full"),
            "{rotation:#}"
        );
    }
    for name in ["stdue01", "stdue02"] {
        assert_eq!(app.state().account(name)["regenerations"], 0, "{name}");
    }
}
