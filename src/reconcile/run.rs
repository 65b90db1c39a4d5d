//! One reconcile while it runs: every workspace observed, planned and carried out on its own, so
//! that each starts as soon as its listing arrives.

use futures::future::join_all;
use time::OffsetDateTime;

use super::plan::{self, AccountFacts, ObservedWorkspace, ResyncDecision, WorkspacePlan};
use super::{Reconciler, Request, execute, observe};
use crate::arm::{ArmClient, ArmError};
use crate::model::ml::{Datastore, Workspace};
use crate::model::storage::AccountKeys;
use crate::report::{Action, Entry, Note, ObjectKind, Outcome};
use crate::resource_id::WorkspaceId;

pub(super) struct Run<'a> {
    pub reconciler: &'a Reconciler,
    /// The ARM client, bound to the request's deadline.
    pub arm: ArmClient,
    pub request: &'a Request,
    pub facts: &'a AccountFacts,
    pub keys: Option<&'a AccountKeys>,
}

impl Run<'_> {
    /// Every workspace in scope, from the request's inventory or listed now.
    pub async fn all_workspaces(&self) -> (Vec<Entry>, Vec<Note>) {
        if let Some(inventory) = &self.request.inventory {
            let runs = inventory
                .workspaces
                .iter()
                .map(|ws| self.workspace(ws.id.clone(), &ws.workspace, ws.datastores.clone()));
            let notes = inventory
                .failures
                .iter()
                .map(|f| failed_note(f.clone()))
                .collect();
            return (join_all(runs).await.into_iter().flatten().collect(), notes);
        }
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
                Err(e) => notes.push(failed_note(format!(
                    "could not list the workspaces: {}",
                    execute::explain(&e)
                ))),
            }
        }
        (entries, notes)
    }

    async fn subscription(&self, subscription: &str) -> Result<Vec<Entry>, ArmError> {
        let workspaces = self.arm.list_workspaces(subscription).await?;
        let runs = workspaces.iter().filter_map(|ws| {
            let id = WorkspaceId::parse(&ws.id).ok()?;
            Some(async move {
                let listed = self
                    .reconciler
                    .arm
                    .list_datastores(&id)
                    .await
                    .map_err(|e| execute::explain(&e));
                self.workspace(id, ws, listed).await
            })
        });
        Ok(join_all(runs).await.into_iter().flatten().collect())
    }

    /// Observe, plan and carry out one workspace; its resync comes after its datastore updates.
    async fn workspace(
        &self,
        id: WorkspaceId,
        workspace: &Workspace,
        listed: Result<Vec<Datastore>, String>,
    ) -> Vec<Entry> {
        let arm = &self.arm;
        let datastores = match listed {
            Ok(listed) => Ok(observe::datastores(arm, &id, listed, self.facts, self.keys).await),
            Err(reason) => Err(reason),
        };
        let observed = ObservedWorkspace {
            last_resynced_for: self.reconciler.last_resync(&id),
            default_storage_here: observe::default_storage_is(workspace, &self.request.account),
            id,
            datastores,
        };
        let target = self.request.target;
        let now = OffsetDateTime::now_utc();
        let Some(plan) = plan::plan_workspace(
            self.facts,
            &observed,
            target,
            self.facts.target_slot(target),
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
        let mut entries = listing_error_entry(plan);
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
        let arm = &self.arm;
        let updates = plan
            .datastores
            .iter()
            .map(|d| execute::datastore(arm, &plan.id, d, self.facts, keys));
        let mut entries = listing_error_entry(plan);
        entries.extend(join_all(updates).await);
        match &plan.resync {
            Some(ResyncDecision::Resync) => {
                let entry = execute::resync(arm, &plan.id).await;
                if matches!(entry.outcome, Outcome::Resynced | Outcome::Accepted) {
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
        verification: None,
    }]
}
