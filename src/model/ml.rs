//! Azure Machine Learning workspaces and datastores.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

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
        self.with_secrets(NewSecrets::AccountKey(key.clone()))
    }

    /// The body of the `PUT` that stores `token` as this datastore's SAS token, built like
    /// [`with_account_key`](Self::with_account_key).
    pub fn with_sas_token(&self, token: &SecretString) -> Option<DatastoreBody> {
        self.with_secrets(NewSecrets::Sas(token.clone()))
    }

    fn with_secrets(&self, secrets: NewSecrets) -> Option<DatastoreBody> {
        self.properties()?.get("credentials")?.as_object()?;
        Some(DatastoreBody {
            resource: self.clone(),
            secrets,
        })
    }

    /// The resource as JSON, for comparisons and reports (it never holds a secret).
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// A datastore `PUT` body: the resource as read and the secret to store in it. The two meet only
/// in [`to_json`](Self::to_json)'s buffer, which is zeroed on drop; the body prints as nothing.
pub struct DatastoreBody {
    resource: Datastore,
    secrets: NewSecrets,
}

/// The object whose `secrets` a `PUT` replaces: `properties.credentials`.
const SECRETS_PATH: [&str; 2] = ["properties", "credentials"];

impl DatastoreBody {
    /// The JSON to send, in a buffer of exactly its size that is zeroed on drop. Keep it out of
    /// logs.
    pub fn to_json(&self) -> serde_json::Result<Zeroizing<Vec<u8>>> {
        let json = WithSecrets {
            object: self.resource.as_json(),
            path: &SECRETS_PATH,
            secrets: &self.secrets,
        };
        // Sized first: a buffer that grew would leave a copy of the secret in the memory it left.
        let mut size = ByteCount(0);
        serde_json::to_writer(&mut size, &json)?;
        let mut buffer = Zeroizing::new(Vec::with_capacity(size.0));
        serde_json::to_writer(&mut *buffer, &json)?;
        Ok(buffer)
    }
}

impl fmt::Debug for DatastoreBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatastoreBody { .. }")
    }
}

/// The secrets a `PUT` stores, as Azure names them.
enum NewSecrets {
    AccountKey(SecretString),
    Sas(SecretString),
}

impl Serialize for NewSecrets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (kind, field, secret) = match self {
            NewSecrets::AccountKey(key) => ("AccountKey", "key", key),
            NewSecrets::Sas(token) => ("Sas", "sasToken", token),
        };
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("secretsType", kind)?;
        map.serialize_entry(field, secret.expose_secret())?;
        map.end()
    }
}

/// `object` with `secrets` as the `secrets` field of the object at `path`, where `Map::insert`
/// would have put it (in place of the old value, or after the last field), and without
/// `systemData` at the top. Serializing this view never puts the secret in a `Value`, whose
/// `String` is not zeroed on drop.
struct WithSecrets<'a> {
    object: &'a Map<String, Value>,
    path: &'a [&'a str],
    secrets: &'a NewSecrets,
}

impl Serialize for WithSecrets<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The walk starts at the resource with the whole path ahead.
        let top = self.path.len() == SECRETS_PATH.len();
        let (next, rest) = match self.path {
            [next, rest @ ..] => (Some(*next), rest),
            [] => (None, self.path),
        };
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.object {
            match (next, value.as_object()) {
                _ if top && name == "systemData" => {}
                (Some(next), Some(object)) if name == next => {
                    let inner = WithSecrets {
                        object,
                        path: rest,
                        ..*self
                    };
                    map.serialize_entry(name, &inner)?;
                }
                (None, _) if name == "secrets" => map.serialize_entry(name, self.secrets)?,
                _ => map.serialize_entry(name, value)?,
            }
        }
        if next.is_none() && !self.object.contains_key("secrets") {
            map.serialize_entry("secrets", self.secrets)?;
        }
        map.end()
    }
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    use serde_json::json;

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

    /// The body's bytes, checked to be exactly what serializing `expected` gives (same fields,
    /// same order) in a buffer that never grew.
    fn assert_body(body: &DatastoreBody, expected: &Value) {
        let json = body.to_json().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&json),
            serde_json::to_string(expected).unwrap()
        );
        assert_eq!(json.capacity(), json.len());
    }

    #[test]
    fn an_update_changes_only_the_secret_and_drops_system_data() {
        let ds = blob_datastore();
        let body = ds.with_account_key(&SecretString::from("new-key")).unwrap();
        let mut expected = Value::Object(ds.as_json().clone());
        expected.as_object_mut().unwrap().remove("systemData");
        expected["properties"]["credentials"]["secrets"] =
            json!({"secretsType": "AccountKey", "key": "new-key"});
        assert_body(&body, &expected);
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
        assert_body(&body, &expected);
    }

    #[test]
    fn credentials_without_secrets_get_them_last_and_nested_look_alikes_stay() {
        let mut raw = blob_datastore().as_json().clone();
        let credentials = json!({"credentialsType": "AccountKey", "note": {"secrets": "kept"}});
        raw["properties"]["credentials"] = credentials;
        raw["properties"]["secrets"] = json!("not the credentials' secrets");
        let ds: Datastore = serde_json::from_value(Value::Object(raw)).unwrap();
        let body = ds.with_account_key(&SecretString::from("k")).unwrap();
        let mut expected = Value::Object(ds.as_json().clone());
        expected.as_object_mut().unwrap().remove("systemData");
        expected["properties"]["credentials"]["secrets"] =
            json!({"secretsType": "AccountKey", "key": "k"});
        assert_body(&body, &expected);
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
