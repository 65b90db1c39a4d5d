//! One reconcile while it runs: every workspace observed, planned and carried out on its own, so
//! that each starts as soon as its listing arrives.

use futures::StreamExt;
use futures::future::{BoxFuture, Shared, join_all};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::inventory::ListedWorkspace;
use super::plan::{
    self, AccountFacts, DatastorePlan, ObservedDatastore, ObservedWorkspace, ResyncDecision, Step,
    WorkspacePlan,
};
use super::verify::Subject;
use super::{AccountRead, ReconcileError, Reconciler, Request, bounded, execute, observe};
use crate::arm::{ArmClient, ArmError, ArmErrorKind};
use crate::model::ml::{Datastore, Workspace};
use crate::model::storage::AccountKeys;
use crate::report::{Action, Entry, Note, ObjectKind, Outcome};
use crate::resource_id::{StorageAccountId, WorkspaceId};

/// The account's read, awaited by every workspace of the run.
pub(super) type SharedRead<'a> = Shared<BoxFuture<'a, Result<AccountRead, ReconcileError>>>;

/// How many workspaces of one subscription are worked on at once; their ARM requests still
/// queue for the subscription's concurrency limit, so this only bounds the futures held.
const WORKSPACES_IN_FLIGHT: usize = 1024;

/// A report entry, and what the step after the run (the storage check) is to do with it.
pub(super) struct Worked {
    pub entry: Entry,
    pub follow_up: FollowUp,
}

/// What the storage check after the run does with an entry.
pub(super) enum FollowUp {
    Nothing,
    /// Check the datastore's credential, with what the run already knows of it.
    Check(Subject),
    /// The entry is the resync of this workspace (whose default storage is the account): it is
    /// resynced again if the check changes one of its datastores.
    Resync(WorkspaceId),
}

impl Worked {
    fn plain(entry: Entry) -> Self {
        Worked {
            entry,
            follow_up: FollowUp::Nothing,
        }
    }
}

fn plain(entries: Vec<Entry>) -> Vec<Worked> {
    entries.into_iter().map(Worked::plain).collect()
}

pub(super) struct Run<'a> {
    pub reconciler: &'a Reconciler,
    /// The ARM client, bound to the request's deadline.
    pub arm: ArmClient,
    pub request: &'a Request,
    /// The account and its keys, read while the workspaces are listed.
    pub account: SharedRead<'a>,
}

impl Run<'_> {
    /// Every workspace in scope, from the request's inventory or listed now; and the listing's
    /// failures when it was listed now. An inventory's failures are its lister's to report, once
    /// for the whole scope rather than again under every account run from it.
    pub async fn all_workspaces(&self) -> (Vec<Worked>, Vec<Note>) {
        if let Some(inventory) = &self.request.inventory {
            // Only the workspaces that may have to do with the account get a future: a sweep
            // runs one of these per account, and most workspaces concern few accounts.
            let runs = inventory
                .workspaces
                .iter()
                .filter(|ws| may_concern(ws, &self.request.account))
                .map(|ws| self.workspace(ws.id.clone(), &ws.workspace, self.listed(ws)));
            let mut worked: Vec<Worked> = join_all(runs).await.into_iter().flatten().collect();
            worked.extend(
                inventory
                    .unusable
                    .iter()
                    .filter_map(|ws| self.unusable_workspace(ws))
                    .flatten(),
            );
            return (worked, Vec::new());
        }
        let subscriptions = self
            .reconciler
            .subscriptions
            .iter()
            .map(|s| self.subscription(s));
        let mut entries = Vec::new();
        let mut notes = Vec::new();
        for (mut found, failure) in join_all(subscriptions).await {
            // Workspaces on the pages before a failed one have been worked on already: their
            // entries stay, so that every change made in Azure is reported.
            entries.append(&mut found);
            if let Some(e) = failure {
                notes.push(failed_note(format!(
                    "could not list all the workspaces: {}",
                    execute::reported(&e)
                )));
            }
        }
        (entries, notes)
    }

    /// The workspaces of one subscription, each started as soon as its page of the listing
    /// arrives rather than after the last page; entries come back in listing order, with the
    /// listing's failure if a page could not be read.
    async fn subscription(&self, subscription: &str) -> (Vec<Worked>, Option<ArmError>) {
        let (pages, listed) = futures::channel::mpsc::unbounded::<Vec<Workspace>>();
        let listing = async move {
            let send = |page| {
                // The receiver lives until this function returns: sending cannot fail.
                let _ = pages.unbounded_send(page);
            };
            self.arm.list_workspaces_by_page(subscription, send).await
        };
        let workspaces = listed.flat_map(futures::stream::iter).map(|ws| async move {
            match WorkspaceId::parse(&ws.id) {
                Ok(id) => self.listed_workspace(id, ws).await,
                Err(_) => self.unusable_workspace(&ws).unwrap_or_default(),
            }
        });
        let work = bounded::in_order(workspaces, WORKSPACES_IN_FLIGHT, |_| {});
        let (listed, entries) = futures::join!(listing, work);
        (entries.into_iter().flatten().collect(), listed.err())
    }

    /// Lists one workspace's datastores, then works on it.
    async fn listed_workspace(&self, id: WorkspaceId, workspace: Workspace) -> Vec<Worked> {
        let listed = match self.arm.list_datastores(&id).await {
            Err(e) if e.kind == ArmErrorKind::Deadline => {
                return plain(vec![execute::deferred_listing(&id)]);
            }
            Err(e) => Err(execute::reported(&e)),
            Ok(all) => Ok(all.into_iter().filter(|d| self.needs(d)).collect()),
        };
        self.workspace(id, &workspace, listed).await
    }

    /// The entry of a listed workspace whose id keysync cannot use, when it may have to do with
    /// the account: its default storage is the account, or cannot be told.
    fn unusable_workspace(&self, workspace: &Workspace) -> Option<Vec<Worked>> {
        let default = workspace.properties.storage_account.as_deref();
        let elsewhere = default
            .and_then(|id| StorageAccountId::parse(id).ok())
            .is_some_and(|id| id != self.request.account);
        (!elsewhere).then(|| plain(vec![execute::unusable_workspace(workspace)]))
    }

    /// A listed workspace's datastores as this run needs them (see [`Run::needs`]).
    fn listed(&self, ws: &ListedWorkspace) -> Result<Vec<Datastore>, String> {
        match &ws.datastores {
            Ok(all) => Ok(all.iter().filter(|d| self.needs(d)).cloned().collect()),
            Err(reason) => Err(reason.clone()),
        }
    }

    /// True for a datastore this run works on or reports: every one when the report lists the
    /// other accounts' too, else only those that name the account.
    fn needs(&self, datastore: &Datastore) -> bool {
        self.request.report_other_accounts || names(datastore, &self.request.account)
    }

    /// Observe, plan and carry out one workspace; its resync comes after its datastore updates.
    async fn workspace(
        &self,
        id: WorkspaceId,
        workspace: &Workspace,
        listed: Result<Vec<Datastore>, String>,
    ) -> Vec<Worked> {
        // A failed read ends the whole run (see `reconcile_locked`); nothing to do here then.
        let Ok((account, keys)) = self.account.clone().await else {
            return Vec::new();
        };
        let facts = self.reconciler.facts(&account);
        let keys = keys.as_deref();
        let arm = &self.arm;
        let (datastores, stale_keys, unusable) = match listed {
            Ok(listed) => {
                let observed = observe::datastores(arm, &id, listed, &facts, keys).await;
                let unusable = observed
                    .unusable
                    .iter()
                    .filter(|ds| facts.holds(ds) || ds.account_name().is_none())
                    .map(|ds| Worked::plain(execute::unusable_datastore(&id, ds)))
                    .collect();
                (Ok(observed.datastores), observed.stale_keys, unusable)
            }
            Err(reason) => (Err(reason), Vec::new(), Vec::new()),
        };
        let observed = ObservedWorkspace {
            last_resynced_for: self.reconciler.last_resync(&id),
            default_storage_here: observe::default_storage_is(workspace, &self.request.account),
            id,
            datastores,
        };
        let target = self.request.target;
        let now = OffsetDateTime::now_utc();
        let Some(plan) =
            plan::plan_workspace(&facts, &observed, target, facts.target_slot(target), now)
        else {
            return unusable;
        };
        let mut worked = unusable;
        match (self.request.dry_run, keys) {
            (false, Some(keys)) => {
                let listed = observed.datastores.as_deref().unwrap_or(&[]);
                let seen = Seen { listed, stale_keys };
                worked.extend(self.apply(&plan, seen, &facts, keys).await);
            }
            _ => worked.extend(plain(self.describe(&plan, keys.is_some()))),
        }
        worked
    }

    /// The entries of a plan that writes nothing (a dry run, or shared-key access disabled).
    fn describe(&self, plan: &WorkspacePlan, has_keys: bool) -> Vec<Entry> {
        let dry_run = self.request.dry_run;
        let mut entries = listing_error_entry(plan);
        entries.extend(
            plan.datastores
                .iter()
                .map(|d| execute::planned_entry(&plan.id, d, dry_run)),
        );
        if let (Some(decision), true) = (&plan.resync, has_keys) {
            entries.push(execute::workspace_entry(&plan.id, decision, dry_run));
        }
        entries
    }

    /// Updates the stale datastores, then resyncs the workspace if its plan says so.
    async fn apply(
        &self,
        plan: &WorkspacePlan,
        seen: Seen<'_>,
        facts: &AccountFacts,
        keys: &AccountKeys,
    ) -> Vec<Worked> {
        let arm = &self.arm;
        let is_update = |d: &&DatastorePlan| matches!(d.step, Step::Update(_));
        let updates = plan
            .datastores
            .iter()
            .filter(is_update)
            .map(|d| execute::datastore(arm, &plan.id, d, facts, keys));
        let updated = join_all(updates).await;
        let mut worked = plain(listing_error_entry(plan));
        worked.extend(in_plan_order(plan, updated, seen, facts));
        worked.extend(self.resync(plan, facts).await);
        worked
    }

    /// The workspace's own line, resynced first when its plan says so.
    async fn resync(&self, plan: &WorkspacePlan, facts: &AccountFacts) -> Option<Worked> {
        let entry = match plan.resync.as_ref()? {
            ResyncDecision::Resync => {
                let entry = execute::resync(&self.arm, &plan.id).await;
                if matches!(entry.outcome, Outcome::Resynced | Outcome::Accepted) {
                    self.reconciler
                        .remember_resync(&plan.id, facts.newest_key_time());
                }
                entry
            }
            decision => execute::workspace_entry(&plan.id, decision, false),
        };
        let follow_up = FollowUp::Resync(plan.id.clone());
        Some(Worked { entry, follow_up })
    }
}

/// The datastores' lines in plan order (the updates' where they were, the rest as planned), each
/// with what the storage check needs of it.
fn in_plan_order(
    plan: &WorkspacePlan,
    updated: Vec<(Entry, Option<Datastore>)>,
    seen: Seen<'_>,
    facts: &AccountFacts,
) -> Vec<Worked> {
    let mut updated = updated.into_iter();
    let Seen { listed, stale_keys } = seen;
    let mut stale_keys = stale_keys.into_iter();
    let mut worked = Vec::with_capacity(plan.datastores.len());
    for (index, d) in plan.datastores.iter().enumerate() {
        let (entry, stored) = match d.step {
            Step::Update(_) => updated
                .next()
                .unwrap_or_else(|| (execute::planned_entry(&plan.id, d, false), None)),
            _ => (execute::planned_entry(&plan.id, d, false), None),
        };
        let stale_key = stale_keys.next().flatten();
        let check = observation(listed, index, d)
            .and_then(|o| Subject::of(o, stale_key, &entry, stored, facts));
        let follow_up = check.map_or(FollowUp::Nothing, FollowUp::Check);
        worked.push(Worked { entry, follow_up });
    }
    worked
}

/// What was observed of a workspace's datastores, beside the plan made from it.
struct Seen<'a> {
    /// The datastores as planned, in the same order as the plan's.
    listed: &'a [ObservedDatastore],
    /// For each, the stored key when it is neither current key.
    stale_keys: Vec<Option<SecretString>>,
}

/// The observation the plan's `index`-th datastore was made from. The planner keeps the
/// listing's order; the id is compared all the same, so that a planner that one day leaves some
/// out costs a check rather than checking the wrong datastore.
fn observation<'a>(
    listed: &'a [ObservedDatastore],
    index: usize,
    planned: &DatastorePlan,
) -> Option<&'a ObservedDatastore> {
    listed.get(index).filter(|o| o.id == planned.id)
}

/// True when a listed workspace may have to do with `account`: its default storage, a
/// datastore naming the account (the planner then checks the cloud too), or a failed listing.
fn may_concern(ws: &ListedWorkspace, account: &StorageAccountId) -> bool {
    observe::default_storage_is(&ws.workspace, account)
        || ws
            .datastores
            .as_ref()
            .map_or(true, |list| list.iter().any(|d| names(d, account)))
}

/// True when the datastore names `account` (whatever its cloud: the planner checks that).
fn names(datastore: &Datastore, account: &StorageAccountId) -> bool {
    datastore.names_account(account.name())
}

fn failed_note(message: String) -> Note {
    Note {
        outcome: Outcome::Failed,
        message,
    }
}

fn listing_error_entry(plan: &WorkspacePlan) -> Vec<Entry> {
    let Some(reason) = &plan.listing_error else {
        return Vec::new();
    };
    vec![Entry {
        kind: ObjectKind::Workspace,
        workspace: plan.id.to_string(),
        datastore: None,
        held: None,
        action: Action::None,
        key: None,
        outcome: Outcome::Failed,
        reason: Some(format!("could not list its datastores: {reason}")),
        attention: false,
        other_account: false,
        sas_token: false,
        unreadable: false,
        verification: None,
    }]
}
