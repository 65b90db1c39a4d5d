//! Which cloud a datastore is on: an account whose blob endpoint is in an Azure DNS zone
//! (`https://<name>.zNN.blob.storage.azure.net/`) shows no `core.windows.net`-style suffix, so its
//! datastores are matched on the storage suffix of the cloud keysync talks to (the emulator
//! emulates the public cloud), and a datastore of another cloud or a look-alike suffix is left
//! alone.

use keysync::emulator::Scenario;
use serde_json::json;

use crate::helpers::*;

const WORKSPACE: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-zone";

/// One account on a DNS-zone endpoint and one workspace whose datastores all name it, each
/// holding a stale key, on the public cloud, on China's and on a look-alike suffix.
fn dns_zone_scenario() -> Scenario {
    let datastore = |name: &str, endpoint: &str| {
        json!({
            "name": name,
            "properties": {
                "datastoreType": "AzureBlob", "accountName": "stmlshared01",
                "containerName": "data", "endpoint": endpoint, "protocol": "https",
                "credentials": {"credentialsType": "AccountKey"}
            },
            "secrets": {"keyRef": "stale"}
        })
    };
    serde_json::from_value(json!({
        "storageAccounts": [{
            "id": SHARED,
            "primaryEndpoints": {"blob": "https://stmlshared01.z12.blob.storage.azure.net/"}
        }],
        "workspaces": [{
            "id": WORKSPACE,
            "storageAccount": SHARED,
            "datastores": [
                datastore("public_cloud", "core.windows.net"),
                datastore("china_cloud", "core.chinacloudapi.cn"),
                datastore("look_alike", "core.windows.net.evil.com"),
            ]
        }]
    }))
    .expect("scenario")
}

#[tokio::test]
async fn a_dns_zone_account_updates_its_own_cloud_and_leaves_foreign_and_look_alike_datastores() {
    let app = TestApp::start(dns_zone_scenario()).await;
    let before = app.state();
    app.regenerate(SHARED, "key1").await;

    let record = app.deliver(&regeneration_event(SHARED)).await;

    assert_eq!(record.status, 200, "{:#}", record.body);
    let report = report(&record);
    let after = app.state();
    let right = entry(report, "mlw-zone", "public_cloud");
    assert_eq!(right["outcome"], "updated", "{report:#}");
    assert_eq!(
        after.held("mlw-zone", "public_cloud", "stmlshared01"),
        "key1"
    );
    for name in ["china_cloud", "look_alike"] {
        let skipped = entry(report, "mlw-zone", name);
        assert_eq!(
            (skipped["outcome"].as_str(), skipped["reason"].as_str()),
            (Some("skipped"), Some("on another storage account")),
            "{name}"
        );
        assert_eq!(skipped["otherAccount"], true, "{name}");
        assert_eq!(after.datastore("mlw-zone", name)["writes"], 0, "{name}");
        assert_eq!(
            after.datastore("mlw-zone", name)["secrets"],
            before.datastore("mlw-zone", name)["secrets"],
            "{name}"
        );
    }
}
