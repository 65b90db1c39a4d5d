//! Azure Machine Learning workspaces and datastores.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// A workspace as list and `GET` return it.
#[derive(Debug, Clone, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub properties: WorkspaceProperties,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceProperties {
    /// The ARM id of the workspace's default storage account.
    #[serde(default)]
    pub storage_account: Option<String>,
}

/// How a datastore authenticates to its storage (`properties.credentials.credentialsType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsKind {
    AccountKey,
    Sas,
    /// Identity-based access: nothing stored.
    None,
    ServicePrincipal,
    Certificate,
    /// A type keysync does not know, as Azure spelled it.
    Other(String),
    /// No credentials object, or one without a string `credentialsType`.
    Missing,
}

impl CredentialsKind {
    fn parse(value: Option<&str>) -> Self {
        let Some(value) = value else {
            return CredentialsKind::Missing;
        };
        match value.to_ascii_lowercase().as_str() {
            "accountkey" => CredentialsKind::AccountKey,
            "sas" => CredentialsKind::Sas,
            "none" => CredentialsKind::None,
            "serviceprincipal" => CredentialsKind::ServicePrincipal,
            "certificate" => CredentialsKind::Certificate,
            _ => CredentialsKind::Other(value.to_string()),
        }
    }
}

/// A datastore resource, kept whole (every field Azure returned, in order) so that an in-place
/// update writes back exactly what it read, with only the secret changed.
///
/// Shared rather than copied: a sweep hands one listing of every datastore to each account's
/// run, and deep copies of thousands of resources per account made most of its peak memory.
#[derive(Clone)]
pub struct Datastore(Arc<Map<String, Value>>);

impl<'de> Deserialize<'de> for Datastore {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::deserialize(deserializer).map(|map| Datastore(Arc::new(map)))
    }
}

impl fmt::Debug for Datastore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // GET never returns secrets, but printing the id alone keeps logs short and safe.
        write!(f, "Datastore({})", self.id().unwrap_or("?"))
    }
}

impl Datastore {
    pub fn id(&self) -> Option<&str> {
        self.0.get("id").and_then(Value::as_str)
    }

    pub fn name(&self) -> &str {
        self.0
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn properties(&self) -> Option<&Map<String, Value>> {
        self.0.get("properties").and_then(Value::as_object)
    }

    fn property(&self, name: &str) -> Option<&str> {
        self.properties()?.get(name).and_then(Value::as_str)
    }

    /// `AzureBlob`, `AzureFile`, `AzureDataLakeGen2`, ...
    pub fn datastore_type(&self) -> Option<&str> {
        self.property("datastoreType")
    }

    pub fn account_name(&self) -> Option<&str> {
        self.property("accountName")
    }

    /// True when the datastore names storage account `name` (ignoring case and blanks around);
    /// whether it is on the same cloud is another question (see `AccountFacts::holds`).
    pub fn names_account(&self, name: &str) -> bool {
        self.account_name()
            .is_some_and(|own| own.trim().eq_ignore_ascii_case(name.trim()))
    }

    /// The storage DNS suffix the datastore points at, such as `core.windows.net`.
    pub fn endpoint(&self) -> Option<&str> {
        self.property("endpoint")
    }

    /// The blob container or the ADLS Gen2 filesystem.
    pub fn container(&self) -> Option<&str> {
        self.property("containerName")
            .or_else(|| self.property("filesystem"))
    }

    pub fn file_share(&self) -> Option<&str> {
        self.property("fileShareName")
    }

    pub fn is_default(&self) -> bool {
        self.properties()
            .and_then(|p| p.get("isDefault"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub fn credentials_kind(&self) -> CredentialsKind {
        let kind = self
            .properties()
            .and_then(|p| p.get("credentials"))
            .and_then(|c| c.get("credentialsType"))
            .and_then(Value::as_str);
        CredentialsKind::parse(kind)
    }

    /// The body of the `PUT` that stores `key` as this datastore's account key: the resource as
    /// read, minus the server-managed `systemData`, with only `properties.credentials.secrets`
    /// replaced. `None` when the resource has no `properties.credentials` object to update.
    pub fn with_account_key(&self, key: &SecretString) -> Option<DatastoreBody> {
        self.with_secrets(json!({ "secretsType": "AccountKey", "key": key.expose_secret() }))
    }

    /// The body of the `PUT` that stores `token` as this datastore's SAS token, built like
    /// [`with_account_key`](Self::with_account_key).
    pub fn with_sas_token(&self, token: &SecretString) -> Option<DatastoreBody> {
        self.with_secrets(json!({ "secretsType": "Sas", "sasToken": token.expose_secret() }))
    }

    fn with_secrets(&self, secrets: Value) -> Option<DatastoreBody> {
        let mut body = Map::clone(&self.0);
        body.remove("systemData");
        let credentials = body
            .get_mut("properties")?
            .as_object_mut()?
            .get_mut("credentials")?
            .as_object_mut()?;
        credentials.insert("secrets".to_string(), secrets);
        Some(DatastoreBody(Value::Object(body)))
    }

    /// The resource as JSON, for comparisons and reports (it never holds a secret).
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// A datastore `PUT` body. It holds a secret, so it prints as nothing.
pub struct DatastoreBody(Value);

impl DatastoreBody {
    /// The JSON to send. Keep it out of logs.
    pub fn expose(&self) -> &Value {
        &self.0
    }
}

impl fmt::Debug for DatastoreBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatastoreBody { .. }")
    }
}

/// The answer of a datastore's `listSecrets`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatastoreSecrets {
    #[serde(default)]
    pub secrets_type: Option<String>,
    #[serde(default)]
    pub key: Option<SecretString>,
    #[serde(default)]
    pub sas_token: Option<SecretString>,
}

impl fmt::Debug for DatastoreSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DatastoreSecrets {{ secrets_type: {:?}, .. }}",
            self.secrets_type
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob_datastore() -> Datastore {
        serde_json::from_value(json!({
            "id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w/datastores/d",
            "name": "d",
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "description": "raw data",
                "tags": {"team": "vision"},
                "isDefault": true,
                "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey"}},
                "datastoreType": "AzureBlob",
                "accountName": "stmlshared01",
                "containerName": "raw",
                "endpoint": "core.windows.net",
                "protocol": "https",
                "serviceDataAccessAuthIdentity": "None"
            },
            "systemData": {"createdBy": "someone"}
        }))
        .unwrap()
    }

    #[test]
    fn reads_the_fields_that_decide_what_to_do() {
        let ds = blob_datastore();
        assert_eq!(ds.name(), "d");
        assert_eq!(ds.credentials_kind(), CredentialsKind::AccountKey);
        assert_eq!(ds.account_name(), Some("stmlshared01"));
        assert_eq!(ds.endpoint(), Some("core.windows.net"));
        assert_eq!(ds.container(), Some("raw"));
        assert!(ds.is_default());
    }

    #[test]
    fn an_update_changes_only_the_secret_and_drops_system_data() {
        let ds = blob_datastore();
        let body = ds.with_account_key(&SecretString::from("new-key")).unwrap();
        let mut expected = Value::Object(ds.as_json().clone());
        expected.as_object_mut().unwrap().remove("systemData");
        expected["properties"]["credentials"]["secrets"] =
            json!({"secretsType": "AccountKey", "key": "new-key"});
        assert_eq!(body.expose(), &expected);
        assert_eq!(format!("{body:?}"), "DatastoreBody { .. }");
    }

    #[test]
    fn a_sas_update_changes_only_the_secret_too() {
        let ds = blob_datastore();
        let body = ds
            .with_sas_token(&SecretString::from("sv=x&sig=y"))
            .unwrap();
        let mut expected = Value::Object(ds.as_json().clone());
        expected.as_object_mut().unwrap().remove("systemData");
        expected["properties"]["credentials"]["secrets"] =
            json!({"secretsType": "Sas", "sasToken": "sv=x&sig=y"});
        assert_eq!(body.expose(), &expected);
    }

    #[test]
    fn unknown_and_missing_credential_types_are_told_apart() {
        let mut raw = blob_datastore().as_json().clone();
        raw["properties"]["credentials"]["credentialsType"] = json!("KerberosKeytab");
        let ds: Datastore = serde_json::from_value(Value::Object(raw.clone())).unwrap();
        assert_eq!(
            ds.credentials_kind(),
            CredentialsKind::Other("KerberosKeytab".into())
        );
        raw["properties"]["credentials"] = json!(null);
        let ds: Datastore = serde_json::from_value(Value::Object(raw)).unwrap();
        assert_eq!(ds.credentials_kind(), CredentialsKind::Missing);
        assert!(ds.with_account_key(&SecretString::from("k")).is_none());
    }
}
