//! rotate(account): find the key the account's datastores use, and when it is due, regenerate
//! the other one and move everything to it, so that no datastore ever holds an invalid key.
//! Decisions come from Azure's state (`keyCreationTime`, stored secrets), never from the timer.

pub mod decide;
mod sas;
pub mod tick;

use std::sync::Arc;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::arm::ArmClient;
use crate::model::storage::{AccountKeys, KeyCreationTime, KeySlot, StorageAccount};
use crate::reconcile::plan::Target;
use crate::reconcile::{Inventory, ReconcileError, Reconciler, Request, read_account};
use crate::report::{Held, ObjectKind, Outcome, Report};
use crate::resource_id::StorageAccountId;

pub use decide::{Decision, Limits};

/// What became of one account's rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    pub account: String,
    /// `rotated`; `completed` (no key regenerated: the datastores moved to the key an earlier
    /// rotation created, which was cut short); `incomplete` (rotated or completing, but some
    /// datastore moves failed or were left for later: the next tick completes them); `left`; or
    /// `failed`.
    pub outcome: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regenerated: Option<KeySlot>,
    /// The reconcile that moved every datastore to the new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// A human should look at it.
    #[serde(default)]
    pub attention: bool,
}

impl Rotation {
    /// An account left alone, and why.
    pub fn left(account: &StorageAccountId, reason: String, attention: bool) -> Self {
        Rotation {
            account: account.to_string(),
            outcome: "left".into(),
            reason,
            regenerated: None,
            report: None,
            attention,
        }
    }

    /// An account whose keys and datastores were changed, with the reconcile that did it; it is
    /// `incomplete` instead of `outcome` when that reconcile failed or deferred some of its work,
    /// and needs a person's attention when something failed.
    fn done(
        account: &StorageAccountId,
        outcome: &str,
        reason: String,
        regenerated: Option<KeySlot>,
        report: Report,
    ) -> Self {
        let (outcome, reason) = match report.needs_retry() {
            false => (outcome, reason),
            true => ("incomplete", format!("{reason}; {}", left_over(&report))),
        };
        Rotation {
            account: account.to_string(),
            outcome: outcome.into(),
            reason,
            regenerated,
            attention: report.has_failures(),
            report: Some(report),
        }
    }

    pub fn failed(account: &StorageAccountId, reason: String) -> Self {
        Rotation {
            account: account.to_string(),
            outcome: "failed".into(),
            reason,
            regenerated: None,
            report: None,
            attention: true,
        }
    }

    /// True when nothing failed, the follow-up reconcile included.
    pub fn succeeded(&self) -> bool {
        self.outcome != "failed" && !self.report.as_ref().is_some_and(Report::has_failures)
    }

    /// Writes one `tracing` line for the decision, then the report's lines.
    pub fn log(&self) {
        let account = self.account.rsplit('/').next().unwrap_or(&self.account);
        match (self.outcome.as_str(), self.attention) {
            ("failed", _) | ("incomplete", true) => {
                tracing::error!(account, outcome = %self.outcome, reason = %self.reason, "rotation")
            }
            (_, true) | ("incomplete", _) => {
                tracing::warn!(account, outcome = %self.outcome, reason = %self.reason, "rotation")
            }
            _ => {
                tracing::info!(account, outcome = %self.outcome, reason = %self.reason, "rotation")
            }
        }
        if let Some(report) = &self.report {
            report.log();
        }
    }
}

impl Reconciler {
    /// Rotates `account` if its key in use is due, or completes a rotation that was cut short.
    /// Holds the account throughout, so an event for the same account (keysync's own
    /// regeneration included) waits and then finds everything in sync. Nothing is regenerated
    /// once `deadline` has passed.
    pub async fn rotate(
        &self,
        account: &StorageAccountId,
        limits: Limits,
        inventory: Option<Arc<Inventory>>,
        deadline: Option<Instant>,
    ) -> Result<Rotation, ReconcileError> {
        let (rotation, _) = self
            .rotate_keeping_keys(account, limits, inventory, deadline)
            .await?;
        Ok(rotation)
    }

    /// [`rotate`](Self::rotate), and the keys it read when it left the account alone, so that
    /// the sweep of the same tick need not read them again.
    pub(crate) async fn rotate_keeping_keys(
        &self,
        account: &StorageAccountId,
        limits: Limits,
        inventory: Option<Arc<Inventory>>,
        deadline: Option<Instant>,
    ) -> Result<(Rotation, Option<KnownKeys>), ReconcileError> {
        let slot = self.slot(account);
        let _ticket = slot.hold(deadline).await?;
        let arm = self.arm_until(deadline);
        let scope = Scope {
            account,
            inventory,
            deadline,
        };
        let look = match self.look(&arm, &scope, limits).await? {
            Ok(look) => look,
            Err(left) => return Ok((left, None)),
        };
        let rotation = match look.decision.clone() {
            Decision::Leave { reason, attention } => {
                let known = KnownKeys {
                    account: account.clone(),
                    keys: look.keys,
                    as_of: look.account.key_creation_time(),
                };
                return Ok((Rotation::left(account, reason, attention), Some(known)));
            }
            Decision::Complete { target, reason } => {
                let as_of = Some(look.account.key_creation_time());
                let request = scope.request(Target::Exactly(target), false, look.keys, as_of);
                let report = self.reconcile_locked(request).await?;
                Rotation::done(account, "completed", reason, None, report)
            }
            Decision::Rotate { regenerate, reason } => {
                self.regenerate(&arm, &scope, look, regenerate, reason)
                    .await?
            }
        };
        Ok((rotation, None))
    }

    /// Regenerates `standby` and moves every datastore to it, unless the key times moved since
    /// the decision or the deadline passed.
    async fn regenerate(
        &self,
        arm: &ArmClient,
        scope: &Scope<'_>,
        look: Look,
        standby: KeySlot,
        reason: String,
    ) -> Result<Rotation, ReconcileError> {
        let account = scope.account;
        let reminted = match self.clear_sas_tokens(arm, scope, &look, standby).await {
            Ok(reminted) => reminted,
            Err(not_rotated) => return Ok(not_rotated),
        };
        let read_again = read_account(arm, account).await?.key_creation_time();
        // A regeneration that the deadline cuts short leaves the datastores split between the
        // keys until the next tick: start one only with the time to move them all.
        let margin = look.took.max(LEAST_MARGIN);
        let too_late = scope.deadline.is_some_and(|d| Instant::now() + margin >= d);
        let decided_on = look.account.key_creation_time();
        if let Err(reason) = decide::last_look(decided_on, read_again, too_late) {
            return Ok(Rotation::left(account, reason, false));
        }
        let keys = arm.regenerate_key(account, standby).await?;
        tracing::info!(account = account.name(), key = %standby, outcome = "regenerated", "rotation");
        let mut report = self
            .reconcile_locked(scope.request(Target::Exactly(standby), false, keys, None))
            .await?;
        sas::record(&mut report, &reminted, standby);
        Ok(Rotation::done(
            account,
            "rotated",
            reason,
            Some(standby),
            report,
        ))
    }

    /// Makes sure no SAS token on the account is signed with `standby`: re-mints those that are
    /// with the active key when `KEYSYNC_REMINT_SAS` allows, and returns them; or the rotation,
    /// left (or failed) with the reason, when a token would die with `standby`.
    async fn clear_sas_tokens(
        &self,
        arm: &ArmClient,
        scope: &Scope<'_>,
        look: &Look,
        standby: KeySlot,
    ) -> Result<Vec<sas::Reminted>, Rotation> {
        let account = scope.account;
        let facts = self.facts(&look.account);
        let found = sas::read(arm, &facts, &look.keys, &look.dry_run).await;
        let findings: Vec<decide::SasFinding> = found.iter().map(|f| f.finding.clone()).collect();
        let lifetime = self.sas_remint_lifetime();
        let to_remint = decide::sas_guard(standby, &findings, lifetime.is_some())
            .map_err(|reason| Rotation::left(account, reason, true))?;
        let Some(lifetime) = lifetime.filter(|_| !to_remint.is_empty()) else {
            return Ok(Vec::new());
        };
        let active = standby.other();
        let mut reminted = Vec::new();
        for i in to_remint {
            let target = &found[i];
            match sas::remint(arm, &facts, &look.keys, active, lifetime, target).await {
                Ok(done) => reminted.push(done),
                Err(not) => {
                    let name = &target.finding.datastore;
                    return Err(not_reminted(account, name, standby, not, reminted.len()));
                }
            }
        }
        Ok(reminted)
    }

    /// Reads the account, its keys and which key each datastore holds (a dry run), and decides;
    /// or the rotation left because there is nothing to decide on.
    async fn look(
        &self,
        arm: &ArmClient,
        scope: &Scope<'_>,
        limits: Limits,
    ) -> Result<Result<Look, Rotation>, ReconcileError> {
        let account = scope.account;
        let started = Instant::now();
        let observed = read_account(arm, account).await?;
        let now = OffsetDateTime::now_utc();
        let created = observed.properties.creation_time;
        let facts = self.facts(&observed);
        if !observed.shared_key_allowed() {
            let reason = decide::SHARED_KEY_DISABLED.to_string();
            return Ok(Err(Rotation::left(account, reason, false)));
        }
        let keys = arm.list_keys(account).await?;
        let as_of = Some(observed.key_creation_time());
        let dry_run = self
            .reconcile_locked(scope.request(Target::Newest, true, keys.clone(), as_of))
            .await?;
        // A run from the tick's inventory does not repeat the inventory's failures (the tick
        // reports them once), but a workspace it could not list may hold a consumer all the same.
        let unlisted = scope
            .inventory
            .as_ref()
            .is_some_and(|i| !i.failures.is_empty());
        let unread = dry_run.needs_retry() || dry_run.has_unreadable();
        let decision = match (unlisted, unread) {
            (true, _) => Decision::Leave {
                reason: UNLISTED.into(),
                attention: true,
            },
            (false, true) => Decision::Leave {
                reason: UNREAD.into(),
                attention: true,
            },
            (false, false) if holds_no_key(&dry_run) => Decision::Leave {
                reason: NO_STORED_KEY.into(),
                attention: false,
            },
            (false, false) => decide::decide(&facts, created, &keys_held(&dry_run), limits, now),
        };
        Ok(Ok(Look {
            account: observed,
            keys,
            dry_run,
            decision,
            took: started.elapsed(),
        }))
    }
}

/// The rotation of `account`, not done because the SAS token of `datastore` (signed with
/// `standby`) could not be re-minted; `done` tokens were re-minted before it.
fn not_reminted(
    account: &StorageAccountId,
    datastore: &str,
    standby: KeySlot,
    not: sas::NotReminted,
    done: usize,
) -> Rotation {
    let active = standby.other();
    let already = match done {
        0 => String::new(),
        n => format!(" ({n} re-minted with {active} already)"),
    };
    match not {
        sas::NotReminted::Cannot(why) => Rotation::left(
            account,
            format!(
                "nothing regenerated: the SAS token of {datastore} is signed with {standby}, which the rotation would regenerate, and keysync cannot re-mint it ({why}): re-sign it with {active}{already}"
            ),
            true,
        ),
        sas::NotReminted::Failed(why) => Rotation::failed(
            account,
            format!(
                "nothing regenerated: storing a SAS token re-minted with {active} for {datastore} failed: {why}{already}"
            ),
        ),
    }
}

/// What a rotation's reconcile left undone, for its reason: `but not everything moved to key2
/// (2 failed, 1 deferred): ...`.
fn left_over(report: &Report) -> String {
    let failed_notes = report
        .notes
        .iter()
        .filter(|n| n.outcome == Outcome::Failed)
        .count();
    let counts: Vec<String> = [
        (report.count(Outcome::Failed), "failed"),
        (report.count(Outcome::Deferred), "deferred"),
        (failed_notes, "account-level failures"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let key = report
        .target_key
        .map_or_else(|| "the new key".to_string(), |k| k.to_string());
    format!(
        "but not everything moved to {key} ({}): the next tick completes the move",
        counts.join(", ")
    )
}

/// Why an account is left when the scope could not be listed in full.
const UNLISTED: &str = "the scope could not be listed in full (see the tick's notes), so a consumer of the standby key cannot be ruled out: nothing regenerated";

/// Why an account is left when a datastore on it has no stored key.
const NO_STORED_KEY: &str = "a datastore on the account has no stored key (listSecrets found none), so which key it would still hold cannot be ruled out: nothing regenerated; the sweep stores a current key in it, and the next tick rotates the account";

/// Why an account is left when some of its datastores could not be read.
const UNREAD: &str = "some datastores or workspaces could not be read, so a consumer of the standby key cannot be ruled out: nothing regenerated";

/// The current key held by each AccountKey datastore of a dry run's report. (SAS tokens are
/// consumers too, of the key that signed them: see [`sas`], read only when a rotation is due.)
/// True when an AccountKey datastore on the account has no stored key (`listSecrets` found none,
/// or answered 404). A 404 can be a passing fault as well as a missing secret, and the datastore
/// may then hold the very key a rotation would regenerate: such an account waits for the
/// sweep, which stores a current key in it, and the next tick.
fn holds_no_key(dry_run: &Report) -> bool {
    dry_run
        .entries
        .iter()
        .any(|e| e.kind == ObjectKind::Datastore && e.held == Some(Held::Missing))
}

fn keys_held(dry_run: &Report) -> Vec<KeySlot> {
    let datastores = dry_run
        .entries
        .iter()
        .filter(|e| e.kind == ObjectKind::Datastore);
    datastores
        .filter_map(|e| match e.held {
            Some(Held::Key1) => Some(KeySlot::Key1),
            Some(Held::Key2) => Some(KeySlot::Key2),
            _ => None,
        })
        .collect()
}

/// The keys a rotation read and left unused, with the account's key times when it read them:
/// the sweep of the same tick reconciles the account with them while the times are unchanged,
/// rather than calling `listKeys` a second time.
pub struct KnownKeys {
    pub account: StorageAccountId,
    pub keys: AccountKeys,
    pub as_of: KeyCreationTime,
}

/// What a rotation read before deciding, for the steps after.
struct Look {
    account: StorageAccount,
    keys: AccountKeys,
    /// What a reconcile would do: which key each datastore holds, which ones have a SAS token.
    dry_run: Report,
    decision: Decision,
    /// How long the look took: about what moving every datastore will take (the same reads, and
    /// a `GET` and `PUT` for each datastore, side by side).
    took: std::time::Duration,
}

/// The least time a regeneration must leave before the deadline, however quick the look was.
const LEAST_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What a rotation's reconciles share: the account, the listing, the deadline.
struct Scope<'a> {
    account: &'a StorageAccountId,
    inventory: Option<Arc<Inventory>>,
    deadline: Option<Instant>,
}

impl Scope<'_> {
    fn request(
        &self,
        target: Target,
        dry_run: bool,
        keys: AccountKeys,
        keys_as_of: Option<KeyCreationTime>,
    ) -> Request {
        Request {
            account: self.account.clone(),
            target,
            dry_run,
            keys: Some(keys),
            keys_as_of,
            inventory: self.inventory.clone(),
            deadline: self.deadline,
            report_other_accounts: true,
        }
    }
}

impl Limits {
    /// The limits of a policy; `force` lifts the age check only.
    pub fn from_policy(policy: &crate::config::RotationPolicy, force: bool) -> Self {
        Limits {
            max_age: policy.max_age,
            min_interval: policy.min_interval,
            completion_window: Limits::completion_window(
                policy.min_interval,
                policy.schedule_period(),
            ),
            ignore_age: force,
        }
    }
}
