//! Bad input, throttling, server errors, paging and secrets in logs.

use keysync::emulator::Scenario;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_malformed_envelope_is_rejected_and_the_handler_keeps_serving() {
    let app = TestApp::start(Scenario::demo()).await;
    let client = reqwest::Client::new();
    let url = format!(
        "http://{}/runtime/webhooks/eventgrid?functionName={FUNCTION}",
        app.host.addr()
    );
    let handler_bodies = [
        "not json",
        "{}",
        r#"{"Data": {"event": "{not json"}}"#,
        r#"{"Data": {"event": 42}}"#,
        r#"{"Data": {"timer": {}}}"#,
    ];

    for body in handler_bodies {
        let record = app.host.post_raw(FUNCTION, body.as_bytes()).await.unwrap();
        assert_eq!(record.status, 400, "{body}");
        assert!(
            record.body["ReturnValue"]["error"].is_string(),
            "{body}: {:#}",
            record.body
        );
    }
    let bad_webhook = client
        .post(&url)
        .header("aeg-event-type", "Notification")
        .body("[")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_webhook.status(), 400);

    app.regenerate(SHARED, "key1").await;
    let record = app.deliver(&regeneration_event(SHARED)).await;
    assert_eq!(record.status, 200, "still serving after bad input");
    assert!(
        app.host
            .handler_output()
            .iter()
            .any(|l| l.starts_with("stderr:") && l.contains("invocation rejected"))
    );
}

#[tokio::test]
async fn throttling_and_html_server_errors_are_retried_until_they_pass() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    app.emulator.set_faults(vec![
        fault(json!({"operation": "Datastores_List", "kind": "throttle", "retryAfter": "seconds", "retryAfterSeconds": 1, "count": 1})),
        fault(json!({"operation": "StorageAccounts_ListKeys", "kind": "throttle", "retryAfter": "httpDate", "retryAfterSeconds": 1, "count": 1})),
        fault(json!({"operation": "Datastores_CreateOrUpdate", "kind": "error", "status": 503, "html": true, "count": 2})),
    ]);

    let record = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let statuses: Vec<u16> = app.emulator.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 2);
    for (ws, ds) in [
        ("mlw-vision", "workspaceblobstore"),
        ("mlw-vision", "workspacefilestore"),
        ("mlw-forecast", "shared_features"),
    ] {
        assert_eq!(app.state().held(ws, ds, "stmlshared01"), "key1");
    }
}

#[tokio::test]
async fn a_failed_update_fails_the_invocation_and_a_redelivery_converges() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    app.emulator.set_faults(vec![fault(json!({"operation": "Datastores_CreateOrUpdate", "kind": "error", "status": 500, "count": 100}))]);

    let failed = app.deliver(&regeneration_event(SHARED)).await;
    assert_eq!(failed.status, 500);
    assert_eq!(
        entry(report(&failed), "mlw-vision", "workspaceblobstore")["outcome"],
        "failed"
    );
    assert!(
        entry(report(&failed), "mlw-vision", "workspaceblobstore")["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 500")
    );

    app.emulator.set_faults(vec![]);
    let redelivered = app.deliver(&regeneration_event(SHARED)).await;
    assert_eq!(redelivered.status, 200, "{:#}", redelivered.body);
    assert_eq!(
        app.state()
            .held("mlw-vision", "workspaceblobstore", "stmlshared01"),
        "key1"
    );
}

#[tokio::test]
async fn a_resync_that_azure_reports_failed_fails_the_invocation_and_a_redelivery_resyncs() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    // How ARM answers the Location URL of an operation that failed: an ARM error.
    app.emulator.set_faults(vec![fault(json!({"operation": "Workspaces_ResyncKeysStatus", "kind": "error", "status": 400, "count": 1}))]);

    let failed = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(failed.status, 500, "{:#}", failed.body);
    let line = workspace_entry(report(&failed), "mlw-vision").unwrap();
    assert_eq!(line["outcome"], "failed", "{line:#}");
    assert!(
        line["reason"].as_str().unwrap().contains("HTTP 400"),
        "{line:#}"
    );
    assert_eq!(app.state().workspace("mlw-vision")["resyncsCompleted"], 0);
    assert_eq!(
        app.state().workspace("mlw-vision")["storageKeysInSync"],
        false
    );
    // The datastores were repaired all the same.
    assert_eq!(
        app.state()
            .held("mlw-vision", "workspaceblobstore", "stmlshared01"),
        "key1"
    );

    let redelivered = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(redelivered.status, 200, "{:#}", redelivered.body);
    assert_eq!(
        workspace_entry(report(&redelivered), "mlw-vision").unwrap()["outcome"],
        "resynced"
    );
    assert_eq!(app.state().workspace("mlw-vision")["resyncsCompleted"], 1);
    assert_eq!(
        app.state().workspace("mlw-vision")["storageKeysInSync"],
        true
    );
}

#[tokio::test]
async fn a_404_page_without_an_arm_error_is_no_proof_that_the_account_is_gone() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    // A gateway's 404 page: nothing says the account does not exist.
    app.emulator.set_faults(vec![fault(json!({"operation": "StorageAccounts_GetProperties", "kind": "error", "status": 404, "html": true, "count": 1}))]);

    let failed = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(failed.status, 500, "{:#}", failed.body);
    assert_eq!(
        app.state()
            .held("mlw-vision", "workspaceblobstore", "stmlshared01"),
        "stale"
    );
    let redelivered = app.deliver(&regeneration_event(SHARED)).await;
    assert_eq!(redelivered.status, 200, "{:#}", redelivered.body);
    assert_eq!(
        app.state()
            .held("mlw-vision", "workspaceblobstore", "stmlshared01"),
        "key1"
    );
}

/// 7 workspaces, 3 per page; 80 datastores in `mlw-0`, at most 30 per page whatever keysync asks.
fn paged_scenario() -> Scenario {
    let sub = SUB;
    let account = SHARED;
    let mut workspaces = Vec::new();
    for w in 0..7 {
        let count = if w == 0 { 80 } else { 1 };
        let datastores: Vec<Value> = (0..count)
            .map(|d| json!({
                "name": format!("ds{d:03}"),
                "properties": {
                    "datastoreType": "AzureBlob", "accountName": "stmlshared01", "containerName": format!("c{d}"),
                    "endpoint": "core.windows.net", "protocol": "https", "description": format!("datastore {d}"),
                    "tags": {"n": d.to_string()}, "credentials": {"credentialsType": "AccountKey"}
                },
                "secrets": {"keyRef": "stale"}
            }))
            .collect();
        workspaces.push(json!({
            "id": format!("/subscriptions/{sub}/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-{w}"),
            "location": "westeurope",
            "storageAccount": account,
            "datastores": datastores
        }));
    }
    serde_json::from_value(json!({
        "tenantId": "aaaaaaaa-0000-4000-8000-00000000000a",
        "workspacesPageSize": 3,
        "datastoresMaxPageSize": 30,
        "storageAccounts": [{"id": account, "location": "westeurope", "keyCreationTime": {"key1": "2026-08-01T00:00:00Z", "key2": null}}],
        "workspaces": workspaces
    }))
    .expect("scenario")
}

#[tokio::test]
async fn a_listing_that_fails_on_a_later_page_still_reports_the_changes_made() {
    let app = TestApp::start(paged_scenario()).await;
    // The first page (three workspaces) is served; every later page fails for good.
    app.emulator.set_faults(vec![fault(json!({
        "operation": "Workspaces_ListBySubscription", "kind": "error", "status": 400, "skip": 1
    }))]);

    let record = app.deliver(&regeneration_event(SHARED)).await;

    // The listing failed, so the invocation fails and Event Grid delivers again...
    assert!(!record.succeeded(), "{:#}", record.body);
    let report = report(&record);
    let notes = report["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n["outcome"] == "failed"
            && n["message"]
                .as_str()
                .unwrap()
                .contains("could not list all the workspaces")),
        "{notes:#?}"
    );
    // ...but the first page's workspaces were repaired, and each change made is in the report.
    let puts = app
        .writes()
        .iter()
        .filter(|r| r.operation == "Datastores_CreateOrUpdate")
        .count();
    let updated = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "updated")
        .count();
    assert_eq!(puts, 82, "80 in mlw-0, one each in mlw-1 and mlw-2");
    assert_eq!(updated, puts);
    assert_eq!(app.state().held("mlw-2", "ds000", "stmlshared01"), "key1");
    assert_eq!(app.state().held("mlw-3", "ds000", "stmlshared01"), "stale");
}

#[tokio::test]
async fn every_page_of_workspaces_and_datastores_is_reconciled() {
    let app = TestApp::start(paged_scenario()).await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let updated = report(&record)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "updated")
        .count();
    assert_eq!(updated, 86, "80 in mlw-0 and one in each of the six others");
    let state = app.state();
    let stale: Vec<String> = (0..80)
        .map(|d| format!("ds{d:03}"))
        .filter(|ds| state.held("mlw-0", ds, "stmlshared01") != "key1")
        .collect();
    assert!(stale.is_empty(), "left on an old key: {stale:?}");
    for w in 1..7 {
        assert_eq!(
            state.held(&format!("mlw-{w}"), "ds000", "stmlshared01"),
            "key1"
        );
    }
    // Each page was asked for once: 80 datastores at 30 a page, 7 workspaces at 3 a page.
    let requests = app.emulator.requests();
    let datastore_pages = requests
        .iter()
        .filter(|r| r.operation == "Datastores_List" && r.path.contains("/workspaces/mlw-0/"))
        .count();
    let workspace_pages = requests
        .iter()
        .filter(|r| r.operation == "Workspaces_ListBySubscription")
        .count();
    assert_eq!((datastore_pages, workspace_pages), (3, 3));
}

#[tokio::test]
async fn trace_logging_shows_the_work_but_no_secret_reaches_the_reply() {
    let app = TestApp::start_with(
        Scenario::demo(),
        Options {
            wire_events: true,
            ..Options::default()
        },
    )
    .await;
    let secrets_before = app.state().secrets();
    let mut finished = app.host.subscribe();
    app.regenerate(SHARED, "key1").await;
    let record = tokio::time::timeout(std::time::Duration::from_secs(60), finished.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, 200);

    // The logs themselves are searched for every secret when `app` is dropped (helpers.rs).
    let output = app.host.handler_output();
    assert!(
        output.iter().any(|l| l.contains("ARM request completed")),
        "trace logging produced the request lines"
    );
    let mut secrets = secrets_before;
    secrets.extend(app.state().secrets());
    let reply = record.body.to_string();
    assert!(
        !secrets.iter().any(|s| reply.contains(s.as_str())),
        "a secret reached the reply"
    );
    assert!(
        !CLAIMS.iter().any(|c| reply.contains(c)),
        "a claim reached the reply"
    );
}
