//! The emulated Azure resources (storage accounts, workspaces, datastores) and the JSON shapes
//! ARM answers for them, modelled on the samples in `azure-contract/arm/`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::clock::azure_time;
use super::random;
use super::scenario::{AccountSpec, ENDPOINT_SERVICES, KeyTimes, LroStyle};
use crate::model::storage::KeySlot;
use crate::resource_id::{StorageAccountId, WorkspaceId};

/// The ARM type of a datastore.
pub(crate) const DATASTORE_TYPE: &str = "Microsoft.MachineLearningServices/workspaces/datastores";

/// A storage account with its live keys.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub id: StorageAccountId,
    pub spec: AccountSpec,
    key1: String,
    key2: String,
    kerb: [String; 2],
    pub key_times: KeyTimes,
    pub creation_time: OffsetDateTime,
    pub regenerations: u32,
    /// Every key value a regeneration replaced, oldest first: secrets all the same, which a
    /// test searches keysync's output for (a key can be created and replaced within one test).
    retired_keys: Vec<String>,
    /// The blob endpoint when Azurite serves this account; then it is the only endpoint.
    pub data_plane: Option<String>,
}

impl Account {
    /// Builds the account of a validated spec; missing keys are generated.
    pub(crate) fn new(id: StorageAccountId, spec: &AccountSpec, now: OffsetDateTime) -> Self {
        let known = [spec.key_creation_time.key1, spec.key_creation_time.key2];
        let oldest_key = known.into_iter().flatten().min().unwrap_or(now);
        Account {
            id,
            key1: spec.keys.key1.clone().unwrap_or_else(random::account_key),
            key2: spec.keys.key2.clone().unwrap_or_else(random::account_key),
            kerb: [random::account_key(), random::account_key()],
            key_times: spec.key_creation_time,
            creation_time: spec
                .creation_time
                .unwrap_or(oldest_key - time::Duration::days(30)),
            regenerations: 0,
            retired_keys: Vec::new(),
            data_plane: None,
            spec: spec.clone(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.id.name()
    }

    pub(crate) fn key(&self, slot: KeySlot) -> &str {
        match slot {
            KeySlot::Key1 => &self.key1,
            KeySlot::Key2 => &self.key2,
        }
    }

    /// True when `candidate` is one of the two current keys.
    pub(crate) fn has_key(&self, candidate: &str) -> bool {
        candidate == self.key1 || candidate == self.key2
    }

    /// Replaces a key with a fresh one created `at`.
    pub(crate) fn regenerate(&mut self, slot: KeySlot, at: OffsetDateTime) {
        let (key, created) = match slot {
            KeySlot::Key1 => (&mut self.key1, &mut self.key_times.key1),
            KeySlot::Key2 => (&mut self.key2, &mut self.key_times.key2),
        };
        self.retired_keys
            .push(std::mem::replace(key, random::account_key()));
        *created = Some(at);
        self.regenerations += 1;
    }

    /// Whether shared-key access is refused (only when set to false, as in Azure).
    pub(crate) fn shared_key_disabled(&self) -> bool {
        self.spec.allow_shared_key_access == Some(false)
    }

    /// The DNS suffix of the account's endpoints, such as `core.windows.net`.
    pub(crate) fn endpoint_suffix(&self) -> &str {
        &self.spec.endpoint_suffix
    }

    /// The account as `GET` and list return it (never with keys).
    pub(crate) fn resource(&self) -> Value {
        let spec = &self.spec;
        let tier = if spec.sku.starts_with("Premium") {
            "Premium"
        } else {
            "Standard"
        };
        json!({
            "sku": {"name": spec.sku, "tier": tier},
            "kind": spec.kind,
            "id": self.id.as_str(),
            "name": self.name(),
            "type": StorageAccountId::TYPE,
            "location": spec.location,
            "tags": spec.tags,
            "properties": self.properties(),
        })
    }

    fn properties(&self) -> Value {
        let created = azure_time(self.creation_time);
        let encrypted = json!({"keyType": "Account", "enabled": true, "lastEnabledTime": created});
        let mut properties = json!({
            "keyCreationTime": key_times_json(&self.key_times),
            "allowCrossTenantReplication": false,
            "privateEndpointConnections": [],
            "minimumTlsVersion": "TLS1_2",
            "allowBlobPublicAccess": false,
            "isHnsEnabled": self.spec.is_hns_enabled,
            "networkAcls": {"bypass": "AzureServices", "virtualNetworkRules": [], "ipRules": [], "defaultAction": "Allow"},
            "supportsHttpsTrafficOnly": true,
            "encryption": {"services": {"file": encrypted, "blob": encrypted}, "keySource": "Microsoft.Storage"},
            "accessTier": "Hot",
            "provisioningState": "Succeeded",
            "creationTime": created,
            "primaryEndpoints": self.endpoints(),
            "primaryLocation": self.spec.location,
            "statusOfPrimary": "available",
            "accountMigrationInProgress": false,
            "isSkuConversionBlocked": false,
        });
        // Azure leaves allowSharedKeyAccess out until someone sets it; clients must treat the
        // absence as "allowed".
        if let (Some(allowed), Some(map)) = (
            self.spec.allow_shared_key_access,
            properties.as_object_mut(),
        ) {
            map.insert("allowSharedKeyAccess".into(), json!(allowed));
        }
        properties
    }

    fn endpoints(&self) -> Map<String, Value> {
        if let Some(blob) = &self.data_plane {
            // Azurite serves Blob only (no Azure Files): list what actually answers.
            let mut only = Map::new();
            only.insert("blob".into(), Value::String(blob.clone()));
            return only;
        }
        ENDPOINT_SERVICES
            .iter()
            .map(|service| {
                let url = self
                    .spec
                    .primary_endpoints
                    .get(*service)
                    .cloned()
                    .unwrap_or_else(|| {
                        format!(
                            "https://{}.{service}.{}/",
                            self.name(),
                            self.endpoint_suffix()
                        )
                    });
                (service.to_string(), Value::String(url))
            })
            .collect()
    }

    /// The answer of `listKeys` and `regenerateKey`; `kerb` adds the Kerberos keys.
    pub(crate) fn key_list(&self, kerb: bool) -> Value {
        let mut keys = vec![
            self.key_entry("key1", &self.key1, self.key_times.key1),
            self.key_entry("key2", &self.key2, self.key_times.key2),
        ];
        if kerb {
            keys.push(self.key_entry("kerb1", &self.kerb[0], None));
            keys.push(self.key_entry("kerb2", &self.kerb[1], None));
        }
        json!({ "keys": keys })
    }

    fn key_entry(&self, name: &str, value: &str, created: Option<OffsetDateTime>) -> Value {
        // A key never regenerated dates from the account's creation.
        let created = created.unwrap_or(self.creation_time);
        json!({
            "creationTime": azure_time(created),
            "keyName": name,
            "value": value,
            "permissions": "FULL",
        })
    }

    /// The account in `/_emulator/state`, keys included.
    pub(crate) fn snapshot(&self) -> Value {
        json!({
            "id": self.id.as_str(),
            "keys": {"key1": self.key1, "key2": self.key2},
            "keyCreationTime": key_times_json(&self.key_times),
            "allowSharedKeyAccess": self.spec.allow_shared_key_access,
            "tags": self.spec.tags,
            "regenerations": self.regenerations,
            "retiredKeys": self.retired_keys,
            "blobEndpoint": self.endpoints().get("blob"),
        })
    }
}

fn key_times_json(times: &KeyTimes) -> Value {
    json!({
        "key1": times.key1.map(azure_time),
        "key2": times.key2.map(azure_time),
    })
}

/// `systemData` of a resource: who created and last changed it, and when.
#[derive(Debug, Clone)]
pub(crate) struct SystemData {
    pub created: (OffsetDateTime, Actor),
    pub modified: (OffsetDateTime, Actor),
}

/// Who made a change, as `systemData` records it.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub name: String,
    /// `User`, `Application`, `ManagedIdentity` or `Key`.
    pub kind: &'static str,
}

impl SystemData {
    /// A resource created and last changed at `at` by `actor`.
    pub(crate) fn created(at: OffsetDateTime, actor: Actor) -> Self {
        SystemData {
            created: (at, actor.clone()),
            modified: (at, actor),
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "createdAt": azure_time(self.created.0),
            "createdBy": self.created.1.name,
            "createdByType": self.created.1.kind,
            "lastModifiedAt": azure_time(self.modified.0),
            "lastModifiedBy": self.modified.1.name,
            "lastModifiedByType": self.modified.1.kind,
        })
    }
}

/// A datastore: its properties as stored (with `credentials.secrets` reduced to its
/// `secretsType`) and, separately as Key Vault holds it, its secret.
#[derive(Debug, Clone)]
pub(crate) struct Datastore {
    pub name: String,
    pub properties: Map<String, Value>,
    /// The whole `secrets` object as written, `secretsType` included.
    pub secret: Option<Map<String, Value>>,
    pub system_data: SystemData,
    pub writes: u32,
    /// Writes are refused as Key Vault refuses to reuse a soft-deleted secret's name.
    pub soft_deleted_secret: bool,
}

impl Datastore {
    /// The datastore as `GET` returns it.
    pub(crate) fn resource(&self, workspace: &WorkspaceId) -> Value {
        json!({
            "id": format!("{}/datastores/{}", workspace.as_str(), self.name),
            "name": self.name,
            "type": DATASTORE_TYPE,
            "properties": self.properties,
            "systemData": self.system_data.json(),
        })
    }

    pub(crate) fn is_default(&self) -> bool {
        self.properties
            .get("isDefault")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The datastore in `/_emulator/state`, secret included.
    pub(crate) fn snapshot(&self, workspace: &WorkspaceId) -> Value {
        json!({
            "id": format!("{}/datastores/{}", workspace.as_str(), self.name),
            "resource": self.resource(workspace),
            "secrets": self.secret,
            "writes": self.writes,
        })
    }
}

/// Reduces `properties.credentials.secrets` to `{"secretsType": ...}` and returns the secret
/// that was there. A credentials object that names a secret-bearing type but carries no
/// secrets still gets its `secretsType`, as Azure's answers always show it.
pub(crate) fn split_secret(properties: &mut Map<String, Value>) -> Option<Map<String, Value>> {
    let credentials = properties.get_mut("credentials")?.as_object_mut()?;
    let credentials_type = credentials
        .get("credentialsType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let secret = credentials
        .remove("secrets")
        .and_then(|s| s.as_object().cloned());
    let secrets_type = secret
        .as_ref()
        .and_then(|s| s.get("secretsType"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(credentials_type.filter(|t| !t.eq_ignore_ascii_case("None")));
    if let Some(secrets_type) = secrets_type {
        credentials.insert("secrets".into(), json!({ "secretsType": secrets_type }));
    }
    secret
}

/// An Azure Machine Learning workspace.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    pub id: WorkspaceId,
    pub location: String,
    /// The default storage account id as the scenario spelled it (its case is kept, so that
    /// clients must compare ids ignoring case).
    pub storage_account: String,
    pub tags: BTreeMap<String, String>,
    pub extra: Map<String, Value>,
    pub workspace_guid: String,
    pub principal_id: String,
    pub created_at: OffsetDateTime,
    /// The account keys the workspace last synced.
    pub cached_keys: [String; 2],
    pub resync_count: u32,
    pub resyncs_completed: u32,
    pub datastores: Vec<Datastore>,
}

impl Workspace {
    pub(crate) fn name(&self) -> &str {
        self.id.name()
    }

    pub(crate) fn datastore_index(&self, name: &str) -> Option<usize> {
        self.datastores
            .iter()
            .position(|d| d.name.eq_ignore_ascii_case(name))
    }

    /// The workspace as `GET` and list return it.
    pub(crate) fn resource(&self, tenant: &str) -> Value {
        json!({
            "id": self.id.as_str(),
            "name": self.name(),
            "type": WorkspaceId::TYPE,
            "location": self.location,
            "tags": self.tags,
            "kind": "Default",
            "sku": {"name": "Basic", "tier": "Basic"},
            "identity": {"type": "SystemAssigned", "principalId": self.principal_id, "tenantId": tenant},
            "properties": self.properties(),
            "systemData": SystemData::created(self.created_at, Actor { name: "scenario".into(), kind: "User" }).json(),
        })
    }

    fn properties(&self) -> Map<String, Value> {
        let group = format!(
            "/subscriptions/{}/resourceGroups/{}/providers",
            self.id.subscription(),
            self.id.resource_group()
        );
        let compact: String = self
            .name()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let defaults = json!({
            "friendlyName": self.name(),
            "description": "",
            "storageAccount": self.storage_account,
            "keyVault": format!("{group}/Microsoft.KeyVault/vaults/kv-{compact}"),
            "applicationInsights": format!("{group}/microsoft.insights/components/appi-{}", self.name()),
            "containerRegistry": format!("{group}/Microsoft.ContainerRegistry/registries/cr{compact}"),
            "discoveryUrl": format!("https://{}.api.azureml.ms/discovery", self.location),
            "mlFlowTrackingUri": format!("azureml://{}.api.azureml.ms/mlflow/v1.0{}", self.location, self.id.as_str()),
            "workspaceId": self.workspace_guid,
            "provisioningState": "Succeeded",
            "hbiWorkspace": false,
            "allowPublicAccessWhenBehindVnet": false,
            "publicNetworkAccess": "Enabled",
            "privateLinkCount": 0,
            "privateEndpointConnections": [],
            "sharedPrivateLinkResources": [],
            "managedNetwork": {"isolationMode": "Disabled", "outboundRules": {}, "status": {"sparkReady": false, "status": "Inactive"}},
            "serviceProvisionedResourceGroup": format!("azureml-rg-{}_{}", self.name(), self.workspace_guid),
            "v1LegacyMode": false,
        });
        let Value::Object(mut map) = defaults else {
            return Map::new();
        };
        for (key, value) in &self.extra {
            map.insert(key.clone(), value.clone());
        }
        map
    }

    /// The workspace in `/_emulator/state`.
    pub(crate) fn snapshot(&self, account: Option<&Account>) -> Value {
        let in_sync = account.is_some_and(|a| {
            a.key(KeySlot::Key1) == self.cached_keys[0]
                && a.key(KeySlot::Key2) == self.cached_keys[1]
        });
        let datastores: Vec<Value> = self
            .datastores
            .iter()
            .map(|d| d.snapshot(&self.id))
            .collect();
        json!({
            "id": self.id.as_str(),
            "storageAccount": self.storage_account,
            "resyncCount": self.resync_count,
            "resyncsCompleted": self.resyncs_completed,
            "cachedStorageKeys": {"key1": self.cached_keys[0], "key2": self.cached_keys[1]},
            "storageKeysInSync": in_sync,
            "datastores": datastores,
        })
    }
}

/// A `resyncKeys` long-running operation.
#[derive(Debug, Clone)]
pub(crate) struct ResyncOperation {
    pub id: String,
    pub workspace: WorkspaceId,
    pub style: LroStyle,
    /// Status polls answered "still running" so far.
    pub polls: u32,
    /// Status polls to answer "still running" before completing.
    pub polls_needed: u32,
    /// When the operation completed, if it has.
    pub completed_at: Option<OffsetDateTime>,
    pub started_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_the_secret_keeps_only_its_type_in_the_resource() {
        let mut properties = json!({
            "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey", "key": "k"}},
            "datastoreType": "AzureBlob"
        })
        .as_object()
        .cloned()
        .unwrap();
        let secret = split_secret(&mut properties).unwrap();
        assert_eq!(secret["key"], "k");
        assert_eq!(
            properties["credentials"],
            json!({"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey"}})
        );
    }

    #[test]
    fn identity_credentials_get_no_secrets_type() {
        let mut properties = json!({"credentials": {"credentialsType": "None"}})
            .as_object()
            .cloned()
            .unwrap();
        assert!(split_secret(&mut properties).is_none());
        assert_eq!(
            properties["credentials"],
            json!({"credentialsType": "None"})
        );
    }
}
