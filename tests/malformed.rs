//! Objects Azure lists that keysync cannot address (a workspace whose id is not an ARM id, a
//! datastore with neither a usable id nor a usable name) are reported and left alone, never
//! dropped without a word: the reconciler against a wiremock ARM that lists them.

mod common;

use std::sync::Arc;

use common::*;
use keysync::reconcile::{Inventory, Reconciler, Request};
use keysync::report::{Entry, ObjectKind, Outcome, Report};
use keysync::rotation::Limits;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

const OTHER_ACCOUNT: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/res9407/providers/Microsoft.Storage/storageAccounts/stother";

fn blob(name: Value, id: Value, account: &str) -> Value {
    json!({
        "id": id, "name": name, "type": "Microsoft.MachineLearningServices/workspaces/datastores",
        "properties": {
            "datastoreType": "AzureBlob", "accountName": account, "containerName": "data",
            "endpoint": "core.windows.net", "protocol": "https",
            "credentials": {"credentialsType": "AccountKey"}
        }
    })
}

/// An ARM that lists, beside a good workspace, one whose id is not an id (its default storage
/// is the account), one like it on another account, and in the good workspace two datastores
/// that nothing can address and one like them on another account.
async fn arm() -> MockServer {
    let server = MockServer::start().await;
    let mut account = sample("storage_StorageAccountGetProperties");
    account["id"] = json!(ACCOUNT);
    let mut listed_account = account.clone();
    listed_account["name"] = json!("sto8596");
    let keys = json!({"keys": [
        {"keyName": "key1", "permissions": "Full", "value": "a2V5MQ=="},
        {"keyName": "key2", "permissions": "Full", "value": "a2V5Mg=="}
    ]});
    let workspaces = json!({"value": [
        {"id": "/subscriptions/x\u{1b}[31m/not-a-workspace\n", "name": "broken",
         "properties": {"storageAccount": ACCOUNT}},
        {"id": "elsewhere", "name": "elsewhere", "properties": {"storageAccount": OTHER_ACCOUNT}},
        {"id": WORKSPACE, "name": "my-aml-workspace", "properties": {"storageAccount": ACCOUNT}}
    ]});
    let long_name = format!("{}/y", "x".repeat(200));
    let datastores = json!({"value": [
        blob(json!(""), json!("bad\u{7}id/with/slashes"), "sto8596"),
        blob(json!(long_name), Value::Null, "sto8596"),
        blob(json!("a/b"), Value::Null, "stother")
    ]});
    for (verb, at, body) in [
        ("GET", ACCOUNT.to_string(), account),
        ("POST", format!("{ACCOUNT}/listKeys"), keys),
        (
            "GET",
            format!("/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts"),
            json!({"value": [listed_account]}),
        ),
        (
            "GET",
            format!("/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/workspaces"),
            workspaces,
        ),
        ("GET", format!("{WORKSPACE}/datastores"), datastores),
    ] {
        Mock::given(method(verb))
            .and(path(at))
            .respond_with(json_response(200, body))
            .mount(&server)
            .await;
    }
    server
}

fn find<'a>(report: &'a Report, kind: ObjectKind, label: &str) -> Option<&'a Entry> {
    report.entries.iter().find(|e| {
        e.kind == kind
            && match kind {
                ObjectKind::Workspace => e.workspace == label,
                ObjectKind::Datastore => e.datastore.as_deref() == Some(label),
            }
    })
}

/// The unusable objects that concern the account, each with a printable name and a reason; the
/// ones on another account left to that account's report.
fn assert_reported(report: &Report) {
    let workspace = find(
        report,
        ObjectKind::Workspace,
        "/subscriptions/x[31m/not-a-workspace",
    )
    .unwrap_or_else(|| panic!("no line for the broken workspace: {report:#?}"));
    assert_eq!(workspace.outcome, Outcome::Skipped);
    assert!(workspace.attention);
    assert_eq!(
        workspace.reason.as_deref(),
        Some("its id is not a workspace's ARM id, so its datastores cannot be listed: left alone")
    );
    assert!(
        find(report, ObjectKind::Workspace, "elsewhere").is_none(),
        "its default storage is another account"
    );

    let no_name = find(report, ObjectKind::Datastore, "badid/with/slashes")
        .unwrap_or_else(|| panic!("no line for the nameless datastore: {report:#?}"));
    assert_eq!(no_name.workspace, WORKSPACE);
    assert_eq!(
        (no_name.outcome, no_name.attention),
        (Outcome::Skipped, true)
    );
    assert_eq!(
        no_name.reason.as_deref(),
        Some("neither its id nor its name can address it: left alone")
    );
    let cut = format!("{}…", "x".repeat(80));
    assert!(
        find(report, ObjectKind::Datastore, &cut).is_some(),
        "the long name is cut: {report:#?}"
    );
    assert!(find(report, ObjectKind::Datastore, "a/b").is_none());
    for entry in &report.entries {
        let text = format!("{} {:?}", entry.workspace, entry.datastore);
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
}

#[tokio::test]
async fn an_account_run_reports_what_it_cannot_address() {
    let server = arm().await;
    let reconciler = Reconciler::new(client(&server), vec![SUB.to_string()]);

    let request = Request {
        dry_run: true,
        ..Request::apply(account())
    };
    let report = reconciler.reconcile(request).await.expect("the run");

    assert_reported(&report);
    assert!(!report.has_failures(), "{report:#?}");
    assert_only_listed(&server).await;
}

/// Nothing was sent about the objects keysync cannot address: every request went to a path
/// the ARM serves.
async fn assert_only_listed(server: &MockServer) {
    let served = [
        ACCOUNT.to_string(),
        format!("{ACCOUNT}/listKeys"),
        format!("/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts"),
        format!("/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/workspaces"),
        format!("{WORKSPACE}/datastores"),
    ];
    for request in received(server).await {
        assert!(
            served.contains(&request.url.path().to_string()),
            "{} {}",
            request.method,
            request.url.path()
        );
    }
}

#[tokio::test]
async fn a_sweep_from_one_listing_reports_what_it_cannot_address() {
    let server = arm().await;
    let arm = client(&server);
    let inventory = Inventory::scan(&arm, &[SUB.to_string()]).await;
    assert!(inventory.failures.is_empty(), "{:?}", inventory.failures);
    let reconciler = Reconciler::new(arm, vec![SUB.to_string()]);

    let request = Request {
        dry_run: true,
        inventory: Some(Arc::new(inventory)),
        report_other_accounts: false,
        ..Request::apply(account())
    };
    let report = reconciler.reconcile(request).await.expect("the run");

    assert_reported(&report);
    assert_only_listed(&server).await;
}

#[tokio::test]
async fn a_rotation_leaves_an_account_with_objects_it_cannot_address() {
    let server = arm().await;
    let reconciler = Reconciler::new(client(&server), vec![SUB.to_string()]);
    // Due at any age: only what the datastores may hold can stop it.
    let limits = Limits {
        max_age: std::time::Duration::ZERO,
        min_interval: std::time::Duration::ZERO,
        completion_window: std::time::Duration::ZERO,
        ignore_age: true,
    };

    let rotation = reconciler
        .rotate(&account(), limits, None, None)
        .await
        .expect("the rotation");

    // A datastore nothing can address may hold the standby key.
    assert_eq!(rotation.outcome, "left", "{rotation:#?}");
    assert!(rotation.attention);
    assert_eq!(
        rotation.reason,
        "some datastores or workspaces could not be read, so a consumer of the standby key \
         cannot be ruled out: nothing regenerated"
    );
    assert_eq!(rotation.regenerated, None);
    assert_only_listed(&server).await;
}
