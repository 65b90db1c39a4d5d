//! The pure planning step: from what was observed in Azure to what should be done. No I/O, so
//! every rule of DESIGN.md section 3 is tested here directly.

use time::{Duration, OffsetDateTime};

use crate::model::ml::{CredentialsKind, Datastore};
use crate::model::storage::{KeyCreationTime, KeySlot};
use crate::report::printable;
use crate::report::{Held, Outcome};
use crate::resource_id::{DatastoreId, WorkspaceId};

/// A workspace refreshes its cached storage key on its own after about an hour, so a key created
/// longer ago than this is already in its cache.
pub const WORKSPACE_SELF_RESYNC: Duration = Duration::hours(1);

/// Which key stale datastores move to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any current key is fine; stale ones move to the newest key (reconcile).
    Newest,
    /// Every AccountKey datastore must end on this key (a rotation, or the completion of one
    /// that was cut short).
    Exactly(KeySlot),
}

/// What the planner needs to know about the account.
#[derive(Debug, Clone)]
pub struct AccountFacts {
    pub name: String,
    /// The storage DNS suffix of the account's cloud (`core.windows.net` and the like): read from
    /// its endpoints, else that of the cloud keysync talks to; `None` when neither tells.
    pub endpoint_suffix: Option<String>,
    pub shared_key_allowed: bool,
    pub key_creation_time: KeyCreationTime,
}

impl AccountFacts {
    /// The key stale datastores move to.
    pub fn target_slot(&self, target: Target) -> KeySlot {
        match target {
            Target::Newest => self.key_creation_time.newest(),
            Target::Exactly(slot) => slot,
        }
    }

    /// When the newest key was created, if Azure knows.
    pub fn newest_key_time(&self) -> Option<OffsetDateTime> {
        let t = self.key_creation_time;
        t.key1.max(t.key2)
    }

    /// True when `datastore` reaches this account: same account name and the same cloud. When
    /// the account's cloud is unknown, only a datastore that names no endpoint can be told to be
    /// on it (Azure fills in its own cloud's suffix).
    pub fn holds(&self, datastore: &Datastore) -> bool {
        let same_cloud = match (datastore.endpoint(), self.endpoint_suffix.as_deref()) {
            (None, _) => true,
            (Some(endpoint), Some(suffix)) => endpoint
                .trim()
                .trim_matches('.')
                .trim_end_matches('/')
                .eq_ignore_ascii_case(suffix),
            (Some(_), None) => false,
        };
        datastore.names_account(&self.name) && same_cloud
    }

    /// True when keysync must read this datastore's stored secret to decide.
    pub fn needs_secret(&self, datastore: &Datastore) -> bool {
        self.shared_key_allowed
            && self.holds(datastore)
            && datastore.credentials_kind() == CredentialsKind::AccountKey
    }
}

/// What `listSecrets` told about a datastore's stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretState {
    /// The stored key equals this current key.
    Current(KeySlot),
    /// The stored key is neither current key.
    Stale,
    /// No secret is stored.
    Missing,
    /// It could not be read; the reason is safe to report.
    Unreadable(String),
    /// The invocation's deadline came before it could be read.
    Deferred,
}

/// A datastore as observed.
#[derive(Debug, Clone)]
pub struct ObservedDatastore {
    pub id: DatastoreId,
    pub datastore: Datastore,
    /// Read only for AccountKey datastores on the account.
    pub secret: Option<SecretState>,
}

/// A workspace as observed.
#[derive(Debug, Clone)]
pub struct ObservedWorkspace {
    pub id: WorkspaceId,
    /// Its `properties.storageAccount` is the account being reconciled.
    pub default_storage_here: bool,
    /// Its datastores, or why they could not be listed.
    pub datastores: Result<Vec<ObservedDatastore>, String>,
    /// When keysync last resynced it for a key created at this time (this process only).
    pub last_resynced_for: Option<OffsetDateTime>,
}

/// The decision for one datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Store this key.
    Update(KeySlot),
    /// Nothing to write: in sync, or skipped for `reason`.
    Leave {
        outcome: Outcome,
        reason: Option<String>,
        /// A human should look at it.
        attention: bool,
    },
    /// Cannot decide; the reason says why.
    Fail(String),
    /// Nothing to do: the datastore is on another storage account (another name, or the same
    /// name on another cloud), listed only because its workspace has something on this one.
    OtherAccount,
    /// A SAS datastore on the account: no key to write. Whether its token still works is for
    /// the storage check after the run to say (and, when allowed, to re-mint); a rotation reads
    /// it to learn which key signed it.
    SasToken,
}

#[derive(Debug, Clone)]
pub struct DatastorePlan {
    pub id: DatastoreId,
    pub held: Option<Held>,
    pub step: Step,
}

/// The decisions for one workspace that has something to do with the account.
#[derive(Debug, Clone)]
pub struct WorkspacePlan {
    pub id: WorkspaceId,
    pub datastores: Vec<DatastorePlan>,
    /// `Some` when the workspace's default storage is the account: resync it or not, and why.
    pub resync: Option<ResyncDecision>,
    /// Why its datastores could not be listed.
    pub listing_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResyncDecision {
    Resync,
    UpToDate(String),
}

/// Everything to do on one account.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: KeySlot,
    pub workspaces: Vec<WorkspacePlan>,
}

/// Turns an observation into a plan. Workspaces with nothing on the account are left out.
pub fn plan(
    account: &AccountFacts,
    workspaces: &[ObservedWorkspace],
    target: Target,
    now: OffsetDateTime,
) -> Plan {
    let target_slot = account.target_slot(target);
    let workspaces = workspaces
        .iter()
        .filter_map(|ws| plan_workspace(account, ws, target, target_slot, now))
        .collect();
    Plan {
        target: target_slot,
        workspaces,
    }
}

pub fn plan_workspace(
    account: &AccountFacts,
    ws: &ObservedWorkspace,
    target: Target,
    target_slot: KeySlot,
    now: OffsetDateTime,
) -> Option<WorkspacePlan> {
    let (datastores, listing_error) = match &ws.datastores {
        Ok(list) => (
            list.iter()
                .map(|d| plan_datastore(account, d, target, target_slot))
                .collect(),
            None,
        ),
        Err(reason) => (Vec::new(), Some(reason.clone())),
    };
    let relevant = ws.default_storage_here
        || listing_error.is_some()
        || ws
            .datastores
            .as_ref()
            .is_ok_and(|l| l.iter().any(|d| account.holds(&d.datastore)));
    if !relevant {
        return None;
    }
    let resync = ws
        .default_storage_here
        .then(|| resync_decision(account, ws, &datastores, now));
    Some(WorkspacePlan {
        id: ws.id.clone(),
        datastores,
        resync,
        listing_error,
    })
}

pub fn plan_datastore(
    account: &AccountFacts,
    observed: &ObservedDatastore,
    target: Target,
    target_slot: KeySlot,
) -> DatastorePlan {
    let ds = &observed.datastore;
    let leave = |outcome, reason: &str, attention| Step::Leave {
        outcome,
        reason: Some(reason.to_string()),
        attention,
    };
    let plan = |held, step| DatastorePlan {
        id: observed.id.clone(),
        held,
        step,
    };
    if !account.holds(ds) {
        return plan(None, Step::OtherAccount);
    }
    let kind = ds.credentials_kind();
    if !account.shared_key_allowed
        && matches!(kind, CredentialsKind::AccountKey | CredentialsKind::Sas)
    {
        let reason = "shared-key access is disabled on the account: this datastore's credentials cannot work";
        return plan(None, leave(Outcome::Skipped, reason, true));
    }
    match kind {
        CredentialsKind::AccountKey => plan_account_key(observed, target, target_slot),
        CredentialsKind::Sas => plan(None, Step::SasToken),
        CredentialsKind::None => plan(
            None,
            leave(
                Outcome::Skipped,
                "identity-based access: no key stored",
                false,
            ),
        ),
        CredentialsKind::ServicePrincipal => plan(
            None,
            leave(
                Outcome::Skipped,
                "service principal credentials: no account key stored",
                false,
            ),
        ),
        CredentialsKind::Certificate => plan(
            None,
            leave(
                Outcome::Skipped,
                "certificate credentials: no account key stored",
                false,
            ),
        ),
        CredentialsKind::Other(name) => {
            let reason = format!(
                "unknown credentials type '{}': left alone",
                printable(&name, 60)
            );
            plan(
                None,
                Step::Leave {
                    outcome: Outcome::Skipped,
                    reason: Some(reason),
                    attention: true,
                },
            )
        }
        CredentialsKind::Missing => plan(
            None,
            leave(
                Outcome::Skipped,
                "no credentials type recorded: left alone",
                true,
            ),
        ),
    }
}

fn plan_account_key(
    observed: &ObservedDatastore,
    target: Target,
    target_slot: KeySlot,
) -> DatastorePlan {
    let (held, step) = match &observed.secret {
        Some(SecretState::Current(slot)) => {
            let held = Some(Held::from(*slot));
            match target {
                Target::Exactly(_) if target_slot != *slot => (held, Step::Update(target_slot)),
                _ => (
                    held,
                    Step::Leave {
                        outcome: Outcome::InSync,
                        reason: None,
                        attention: false,
                    },
                ),
            }
        }
        Some(SecretState::Stale) => (Some(Held::Stale), Step::Update(target_slot)),
        Some(SecretState::Missing) => (Some(Held::Missing), Step::Update(target_slot)),
        Some(SecretState::Unreadable(reason)) => (
            None,
            Step::Fail(format!("could not read the stored key: {reason}")),
        ),
        Some(SecretState::Deferred) => (
            None,
            Step::Leave {
                outcome: Outcome::Deferred,
                reason: Some(crate::reconcile::execute::DEFERRED.to_string()),
                attention: false,
            },
        ),
        None => (None, Step::Fail("the stored key was not read".to_string())),
    };
    DatastorePlan {
        id: observed.id.clone(),
        held,
        step,
    }
}

/// A workspace whose default storage is the account is resynced when one of its datastores
/// changes, or when the newest key is newer than what its cache can already hold: created after
/// keysync last resynced it, and less than an hour ago (older keys it has picked up on its own).
pub fn resync_decision(
    account: &AccountFacts,
    ws: &ObservedWorkspace,
    datastores: &[DatastorePlan],
    now: OffsetDateTime,
) -> ResyncDecision {
    if datastores.iter().any(|d| matches!(d.step, Step::Update(_))) {
        return ResyncDecision::Resync;
    }
    let horizon = ws.last_resynced_for.unwrap_or(now - WORKSPACE_SELF_RESYNC);
    let reason = match (account.newest_key_time(), ws.last_resynced_for) {
        (Some(created), _) if created > horizon => return ResyncDecision::Resync,
        // Every regeneration records its key's creation time.
        (None, _) => {
            "Azure records no creation time for either key, so neither was regenerated since it began to: nothing new for the workspace"
        }
        (Some(_), Some(_)) => "already resynced since the newest key was created",
        (Some(_), None) => "the newest key is over an hour old: the workspace has picked it up",
    };
    ResyncDecision::UpToDate(reason.to_string())
}

#[cfg(test)]
mod tests;
