//! On-demand runs, shared by the `Reconcile` function and the command line: plan or apply for
//! one storage account or for everything in scope, and rotate one account by hand. Both go
//! through the same [`Reconciler`] as the events, so they take the same per-account locks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use crate::arm::ArmError;
use crate::config::RotationPolicy;
use crate::reconcile::{Inventory, ReconcileError, Reconciler, Request};
use crate::report::explain::{ACCOUNT_NOT_FOUND, explain};
use crate::report::{Note, Outcome, RunReport};
use crate::resource_id::StorageAccountId;
use crate::rotation::tick::{HOST_STORAGE_REASON, Sweep};
use crate::rotation::{Limits, Rotation};

/// What a run covers.
#[derive(Debug, Clone)]
pub enum Scope {
    /// One account, already resolved (see [`Reconciler::resolve_account`]).
    Account(StorageAccountId),
    /// Every account that a workspace or datastore in scope uses.
    All,
}

/// Told how a long run is getting on; every method does nothing by default.
pub trait Progress: Sync {
    /// A step has started, such as listing everything in scope.
    fn step(&self, _what: &str) {}
    /// `done` of `total` accounts are finished; `account` is the last one's name.
    fn account_done(&self, _done: usize, _total: usize, _account: &str) {}
}

/// Progress that nobody watches.
pub struct Quiet;

impl Progress for Quiet {}

/// Why a run could not even start. The messages are for the operator who asked; the
/// `Reconcile` function tells its callers less (see [`RunError::public_message`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("storage account {0} was not found: {ACCOUNT_NOT_FOUND}")]
    AccountNotFound(String),
    #[error("another run on this account did not finish in time: try again later")]
    Busy,
    #[error("{}", explain(.0))]
    Arm(ArmError),
}

impl RunError {
    /// The error without Azure's message and ids.
    pub fn public_message(&self) -> String {
        match self {
            RunError::AccountNotFound(_) | RunError::Busy => self.to_string(),
            RunError::Arm(e) => crate::report::explain::public_summary(e),
        }
    }
}

impl From<ReconcileError> for RunError {
    fn from(e: ReconcileError) -> Self {
        match e {
            ReconcileError::AccountNotFound(id) => RunError::AccountNotFound(id),
            ReconcileError::Busy => RunError::Busy,
            ReconcileError::Arm(e) => RunError::Arm(e),
        }
    }
}

/// How a run goes: only plan or also write, and when to stop starting new work.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Work not started by then is reported as deferred; `None` runs to the end.
    pub deadline: Option<Instant>,
}

/// Plans or carries out a reconcile of `scope`.
pub async fn reconcile(
    reconciler: &Reconciler,
    scope: &Scope,
    options: RunOptions,
    progress: &dyn Progress,
) -> Result<RunReport, RunError> {
    let RunOptions { dry_run, deadline } = options;
    match scope {
        Scope::Account(account) => {
            progress.step(&format!("reading storage account {}", account.name()));
            let request = Request {
                dry_run,
                deadline,
                ..Request::apply(account.clone())
            };
            let report = reconciler.reconcile(request).await?;
            Ok(RunReport::new(dry_run, vec![report], Vec::new()))
        }
        Scope::All => Ok(whole_scope(reconciler, options, progress).await),
    }
}

/// Lists everything in scope once, then reconciles each account in use, a few at a time.
async fn whole_scope(
    reconciler: &Reconciler,
    options: RunOptions,
    progress: &dyn Progress,
) -> RunReport {
    progress.step("listing storage accounts, workspaces and datastores");
    let arm = reconciler.arm_until(options.deadline);
    let inventory = Inventory::scan(&arm, reconciler.subscriptions()).await;
    let mut notes: Vec<Note> = inventory
        .failures
        .iter()
        .map(|message| Note {
            outcome: Outcome::Failed,
            message: message.clone(),
        })
        .collect();
    let total = inventory.accounts_in_use().0.len();
    let done = AtomicUsize::new(0);
    let on_done = |report: &crate::report::Report| {
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        let name = report.account.rsplit('/').next().unwrap_or_default();
        progress.account_done(n, total, name);
    };
    let sweep = Sweep {
        inventory: Arc::new(inventory),
        skip: &[],
        known: &[],
        deadline: options.deadline,
    };
    let (reports, sweep_notes) = reconciler
        .sweep_with(sweep, options.dry_run, &on_done)
        .await;
    notes.extend(sweep_notes);
    RunReport::new(options.dry_run, reports, notes)
}

/// Rotates `account` now if its key in use is due, with the timer's guards; `force` lifts the
/// age check only. An account the Function App runs on is left alone unless the policy lists
/// it, as on the timer; since a person asked for this one, that needs their attention.
pub async fn rotate(
    reconciler: &Reconciler,
    policy: &RotationPolicy,
    account: &StorageAccountId,
    force: bool,
) -> Result<Rotation, RunError> {
    if policy.is_host_storage(account.name()) && !policy.lists(account) {
        return Ok(Rotation::left(account, HOST_STORAGE_REASON.into(), true));
    }
    let limits = Limits::from_policy(policy, force);
    Ok(reconciler.rotate(account, limits, None, None).await?)
}
