//! reconcile(account): read the account, its keys, every workspace and datastore in scope; plan
//! what is stale; carry it out; report. An event is only a hint: every trigger ends here, and
//! running it twice changes nothing the second time.

pub mod execute;
pub mod observe;
pub mod plan;

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::join_all;
use time::OffsetDateTime;

use crate::arm::{ArmClient, ArmError};
use crate::model::storage::{AccountKeys, StorageAccount};
use crate::report::{Entry, Note, Outcome, Report};
use crate::resource_id::{StorageAccountId, WorkspaceId};

use plan::{AccountFacts, ObservedWorkspace, ResyncDecision, Target, WorkspacePlan};

/// One run on one account.
#[derive(Debug, Clone)]
pub struct Request {
    pub account: StorageAccountId,
    pub target: Target,
    /// Plan only: read everything, write nothing.
    pub dry_run: bool,
    /// Keys already known (a rotation has them from `regenerateKey`); read with `listKeys` if not.
    pub keys: Option<AccountKeys>,
}

impl Request {
    /// A plain reconcile of `account`, writing what is stale.
    pub fn apply(account: StorageAccountId) -> Self {
        Request {
            account,
            target: Target::Newest,
            dry_run: false,
            keys: None,
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

/// Runs reconciles against ARM for the subscriptions in scope.
pub struct Reconciler {
    arm: ArmClient,
    subscriptions: Vec<String>,
    /// Per workspace (lower-case id): the creation time of the newest key at its last resync by
    /// this process. It only saves duplicate resyncs; losing it costs one extra resync.
    resynced_for: Mutex<HashMap<String, OffsetDateTime>>,
}

impl Reconciler {
    pub fn new(arm: ArmClient, subscriptions: Vec<String>) -> Self {
        Reconciler {
            arm,
            subscriptions,
            resynced_for: Mutex::default(),
        }
    }

    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }

    /// Reconciles one account and reports every datastore and workspace that has to do with it.
    pub async fn reconcile(&self, request: Request) -> Result<Report, ReconcileError> {
        let account = self.read_account(&request.account).await?;
        let facts = facts(&account);
        let mut report = Report::new(request.account.as_str(), request.dry_run);
        let keys = match (facts.shared_key_allowed, request.keys.clone()) {
            (false, _) => None,
            (true, Some(keys)) => Some(keys),
            (true, None) => Some(self.arm.list_keys(&request.account).await?),
        };
        if keys.is_some() {
            report.target_key = Some(facts.target_slot(request.target));
        } else {
            report.notes.push(Note {
                outcome: Outcome::Skipped,
                message: "shared-key access is disabled on the account: account keys and SAS cannot work, nothing written".into(),
            });
        }

        let run = Run {
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

    async fn read_account(&self, id: &StorageAccountId) -> Result<StorageAccount, ReconcileError> {
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

fn facts(account: &StorageAccount) -> AccountFacts {
    AccountFacts {
        name: account.name.clone(),
        endpoint_suffix: account.endpoint_suffix(),
        shared_key_allowed: account.shared_key_allowed(),
        key_creation_time: account.key_creation_time(),
    }
}

/// The state of one reconcile while it runs.
struct Run<'a> {
    reconciler: &'a Reconciler,
    request: &'a Request,
    facts: &'a AccountFacts,
    keys: Option<&'a AccountKeys>,
}

impl Run<'_> {
    /// Every subscription in scope at once; each workspace starts as soon as its list arrives.
    async fn all_workspaces(&self) -> (Vec<Entry>, Vec<Note>) {
        let subscriptions = self
            .reconciler
            .subscriptions
            .iter()
            .map(|s| self.subscription(s));
        let mut entries = Vec::new();
        let mut notes = Vec::new();
        for result in join_all(subscriptions).await {
            match result {
                Ok(mut found) => entries.append(&mut found),
                Err(e) => notes.push(Note {
                    outcome: Outcome::Failed,
                    message: format!("could not list the workspaces: {}", execute::explain(&e)),
                }),
            }
        }
        (entries, notes)
    }

    async fn subscription(&self, subscription: &str) -> Result<Vec<Entry>, ArmError> {
        let workspaces = self.reconciler.arm.list_workspaces(subscription).await?;
        let runs = workspaces.iter().filter_map(|ws| {
            let id = WorkspaceId::parse(&ws.id).ok()?;
            let default_here = observe::default_storage_is(ws, &self.request.account);
            Some(async move { self.workspace(id, default_here).await })
        });
        Ok(join_all(runs).await.into_iter().flatten().collect())
    }

    /// Observe, plan and carry out one workspace; its resync comes after its datastore updates.
    async fn workspace(&self, id: WorkspaceId, default_storage_here: bool) -> Vec<Entry> {
        let arm = &self.reconciler.arm;
        let datastores = observe::datastores(arm, &id, self.facts, self.keys)
            .await
            .map_err(|e| execute::explain(&e));
        let observed = ObservedWorkspace {
            last_resynced_for: self.reconciler.last_resync(&id),
            id,
            default_storage_here,
            datastores,
        };
        let now = OffsetDateTime::now_utc();
        let Some(plan) = plan::plan_workspace(
            self.facts,
            &observed,
            self.request.target,
            self.facts.target_slot(self.request.target),
            now,
        ) else {
            return Vec::new();
        };
        match (self.request.dry_run, self.keys) {
            (false, Some(keys)) => self.apply(&plan, keys).await,
            _ => self.describe(&plan),
        }
    }

    /// The entries of a plan that writes nothing (a dry run, or shared-key access disabled).
    fn describe(&self, plan: &WorkspacePlan) -> Vec<Entry> {
        let dry_run = self.request.dry_run;
        let mut entries = vec_with_listing_error(plan);
        entries.extend(
            plan.datastores
                .iter()
                .map(|d| execute::planned_entry(&plan.id, d, dry_run)),
        );
        if let (Some(decision), true) = (&plan.resync, self.keys.is_some()) {
            entries.push(execute::workspace_entry(&plan.id, decision, dry_run));
        }
        entries
    }

    async fn apply(&self, plan: &WorkspacePlan, keys: &AccountKeys) -> Vec<Entry> {
        let arm = &self.reconciler.arm;
        let updates = plan
            .datastores
            .iter()
            .map(|d| execute::datastore(arm, &plan.id, d, self.facts, keys));
        let mut entries = vec_with_listing_error(plan);
        entries.extend(join_all(updates).await);
        match &plan.resync {
            Some(ResyncDecision::Resync) => {
                let entry = execute::resync(arm, &plan.id).await;
                if entry.outcome == Outcome::Resynced {
                    self.reconciler
                        .remember_resync(&plan.id, self.facts.newest_key_time());
                }
                entries.push(entry);
            }
            Some(decision) => entries.push(execute::workspace_entry(&plan.id, decision, false)),
            None => {}
        }
        entries
    }
}

fn vec_with_listing_error(plan: &WorkspacePlan) -> Vec<Entry> {
    let Some(reason) = &plan.listing_error else {
        return Vec::new();
    };
    vec![Entry {
        kind: crate::report::ObjectKind::Workspace,
        workspace: plan.id.to_string(),
        datastore: None,
        held: None,
        action: crate::report::Action::None,
        key: None,
        outcome: Outcome::Failed,
        reason: Some(format!("could not list its datastores: {reason}")),
    }]
}
