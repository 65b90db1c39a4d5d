//! Everything the emulator remembers, kept behind one mutex in [`super::server::Shared`]:
//! resources, running operations, tokens, fault rules, the request log and events. Built from a
//! scenario at start; `snapshot` is what `/_emulator/state` shows.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use url::Url;

use super::RequestRecord;
use super::clock::{Clock, azure_time};
use super::events::EventRecord;
use super::faults::FaultEngine;
use super::identity::{Identities, TokenStore};
use super::random;
use super::resources::{
    Account, Actor, Datastore, ResyncOperation, SystemData, Workspace, split_secret,
};
use super::scenario::{
    DatastoreSpec, EventDelivery, LroStyle, SasRef, Scenario, SecretSpec, UserSpec,
};
use crate::model::storage::KeySlot;
use crate::resource_id::{StorageAccountId, WorkspaceId};
use crate::storage::sas::{self, SasToken, SignedResource};
use crate::storage::shared_key::AccountKey;
use secrecy::{ExposeSecret, SecretString};

/// Behaviour that the scenario fixes for the whole run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub tenant_id: String,
    pub workspaces_page_size: usize,
    pub accounts_page_size: usize,
    pub datastores_max_page_size: usize,
    pub resync_polls: u32,
    pub lro_retry_after: u64,
    pub lro_style: LroStyle,
    pub event_delivery: EventDelivery,
    pub identities: Identities,
    pub portal_user: UserSpec,
}

/// The emulator's whole mutable state.
#[derive(Debug)]
pub(crate) struct State {
    pub clock: Clock,
    pub settings: Settings,
    pub accounts: Vec<Account>,
    pub workspaces: Vec<Workspace>,
    pub deleted_datastores: Vec<String>,
    pub operations: Vec<ResyncOperation>,
    pub events: Vec<EventRecord>,
    /// Each `regenerateKey`, with the datastores that held the key it replaced: a rotation that
    /// never breaks a consumer leaves every `datastores` list empty.
    pub key_invalidations: Vec<Value>,
    pub requests: Vec<RequestRecord>,
    pub faults: FaultEngine,
    pub tokens: TokenStore,
    pub webhook: Option<Url>,
    pub latency: Duration,
}

impl State {
    /// Builds the starting state of a scenario, checking it first.
    pub(crate) fn from_scenario(scenario: &Scenario) -> anyhow::Result<State> {
        scenario.validate()?;
        let now = scenario.now.unwrap_or_else(OffsetDateTime::now_utc);
        let accounts = scenario
            .storage_accounts
            .iter()
            .map(|spec| Ok(Account::new(StorageAccountId::parse(&spec.id)?, spec, now)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut state = State {
            clock: Clock::starting_at(now),
            settings: settings(scenario),
            accounts,
            workspaces: Vec::new(),
            deleted_datastores: Vec::new(),
            operations: Vec::new(),
            events: Vec::new(),
            key_invalidations: Vec::new(),
            requests: Vec::new(),
            faults: FaultEngine::new(scenario.faults.clone()),
            tokens: TokenStore::default(),
            webhook: None,
            latency: Duration::from_millis(scenario.latency_ms),
        };
        for spec in &scenario.workspaces {
            let workspace = state
                .workspace_from(spec, now)
                .with_context(|| format!("workspace '{}'", spec.id))?;
            state.workspaces.push(workspace);
        }
        Ok(state)
    }

    fn workspace_from(
        &self,
        spec: &super::scenario::WorkspaceSpec,
        now: OffsetDateTime,
    ) -> anyhow::Result<Workspace> {
        let id = WorkspaceId::parse(&spec.id)?;
        let account = self
            .account_by_id(&StorageAccountId::parse(&spec.storage_account)?)
            .context("unknown storage account")?;
        let current = [account.key(KeySlot::Key1), account.key(KeySlot::Key2)];
        let cached_keys = if spec.storage_keys_in_sync {
            current.map(str::to_string)
        } else {
            [random::account_key(), random::account_key()]
        };
        let created_at = now - time::Duration::days(90);
        let datastores = spec
            .datastores
            .iter()
            .map(|ds| self.datastore_from(ds, created_at))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Workspace {
            id,
            location: spec.location.clone(),
            storage_account: spec.storage_account.clone(),
            tags: spec.tags.clone(),
            extra: spec.properties.clone(),
            workspace_guid: random::guid(),
            principal_id: random::guid(),
            created_at,
            cached_keys,
            resync_count: 0,
            resyncs_completed: 0,
            datastores,
        })
    }

    fn datastore_from(
        &self,
        spec: &DatastoreSpec,
        at: OffsetDateTime,
    ) -> anyhow::Result<Datastore> {
        let mut properties = spec.properties.clone();
        // A scenario never carries secrets inside properties; whatever is there is reduced
        // to its type like any stored datastore.
        split_secret(&mut properties);
        // Azure always answers `isDefault`; a scenario may leave it out.
        properties.entry("isDefault").or_insert(Value::Bool(false));
        let secret = spec
            .secrets
            .as_ref()
            .map(|s| self.resolve_secret(spec, s))
            .transpose()
            .with_context(|| format!("datastore '{}'", spec.name))?;
        let actor = Actor {
            name: "scenario".into(),
            kind: "User",
        };
        Ok(Datastore {
            name: spec.name.clone(),
            properties,
            secret,
            system_data: SystemData::created(at, actor),
            writes: 0,
            soft_deleted_secret: spec.soft_deleted_secret,
        })
    }

    /// Turns a scenario secret into the stored `secrets` object, resolving `keyRef`.
    fn resolve_secret(
        &self,
        datastore: &DatastoreSpec,
        spec: &SecretSpec,
    ) -> anyhow::Result<Map<String, Value>> {
        let secret = match (&spec.key_ref, spec.secrets_type()) {
            (Some(key_ref), _) => {
                let key = self.resolve_key_ref(datastore, key_ref)?;
                json!({"secretsType": "AccountKey", "key": key})
            }
            (None, Some("Sas")) if spec.sas_ref.is_some() => {
                let token = self.resolve_sas_ref(datastore, spec.sas_ref.as_ref())?;
                json!({"secretsType": "Sas", "sasToken": token.expose_secret()})
            }
            (None, Some("AccountKey")) => json!({"secretsType": "AccountKey", "key": spec.key}),
            (None, Some("Sas")) => json!({"secretsType": "Sas", "sasToken": spec.sas_token}),
            (None, Some("ServicePrincipal")) => {
                json!({"secretsType": "ServicePrincipal", "clientSecret": spec.client_secret})
            }
            (None, Some("Certificate")) => {
                json!({"secretsType": "Certificate", "certificate": spec.certificate})
            }
            _ => anyhow::bail!("secrets must set exactly one value"),
        };
        secret.as_object().cloned().context("secrets is an object")
    }

    fn resolve_key_ref(&self, datastore: &DatastoreSpec, key_ref: &str) -> anyhow::Result<String> {
        let name = datastore
            .properties
            .get("accountName")
            .and_then(Value::as_str)
            .context("keyRef needs properties.accountName")?;
        let account = self
            .account_by_name(name)
            .with_context(|| format!("account '{name}' is not in the scenario"))?;
        match KeySlot::from_name(key_ref) {
            Some(slot) => Ok(account.key(slot).to_string()),
            None => Ok(random::account_key()),
        }
    }

    /// Signs a scenario's `sasRef` token with the key it names, for the datastore's container
    /// or share.
    fn resolve_sas_ref(
        &self,
        datastore: &DatastoreSpec,
        sas_ref: Option<&SasRef>,
    ) -> anyhow::Result<SecretString> {
        let sas_ref = sas_ref.context("sasRef is missing")?;
        let name = datastore
            .properties
            .get("accountName")
            .and_then(Value::as_str)
            .context("sasRef needs properties.accountName")?;
        let account = self
            .account_by_name(name)
            .with_context(|| format!("account '{name}' is not in the scenario"))?;
        let key = self.resolve_key_ref(datastore, &sas_ref.key)?;
        let key = AccountKey::new(account.name(), &SecretString::from(key))
            .context("sasRef needs an account with base64 keys")?;
        let text = |field: &str| {
            datastore
                .properties
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let resource = match text("datastoreType") {
            "AzureFile" => SignedResource::Share(text("fileShareName")),
            "AzureDataLakeGen2" => SignedResource::Container(text("filesystem")),
            _ => SignedResource::Container(text("containerName")),
        };
        let token = SasToken::unsigned(&sas_ref.token).context("sasRef.token")?;
        sas::sign(&token, &key, resource).context("signing sasRef.token")
    }

    /// The account with this id (compared ignoring case).
    pub(crate) fn account_by_id(&self, id: &StorageAccountId) -> Option<&Account> {
        self.accounts.iter().find(|a| &a.id == id)
    }

    /// The account with this name; names are global in Azure.
    pub(crate) fn account_by_name(&self, name: &str) -> Option<&Account> {
        self.accounts
            .iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The position of an account given by the parts of its path.
    pub(crate) fn account_index(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Option<usize> {
        self.accounts.iter().position(|a| {
            a.id.subscription().eq_ignore_ascii_case(subscription)
                && a.id.resource_group().eq_ignore_ascii_case(group)
                && a.name().eq_ignore_ascii_case(name)
        })
    }

    /// The position of a workspace given by the parts of its path.
    pub(crate) fn workspace_index(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Option<usize> {
        self.workspaces.iter().position(|w| {
            w.id.subscription().eq_ignore_ascii_case(subscription)
                && w.id.resource_group().eq_ignore_ascii_case(group)
                && w.name().eq_ignore_ascii_case(name)
        })
    }

    /// Whether any resource lives in this subscription.
    pub(crate) fn has_subscription(&self, subscription: &str) -> bool {
        self.resource_scopes()
            .any(|(sub, _)| sub.eq_ignore_ascii_case(subscription))
    }

    /// Whether any resource lives in this resource group.
    pub(crate) fn has_group(&self, subscription: &str, group: &str) -> bool {
        self.resource_scopes().any(|(sub, rg)| {
            sub.eq_ignore_ascii_case(subscription) && rg.eq_ignore_ascii_case(group)
        })
    }

    fn resource_scopes(&self) -> impl Iterator<Item = (&str, &str)> {
        let accounts = self.accounts.iter().map(|a| a.id.resource_id());
        let workspaces = self.workspaces.iter().map(|w| w.id.resource_id());
        accounts
            .chain(workspaces)
            .map(|id| (id.subscription(), id.resource_group()))
    }

    /// Whether a resync of the workspace at `index` is still running.
    /// The ids of the datastores whose stored account key is `key`.
    pub(crate) fn datastores_holding(&self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for workspace in &self.workspaces {
            for datastore in &workspace.datastores {
                let held = datastore
                    .secret
                    .as_ref()
                    .and_then(|s| s.get("key"))
                    .and_then(Value::as_str);
                if held == Some(key) {
                    out.push(format!(
                        "{}/datastores/{}",
                        workspace.id.as_str(),
                        datastore.name
                    ));
                }
            }
        }
        out
    }

    pub(crate) fn resync_running(&self, index: usize) -> bool {
        let id = &self.workspaces[index].id;
        self.operations
            .iter()
            .any(|op| op.completed_at.is_none() && &op.workspace == id)
    }

    /// The whole state as `/_emulator/state` shows it, secrets included.
    pub(crate) fn snapshot(&self) -> Value {
        let accounts: Vec<Value> = self.accounts.iter().map(Account::snapshot).collect();
        let workspaces: Vec<Value> = self
            .workspaces
            .iter()
            .map(|w| {
                let account = StorageAccountId::parse(&w.storage_account).ok();
                w.snapshot(account.and_then(|id| self.account_by_id(&id)))
            })
            .collect();
        json!({
            "now": azure_time(self.clock.now()),
            "storageAccounts": accounts,
            "workspaces": workspaces,
            "deletedDatastores": self.deleted_datastores,
            "events": self.events,
            "keyInvalidations": self.key_invalidations,
            "managedIdentityTokensIssued": self.tokens.managed_identity_issued(),
            "issuedTokens": self.tokens.all_issued(),
            "latencyMs": u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX),
            "faults": self.faults.rules(),
        })
    }
}

fn settings(scenario: &Scenario) -> Settings {
    Settings {
        tenant_id: scenario.tenant_id.clone(),
        workspaces_page_size: scenario.workspaces_page_size,
        accounts_page_size: scenario.storage_accounts_page_size,
        datastores_max_page_size: scenario.datastores_max_page_size,
        resync_polls: scenario.resync_polls,
        lro_retry_after: scenario.lro_retry_after_seconds,
        lro_style: scenario.lro_style,
        event_delivery: scenario.event_delivery.clone(),
        identities: Identities {
            system: scenario.managed_identity.clone(),
            user_assigned: scenario.identities.clone(),
            lifetime: Duration::from_secs(scenario.token_lifetime_seconds),
        },
        portal_user: scenario.portal_user.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_state() -> State {
        State::from_scenario(&Scenario::demo()).unwrap()
    }

    fn datastore<'a>(state: &'a State, workspace: usize, name: &str) -> &'a Datastore {
        let ws = &state.workspaces[workspace];
        &ws.datastores[ws.datastore_index(name).unwrap()]
    }

    #[test]
    fn key_refs_resolve_to_the_accounts_current_keys() {
        let state = demo_state();
        let shared = state.account_by_name("STMLSHARED01").unwrap();
        let key_of =
            |name: &str| datastore(&state, 0, name).secret.as_ref().unwrap()["key"].clone();
        assert_eq!(key_of("workspaceblobstore"), shared.key(KeySlot::Key1));
        assert_eq!(key_of("curated"), shared.key(KeySlot::Key2));
        assert!(datastore(&state, 0, "images_identity").secret.is_none());
    }

    #[test]
    fn a_sas_ref_is_signed_at_load_with_the_key_it_names() {
        let account = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sta";
        let token = "sv=2024-11-04&sr=c&sp=rl&se=2099-01-01T00:00:00Z";
        let ds = |name: &str, key: &str| {
            json!({
                "name": name,
                "properties": {"datastoreType": "AzureBlob", "accountName": "sta", "containerName": "c", "credentials": {"credentialsType": "Sas"}},
                "secrets": {"sasRef": {"key": key, "token": token}}
            })
        };
        let scenario: Scenario = serde_json::from_value(json!({
            "storageAccounts": [{"id": account}],
            "workspaces": [{
                "id": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w",
                "storageAccount": account,
                "datastores": [ds("one", "key1"), ds("again", "key1"), ds("stale", "stale")]
            }]
        }))
        .unwrap();
        let state = State::from_scenario(&scenario).unwrap();
        let stored = |name: &str| {
            let secret = datastore(&state, 0, name).secret.clone().unwrap();
            SasToken::parse(secret["sasToken"].as_str().unwrap()).unwrap()
        };
        assert_eq!(stored("one").get("sp"), Some("rl"));
        assert_eq!(stored("one").get("sig"), stored("again").get("sig"));
        assert_ne!(stored("one").get("sig"), stored("stale").get("sig"));
    }

    #[test]
    fn the_snapshot_shows_keys_secrets_and_sync_state() {
        let state = demo_state();
        let snapshot = state.snapshot();
        // The demo runs on the real clock, so that key ages mean the same on every run.
        let today = azure_time(OffsetDateTime::now_utc());
        assert_eq!(snapshot["now"].as_str().unwrap().get(..10), today.get(..10));
        let account = &snapshot["storageAccounts"][0];
        assert_eq!(account["keys"]["key1"].as_str().unwrap().len(), 88);
        assert_eq!(account["keyCreationTime"]["key2"], Value::Null);
        let workspace = &snapshot["workspaces"][0];
        assert_eq!(workspace["storageKeysInSync"], true);
        let blob = &workspace["datastores"][0];
        assert_eq!(blob["secrets"]["key"], account["keys"]["key1"]);
        assert_eq!(
            blob["resource"]["properties"]["credentials"]["secrets"],
            json!({"secretsType": "AccountKey"})
        );
    }

    #[test]
    fn scopes_are_matched_ignoring_case() {
        let state = demo_state();
        assert!(state.has_subscription("11111111-2222-3333-4444-555555555555"));
        assert!(state.has_group("11111111-2222-3333-4444-555555555555", "RG-ML"));
        assert!(!state.has_group("11111111-2222-3333-4444-555555555555", "rg-other"));
        assert!(
            state
                .account_index(
                    "11111111-2222-3333-4444-555555555555",
                    "rg-ml",
                    "StMlShared01"
                )
                .is_some()
        );
    }
}
