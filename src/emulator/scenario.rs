//! The scenario: the Azure resources the emulator starts with and how it behaves (paging, long
//! running operations, latency, faults, event delivery). The file format is documented in
//! `SCENARIO.md` next to this file.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::faults::FaultRule;
use crate::resource_id::{ResourceId, StorageAccountId, WorkspaceId};
use crate::storage::sas::SasToken;

/// The starting state and behaviour of an emulator, loaded from a JSON scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "defaults::tenant")]
    pub(crate) tenant_id: String,
    /// The emulator clock's starting time; the real time when absent.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) now: Option<OffsetDateTime>,
    #[serde(default)]
    pub(crate) storage_accounts: Vec<AccountSpec>,
    #[serde(default)]
    pub(crate) workspaces: Vec<WorkspaceSpec>,
    #[serde(default = "defaults::workspaces_page")]
    pub(crate) workspaces_page_size: usize,
    #[serde(default = "defaults::accounts_page")]
    pub(crate) storage_accounts_page_size: usize,
    /// The most datastores one `Datastores_List` page holds, whatever `count` asks.
    #[serde(default = "defaults::datastores_max_page")]
    pub(crate) datastores_max_page_size: usize,
    #[serde(default = "defaults::one")]
    pub(crate) resync_polls: u32,
    #[serde(default)]
    pub(crate) lro_retry_after_seconds: u64,
    #[serde(default)]
    pub(crate) lro_style: LroStyle,
    #[serde(default)]
    pub(crate) latency_ms: u64,
    #[serde(default = "defaults::token_lifetime")]
    pub(crate) token_lifetime_seconds: u64,
    #[serde(default)]
    pub(crate) faults: Vec<FaultRule>,
    #[serde(default)]
    pub(crate) event_delivery: EventDelivery,
    /// The system-assigned identity that `/msi/token` speaks for when no `client_id` is given.
    #[serde(default)]
    pub(crate) managed_identity: IdentitySpec,
    /// User-assigned identities; when listed, `/msi/token` refuses any other `client_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) identities: Vec<IdentitySpec>,
    /// The simulated portal user behind `/_emulator/user-token`.
    #[serde(default)]
    pub(crate) portal_user: UserSpec,
}

/// How `resyncKeys` reports its progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LroStyle {
    /// `202` with `Location`; the status URL answers `202` until done, then `200`.
    #[default]
    Location,
    /// `202` with `Azure-AsyncOperation`; the status URL answers `{"status": ...}`.
    AzureAsyncOperation,
}

/// How events are posted to the webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EventDelivery {
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Wait between attempts.
    #[serde(default = "defaults::retry_delay")]
    pub retry_delay_ms: u64,
    /// Wait between the `regenerateKey` answer and the first attempt.
    #[serde(default = "defaults::event_delay")]
    pub delay_ms: u64,
    /// How long one attempt may take (Event Grid waits about 30 s).
    #[serde(default = "defaults::event_timeout")]
    pub timeout_ms: u64,
}

impl Default for EventDelivery {
    fn default() -> Self {
        EventDelivery {
            max_attempts: defaults::max_attempts(),
            retry_delay_ms: defaults::retry_delay(),
            delay_ms: defaults::event_delay(),
            timeout_ms: defaults::event_timeout(),
        }
    }
}

/// A managed identity: the `client_id` a token request names and the object it signs in as.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IdentitySpec {
    pub client_id: String,
    pub principal_id: String,
}

impl Default for IdentitySpec {
    fn default() -> Self {
        IdentitySpec {
            client_id: "6f1b2c3d-0000-4000-8000-0000000000c1".into(),
            principal_id: "4e2d1c0b-0000-4000-8000-0000000000b1".into(),
        }
    }
}

/// The simulated human user of the portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UserSpec {
    pub name: String,
    pub upn: String,
    pub object_id: String,
}

impl Default for UserSpec {
    fn default() -> Self {
        UserSpec {
            name: "Operator Example".into(),
            upn: "operator@example.com".into(),
            object_id: "2b7e0c3d-0000-4000-8000-000000000002".into(),
        }
    }
}

/// A storage account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AccountSpec {
    pub id: String,
    #[serde(default = "defaults::location")]
    pub location: String,
    #[serde(default = "defaults::kind")]
    pub kind: String,
    /// The SKU name, such as `Standard_LRS`.
    #[serde(default = "defaults::sku")]
    pub sku: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Left out of the account's properties when unset, as Azure does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_shared_key_access: Option<bool>,
    #[serde(default)]
    pub is_hns_enabled: bool,
    #[serde(default = "defaults::endpoint_suffix")]
    pub endpoint_suffix: String,
    /// Overrides of `primaryEndpoints` by service (`blob`, `dfs`, `file`, `queue`, `table`, `web`).
    #[serde(default)]
    pub primary_endpoints: BTreeMap<String, String>,
    #[serde(default)]
    pub keys: KeyValues,
    #[serde(default)]
    pub key_creation_time: KeyTimes,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub creation_time: Option<OffsetDateTime>,
    /// Served by Azurite when the emulator runs one: the blob endpoint is then Azurite's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub azurite: bool,
}

/// Literal key values; a missing one is generated at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key2: Option<String>,
}

/// When each key was created; null for a key never regenerated.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyTimes {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub key1: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub key2: Option<OffsetDateTime>,
}

/// An Azure Machine Learning workspace with its datastores.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct WorkspaceSpec {
    pub id: String,
    #[serde(default = "defaults::location")]
    pub location: String,
    /// The ARM id of the default storage account (must be an account of the scenario).
    pub storage_account: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Extra workspace properties, merged over the defaults.
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// Whether the workspace's cached storage keys start equal to the account's keys.
    #[serde(default = "defaults::yes")]
    pub storage_keys_in_sync: bool,
    #[serde(default)]
    pub datastores: Vec<DatastoreSpec>,
}

/// A datastore: its `properties` as Azure stores them, and the secret held for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DatastoreSpec {
    pub name: String,
    pub properties: Map<String, Value>,
    /// `None` (or null): no secret is stored, so `listSecrets` answers 404.
    #[serde(default)]
    pub secrets: Option<SecretSpec>,
    /// The workspace Key Vault holds a soft-deleted secret under this datastore's secret name:
    /// every write is refused until it is recovered or purged (which the emulator never does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft_deleted_secret: bool,
}

/// The stored secret of a datastore; exactly one field is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SecretSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `key1` or `key2` of the account named by `accountName`, or `stale` (a key that is
    /// neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<String>,
    /// A SAS token signed at load with a key of the account named by `accountName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_ref: Option<SasRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// A SAS token to sign when the scenario loads, so that it is valid (or deliberately not) for
/// keys that are random on every start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SasRef {
    /// `key1`, `key2` or `stale` (a key that is neither).
    pub key: String,
    /// The token's fields, without `sig`, such as `sv=2024-11-04&ss=b&srt=co&sp=rl&se=...`.
    pub token: String,
}

impl SecretSpec {
    /// The `secretsType` this secret is for; `None` unless exactly one field is set.
    pub(crate) fn secrets_type(&self) -> Option<&'static str> {
        match self.fields_set().as_slice() {
            [(_, kind)] => Some(kind),
            _ => None,
        }
    }

    /// The fields set, by their name in the file, each with the `secretsType` it is for.
    fn fields_set(&self) -> Vec<(&'static str, &'static str)> {
        [
            ("key", self.key.is_some(), "AccountKey"),
            ("keyRef", self.key_ref.is_some(), "AccountKey"),
            ("sasToken", self.sas_token.is_some(), "Sas"),
            ("sasRef", self.sas_ref.is_some(), "Sas"),
            (
                "clientSecret",
                self.client_secret.is_some(),
                "ServicePrincipal",
            ),
            ("certificate", self.certificate.is_some(), "Certificate"),
        ]
        .into_iter()
        .filter(|(_, present, _)| *present)
        .map(|(field, _, kind)| (field, kind))
        .collect()
    }
}

/// The fields a datastore's `secrets` may set, exactly one at a time.
const SECRET_FIELDS: &str = "key, keyRef, sasToken, sasRef, clientSecret, certificate";

mod defaults {
    pub fn tenant() -> String {
        "aaaaaaaa-0000-4000-8000-00000000000a".into()
    }
    pub fn workspaces_page() -> usize {
        20
    }
    pub fn accounts_page() -> usize {
        100
    }
    pub fn datastores_max_page() -> usize {
        100
    }
    pub fn one() -> u32 {
        1
    }
    pub fn token_lifetime() -> u64 {
        3600
    }
    pub fn max_attempts() -> u32 {
        5
    }
    pub fn retry_delay() -> u64 {
        500
    }
    pub fn event_delay() -> u64 {
        20
    }
    pub fn event_timeout() -> u64 {
        30_000
    }
    pub fn location() -> String {
        "westeurope".into()
    }
    pub fn kind() -> String {
        "StorageV2".into()
    }
    pub fn sku() -> String {
        "Standard_LRS".into()
    }
    pub fn endpoint_suffix() -> String {
        "core.windows.net".into()
    }
    pub fn yes() -> bool {
        true
    }
}

/// The largest scenario file read: the benchmark's largest estates take a few MB, and a path such
/// as `/dev/zero` must not be read until memory runs out.
pub const MAX_SCENARIO_BYTES: u64 = 256 * 1024 * 1024;

/// The file's text, refused when it is longer than `max` bytes.
fn read_bounded(path: &Path, max: u64) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_string(&mut text)?;
    ensure!(
        text.len() as u64 <= max,
        "the file is longer than {max} bytes"
    );
    Ok(text)
}

/// The services whose endpoint an account lists in `primaryEndpoints`.
pub(crate) const ENDPOINT_SERVICES: [&str; 6] = ["blob", "dfs", "file", "queue", "table", "web"];

impl Scenario {
    /// Reads and checks a scenario file of at most [`MAX_SCENARIO_BYTES`].
    pub fn from_file(path: &Path) -> anyhow::Result<Scenario> {
        let text = read_bounded(path, MAX_SCENARIO_BYTES)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        let scenario =
            Self::parse(&text).with_context(|| format!("parsing scenario {}", path.display()))?;
        scenario
            .validate()
            .with_context(|| format!("checking scenario {}", path.display()))?;
        Ok(scenario)
    }

    /// A scenario from its JSON text, unchecked. Only an object is one: serde would also take an
    /// array as the fields in order, so that `[]` read as a scenario with nothing in it.
    fn parse(text: &str) -> anyhow::Result<Scenario> {
        ensure!(
            text.trim_start().starts_with('{'),
            "a scenario is a JSON object, such as {{\"storageAccounts\": [...], \"workspaces\": [...]}}"
        );
        Ok(serde_json::from_str(text)?)
    }

    /// The distinct subscriptions of the scenario's accounts and workspaces, in order of
    /// appearance.
    pub fn subscriptions(&self) -> Vec<String> {
        let ids = self
            .storage_accounts
            .iter()
            .map(|a| &a.id)
            .chain(self.workspaces.iter().map(|w| &w.id));
        let mut seen = HashSet::new();
        ids.filter_map(|id| ResourceId::parse(id).ok())
            .map(|id| id.subscription().to_string())
            .filter(|sub| seen.insert(sub.to_ascii_lowercase()))
            .collect()
    }

    /// Checks everything a scenario can get wrong; the error names the account, workspace or
    /// datastore at fault.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            uuid::Uuid::try_parse(&self.tenant_id).is_ok(),
            "tenantId '{}' is not a GUID",
            self.tenant_id
        );
        ensure!(
            self.workspaces_page_size >= 1,
            "workspacesPageSize must be at least 1"
        );
        ensure!(
            self.storage_accounts_page_size >= 1,
            "storageAccountsPageSize must be at least 1"
        );
        ensure!(
            self.datastores_max_page_size >= 1,
            "datastoresMaxPageSize must be at least 1"
        );
        ensure!(
            self.event_delivery.max_attempts >= 1,
            "eventDelivery.maxAttempts must be at least 1"
        );
        for (i, rule) in self.faults.iter().enumerate() {
            rule.validate()
                .map_err(|problem| anyhow::anyhow!("faults[{i}]: {problem}"))?;
        }
        self.validate_accounts()?;
        self.validate_workspaces()
    }

    fn validate_accounts(&self) -> anyhow::Result<()> {
        let mut names = HashSet::new();
        for account in &self.storage_accounts {
            let id = StorageAccountId::parse(&account.id)
                .with_context(|| format!("storage account '{}'", account.id))?;
            check_subscription(id.subscription())
                .with_context(|| format!("storage account '{}'", account.id))?;
            ensure!(
                names.insert(id.name().to_ascii_lowercase()),
                "storage account '{}' is declared twice (account names are global)",
                id.name()
            );
            check_account_spec(account)
                .with_context(|| format!("storage account '{}'", id.name()))?;
        }
        Ok(())
    }

    fn validate_workspaces(&self) -> anyhow::Result<()> {
        let mut ids = HashSet::new();
        for workspace in &self.workspaces {
            let id = WorkspaceId::parse(&workspace.id)
                .with_context(|| format!("workspace '{}'", workspace.id))?;
            check_subscription(id.subscription())
                .with_context(|| format!("workspace '{}'", workspace.id))?;
            ensure!(
                ids.insert(id.as_str().to_ascii_lowercase()),
                "workspace '{}' is declared twice",
                id.as_str()
            );
            self.check_workspace_spec(workspace)
                .with_context(|| format!("workspace '{}'", id.name()))?;
        }
        Ok(())
    }

    fn check_workspace_spec(&self, workspace: &WorkspaceSpec) -> anyhow::Result<()> {
        let storage = StorageAccountId::parse(&workspace.storage_account)
            .context("storageAccount is not a storage account id")?;
        ensure!(
            self.account(&storage).is_some(),
            "storageAccount '{}' is not an account of the scenario",
            workspace.storage_account
        );
        ensure!(
            !workspace
                .properties
                .keys()
                .any(|k| k.eq_ignore_ascii_case("storageAccount")),
            "set storageAccount on the workspace, not in its properties"
        );
        let mut names = HashSet::new();
        for datastore in &workspace.datastores {
            ensure!(
                names.insert(datastore.name.to_ascii_lowercase()),
                "datastore '{}' is declared twice",
                datastore.name
            );
            self.check_datastore_spec(datastore)
                .with_context(|| format!("datastore '{}'", datastore.name))?;
        }
        Ok(())
    }

    fn check_datastore_spec(&self, datastore: &DatastoreSpec) -> anyhow::Result<()> {
        ensure!(
            is_datastore_name(&datastore.name),
            "the name may only hold letters, digits and underscores"
        );
        let credentials_type = datastore
            .properties
            .get("credentials")
            .and_then(|c| c.get("credentialsType"))
            .and_then(Value::as_str)
            .context("properties.credentials.credentialsType is missing")?;
        ensure!(
            datastore
                .properties
                .get("datastoreType")
                .is_some_and(Value::is_string),
            "properties.datastoreType is missing"
        );
        let Some(secret) = &datastore.secrets else {
            return Ok(());
        };
        let secrets_type = match secret.fields_set().as_slice() {
            [(_, kind)] => *kind,
            [] => {
                bail!("secrets sets none of {SECRET_FIELDS}: set exactly one, or leave secrets out")
            }
            set => {
                let names: Vec<&str> = set.iter().map(|(field, _)| *field).collect();
                bail!(
                    "secrets sets {}: set exactly one of {SECRET_FIELDS}",
                    names.join(" and ")
                )
            }
        };
        ensure!(
            secrets_type.eq_ignore_ascii_case(credentials_type),
            "a {secrets_type} secret does not fit credentialsType {credentials_type}"
        );
        if let Some(key_ref) = &secret.key_ref {
            self.check_key_ref(datastore, key_ref)?;
        }
        if let Some(sas_ref) = &secret.sas_ref {
            self.check_key_ref(datastore, &sas_ref.key)?;
            let token = SasToken::unsigned(&sas_ref.token).context("sasRef.token")?;
            token.kind().context("sasRef.token")?;
        }
        Ok(())
    }

    fn check_key_ref(&self, datastore: &DatastoreSpec, key_ref: &str) -> anyhow::Result<()> {
        ensure!(
            ["key1", "key2", "stale"].contains(&key_ref),
            "keyRef '{key_ref}' is not key1, key2 or stale"
        );
        let account = datastore
            .properties
            .get("accountName")
            .and_then(Value::as_str)
            .context("keyRef needs properties.accountName")?;
        ensure!(
            self.account_named(account).is_some(),
            "keyRef names account '{account}', which is not in the scenario"
        );
        Ok(())
    }

    pub(crate) fn account(&self, id: &StorageAccountId) -> Option<&AccountSpec> {
        self.storage_accounts
            .iter()
            .find(|a| StorageAccountId::parse(&a.id).is_ok_and(|a| &a == id))
    }

    pub(crate) fn account_named(&self, name: &str) -> Option<&AccountSpec> {
        self.storage_accounts.iter().find(|a| {
            StorageAccountId::parse(&a.id).is_ok_and(|id| id.name().eq_ignore_ascii_case(name))
        })
    }
}

fn check_subscription(subscription: &str) -> anyhow::Result<()> {
    if uuid::Uuid::try_parse(subscription).is_err() {
        bail!("subscription '{subscription}' is not a GUID");
    }
    Ok(())
}

fn check_account_spec(account: &AccountSpec) -> anyhow::Result<()> {
    ensure!(
        !account.azurite || account.primary_endpoints.is_empty(),
        "azurite and primaryEndpoints exclude each other: Azurite's endpoint replaces them"
    );
    for service in account.primary_endpoints.keys() {
        ensure!(
            ENDPOINT_SERVICES.contains(&service.as_str()),
            "primaryEndpoints.{service} is not one of {}",
            ENDPOINT_SERVICES.join(", ")
        );
    }
    let literal = [&account.keys.key1, &account.keys.key2];
    for key in literal.iter().copied().flatten() {
        ensure!(!key.trim().is_empty(), "a literal key is empty");
    }
    if let (Some(key1), Some(key2)) = (&account.keys.key1, &account.keys.key2) {
        ensure!(key1 != key2, "key1 and key2 are equal");
    }
    Ok(())
}

/// Datastore names allow letters, digits and underscores, as Azure Machine Learning does.
pub(crate) fn is_datastore_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endless_file_is_refused_at_the_size_limit() {
        let err = super::read_bounded(std::path::Path::new("/dev/zero"), 1024).unwrap_err();
        assert_eq!(err.to_string(), "the file is longer than 1024 bytes");
    }

    use super::*;
    use serde_json::json;

    const SUB: &str = "11111111-2222-3333-4444-555555555555";

    fn scenario(value: Value) -> anyhow::Result<Scenario> {
        let scenario: Scenario = serde_json::from_value(value)?;
        scenario.validate()?;
        Ok(scenario)
    }

    fn account_id(name: &str) -> String {
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{name}"
        )
    }

    fn workspace(datastores: Value) -> Value {
        json!({
            "id": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w1"),
            "storageAccount": account_id("sta"),
            "datastores": datastores
        })
    }

    fn error_of(value: Value) -> String {
        format!("{:#}", scenario(value).unwrap_err())
    }

    #[test]
    fn the_smallest_scenario_gets_the_documented_defaults() {
        let s = scenario(json!({"storageAccounts": [{"id": account_id("sta")}]})).unwrap();
        assert_eq!(s.workspaces_page_size, 20);
        assert_eq!(s.storage_accounts_page_size, 100);
        assert_eq!(s.datastores_max_page_size, 100);
        assert_eq!(s.resync_polls, 1);
        assert_eq!(s.lro_style, LroStyle::Location);
        assert_eq!(s.token_lifetime_seconds, 3600);
        assert_eq!(s.subscriptions(), vec![SUB.to_string()]);
    }

    #[test]
    fn unknown_fields_are_refused_so_typos_show() {
        let err = error_of(json!({"storageAcounts": []}));
        assert!(err.contains("storageAcounts"), "{err}");
    }

    #[test]
    fn duplicate_account_names_are_refused_across_groups() {
        let other = account_id("STA").replace("/rg/", "/rg2/");
        let err = error_of(json!({"storageAccounts": [{"id": account_id("sta")}, {"id": other}]}));
        assert!(err.contains("declared twice"), "{err}");
    }

    #[test]
    fn a_workspace_on_an_unknown_account_is_refused() {
        let err = error_of(json!({"workspaces": [workspace(json!([]))]}));
        assert!(
            err.contains("workspace 'w1'") && err.contains("not an account"),
            "{err}"
        );
    }

    #[test]
    fn a_key_ref_to_an_unknown_account_names_the_datastore() {
        let ds = json!([{
            "name": "blob1",
            "properties": {"datastoreType": "AzureBlob", "accountName": "nope", "credentials": {"credentialsType": "AccountKey"}},
            "secrets": {"keyRef": "key1"}
        }]);
        let err = error_of(
            json!({"storageAccounts": [{"id": account_id("sta")}], "workspaces": [workspace(ds)]}),
        );
        assert!(
            err.contains("datastore 'blob1'") && err.contains("'nope'"),
            "{err}"
        );
    }

    #[test]
    fn a_secret_must_fit_the_credentials_type() {
        let ds = json!([{
            "name": "blob1",
            "properties": {"datastoreType": "AzureBlob", "accountName": "sta", "credentials": {"credentialsType": "Sas"}},
            "secrets": {"key": "abc"}
        }]);
        let err = error_of(
            json!({"storageAccounts": [{"id": account_id("sta")}], "workspaces": [workspace(ds)]}),
        );
        assert!(err.contains("does not fit"), "{err}");
    }

    #[test]
    fn a_secret_with_both_a_key_and_a_key_ref_is_refused_by_name() {
        let ds = |secrets: Value| {
            json!([{
                "name": "blob1",
                "properties": {"datastoreType": "AzureBlob", "accountName": "sta", "credentials": {"credentialsType": "AccountKey"}},
                "secrets": secrets
            }])
        };
        let with = |datastores| json!({"storageAccounts": [{"id": account_id("sta")}], "workspaces": [workspace(datastores)]});
        let err = error_of(with(ds(json!({"key": "abc", "keyRef": "key1"}))));
        assert!(
            err.contains("datastore 'blob1'")
                && err.contains("secrets sets key and keyRef: set exactly one of key, keyRef,"),
            "{err}"
        );
        let err = error_of(with(ds(json!({}))));
        assert!(err.contains("secrets sets none of key, keyRef"), "{err}");
        assert!(scenario(with(ds(json!({"keyRef": "key1"})))).is_ok());
        assert!(scenario(with(ds(json!({"key": "abc"})))).is_ok());
    }

    #[test]
    fn only_a_json_object_is_a_scenario() {
        for text in [
            "[]",
            " [\"aaaaaaaa-0000-4000-8000-00000000000a\"]",
            "null",
            "7",
        ] {
            let err = format!("{:#}", Scenario::parse(text).unwrap_err());
            assert!(err.contains("a scenario is a JSON object"), "{text}: {err}");
        }
        let empty = Scenario::parse(" \n{}").unwrap();
        assert!(empty.storage_accounts.is_empty());
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/example.json");
        let scenario = Scenario::from_file(&path).unwrap();
        assert_eq!(scenario.lro_style, LroStyle::AzureAsyncOperation);
        assert_eq!(scenario.faults.len(), 2);
    }

    #[test]
    fn an_azurite_account_takes_its_endpoint_from_azurite() {
        let err = error_of(json!({"storageAccounts": [
            {"id": account_id("sta"), "azurite": true, "primaryEndpoints": {"blob": "http://x/"}}
        ]}));
        assert!(err.contains("exclude each other"), "{err}");
        let ok = scenario(json!({"storageAccounts": [{"id": account_id("sta"), "azurite": true}]}));
        assert!(ok.unwrap().storage_accounts[0].azurite);
    }

    #[test]
    fn a_sas_ref_needs_a_known_key_and_a_token_kind() {
        let ds = |key: &str, token: &str| {
            json!([{
                "name": "sas1",
                "properties": {"datastoreType": "AzureBlob", "accountName": "sta", "containerName": "c", "credentials": {"credentialsType": "Sas"}},
                "secrets": {"sasRef": {"key": key, "token": token}}
            }])
        };
        let with = |datastores| json!({"storageAccounts": [{"id": account_id("sta")}], "workspaces": [workspace(datastores)]});
        assert!(scenario(with(ds("key1", "sv=2024-11-04&sr=c&sp=r&se=2099-01-01"))).is_ok());
        let err = error_of(with(ds("key3", "sv=2024-11-04&sr=c&sp=r")));
        assert!(err.contains("key3"), "{err}");
        let err = error_of(with(ds("key1", "sv=2024-11-04&sp=r")));
        assert!(err.contains("sasRef.token"), "{err}");
    }

    #[test]
    fn bad_ids_are_named() {
        let err = error_of(json!({"storageAccounts": [{"id": "/subscriptions/x/sta"}]}));
        assert!(err.contains("/subscriptions/x/sta"), "{err}");
    }
}
