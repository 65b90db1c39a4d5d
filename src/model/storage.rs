//! Storage accounts and their access keys.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One of the two access keys of a storage account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySlot {
    Key1,
    Key2,
}

impl KeySlot {
    /// The name ARM uses for this key in `listKeys` and `regenerateKey`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySlot::Key1 => "key1",
            KeySlot::Key2 => "key2",
        }
    }

    /// The other key of the pair.
    pub fn other(self) -> KeySlot {
        match self {
            KeySlot::Key1 => KeySlot::Key2,
            KeySlot::Key2 => KeySlot::Key1,
        }
    }

    /// Parses an ARM key name; `kerb1`/`kerb2` and anything else are not account keys.
    pub fn from_name(name: &str) -> Option<KeySlot> {
        if name.eq_ignore_ascii_case("key1") {
            Some(KeySlot::Key1)
        } else if name.eq_ignore_ascii_case("key2") {
            Some(KeySlot::Key2)
        } else {
            None
        }
    }
}

impl fmt::Display for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A storage account as `GET` and list return it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccount {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: StorageAccountProperties,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccountProperties {
    #[serde(default)]
    pub primary_endpoints: Option<Endpoints>,
    /// Absent or null means shared-key access is allowed (Azure's default).
    #[serde(default)]
    pub allow_shared_key_access: Option<bool>,
    #[serde(default)]
    pub key_creation_time: Option<KeyCreationTime>,
    #[serde(default)]
    pub is_hns_enabled: Option<bool>,
    /// When the account was created: the age of a key that was never regenerated.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub creation_time: Option<OffsetDateTime>,
}

/// The data-plane endpoints of an account (`https://<name>.blob.core.windows.net/`, ...).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Endpoints {
    #[serde(default)]
    pub blob: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub dfs: Option<String>,
}

/// When each key was last created; null for a key never regenerated since the account was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct KeyCreationTime {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub key1: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub key2: Option<OffsetDateTime>,
}

impl KeyCreationTime {
    pub fn of(&self, slot: KeySlot) -> Option<OffsetDateTime> {
        match slot {
            KeySlot::Key1 => self.key1,
            KeySlot::Key2 => self.key2,
        }
    }

    /// The most recently created key; key1 when neither time is known or they are equal.
    pub fn newest(&self) -> KeySlot {
        match (self.key1, self.key2) {
            (Some(k1), Some(k2)) if k2 > k1 => KeySlot::Key2,
            (None, Some(_)) => KeySlot::Key2,
            _ => KeySlot::Key1,
        }
    }
}

impl StorageAccount {
    /// True when the account carries `tag` with a value of `true` (ignoring case and blanks).
    pub fn has_true_tag(&self, tag: &str) -> bool {
        self.tags.iter().flatten().any(|(name, value)| {
            name.eq_ignore_ascii_case(tag) && value.trim().eq_ignore_ascii_case("true")
        })
    }

    /// Whether account keys and SAS can be used at all on this account.
    pub fn shared_key_allowed(&self) -> bool {
        self.properties.allow_shared_key_access.unwrap_or(true)
    }

    pub fn key_creation_time(&self) -> KeyCreationTime {
        self.properties.key_creation_time.unwrap_or_default()
    }

    /// The DNS suffix of the account's cloud, such as `core.windows.net`, read from its blob
    /// endpoint `https://<name>.blob.<suffix>/`. `None` when the endpoint has another shape.
    pub fn endpoint_suffix(&self) -> Option<String> {
        let blob = self
            .properties
            .primary_endpoints
            .as_ref()?
            .blob
            .as_deref()?;
        let host = url::Url::parse(blob).ok()?.host_str()?.to_ascii_lowercase();
        let prefix = format!("{}.blob.", self.name.to_ascii_lowercase());
        host.strip_prefix(&prefix)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// The storage DNS suffix of the cloud whose ARM endpoint is `arm`, such as `core.windows.net`
/// for `https://management.azure.com`; `None` for an endpoint keysync does not know. A loopback
/// endpoint is the local emulator, which emulates the public cloud.
pub fn cloud_storage_suffix(arm: &url::Url) -> Option<&'static str> {
    let public = "core.windows.net";
    match arm.host()? {
        url::Host::Ipv4(ip) if ip.is_loopback() => return Some(public),
        url::Host::Ipv6(ip) if ip.is_loopback() => return Some(public),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => return None,
        url::Host::Domain(_) => {}
    }
    let host = arm.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    match host.as_str() {
        "localhost" | "management.azure.com" => Some(public),
        "management.chinacloudapi.cn" => Some("core.chinacloudapi.cn"),
        "management.usgovcloudapi.net" => Some("core.usgovcloudapi.net"),
        _ => None,
    }
}

/// The response of `listKeys` and `regenerateKey`.
#[derive(Debug, Clone, Deserialize)]
pub struct AccountKeyList {
    #[serde(default)]
    pub keys: Vec<AccountKeyEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountKeyEntry {
    pub key_name: String,
    #[serde(default)]
    pub permissions: Option<String>,
    pub value: SecretString,
}

/// The two account keys, without the Kerberos keys.
#[derive(Clone)]
pub struct AccountKeys {
    pub key1: SecretString,
    pub key2: SecretString,
}

impl fmt::Debug for AccountKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountKeys { .. }")
    }
}

impl AccountKeys {
    pub fn get(&self, slot: KeySlot) -> &SecretString {
        match slot {
            KeySlot::Key1 => &self.key1,
            KeySlot::Key2 => &self.key2,
        }
    }

    /// Which key, if any, equals `candidate`.
    pub fn slot_of(&self, candidate: &SecretString) -> Option<KeySlot> {
        use secrecy::ExposeSecret;
        let candidate = candidate.expose_secret();
        [KeySlot::Key1, KeySlot::Key2]
            .into_iter()
            .find(|slot| self.get(*slot).expose_secret() == candidate)
    }
}

impl TryFrom<AccountKeyList> for AccountKeys {
    type Error = MissingKey;

    fn try_from(list: AccountKeyList) -> Result<Self, MissingKey> {
        let mut key1 = None;
        let mut key2 = None;
        for entry in list.keys {
            match KeySlot::from_name(&entry.key_name) {
                Some(KeySlot::Key1) => key1 = Some(entry.value),
                Some(KeySlot::Key2) => key2 = Some(entry.value),
                None => {}
            }
        }
        Ok(AccountKeys {
            key1: key1.ok_or(MissingKey(KeySlot::Key1))?,
            key2: key2.ok_or(MissingKey(KeySlot::Key2))?,
        })
    }
}

/// A key list that lacks key1 or key2.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the key list has no {0}")]
pub struct MissingKey(pub KeySlot);

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use time::macros::datetime;

    fn account(endpoint: &str) -> StorageAccount {
        serde_json::from_value(serde_json::json!({
            "id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/sto1",
            "name": "sto1",
            "properties": { "primaryEndpoints": { "blob": endpoint } }
        }))
        .unwrap()
    }

    #[test]
    fn the_newest_key_wins_and_key1_breaks_ties() {
        let t1 = datetime!(2026-01-01 0:00 UTC);
        let t2 = datetime!(2026-02-01 0:00 UTC);
        let kct = |key1, key2| KeyCreationTime { key1, key2 };
        assert_eq!(kct(Some(t1), Some(t2)).newest(), KeySlot::Key2);
        assert_eq!(kct(Some(t2), Some(t1)).newest(), KeySlot::Key1);
        assert_eq!(kct(Some(t1), Some(t1)).newest(), KeySlot::Key1);
        assert_eq!(kct(None, Some(t1)).newest(), KeySlot::Key2);
        assert_eq!(kct(Some(t1), None).newest(), KeySlot::Key1);
        assert_eq!(kct(None, None).newest(), KeySlot::Key1);
    }

    #[test]
    fn the_endpoint_suffix_comes_from_the_blob_endpoint() {
        let public = account("https://sto1.blob.core.windows.net/");
        assert_eq!(
            public.endpoint_suffix().as_deref(),
            Some("core.windows.net")
        );
        let china = account("https://STO1.blob.core.chinacloudapi.cn/");
        assert_eq!(
            china.endpoint_suffix().as_deref(),
            Some("core.chinacloudapi.cn")
        );
        assert_eq!(
            account("http://127.0.0.1:10000/sto1").endpoint_suffix(),
            None
        );
    }

    #[test]
    fn a_dns_zone_endpoint_has_no_suffix_to_read() {
        let zone = account("https://sto1.z12.blob.storage.azure.net/");
        assert_eq!(zone.endpoint_suffix(), None);
    }

    #[test]
    fn the_cloud_storage_suffix_follows_the_arm_endpoint() {
        let suffix = |arm: &str| cloud_storage_suffix(&url::Url::parse(arm).unwrap());
        assert_eq!(
            suffix("https://management.azure.com"),
            Some("core.windows.net")
        );
        assert_eq!(
            suffix("https://Management.ChinaCloudAPI.cn/"),
            Some("core.chinacloudapi.cn")
        );
        assert_eq!(
            suffix("https://management.usgovcloudapi.net"),
            Some("core.usgovcloudapi.net")
        );
        for emulator in [
            "http://127.0.0.1:40123",
            "https://localhost:8443/",
            "http://[::1]:1234",
        ] {
            assert_eq!(suffix(emulator), Some("core.windows.net"), "{emulator}");
        }
        for unknown in [
            "https://management.example.com",
            "https://management.azure.com.evil.com",
            "http://10.0.0.5:8080",
        ] {
            assert_eq!(suffix(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn key_lists_ignore_kerberos_keys() {
        let list: AccountKeyList = serde_json::from_value(serde_json::json!({"keys": [
            {"keyName": "kerb1", "value": "k", "permissions": "Full"},
            {"keyName": "key2", "value": "two", "permissions": "Full"},
            {"keyName": "key1", "value": "one", "permissions": "Full"}
        ]}))
        .unwrap();
        let keys = AccountKeys::try_from(list).unwrap();
        assert_eq!(keys.key1.expose_secret(), "one");
        assert_eq!(
            keys.slot_of(&SecretString::from("two")),
            Some(KeySlot::Key2)
        );
        assert_eq!(keys.slot_of(&SecretString::from("k")), None);
        assert_eq!(format!("{keys:?}"), "AccountKeys { .. }");
    }
}
