//! reconcile(account): read the account, its keys, every workspace and datastore in scope; plan
//! what is stale; carry it out; report. An event is only a hint: every trigger ends here, and
//! running it twice changes nothing the second time.

pub(crate) mod bounded;
pub mod coalesce;
pub mod execute;
pub mod inventory;
pub mod observe;
pub mod plan;
pub mod resolve;
mod run;
mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use time::OffsetDateTime;

use crate::arm::{ArmClient, ArmError};
use crate::model::storage::{AccountKeys, KeyCreationTime, StorageAccount, cloud_storage_suffix};
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
    /// The account's `keyCreationTime` when `keys` were read, if they were read before this run:
    /// they are used only if the account still shows it (every regeneration changes it).
    pub keys_as_of: Option<KeyCreationTime>,
    /// Workspaces and datastores already listed (a sweep lists them once for every account).
    pub inventory: Option<Arc<Inventory>>,
    /// No new work starts after this instant; what is left is reported as deferred.
    pub deadline: Option<tokio::time::Instant>,
    /// List the datastores of the account's workspaces that are on other accounts (skipped, with
    /// that reason). A sweep leaves them out: each is reported under its own account there.
    pub report_other_accounts: bool,
}

impl Request {
    /// A plain reconcile of `account`, writing what is stale.
    pub fn apply(account: StorageAccountId) -> Self {
        Request {
            account,
            target: Target::Newest,
            dry_run: false,
            keys: None,
            keys_as_of: None,
            inventory: None,
            deadline: None,
            report_other_accounts: true,
        }
    }

    /// A plain reconcile that reads everything itself: the kind a duplicate can share the result
    /// of. A run from a sweep's inventory is not: the inventory may have been listed before the
    /// regeneration a later event is about, and its report leaves out other accounts' lines.
    fn is_shareable(&self) -> bool {
        !self.dry_run
            && self.target == Target::Newest
            && self.keys.is_none()
            && self.inventory.is_none()
    }
}

/// Why a run could not even start on the account.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReconcileError {
    #[error("storage account {0} was not found")]
    AccountNotFound(String),
    #[error("another run on this account did not finish before the deadline; it is retried later")]
    Busy,
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
    /// One run per account at a time in this process, duplicates folded together.
    slots: coalesce::Slots,
    /// Checks credentials against storage after a run; see `with_verification`.
    verifier: Option<verify::Verifier>,
    /// The storage DNS suffix of the cloud the ARM client talks to, for accounts whose endpoints
    /// do not tell theirs.
    cloud_suffix: Option<&'static str>,
}

impl Reconciler {
    pub fn new(arm: ArmClient, subscriptions: Vec<String>) -> Self {
        Reconciler {
            cloud_suffix: cloud_storage_suffix(&arm.options().endpoint),
            arm,
            subscriptions,
            resynced_for: Mutex::default(),
            slots: coalesce::Slots::default(),
            verifier: None,
        }
    }

    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }

    /// The ARM client, bound to `deadline` if there is one.
    pub(crate) fn arm_until(&self, deadline: Option<tokio::time::Instant>) -> ArmClient {
        match deadline {
            Some(deadline) => self.arm.with_deadline(deadline),
            None => self.arm.clone(),
        }
    }

    pub fn subscriptions(&self) -> &[String] {
        &self.subscriptions
    }

    /// Reconciles one account and reports every datastore and workspace that has to do with it.
    /// Runs on one account take turns; a plain reconcile that arrives during a run gets the
    /// result of the next run instead of running again (see [`coalesce`]).
    pub async fn reconcile(&self, request: Request) -> Result<Report, ReconcileError> {
        let slot = self.slots.get(&request.account);
        match slot.enter(request.is_shareable(), request.deadline).await? {
            coalesce::Turn::Shared(result) => result,
            coalesce::Turn::Run(ticket) => {
                let result = self.reconcile_locked(request).await;
                ticket.finish(result)
            }
        }
    }

    /// The account's slot, for a rotation that holds it across several steps.
    pub(crate) fn slot(&self, account: &StorageAccountId) -> Arc<coalesce::AccountSlot> {
        self.slots.get(account)
    }

    /// `reconcile` for a caller that already holds the account's lock.
    ///
    /// The account and its keys are read while the workspaces and datastores are being listed:
    /// neither needs the other, and on a large estate the listing is the longer of the two.
    /// Each workspace waits for the account only when it has its datastores and must decide.
    pub(crate) async fn reconcile_locked(
        &self,
        request: Request,
    ) -> Result<Report, ReconcileError> {
        let arm = self.arm_until(request.deadline);
        let account = read_account_and_keys(&arm, &request).boxed().shared();
        let run = run::Run {
            reconciler: self,
            arm: arm.clone(),
            request: &request,
            account: account.clone(),
        };
        // A failed read ends the run at once; the listing is dropped with it.
        let ((account, keys), (worked, notes)) =
            futures::try_join!(account, run.all_workspaces().map(Ok))?;

        let facts = self.facts(&account);
        let mut report = Report::new(request.account.as_str(), request.dry_run);
        match &keys {
            Some(_) => report.target_key = Some(facts.target_slot(request.target)),
            None => report.notes.push(Note {
                outcome: Outcome::Skipped,
                message: "shared-key access is disabled on the account: account keys and SAS cannot work, nothing written".into(),
            }),
        }
        let mut follow_ups = Vec::new();
        for (index, run::Worked { entry, follow_up }) in worked.into_iter().enumerate() {
            report.entries.push(entry);
            if !matches!(follow_up, run::FollowUp::Nothing) {
                follow_ups.push((index, follow_up));
            }
        }
        report.notes.extend(notes);
        if let Some(keys) = keys.as_deref() {
            let run = verify::VerifyRun {
                account: &account,
                facts: &facts,
                keys,
                target: facts.target_slot(request.target),
                deadline: request.deadline,
            };
            self.verify_credentials(run, follow_ups, request.dry_run, &mut report)
                .await;
        }
        Ok(report)
    }

    /// What the planner needs to know about `account`.
    pub fn facts(&self, account: &StorageAccount) -> AccountFacts {
        facts(account, self.cloud_suffix)
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

    /// Forgets an earlier resync, so that the next run resyncs the workspace again.
    fn forget_resync(&self, workspace: &WorkspaceId) {
        let mut memo = self.resynced_for.lock().unwrap_or_else(|p| p.into_inner());
        memo.remove(&workspace.as_str().to_ascii_lowercase());
    }
}

/// The account as read at the start of a run, and its keys (`None` when shared-key access is
/// disabled, so keys are of no use); shared by every workspace of the run.
pub(crate) type AccountRead = (Arc<StorageAccount>, Option<Arc<AccountKeys>>);

/// `GET` the account, then its keys unless the request brought them or shared keys are off.
/// Always a fresh `GET`, even in a sweep whose listing carried the account: the listing can be
/// minutes old when a long sweep reaches the account, and the key times read here decide the
/// target key and whether keys read earlier are still current.
async fn read_account_and_keys(
    arm: &ArmClient,
    request: &Request,
) -> Result<AccountRead, ReconcileError> {
    let account = read_account(arm, &request.account).await?;
    let known = request
        .keys
        .clone()
        .filter(|_| still_current(request.keys_as_of, account.key_creation_time()));
    let keys = match (account.shared_key_allowed(), known) {
        (false, _) => None,
        (true, Some(keys)) => Some(keys),
        (true, None) => Some(arm.list_keys(&request.account).await?),
    };
    Ok((Arc::new(account), keys.map(Arc::new)))
}

/// True when keys read while the account showed `as_of` are still its keys now that it shows
/// `now`: a regeneration always sets its key's creation time. Keys the request got without a time
/// (from `regenerateKey`) are current by construction.
fn still_current(as_of: Option<KeyCreationTime>, now: KeyCreationTime) -> bool {
    as_of.is_none_or(|seen| seen == now)
}

/// `GET` the account; a 404 is its own error.
pub(crate) async fn read_account(
    arm: &ArmClient,
    id: &StorageAccountId,
) -> Result<StorageAccount, ReconcileError> {
    match arm.get_storage_account(id).await {
        Ok(account) => Ok(account),
        Err(e) if e.is_not_found() => Err(ReconcileError::AccountNotFound(id.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// What the planner needs to know about an account; `cloud_suffix` stands in for the storage
/// suffix of its cloud when its endpoints do not show one (a DNS-zone endpoint, an emulator's).
pub fn facts(account: &StorageAccount, cloud_suffix: Option<&str>) -> AccountFacts {
    AccountFacts {
        name: account.name.clone(),
        endpoint_suffix: account
            .endpoint_suffix()
            .or_else(|| cloud_suffix.map(str::to_string)),
        shared_key_allowed: account.shared_key_allowed(),
        key_creation_time: account.key_creation_time(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn keys_read_earlier_are_reused_only_while_no_key_was_regenerated() {
        let read_at = KeyCreationTime {
            key1: Some(datetime!(2026-01-01 0:00 UTC)),
            key2: None,
        };
        assert!(still_current(Some(read_at), read_at));
        assert!(still_current(None, read_at));
        let key2_regenerated = KeyCreationTime {
            key2: Some(datetime!(2026-06-01 0:00 UTC)),
            ..read_at
        };
        assert!(!still_current(Some(read_at), key2_regenerated));
        let key1_regenerated = KeyCreationTime {
            key1: Some(datetime!(2026-06-01 0:00 UTC)),
            ..read_at
        };
        assert!(!still_current(Some(read_at), key1_regenerated));
    }
}
