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

/// The datastores of one workspace as observed, and what only the storage check after the run
/// needs of them.
pub struct Observed {
    /// Every listed datastore with a usable id, in listing order.
    pub datastores: Vec<ObservedDatastore>,
    /// For each of `datastores`, the stored key when it is neither current key, so that the
    /// storage check can try it without reading it again.
    pub stale_keys: Vec<Option<SecretString>>,
    /// Listed datastores that neither their id nor their name can address: to be reported.
    pub unusable: Vec<Datastore>,
}

/// Reads the stored key of each listed datastore that needs it; the others are observed as
/// listed, without a future of their own.
pub async fn datastores(
    arm: &ArmClient,
    workspace: &WorkspaceId,
    listed: Vec<Datastore>,
    facts: &AccountFacts,
    keys: Option<&AccountKeys>,
) -> Observed {
    let mut datastores = Vec::with_capacity(listed.len());
    let mut unusable = Vec::new();
    for ds in listed {
        match datastore_id(workspace, &ds) {
            Some(id) => datastores.push(ObservedDatastore {
                id,
                datastore: ds,
                secret: None,
            }),
            None => unusable.push(ds),
        }
    }
    let mut stale_keys: Vec<Option<SecretString>> = datastores.iter().map(|_| None).collect();
    let Some(keys) = keys else {
        return Observed {
            datastores,
            stale_keys,
            unusable,
        };
    };
    let reads = datastores
        .iter()
        .enumerate()
        .filter(|(_, o)| facts.needs_secret(&o.datastore))
        .map(|(index, o)| async move { (index, stored_key(arm, &o.id, keys).await) });
    for (index, (state, stale)) in futures::future::join_all(reads).await {
        datastores[index].secret = Some(state);
        stale_keys[index] = stale;
    }
    Observed {
        datastores,
        stale_keys,
        unusable,
    }
}

/// The datastore's id as Azure gave it, or built from its name when the id is absent or odd.
fn datastore_id(workspace: &WorkspaceId, ds: &Datastore) -> Option<DatastoreId> {
    ds.id()
        .and_then(|id| DatastoreId::parse(id).ok())
        .filter(|id| &id.workspace() == workspace)
        .or_else(|| workspace.datastore(ds.name()).ok())
}

/// Which current key, if any, the datastore holds; and the stored key when it is neither.
async fn stored_key(
    arm: &ArmClient,
    id: &DatastoreId,
    keys: &AccountKeys,
) -> (SecretState, Option<SecretString>) {
    match arm.list_datastore_secrets(id).await {
        Ok(secrets) => classify(secrets.key, keys),
        Err(e) if e.is_not_found() => (SecretState::Missing, None),
        Err(e) if e.kind == crate::arm::ArmErrorKind::Deadline => (SecretState::Deferred, None),
        Err(e) => (
            SecretState::Unreadable(crate::report::explain::reported(&e)),
            None,
        ),
    }
}

fn classify(
    stored: Option<SecretString>,
    keys: &AccountKeys,
) -> (SecretState, Option<SecretString>) {
    match stored {
        None => (SecretState::Missing, None),
        Some(key) => match keys.slot_of(&key) {
            Some(slot) => (SecretState::Current(slot), None),
            None => (SecretState::Stale, Some(key)),
        },
    }
}
