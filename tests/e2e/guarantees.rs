//! What keysync promises under load, deadlines and hostile input: duplicates coalesced, work cut
//! at a deadline reported and retried, bad input refused without harm, Key Vault trouble
//! explained, nothing deleted.

use std::time::{Duration, Instant};

use keysync::emulator::Scenario;
use keysync::host::BindingEncoding;
use serde_json::{Value, json};

use crate::helpers::*;

const OTHER: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlother02";
const FRESH: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlfresh03";

fn demo_with(changes: Value) -> Scenario {
    let mut scenario = serde_json::to_value(Scenario::demo()).unwrap();
    for (key, value) in changes.as_object().unwrap() {
        scenario[key] = value.clone();
    }
    serde_json::from_value(scenario).unwrap()
}

fn writes_by_operation(app: &TestApp) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for write in app.writes() {
        *counts.entry(write.operation).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Regenerates key1 of the shared and the other account: both have stale datastores then.
async fn regenerate_two(app: &TestApp) {
    app.regenerate(SHARED, "key1").await;
    app.regenerate(OTHER, "key1").await;
}

/// The writes of one clean run after [`regenerate_two`]: one event per account, one at a time,
/// then a timer tick when `tick`.
async fn clean_run_writes(tick: bool) -> Vec<(String, usize)> {
    let clean = TestApp::start(Scenario::demo()).await;
    regenerate_two(&clean).await;
    for account in [SHARED, OTHER, FRESH] {
        assert_eq!(
            clean.deliver(&regeneration_event(account)).await.status,
            200
        );
    }
    if tick {
        let ticked = clean.host.tick("RotateKeys", false).await.unwrap();
        assert_eq!(ticked.status, 200);
    }
    writes_by_operation(&clean)
}

#[tokio::test]
async fn hundreds_of_concurrent_duplicate_events_write_what_one_clean_run_writes() {
    let expected = clean_run_writes(false).await;

    let app = TestApp::start(Scenario::demo()).await;
    regenerate_two(&app).await;
    // Each run reads its account's keys half a second late, so all 300 deliveries arrive while
    // the first runs are still going, however slowly this machine sends them.
    app.emulator.set_faults(vec![fault(
        json!({"operation": "StorageAccounts_ListKeys", "kind": "delay", "delayMs": 500}),
    )]);
    let events: Vec<Value> = (0..300)
        .map(|i| regeneration_event([SHARED, SHARED, OTHER, FRESH][i % 4]))
        .collect();
    let deliveries = events.iter().map(|event| app.deliver(event));
    let records = futures::future::join_all(deliveries).await;

    assert!(
        records.iter().all(|r| r.status == 200),
        "{:?}",
        records.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(writes_by_operation(&app), expected);
    assert!(
        expected
            .iter()
            .any(|(op, n)| op == "Datastores_CreateOrUpdate" && *n == 5),
        "{expected:?}"
    );
    let runs = app
        .emulator
        .requests()
        .iter()
        .filter(|r| r.operation == "StorageAccounts_GetProperties")
        .count();
    assert!(
        runs <= 6,
        "300 events became {runs} runs; at most two per account are needed"
    );
}

#[tokio::test]
async fn timer_ticks_among_duplicate_events_write_what_one_clean_run_writes() {
    let expected = clean_run_writes(true).await;

    let app = TestApp::start(Scenario::demo()).await;
    regenerate_two(&app).await;
    app.emulator.set_faults(vec![fault(
        json!({"operation": "StorageAccounts_ListKeys", "kind": "delay", "delayMs": 300}),
    )]);
    let events: Vec<Value> = (0..100)
        .map(|i| regeneration_event([SHARED, OTHER, FRESH][i % 3]))
        .collect();
    let deliveries = futures::future::join_all(events.iter().map(|event| app.deliver(event)));
    let ticks = futures::future::join(
        app.host.tick("RotateKeys", false),
        app.host.tick("RotateKeys", true),
    );
    let (records, (first, second)) = futures::join!(deliveries, ticks);

    assert!(records.iter().all(|r| r.status == 200));
    assert_eq!(first.unwrap().status, 200);
    assert_eq!(second.unwrap().status, 200);
    // The event runs, the rotations and the sweeps took turns on each account: every stale
    // datastore was written once and each workspace resynced once, whoever came first.
    assert_eq!(writes_by_operation(&app), expected);
    assert!(
        expected
            .iter()
            .any(|(op, n)| op == "Workspaces_ResyncKeys" && *n >= 1),
        "{expected:?}"
    );
}

#[tokio::test]
async fn work_the_deadline_cuts_off_is_deferred_and_a_redelivery_finishes_it() {
    let deadline = ("KEYSYNC_EVENT_DEADLINE_SECS".to_string(), "2".to_string());
    let app = TestApp::start_with(
        Scenario::demo(),
        Options {
            extra_env: vec![deadline],
            ..Options::default()
        },
    )
    .await;
    app.regenerate(SHARED, "key1").await;
    app.emulator.set_faults(vec![fault(
        json!({"operation": "Datastores_Get", "kind": "delay", "delayMs": 5000}),
    )]);

    let started = Instant::now();
    let cut = app.deliver(&regeneration_event(SHARED)).await;

    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the deadline, not after the slow calls"
    );
    assert_eq!(cut.status, 500, "left work must be retried: {:#}", cut.body);
    assert_eq!(cut.body["ReturnValue"][0]["outcome"], "deferred");
    let blob = entry(report(&cut), "mlw-vision", "workspaceblobstore");
    assert_eq!(
        (blob["outcome"].as_str(), blob["action"].as_str()),
        (Some("deferred"), Some("updateKey"))
    );
    assert_eq!(
        workspace_entry(report(&cut), "mlw-vision").unwrap()["outcome"],
        "deferred"
    );
    assert_eq!(
        app.state()
            .held("mlw-vision", "workspaceblobstore", "stmlshared01"),
        "stale"
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
async fn a_resync_still_running_at_the_deadline_is_accepted_not_failed() {
    let scenario = demo_with(json!({"resyncPolls": 1000, "lroRetryAfterSeconds": 1}));
    let deadline = ("KEYSYNC_EVENT_DEADLINE_SECS".to_string(), "2".to_string());
    let app = TestApp::start_with(
        scenario,
        Options {
            extra_env: vec![deadline],
            ..Options::default()
        },
    )
    .await;
    app.regenerate(SHARED, "key1").await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let workspace = workspace_entry(report(&record), "mlw-vision").unwrap();
    assert_eq!(workspace["outcome"], "accepted");
    assert!(
        workspace["reason"]
            .as_str()
            .unwrap()
            .contains("still running")
    );
    assert_eq!(app.state().workspace("mlw-vision")["resyncCount"], 1);
}

#[tokio::test]
async fn a_datastore_with_no_stored_secret_is_repaired() {
    let mut scenario = serde_json::to_value(Scenario::demo()).unwrap();
    scenario["workspaces"][0]["datastores"][1]["secrets"] = Value::Null;
    let app = TestApp::start(serde_json::from_value(scenario).unwrap()).await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    let file = entry(report(&record), "mlw-vision", "workspacefilestore");
    assert_eq!(
        (file["held"].as_str(), file["outcome"].as_str()),
        (Some("missing"), Some("updated"))
    );
    assert_eq!(
        app.state()
            .held("mlw-vision", "workspacefilestore", "stmlshared01"),
        "key1"
    );
}

#[tokio::test]
async fn a_soft_deleted_key_vault_secret_is_explained_and_nothing_is_deleted_or_purged() {
    let mut scenario = serde_json::to_value(Scenario::demo()).unwrap();
    scenario["workspaces"][0]["datastores"][0]["softDeletedSecret"] = json!(true);
    let app = TestApp::start(serde_json::from_value(scenario).unwrap()).await;
    app.regenerate(SHARED, "key1").await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(record.status, 500);
    let blob = entry(report(&record), "mlw-vision", "workspaceblobstore");
    assert_eq!(blob["outcome"], "failed");
    let reason = blob["reason"].as_str().unwrap();
    assert!(
        reason.contains("soft-deleted secret") && reason.contains("recover"),
        "{reason}"
    );
    assert_eq!(
        entry(report(&record), "mlw-vision", "workspacefilestore")["outcome"],
        "updated"
    );
    let deletes = app
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert_eq!(deletes, 0);
    assert!(
        app.state().0["deletedDatastores"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn oversized_garbage_and_deeply_nested_bodies_are_refused_and_the_handler_keeps_serving() {
    let app = TestApp::start(Scenario::demo()).await;
    let oversized = vec![b'x'; keysync::handler::MAX_BODY_BYTES + 1];
    let deep = format!(
        "{{\"Data\": {{\"event\": {}{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut rng_state: u64 = 0x9e3779b97f4a7c15;
    let mut garbage = Vec::new();
    for len in [1usize, 7, 64, 513, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state as u8
            })
            .collect();
        garbage.push(bytes);
    }

    for function in [FUNCTION, "RotateKeys"] {
        let record = app.host.post_raw(function, &oversized).await.unwrap();
        assert_eq!(record.status, 413, "{function}");
        assert_eq!(
            record.body["ReturnValue"]["error"],
            format!(
                "the invocation body is larger than {} bytes",
                keysync::handler::MAX_BODY_BYTES
            ),
            "{function}: {}",
            record.body
        );
        let record = app.host.post_raw(function, deep.as_bytes()).await.unwrap();
        assert_eq!(record.status, 400, "{function}: {}", record.body);
        for bytes in &garbage {
            assert_eq!(
                app.host.post_raw(function, bytes).await.unwrap().status,
                400,
                "{function}"
            );
        }
    }

    app.regenerate(SHARED, "key1").await;
    assert_eq!(
        app.deliver(&regeneration_event(SHARED)).await.status,
        200,
        "still serving"
    );
    assert_eq!(
        app.state()
            .held("mlw-vision", "workspaceblobstore", "stmlshared01"),
        "key1"
    );
}

/// Event Grid's limit on one event: 1 MB, taken as 1 MiB.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// A regeneration event of `MAX_EVENT_BYTES` whose padding is all `"` and `\\`, which every
/// encoding as a JSON string doubles.
fn largest_event(account: &str) -> Value {
    let mut event = regeneration_event(account);
    event["data"]["padding"] = json!("");
    let room = MAX_EVENT_BYTES - event.to_string().len();
    let padding: String = "\"\\".repeat(room / 4);
    event["data"]["padding"] = json!(padding);
    assert!(event.to_string().len() <= MAX_EVENT_BYTES);
    assert!(event.to_string().len() > MAX_EVENT_BYTES - 4);
    event
}

#[tokio::test]
async fn the_largest_event_is_handled_in_every_envelope_the_host_sends() {
    let app = TestApp::start(Scenario::demo()).await;
    let event = largest_event(SHARED);
    for encoding in [
        BindingEncoding::Object,
        BindingEncoding::String,
        BindingEncoding::DoubleString,
    ] {
        app.regenerate(SHARED, "key1").await;
        let metadata = keysync::host::invoke::event_grid_metadata(&event);
        let envelope =
            keysync::host::invoke::envelope(FUNCTION, "event", &event, encoding, metadata);
        let body = envelope.to_string();
        let record = app.host.post_raw(FUNCTION, body.as_bytes()).await.unwrap();
        assert_eq!(
            record.status,
            200,
            "{encoding:?}, {} bytes: {}",
            body.len(),
            record.body
        );
        assert_eq!(
            record.body["ReturnValue"][0]["outcome"], "reconciled",
            "{encoding:?}"
        );
        assert_eq!(
            app.state()
                .held("mlw-vision", "workspaceblobstore", "stmlshared01"),
            "key1",
            "{encoding:?}"
        );
    }
}

#[tokio::test]
async fn forged_and_foreign_events_cause_no_request_and_nothing_else_in_an_event_is_trusted() {
    let app = TestApp::start(Scenario::demo()).await;
    let foreign_sub = SHARED.replace(
        "11111111-2222-3333-4444-555555555555",
        "99999999-2222-3333-4444-555555555555",
    );
    let mut foreign = regeneration_event(&foreign_sub);
    foreign["topic"] = json!("/subscriptions/99999999-2222-3333-4444-555555555555");
    let mut forged_subject = regeneration_event(SHARED);
    forged_subject["subject"] = json!(OTHER);
    let mut workspace_uri = regeneration_event(SHARED);
    let ws = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-vision";
    workspace_uri["data"]["resourceUri"] = json!(ws);
    workspace_uri["subject"] = json!(ws);
    let mut huge_id = regeneration_event(SHARED);
    huge_id["data"]["resourceUri"] = json!(format!("{SHARED}{}", "/x".repeat(10_000)));
    huge_id["subject"] = Value::Null;

    for event in [foreign, forged_subject, workspace_uri, huge_id] {
        let record = app.deliver(&event).await;
        assert_eq!(record.status, 200);
        assert_eq!(
            record.body["ReturnValue"][0]["outcome"], "ignored",
            "{event:#}"
        );
    }
    assert!(
        app.emulator.requests().is_empty(),
        "{:?}",
        app.emulator.requests()
    );

    // Everything but the account is ignored: a URL, a scope or a claim naming another account
    // sends no request about it.
    let mut misleading = regeneration_event(SHARED);
    misleading["data"]["httpRequest"]["url"] = json!("https://evil.example.com/steal");
    misleading["data"]["authorization"]["scope"] = json!(OTHER);
    misleading["data"]["subscriptionId"] = json!("99999999-2222-3333-4444-555555555555");
    assert_eq!(app.deliver(&misleading).await.status, 200);
    let touched_other = app
        .emulator
        .requests()
        .iter()
        .any(|r| r.path.to_lowercase().contains("stmlother02"));
    assert!(!touched_other, "only the account the event names is read");
}
