//! The `KeyRegenerated` function against the demo scenario.

use keysync::emulator::{RequestRecord, Scenario};
use keysync::host::BindingEncoding;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_regeneration_updates_stale_datastores_in_place_and_resyncs_the_workspace() {
    let app = TestApp::start(Scenario::demo()).await;
    let before = app.state();
    app.regenerate(SHARED, "key1").await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let after = app.state();
    for (ws, ds) in [
        ("mlw-vision", "workspaceblobstore"),
        ("mlw-vision", "workspacefilestore"),
        ("mlw-forecast", "shared_features"),
    ] {
        assert_eq!(after.held(ws, ds, "stmlshared01"), "key1", "{ws}/{ds}");
        assert_eq!(entry(report(&record), ws, ds)["outcome"], "updated");
        assert_eq!(entry(report(&record), ws, ds)["held"], "stale");
    }
    assert_eq!(
        before.non_credential_fields(),
        after.non_credential_fields(),
        "only the secret may change"
    );
    let kept = &after.datastore("mlw-vision", "workspacefilestore")["resource"]["properties"];
    assert_eq!(
        (&kept["subscriptionId"], &kept["resourceGroup"]),
        (&json!(SUB), &json!("rg-ml")),
        "{kept:#}"
    );
    assert!(after.0["deletedDatastores"].as_array().unwrap().is_empty());
    // The handler's tokens came from the emulator's managed identity endpoint, through the real
    // azure_identity credential (the only credential it has with IDENTITY_ENDPOINT set).
    assert!(
        after.0["managedIdentityTokensIssued"].as_u64().unwrap() >= 1,
        "{:#}",
        after.0["managedIdentityTokensIssued"]
    );
}

#[tokio::test]
async fn datastores_on_the_other_valid_key_are_not_written() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    let curated = entry(report(&record), "mlw-vision", "curated");
    assert_eq!(
        (curated["held"].as_str(), curated["outcome"].as_str()),
        (Some("key2"), Some("inSync"))
    );
    assert_eq!(
        app.state().held("mlw-vision", "curated", "stmlshared01"),
        "key2"
    );
    let puts: Vec<String> = app
        .writes()
        .into_iter()
        .filter(|w| w.operation == "Datastores_CreateOrUpdate")
        .map(|w| w.path.to_lowercase())
        .collect();
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert!(!puts.iter().any(|p| p.ends_with("/curated")));
}

#[tokio::test]
async fn identity_service_principal_and_other_account_datastores_are_reported_and_untouched() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    let report = report(&record);
    let reason = |ws, ds| {
        entry(report, ws, ds)["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        reason("mlw-vision", "images_identity"),
        "identity-based access: no key stored"
    );
    assert!(reason("mlw-vision", "lake_sp").starts_with("service principal"));
    assert_eq!(
        reason("mlw-vision", "archive_other"),
        "on another storage account"
    );
    assert_eq!(
        reason("mlw-forecast", "workspaceblobstore"),
        "on another storage account"
    );
    // Storage checks are off in this test: the run says that it does not know, not that a sync
    // would check.
    assert_eq!(
        reason("mlw-forecast", "exports_sas"),
        "SAS token: no account key stored; not checked against storage, since storage checks \
         are off (KEYSYNC_VERIFY=false): whether it still works is unknown"
    );
    for (ws, ds) in [
        ("mlw-vision", "images_identity"),
        ("mlw-vision", "lake_sp"),
        ("mlw-vision", "archive_other"),
        ("mlw-forecast", "workspaceblobstore"),
    ] {
        assert_eq!(entry(report, ws, ds)["outcome"], "skipped");
        assert_eq!(app.state().datastore(ws, ds)["writes"], 0, "{ws}/{ds}");
    }
}

#[tokio::test]
async fn only_the_workspace_whose_default_storage_is_the_account_is_resynced() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(
        workspace_entry(report(&record), "mlw-vision").unwrap()["outcome"],
        "resynced"
    );
    assert!(workspace_entry(report(&record), "mlw-forecast").is_none());
    let state = app.state();
    assert_eq!(state.workspace("mlw-vision")["resyncCount"], 1);
    assert_eq!(state.workspace("mlw-vision")["storageKeysInSync"], true);
    assert_eq!(state.workspace("mlw-forecast")["resyncCount"], 0);

    // The resync comes after the writes to the workspace's datastores: a workspace that synced
    // its keys first would cache a datastore's old key until its own hourly refresh.
    let requests = app.emulator.requests();
    let position = |wanted: &dyn Fn(&RequestRecord) -> bool| requests.iter().rposition(wanted);
    let last_vision_put = position(&|r| {
        r.operation == "Datastores_CreateOrUpdate" && r.path.contains("/workspaces/mlw-vision/")
    });
    let resync = position(&|r| r.operation == "Workspaces_ResyncKeys");
    assert!(
        last_vision_put.is_some() && resync > last_vision_put,
        "{requests:#?}"
    );
}

#[tokio::test]
async fn a_second_delivery_finds_everything_in_sync_and_writes_nothing() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    app.deliver(&regeneration_event(SHARED)).await;
    let writes_after_first = app.writes().len();

    let again = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(again.status, 200);
    assert_eq!(app.writes().len(), writes_after_first, "{:?}", app.writes());
    assert_eq!(
        report(&again)["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == "updated")
            .count(),
        0
    );
}

#[tokio::test]
async fn both_schemas_and_every_value_encoding_are_handled() {
    for encoding in [
        BindingEncoding::Object,
        BindingEncoding::String,
        BindingEncoding::DoubleString,
    ] {
        for cloud_events in [false, true] {
            let app = TestApp::start_with(
                Scenario::demo(),
                Options {
                    encoding,
                    ..Options::default()
                },
            )
            .await;
            app.regenerate(SHARED, "key1").await;
            let event = if cloud_events {
                regeneration_cloud_event(SHARED)
            } else {
                regeneration_event(SHARED)
            };

            let record = app.deliver(&event).await;

            assert_eq!(
                record.status, 200,
                "{encoding:?} cloud_events={cloud_events}: {:#}",
                record.body
            );
            assert_eq!(
                app.state()
                    .held("mlw-vision", "workspaceblobstore", "stmlshared01"),
                "key1",
                "{encoding:?} {cloud_events}"
            );
        }
    }
}

#[tokio::test]
async fn events_that_are_not_key_regenerations_are_acknowledged_without_writes() {
    let app = TestApp::start(Scenario::demo()).await;
    let mut failed = regeneration_event(SHARED);
    failed["data"]["status"] = json!("Failed");
    let mut blob_service = regeneration_event(SHARED);
    blob_service["data"]["resourceUri"] = json!(format!("{SHARED}/blobServices/default"));
    blob_service["subject"] = json!(format!("{SHARED}/blobServices/default"));
    // keysync's own listKeys on the very account it watches fires the same event type.
    let mut list_keys = regeneration_event(SHARED);
    let list_keys_action = "Microsoft.Storage/storageAccounts/listKeys/action";
    list_keys["data"]["operationName"] = json!(list_keys_action);
    list_keys["data"]["authorization"]["action"] = json!(list_keys_action);
    // A regeneration that Azure refused arrives as its own event type.
    let mut refused = regeneration_event(SHARED);
    refused["eventType"] = json!("Microsoft.Resources.ResourceActionFailure");
    refused["data"]["status"] = json!("Failed");
    let events = [
        fixture("eventgrid_egschema_resource_action_success.json"),
        fixture("eventgrid_cloudevents_resource_action_success.json"),
        failed,
        blob_service,
        list_keys,
        refused,
        fixture("eventgrid_docs_subscription_validation_event.json")[0].clone(),
    ];

    for event in &events {
        let record = app.deliver(event).await;
        assert_eq!(record.status, 200, "{event:#}");
        assert_eq!(record.body["ReturnValue"][0]["outcome"], "ignored");
    }

    assert_eq!(app.writes(), vec![]);
    assert!(
        app.emulator.requests().is_empty(),
        "ignored events must not even read Azure"
    );
}

#[tokio::test]
async fn events_delivered_by_the_emulator_reach_the_handler_through_the_webhook() {
    let app = TestApp::start_with(
        Scenario::demo(),
        Options {
            wire_events: true,
            ..Options::default()
        },
    )
    .await;
    let mut finished = app.host.subscribe();

    app.regenerate(SHARED, "key2").await;
    let record = tokio::time::timeout(std::time::Duration::from_secs(60), finished.recv())
        .await
        .unwrap()
        .unwrap();

    assert_eq!(record.status, 200, "{:#}", record.body);
    // key2 was regenerated, so `curated` (which held the old key2) moves to the newest key, key2.
    assert_eq!(
        app.state().held("mlw-vision", "curated", "stmlshared01"),
        "key2"
    );
    assert_eq!(
        entry(report(&record), "mlw-vision", "curated")["outcome"],
        "updated"
    );
    assert_eq!(
        entry(report(&record), "mlw-vision", "workspaceblobstore")["outcome"],
        "inSync"
    );
}
