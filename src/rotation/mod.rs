//! rotate(account): find the key the account's datastores use, and when it is due, regenerate
//! the other one and move everything to it, so that no datastore ever holds an invalid key.
//! Decisions come from Azure's state (`keyCreationTime`, stored secrets), never from the timer.

pub mod decide;
pub mod tick;

use std::sync::Arc;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::arm::ArmClient;
use crate::model::storage::{AccountKeys, KeyCreationTime, KeySlot};
use crate::reconcile::plan::Target;
use crate::reconcile::{Inventory, ReconcileError, Reconciler, Request, facts, read_account};
use crate::report::{Held, ObjectKind, Report};
use crate::resource_id::StorageAccountId;

pub use decide::{Decision, Limits};

/// What became of one account's rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    pub account: String,
    /// `rotated`, `left` or `failed`.
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
            ("failed", _) => {
                tracing::error!(account, outcome = %self.outcome, reason = %self.reason, "rotation")
            }
            (_, true) => {
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
    /// Rotates `account` if its key in use is due. Holds the account throughout, so an event for
    /// the same account (keysync's own regeneration included) waits and then finds everything in
    /// sync. Nothing is regenerated once `deadline` has passed.
    pub async fn rotate(
        &self,
        account: &StorageAccountId,
        limits: Limits,
        inventory: Option<Arc<Inventory>>,
        deadline: Option<Instant>,
    ) -> Result<Rotation, ReconcileError> {
        let slot = self.slot(account);
        let ticket = slot.hold(deadline).await?;
        let arm = self.arm_until(deadline);
        let scope = Scope {
            account,
            inventory,
            deadline,
        };

        let (standby, reason, seen) = match self.decide_rotation(&arm, &scope, limits).await? {
            Ok(due) => due,
            Err(left) => return Ok(left),
        };
        // Another instance may have rotated since the account was read: look again just before
        // regenerating, and leave it to the next tick if anything moved.
        if read_account(&arm, account).await?.key_creation_time() != seen {
            let reason = "the keys changed while keysync was deciding; the next run decides again";
            return Ok(Rotation::left(account, reason.into(), false));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let reason = "the invocation's deadline came first; the next tick rotates it";
            return Ok(Rotation::left(account, reason.into(), false));
        }
        let keys = arm.regenerate_key(account, standby).await?;
        tracing::info!(account = account.name(), key = %standby, outcome = "regenerated", "rotation");
        let report = self
            .reconcile_locked(scope.request(Target::Exactly(standby), false, keys))
            .await?;
        drop(ticket);
        Ok(Rotation {
            account: account.to_string(),
            outcome: "rotated".into(),
            reason,
            regenerated: Some(standby),
            report: Some(report),
            attention: false,
        })
    }

    /// The key to regenerate, why, and the key times it was decided on; or the rotation left.
    async fn decide_rotation(
        &self,
        arm: &ArmClient,
        scope: &Scope<'_>,
        limits: Limits,
    ) -> Result<Result<(KeySlot, String, KeyCreationTime), Rotation>, ReconcileError> {
        let account = scope.account;
        let observed = read_account(arm, account).await?;
        let held = match observed.shared_key_allowed() {
            true => {
                let keys = arm.list_keys(account).await?;
                match self.keys_in_use(scope, keys).await? {
                    Ok(held) => held,
                    Err(reason) => return Ok(Err(Rotation::left(account, reason, true))),
                }
            }
            false => Vec::new(),
        };
        let now = OffsetDateTime::now_utc();
        let created = observed.properties.creation_time;
        match decide::decide(&facts(&observed), created, &held, limits, now) {
            Decision::Leave { reason, attention } => {
                Ok(Err(Rotation::left(account, reason, attention)))
            }
            Decision::Rotate { regenerate, reason } => {
                Ok(Ok((regenerate, reason, observed.key_creation_time())))
            }
        }
    }

    /// The current key held by each AccountKey datastore on the account, read without writing;
    /// or why keysync could not see them all (it then must not regenerate anything).
    ///
    /// Known shortcoming (issue 5): SAS tokens are not counted, so one signed with the standby
    /// key dies when it is regenerated (the follow-up run reports it, or re-mints it with
    /// `KEYSYNC_REMINT_SAS`). Counting them means signing each token's fields again with both
    /// keys to see which one matches, as `keysync demo` does to show who signed a token.
    async fn keys_in_use(
        &self,
        scope: &Scope<'_>,
        keys: AccountKeys,
    ) -> Result<Result<Vec<KeySlot>, String>, ReconcileError> {
        let report = self
            .reconcile_locked(scope.request(Target::Newest, true, keys))
            .await?;
        if report.needs_retry() {
            return Ok(Err("some datastores could not be read, so a consumer of the standby key cannot be ruled out: nothing regenerated".into()));
        }
        let datastores = report
            .entries
            .iter()
            .filter(|e| e.kind == ObjectKind::Datastore);
        let held = datastores.filter_map(|e| match e.held {
            Some(Held::Key1) => Some(KeySlot::Key1),
            Some(Held::Key2) => Some(KeySlot::Key2),
            _ => None,
        });
        Ok(Ok(held.collect()))
    }
}

/// What a rotation's reconciles share: the account, the listing, the deadline.
struct Scope<'a> {
    account: &'a StorageAccountId,
    inventory: Option<Arc<Inventory>>,
    deadline: Option<Instant>,
}

impl Scope<'_> {
    fn request(&self, target: Target, dry_run: bool, keys: AccountKeys) -> Request {
        Request {
            account: self.account.clone(),
            target,
            dry_run,
            keys: Some(keys),
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
            ignore_age: force,
        }
    }
}
