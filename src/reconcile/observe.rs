//! Reading what the planner needs from Azure: a workspace's datastores and, for those that hold
//! an account key of the account, which key they hold.

use secrecy::SecretString;

use crate::arm::ArmClient;
use crate::model::ml::{Datastore, Workspace};
use crate::model::storage::AccountKeys;
use crate::resource_id::{DatastoreId, StorageAccountId, WorkspaceId};

use super::plan::{AccountFacts, ObservedDatastore, SecretState};

/// Whether a workspace's default storage is `account`.
pub fn default_storage_is(workspace: &Workspace, account: &StorageAccountId) -> bool {
    workspace
        .properties
        .storage_account
        .as_deref()
        .and_then(|id| StorageAccountId::parse(id).ok())
        .is_some_and(|id| &id == account)
}

/// Reads the stored key of each listed datastore that needs it; the others are observed as
/// listed, without a future of their own.
pub async fn datastores(
    arm: &ArmClient,
    workspace: &WorkspaceId,
    listed: Vec<Datastore>,
    facts: &AccountFacts,
    keys: Option<&AccountKeys>,
) -> Vec<ObservedDatastore> {
    let observed: Vec<ObservedDatastore> = listed
        .into_iter()
        .filter_map(|ds| {
            let id = datastore_id(workspace, &ds)?;
            Some(ObservedDatastore {
                id,
                datastore: ds,
                secret: None,
            })
        })
        .collect();
    let Some(keys) = keys else {
        return observed;
    };
    let reads = observed
        .iter()
        .filter(|o| facts.needs_secret(&o.datastore))
        .map(|o| stored_key(arm, &o.id, keys));
    let mut secrets = futures::future::join_all(reads).await.into_iter();
    observed
        .into_iter()
        .map(|mut o| {
            if facts.needs_secret(&o.datastore) {
                o.secret = secrets.next();
            }
            o
        })
        .collect()
}

/// The datastore's id as Azure gave it, or built from its name when the id is absent or odd.
fn datastore_id(workspace: &WorkspaceId, ds: &Datastore) -> Option<DatastoreId> {
    ds.id()
        .and_then(|id| DatastoreId::parse(id).ok())
        .filter(|id| &id.workspace() == workspace)
        .or_else(|| workspace.datastore(ds.name()).ok())
}

/// Which current key, if any, the datastore holds.
async fn stored_key(arm: &ArmClient, id: &DatastoreId, keys: &AccountKeys) -> SecretState {
    match arm.list_datastore_secrets(id).await {
        Ok(secrets) => classify(secrets.key.as_ref(), keys),
        Err(e) if e.is_not_found() => SecretState::Missing,
        Err(e) if e.kind == crate::arm::ArmErrorKind::Deadline => SecretState::Deferred,
        Err(e) => SecretState::Unreadable(crate::report::explain::explain(&e)),
    }
}

fn classify(stored: Option<&SecretString>, keys: &AccountKeys) -> SecretState {
    match stored {
        None => SecretState::Missing,
        Some(key) => keys
            .slot_of(key)
            .map_or(SecretState::Stale, SecretState::Current),
    }
}
