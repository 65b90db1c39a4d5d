//! Carrying out a plan: in-place datastore updates and workspace resyncs, each turned into a
//! report entry.

use crate::arm::{ArmClient, ArmError, ArmErrorKind};
use secrecy::SecretString;

use crate::model::ml::{CredentialsKind, Datastore, DatastoreBody, Workspace};
use crate::model::storage::{AccountKeys, KeySlot};
use crate::report::{Action, Entry, ObjectKind, Outcome, printable};
use crate::resource_id::{DatastoreId, WorkspaceId};

use super::plan::{AccountFacts, DatastorePlan, ResyncDecision, Step};

/// The report entry for a datastore whose plan needs no write (or in a dry run).
pub fn planned_entry(workspace: &WorkspaceId, ds: &DatastorePlan, dry_run: bool) -> Entry {
    let mut entry = datastore_entry(workspace, ds);
    match &ds.step {
        Step::Update(slot) => {
            entry.action = Action::UpdateKey;
            entry.key = Some(*slot);
            entry.outcome = if dry_run {
                Outcome::Planned
            } else {
                Outcome::Failed
            };
        }
        Step::Leave {
            outcome,
            reason,
            attention,
        } => {
            entry.attention = *attention;
            entry.action = if *outcome == Outcome::Skipped {
                Action::Skip
            } else {
                Action::None
            };
            entry.outcome = *outcome;
            entry.reason = reason.clone();
        }
        Step::Fail(reason) => {
            entry.outcome = Outcome::Failed;
            entry.reason = Some(reason.clone());
        }
        Step::OtherAccount => {
            entry.action = Action::Skip;
            entry.outcome = Outcome::Skipped;
            entry.reason = Some(crate::report::ON_ANOTHER_ACCOUNT.to_string());
            entry.other_account = true;
        }
        // Until the storage check has spoken, nobody has anything to do.
        Step::SasToken => {
            entry.action = Action::Skip;
            entry.outcome = Outcome::Skipped;
            entry.reason = Some(crate::report::SAS_TOKEN.to_string());
            entry.sas_token = true;
        }
    }
    entry
}

fn datastore_entry(workspace: &WorkspaceId, ds: &DatastorePlan) -> Entry {
    Entry {
        kind: ObjectKind::Datastore,
        workspace: workspace.to_string(),
        datastore: Some(ds.id.name().to_string()),
        held: ds.held,
        action: Action::None,
        key: None,
        outcome: Outcome::InSync,
        reason: None,
        attention: false,
        other_account: false,
        sas_token: false,
        unreadable: false,
        verification: None,
    }
}

/// How much of a name keysync cannot use a report shows.
const UNUSABLE_NAME_CHARS: usize = 80;

/// The entry of a listed datastore that neither its id nor its name can address, so that no
/// request can be made about it: reported, and left alone.
pub fn unusable_datastore(workspace: &WorkspaceId, ds: &Datastore) -> Entry {
    let label = [ds.name(), ds.id().unwrap_or_default()]
        .into_iter()
        .map(|text| printable(text, UNUSABLE_NAME_CHARS))
        .find(|text| !text.is_empty())
        .unwrap_or_else(|| "(no name)".to_string());
    Entry {
        kind: ObjectKind::Datastore,
        workspace: workspace.to_string(),
        datastore: Some(label),
        held: None,
        action: Action::Skip,
        key: None,
        outcome: Outcome::Skipped,
        reason: Some("neither its id nor its name can address it: left alone".into()),
        attention: true,
        other_account: false,
        sas_token: false,
        unreadable: true,
        verification: None,
    }
}

/// The entry of a listed workspace whose id is not a workspace's ARM id, so that none of its
/// datastores can be listed: reported, and left alone.
pub fn unusable_workspace(workspace: &Workspace) -> Entry {
    let label = [workspace.id.as_str(), workspace.name.as_str()]
        .into_iter()
        .map(|text| printable(text, UNUSABLE_NAME_CHARS))
        .find(|text| !text.is_empty())
        .unwrap_or_else(|| "(no id)".to_string());
    Entry {
        kind: ObjectKind::Workspace,
        workspace: label,
        datastore: None,
        held: None,
        action: Action::Skip,
        key: None,
        outcome: Outcome::Skipped,
        reason: Some(
            "its id is not a workspace's ARM id, so its datastores cannot be listed: left alone"
                .into(),
        ),
        attention: true,
        other_account: false,
        sas_token: false,
        unreadable: true,
        verification: None,
    }
}

/// Carries out one datastore's plan and reports how it went; with the datastore as stored when
/// it was updated, so that the storage check after the run need not read it again.
pub async fn datastore(
    arm: &ArmClient,
    workspace: &WorkspaceId,
    ds: &DatastorePlan,
    facts: &AccountFacts,
    keys: &AccountKeys,
) -> (Entry, Option<Datastore>) {
    let mut entry = planned_entry(workspace, ds, false);
    let Step::Update(slot) = ds.step else {
        return (entry, None);
    };
    if past_deadline(arm) {
        defer(&mut entry);
        return (entry, None);
    }
    let mut stored = None;
    match update_in_place(arm, &ds.id, facts, keys, slot).await {
        Ok(datastore) => {
            entry.outcome = Outcome::Updated;
            stored = Some(datastore);
        }
        Err(UpdateError::Changed) => skip(&mut entry, CHANGED),
        Err(UpdateError::NoCredentials) => skip(&mut entry, NO_CREDENTIALS),
        Err(UpdateError::Arm(e)) if e.kind == ArmErrorKind::Deadline => defer(&mut entry),
        Err(UpdateError::Arm(e)) => entry.reason = Some(reported(&e)),
    }
    (entry, stored)
}

/// True when the handle's deadline has passed: no new work may start.
fn past_deadline(arm: &ArmClient) -> bool {
    arm.deadline()
        .is_some_and(|d| tokio::time::Instant::now() >= d)
}

/// The entry of a workspace whose datastores the deadline kept from being listed.
pub fn deferred_listing(workspace: &WorkspaceId) -> Entry {
    let mut entry = workspace_entry(workspace, &ResyncDecision::UpToDate(String::new()), false);
    defer(&mut entry);
    entry
}

/// Why work was left for later.
pub const DEFERRED: &str =
    "the invocation's deadline came first; a redelivery or the next sweep does it";

/// Marks work the deadline kept from being done; a redelivery or the next sweep does it.
fn defer(entry: &mut Entry) {
    entry.outcome = Outcome::Deferred;
    entry.reason = Some(DEFERRED.into());
}

/// Marks a datastore left alone after all, and why.
fn skip(entry: &mut Entry, reason: &str) {
    entry.action = Action::Skip;
    entry.outcome = Outcome::Skipped;
    entry.reason = Some(reason.into());
}

/// Why a datastore that was re-pointed or re-typed while keysync worked on it was left alone.
pub(crate) const CHANGED: &str = "changed while keysync was working: left alone";
/// Why a datastore without a credentials object was left alone.
pub(crate) const NO_CREDENTIALS: &str = "no credentials object to update: left alone";

/// Why a datastore's secret was not replaced.
pub(crate) enum UpdateError {
    /// It is no longer a datastore of that kind on the account: re-pointed or re-typed since
    /// it was read.
    Changed,
    /// Its resource has no credentials object to put the secret in.
    NoCredentials,
    Arm(ArmError),
}

impl From<ArmError> for UpdateError {
    fn from(e: ArmError) -> Self {
        UpdateError::Arm(e)
    }
}

/// GET the datastore, replace only its secret, PUT it back whole; returns it as stored. Never
/// deletes.
async fn update_in_place(
    arm: &ArmClient,
    id: &DatastoreId,
    facts: &AccountFacts,
    keys: &AccountKeys,
    slot: KeySlot,
) -> Result<Datastore, UpdateError> {
    let key = keys.get(slot);
    replace_secrets(arm, id, facts, CredentialsKind::AccountKey, |current| {
        current.with_account_key(key)
    })
    .await
}

/// Stores `token` as a SAS datastore's token, in place like a key update; returns the datastore
/// as stored.
pub(crate) async fn store_sas_token(
    arm: &ArmClient,
    id: &DatastoreId,
    facts: &AccountFacts,
    token: &SecretString,
) -> Result<Datastore, UpdateError> {
    replace_secrets(arm, id, facts, CredentialsKind::Sas, |current| {
        current.with_sas_token(token)
    })
    .await
}

/// [`store_sas_token`]'s error in words; Azure's message, when an ARM call failed, goes to the
/// log (see [`reported`]).
pub(crate) fn explain_update(e: UpdateError) -> String {
    match e {
        UpdateError::Changed => format!("the datastore {CHANGED}"),
        UpdateError::NoCredentials => NO_CREDENTIALS.to_string(),
        UpdateError::Arm(e) => reported(&e),
    }
}

/// GET the datastore, check it still is a `kind` datastore on the account, replace its secrets
/// with what `with_secret` makes of it, PUT it back whole; the datastore as stored.
async fn replace_secrets(
    arm: &ArmClient,
    id: &DatastoreId,
    facts: &AccountFacts,
    kind: CredentialsKind,
    with_secret: impl FnOnce(&Datastore) -> Option<DatastoreBody>,
) -> Result<Datastore, UpdateError> {
    let current = arm.get_datastore(id).await?;
    // Someone may have re-pointed or re-typed the datastore since it was listed.
    if !facts.holds(&current) || current.credentials_kind() != kind {
        return Err(UpdateError::Changed);
    }
    let body = with_secret(&current).ok_or(UpdateError::NoCredentials)?;
    let stored = arm.put_datastore(id, &body).await?;
    // Azure answers with the resource as stored; an answer that does not look like it leaves
    // the resource as read, which is what was written but for the secret.
    Ok(match facts.holds(&stored) {
        true => stored,
        false => current,
    })
}

/// The report entry for a workspace whose default storage is the account.
pub fn workspace_entry(workspace: &WorkspaceId, decision: &ResyncDecision, dry_run: bool) -> Entry {
    let (action, outcome, reason) = match decision {
        ResyncDecision::Resync if dry_run => (Action::Resync, Outcome::Planned, None),
        ResyncDecision::Resync => (Action::Resync, Outcome::Failed, None),
        ResyncDecision::UpToDate(reason) => (Action::None, Outcome::InSync, Some(reason.clone())),
    };
    Entry {
        kind: ObjectKind::Workspace,
        workspace: workspace.to_string(),
        datastore: None,
        held: None,
        action,
        key: None,
        outcome,
        reason,
        attention: false,
        other_account: false,
        sas_token: false,
        unreadable: false,
        verification: None,
    }
}

/// Resyncs a workspace's keys and reports how it went.
pub async fn resync(arm: &ArmClient, workspace: &WorkspaceId) -> Entry {
    let mut entry = workspace_entry(workspace, &ResyncDecision::Resync, false);
    if past_deadline(arm) {
        defer(&mut entry);
        return entry;
    }
    match arm.resync_keys(workspace).await {
        Ok(()) => entry.outcome = Outcome::Resynced,
        // Azure finishes an accepted resync on its own.
        Err(e) if e.kind == ArmErrorKind::StillRunning => {
            entry.outcome = Outcome::Accepted;
            entry.reason =
                Some("resync accepted by Azure and still running at the deadline".to_string());
        }
        // Accepted, but not followed to the end: the message says why (a refused poll names the
        // permission keysync lacks).
        Err(e) if e.kind == ArmErrorKind::Unconfirmed => {
            entry.outcome = Outcome::Accepted;
            entry.reason = Some(format!("resync {}", e.message));
        }
        Err(e) if e.kind == ArmErrorKind::Deadline => defer(&mut entry),
        Err(e) => entry.reason = Some(reported(&e)),
    }
    entry
}

/// The error as a report tells it, without Azure's message, which goes to the log (see
/// [`crate::report::explain::reported`]).
pub fn reported(e: &ArmError) -> String {
    crate::report::explain::reported(e)
}
