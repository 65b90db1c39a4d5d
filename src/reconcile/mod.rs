//! reconcile(account): read the account, its keys, every workspace and datastore in scope; plan
//! what is stale; carry it out; report. An event is only a hint: every trigger ends here, and
//! running it twice changes nothing the second time.

pub mod execute;
pub mod inventory;
pub mod observe;
pub mod plan;
pub mod resolve;
mod run;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::arm::{ArmClient, ArmError};
use crate::model::storage::{AccountKeys, StorageAccount};
use crate::report::{Note, Outcome, Report};
use crate::resource_id::{StorageAccountId, WorkspaceId};

pub use inventory::Inventory;
use plan::{AccountFacts, Target};
pub use resolve::ResolveError;

/// One run on one account.
#[derive(Debug, Clone)]
pub struct Request {
    pub account: StorageAccountId,
    pub target: Target,
    /// Plan only: read everything, write nothing.
    pub dry_run: bool,
    /// Keys already known (a rotation has them from `regenerateKey`); read with `listKeys` if not.
    pub keys: Option<AccountKeys>,
    /// Workspaces and datastores already listed (a sweep lists them once for every account).
    pub inventory: Option<Arc<Inventory>>,
}

impl Request {
    /// A plain reconcile of `account`, writing what is stale.
    pub fn apply(account: StorageAccountId) -> Self {
        Request {
            account,
            target: Target::Newest,
            dry_run: false,
            keys: None,
            inventory: None,
        }
    }
}

/// Why a run could not even start on the account.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("storage account {0} was not found")]
    AccountNotFound(String),
    #[error(transparent)]
    Arm(#[from] ArmError),
}

/// Runs reconciles and rotations against ARM for the subscriptions in scope.
pub struct Reconciler {
    arm: ArmClient,
    subscriptions: Vec<String>,
    /// Per workspace (lower-case id): the creation time of the newest key at its last resync by
    /// this process. It only saves duplicate resyncs; losing it costs one extra resync.
    resynced_for: Mutex<HashMap<String, OffsetDateTime>>,
    /// One run per account at a time in this process (lower-case account id).
    account_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Reconciler {
    pub fn new(arm: ArmClient, subscriptions: Vec<String>) -> Self {
        Reconciler {
            arm,
            subscriptions,
            resynced_for: Mutex::default(),
            account_locks: Mutex::default(),
        }
    }

    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }

    pub fn subscriptions(&self) -> &[String] {
        &self.subscriptions
    }

    /// Reconciles one account and reports every datastore and workspace that has to do with it.
    /// Runs on one account are serialized, so a duplicate event waits and then finds nothing to do.
    pub async fn reconcile(&self, request: Request) -> Result<Report, ReconcileError> {
        let lock = self.account_lock(&request.account);
        let _guard = lock.lock().await;
        self.reconcile_locked(request).await
    }

    /// The lock that serializes runs on `account` in this process.
    pub(crate) fn account_lock(&self, account: &StorageAccountId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.account_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .entry(account.as_str().to_ascii_lowercase())
            .or_default()
            .clone()
    }

    /// `reconcile` for a caller that already holds the account's lock.
    pub(crate) async fn reconcile_locked(
        &self,
        request: Request,
    ) -> Result<Report, ReconcileError> {
        let account = self.read_account(&request.account).await?;
        let facts = facts(&account);
        let mut report = Report::new(request.account.as_str(), request.dry_run);
        let keys = match (facts.shared_key_allowed, request.keys.clone()) {
            (false, _) => None,
            (true, Some(keys)) => Some(keys),
            (true, None) => Some(self.arm.list_keys(&request.account).await?),
        };
        match keys {
            Some(_) => report.target_key = Some(facts.target_slot(request.target)),
            None => report.notes.push(Note {
                outcome: Outcome::Skipped,
                message: "shared-key access is disabled on the account: account keys and SAS cannot work, nothing written".into(),
            }),
        }
        let run = run::Run {
            reconciler: self,
            request: &request,
            facts: &facts,
            keys: keys.as_ref(),
        };
        let (entries, notes) = run.all_workspaces().await;
        report.entries = entries;
        report.notes.extend(notes);
        Ok(report)
    }

    pub(crate) async fn read_account(
        &self,
        id: &StorageAccountId,
    ) -> Result<StorageAccount, ReconcileError> {
        match self.arm.get_storage_account(id).await {
            Ok(account) => Ok(account),
            Err(e) if e.is_not_found() => Err(ReconcileError::AccountNotFound(id.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    fn last_resync(&self, workspace: &WorkspaceId) -> Option<OffsetDateTime> {
        let memo = self.resynced_for.lock().unwrap_or_else(|p| p.into_inner());
        memo.get(&workspace.as_str().to_ascii_lowercase()).copied()
    }

    fn remember_resync(&self, workspace: &WorkspaceId, key_time: Option<OffsetDateTime>) {
        if let Some(time) = key_time {
            let mut memo = self.resynced_for.lock().unwrap_or_else(|p| p.into_inner());
            memo.insert(workspace.as_str().to_ascii_lowercase(), time);
        }
    }
}

/// What the planner needs to know about an account.
pub fn facts(account: &StorageAccount) -> AccountFacts {
    AccountFacts {
        name: account.name.clone(),
        endpoint_suffix: account.endpoint_suffix(),
        shared_key_allowed: account.shared_key_allowed(),
        key_creation_time: account.key_creation_time(),
    }
}
