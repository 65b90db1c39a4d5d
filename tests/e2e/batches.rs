//! An invocation that carries a batch of events: each account named in it is reconciled once.

use keysync::emulator::Scenario;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn a_batch_naming_one_account_many_times_reconciles_it_once() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    let before = app.emulator.requests().len();
    let batch: Vec<Value> = (0..50).map(|_| regeneration_event(SHARED)).collect();

    let record = app.deliver(&Value::Array(batch)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let results = record.body["ReturnValue"]
        .as_array()
        .expect("one result per event");
    assert_eq!(results.len(), 50);
    assert_eq!(results[0]["outcome"], "reconciled");
    assert!(results[0]["report"].is_object(), "{:#}", results[0]);
    for result in &results[1..] {
        assert_eq!(result["outcome"], "reconciled", "{result:#}");
        assert!(result.get("report").is_none(), "{result:#}");
        let reason = result["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("same account as event "), "{reason}");
    }
    let requests = app.emulator.requests();
    let reads_of = |operation: &str| {
        requests[before..]
            .iter()
            .filter(|r| r.operation == operation)
            .count()
    };
    assert_eq!(reads_of("StorageAccounts_GetProperties"), 1);
    assert_eq!(reads_of("StorageAccounts_ListKeys"), 1);
    let updates = app
        .writes()
        .iter()
        .filter(|w| w.operation == "Datastores_CreateOrUpdate")
        .count();
    assert_eq!(updates, 3, "the three datastores that held key1, once each");
}
