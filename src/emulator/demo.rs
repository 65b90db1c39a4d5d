//! The built-in demo scenario: one subscription, a storage account shared by two workspaces,
//! and datastores of every credential kind keysync has to tell apart. Like Azure, it does not
//! always spell an account the same way: `mlw-vision` names its storage account in lower case
//! (as Azure Machine Learning often returns it) and `shared_features` names its account in mixed
//! case, so a client that compares ids or names case-sensitively misses them.
//!
//! Key ages are relative to the real clock, so that rotation (which compares them with the
//! real time) sees the same thing whenever the demo runs: `stmlother02` and its key in use are
//! due for rotation and tagged for it, `stmlfresh03` is tagged but its key is young.
//!
//! Every datastore names the subscription and resource group of its storage account
//! (`subscriptionId` and `resourceGroup`, optional fields of Azure's blob, file and ADLS Gen2
//! datastores): fields an in-place update must keep.
//!
//! Every account is flagged `azurite`: when the emulator runs Azurite, it is their data plane,
//! and `exports_sas`, an account SAS signed with key1 of the shared account when the scenario
//! loads, works until key1 is regenerated.

use serde_json::{Value, json};

use super::scenario::Scenario;

const SUBSCRIPTION: &str = "11111111-2222-3333-4444-555555555555";
const GROUP: &str = "rg-ml";
const TENANT: &str = "aaaaaaaa-0000-4000-8000-00000000000a";

impl Scenario {
    /// The demo scenario (see `SCENARIO.md`). Keys are fresh random values on every start.
    pub fn demo() -> Scenario {
        let value = json!({
            "tenantId": TENANT,
            "storageAccounts": [shared_account(), other_account(), fresh_account()],
            "workspaces": [vision_workspace(), forecast_workspace()]
        });
        // The demo is a constant of this crate, checked by a test; failing here is a bug in it.
        serde_json::from_value(value).expect("the built-in demo scenario is well-formed")
    }
}

fn account_id(name: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Storage/storageAccounts/{name}"
    )
}

fn workspace_id(name: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{name}"
    )
}

fn shared_account() -> Value {
    json!({
        "id": account_id("stmlshared01"),
        "azurite": true,
        "location": "westeurope",
        "kind": "StorageV2",
        "sku": "Standard_ZRS",
        "tags": {"costCenter": "ml-platform", "env": "prod"},
        "allowSharedKeyAccess": true,
        "isHnsEnabled": false,
        "creationTime": "2025-03-04T10:15:00Z",
        "keyCreationTime": {"key1": days_ago(124), "key2": null}
    })
}

/// An RFC 3339 time `days` before now.
fn days_ago(days: i64) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::days(days);
    super::clock::azure_time(at)
}

fn other_account() -> Value {
    json!({
        "id": account_id("stmlother02"),
        "azurite": true,
        "location": "westeurope",
        "kind": "StorageV2",
        "sku": "Standard_LRS",
        "tags": {"env": "prod", "keysync-rotate": "true"},
        "isHnsEnabled": true,
        "creationTime": "2025-06-12T08:00:00Z",
        "keyCreationTime": {"key1": days_ago(120), "key2": null}
    })
}

fn fresh_account() -> Value {
    json!({
        "id": account_id("stmlfresh03"),
        "azurite": true,
        "location": "westeurope",
        "kind": "StorageV2",
        "sku": "Standard_LRS",
        "tags": {"env": "prod", "keysync-rotate": "true"},
        "allowSharedKeyAccess": true,
        "creationTime": "2026-01-10T12:00:00Z",
        "keyCreationTime": {"key1": days_ago(10), "key2": days_ago(40)}
    })
}

fn vision_workspace() -> Value {
    json!({
        "id": workspace_id("mlw-vision"),
        "location": "westeurope",
        "storageAccount": account_id("stmlshared01").to_ascii_lowercase(),
        "tags": {"team": "vision"},
        "properties": {"friendlyName": "Vision models", "description": "Image classification and detection"},
        "datastores": [
            blob_store("workspaceblobstore", "stmlshared01", "azureml-blobstore-3f1c2d4e-0000-4000-8000-000000000001", "key1", true),
            file_store("workspacefilestore", "stmlshared01", "azureml-filestore-3f1c2d4e-0000-4000-8000-000000000001"),
            curated(),
            images_identity(),
            lake_service_principal(),
            archive_other()
        ]
    })
}

fn forecast_workspace() -> Value {
    json!({
        "id": workspace_id("mlw-forecast"),
        "location": "westeurope",
        "storageAccount": account_id("stmlother02"),
        "tags": {"team": "forecasting"},
        "properties": {"friendlyName": "Demand forecasting", "description": "Weekly demand forecasts"},
        "datastores": [
            blob_store("workspaceblobstore", "stmlother02", "azureml-blobstore-7a9b0c1d-0000-4000-8000-000000000002", "key1", true),
            shared_features(),
            exports_sas(),
            blob_store("scratch_fresh", "stmlfresh03", "scratch", "key1", false)
        ]
    })
}

fn blob_store(name: &str, account: &str, container: &str, key: &str, default: bool) -> Value {
    json!({
        "name": name,
        "properties": {
            "description": "Default blob storage of the workspace",
            "tags": {},
            "properties": {},
            "isDefault": default,
            "credentials": {"credentialsType": "AccountKey"},
            "datastoreType": "AzureBlob",
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": GROUP,
            "accountName": account,
            "containerName": container,
            "endpoint": "core.windows.net",
            "protocol": "https",
            "serviceDataAccessAuthIdentity": "None"
        },
        "secrets": {"keyRef": key}
    })
}

fn file_store(name: &str, account: &str, share: &str) -> Value {
    json!({
        "name": name,
        "properties": {
            "description": "Default file share of the workspace",
            "tags": {},
            "properties": {},
            "isDefault": false,
            "credentials": {"credentialsType": "AccountKey"},
            "datastoreType": "AzureFile",
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": GROUP,
            "accountName": account,
            "fileShareName": share,
            "endpoint": "core.windows.net",
            "protocol": "https",
            "serviceDataAccessAuthIdentity": "None"
        },
        "secrets": {"keyRef": "key1"}
    })
}

fn curated() -> Value {
    json!({
        "name": "curated",
        "properties": {
            "description": "Curated training images, reviewed weekly",
            "tags": {"team": "vision", "tier": "gold"},
            "properties": {"source": "labeling-project-17"},
            "isDefault": false,
            "credentials": {"credentialsType": "AccountKey"},
            "datastoreType": "AzureBlob",
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": GROUP,
            "accountName": "stmlshared01",
            "containerName": "curated",
            "endpoint": "core.windows.net",
            "protocol": "https",
            "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity"
        },
        "secrets": {"keyRef": "key2"}
    })
}

/// An account SAS on the shared account for reading and listing blobs, as another team would
/// be handed; the emulator signs it with key1 of the shared account when the scenario loads.
fn exports_sas() -> Value {
    json!({
        "name": "exports_sas",
        "properties": {
            "description": "Exports of the vision team, read through an account SAS",
            "tags": {"team": "forecasting"},
            "properties": {},
            "isDefault": false,
            "credentials": {"credentialsType": "Sas"},
            "datastoreType": "AzureBlob",
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": GROUP,
            "accountName": "stmlshared01",
            "containerName": "exports",
            "endpoint": "core.windows.net",
            "protocol": "https",
            "serviceDataAccessAuthIdentity": "None"
        },
        "secrets": {"sasRef": {
            "key": "key1",
            "token": "sv=2024-11-04&ss=b&srt=co&sp=rl&se=2099-12-31T00:00:00Z&spr=https,http"
        }}
    })
}

fn images_identity() -> Value {
    json!({
        "name": "images_identity",
        "properties": {
            "description": "Raw camera images, read with the caller's identity",
            "tags": {"team": "vision"},
            "properties": {},
            "isDefault": false,
            "credentials": {"credentialsType": "None"},
            "datastoreType": "AzureBlob",
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": GROUP,
            "accountName": "stmlshared01",
            "containerName": "images",
            "endpoint": "core.windows.net",
            "protocol": "https",
            "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity"
        }
    })
}

fn lake_service_principal() -> Value {
    json!({
        "name": "lake_sp",
        "properties": {
            "description": "Feature lake, written by the ingestion service principal",
            "tags": {"team": "data-eng"},
            "properties": {},
            "isDefault": false,
            "credentials": {
                "credentialsType": "ServicePrincipal",
                "authorityUrl": "https://login.microsoftonline.com",
                "resourceUrl": "https://storage.azure.com/",
                "tenantId": TENANT,
                "clientId": "9c8b7a6d-0000-4000-8000-0000000000d1"
            },
            "datastoreType": "AzureDataLakeGen2",
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": GROUP,
            "accountName": "stmlshared01",
            "filesystem": "lake",
            "endpoint": "core.windows.net",
            "protocol": "https",
            "serviceDataAccessAuthIdentity": "None"
        },
        "secrets": {"clientSecret": "demo-service-principal-secret"}
    })
}

fn archive_other() -> Value {
    json!({
        "name": "archive_other",
        "properties": {
            "description": "Archived experiments on the forecasting account",
            "tags": {"retention": "7y"},
            "properties": {},
            "isDefault": false,
            "credentials": {"credentialsType": "AccountKey"},
            "datastoreType": "AzureBlob",
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": GROUP,
            "accountName": "stmlother02",
            "containerName": "archive",
            "endpoint": "core.windows.net",
            "protocol": "https",
            "serviceDataAccessAuthIdentity": "None"
        },
        "secrets": {"keyRef": "key1"}
    })
}

fn shared_features() -> Value {
    json!({
        "name": "shared_features",
        "properties": {
            "description": "Features shared with the vision team",
            "tags": {"team": "forecasting", "shared": "true"},
            "properties": {"owner": "vision"},
            "isDefault": false,
            "credentials": {"credentialsType": "AccountKey"},
            "datastoreType": "AzureBlob",
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": GROUP,
            "accountName": "StMlShared01",
            "containerName": "features",
            "endpoint": "core.windows.net",
            "protocol": "https",
            "serviceDataAccessAuthIdentity": "None"
        },
        "secrets": {"keyRef": "key1"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_is_valid_and_spans_one_subscription() {
        let demo = Scenario::demo();
        demo.validate().unwrap();
        assert_eq!(demo.subscriptions(), vec![SUBSCRIPTION.to_string()]);
        assert_eq!(demo.workspaces.len(), 2);
        assert_eq!(demo.workspaces[0].datastores.len(), 6);
    }
}
