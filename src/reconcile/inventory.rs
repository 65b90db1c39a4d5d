//! One listing of everything in scope (storage accounts, workspaces, datastores), read once per
//! timer tick and shared by the rotations and every account of the sweep, instead of listing it
//! again for each account.

use futures::future::join_all;

use crate::arm::{ArmClient, ArmError};
use crate::model::ml::{Datastore, Workspace};
use crate::model::storage::StorageAccount;
use crate::reconcile::execute::reported;
use crate::resource_id::{StorageAccountId, WorkspaceId};

/// A workspace and its datastores (without secrets).
#[derive(Debug, Clone)]
pub struct ListedWorkspace {
    pub id: WorkspaceId,
    pub workspace: Workspace,
    /// The datastores, or why they could not be listed.
    pub datastores: Result<Vec<Datastore>, String>,
}

/// What is in scope, as listed at one moment.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub accounts: Vec<StorageAccount>,
    pub workspaces: Vec<ListedWorkspace>,
    /// What could not be listed; each is safe to report.
    pub failures: Vec<String>,
    /// Listed workspaces whose id is not a workspace's ARM id: reported by the runs on the
    /// accounts they may concern, never touched.
    pub unusable: Vec<Workspace>,
}

impl Inventory {
    /// Lists every subscription in scope, all at once.
    pub async fn scan(arm: &ArmClient, subscriptions: &[String]) -> Inventory {
        let mut inventory = Inventory::default();
        for (accounts, workspaces) in
            join_all(subscriptions.iter().map(|s| scan_subscription(arm, s))).await
        {
            match accounts {
                Ok(mut list) => inventory.accounts.append(&mut list),
                Err(e) => inventory.failures.push(format!(
                    "could not list the storage accounts: {}",
                    reported(&e)
                )),
            }
            match workspaces {
                Ok((mut list, mut unusable)) => {
                    inventory.workspaces.append(&mut list);
                    inventory.unusable.append(&mut unusable);
                }
                Err(e) => inventory
                    .failures
                    .push(format!("could not list the workspaces: {}", reported(&e))),
            }
        }
        inventory
    }

    /// The id of the in-scope account with this name (names are unique in a cloud).
    pub fn account_named(&self, name: &str) -> Option<StorageAccountId> {
        self.accounts
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name.trim()))
            .and_then(|a| StorageAccountId::parse(&a.id).ok())
    }

    /// Every in-scope account that a workspace has as default storage or a datastore points at,
    /// each once, in the order first seen; and the names of accounts out of scope.
    pub fn accounts_in_use(&self) -> (Vec<StorageAccountId>, Vec<String>) {
        let mut used: Vec<StorageAccountId> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for ws in &self.workspaces {
            let default = ws
                .workspace
                .properties
                .storage_account
                .as_deref()
                .and_then(|id| StorageAccountId::parse(id).ok());
            let named = ws
                .datastores
                .iter()
                .flatten()
                .filter_map(|d| d.account_name());
            for name in default
                .iter()
                .map(|id| id.name().to_string())
                .chain(named.map(str::to_string))
            {
                match self.account_named(&name) {
                    Some(id) if !used.contains(&id) => used.push(id),
                    Some(_) => {}
                    None if !unknown.iter().any(|u| u.eq_ignore_ascii_case(&name)) => {
                        unknown.push(name)
                    }
                    None => {}
                }
            }
        }
        (used, unknown)
    }
}

/// A subscription's accounts; its workspaces with their datastores, and those whose id is
/// unusable.
type Scanned = (
    Result<Vec<StorageAccount>, ArmError>,
    Result<(Vec<ListedWorkspace>, Vec<Workspace>), ArmError>,
);

async fn scan_subscription(arm: &ArmClient, subscription: &str) -> Scanned {
    let accounts = arm.list_storage_accounts(subscription);
    let workspaces = async {
        let listed = arm.list_workspaces(subscription).await?;
        let (usable, unusable): (Vec<Workspace>, Vec<Workspace>) = listed
            .into_iter()
            .partition(|workspace| WorkspaceId::parse(&workspace.id).is_ok());
        let with_datastores = usable.into_iter().filter_map(|workspace| {
            let id = WorkspaceId::parse(&workspace.id).ok()?;
            Some(async move {
                let datastores = arm
                    .list_datastores(&id)
                    .await
                    .map_err(|e| crate::reconcile::execute::reported(&e));
                ListedWorkspace {
                    id,
                    workspace,
                    datastores,
                }
            })
        });
        Ok((join_all(with_datastores).await, unusable))
    };
    futures::join!(accounts, workspaces)
}
