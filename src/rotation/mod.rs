//! rotate(account): find the key the account's datastores use, and when it is due, regenerate
//! the other one and move everything to it, so that no datastore ever holds an invalid key.
//! Decisions come from Azure's state (`keyCreationTime`, stored secrets), never from the timer.

pub mod decide;
pub mod tick;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::storage::{AccountKeys, KeySlot};
use crate::reconcile::plan::Target;
use crate::reconcile::{Inventory, ReconcileError, Reconciler, Request, facts};
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
    /// Rotates `account` if its key in use is due. Holds the account's lock throughout, so an
    /// event for the same account (keysync's own regeneration included) waits and then finds
    /// everything in sync.
    pub async fn rotate(
        &self,
        account: &StorageAccountId,
        limits: Limits,
        inventory: Option<Arc<Inventory>>,
    ) -> Result<Rotation, ReconcileError> {
        let lock = self.account_lock(account);
        let _guard = lock.lock().await;

        let observed = self.read_account(account).await?;
        let before = observed.key_creation_time();
        let keys = match observed.shared_key_allowed() {
            true => Some(self.arm().list_keys(account).await?),
            false => None,
        };
        let held = match &keys {
            Some(keys) => match self
                .keys_in_use(account, keys.clone(), inventory.clone())
                .await?
            {
                Ok(held) => held,
                Err(reason) => return Ok(Rotation::left(account, reason, true)),
            },
            None => Vec::new(),
        };
        let decision = decide::decide(
            &facts(&observed),
            observed.properties.creation_time,
            &held,
            limits,
            OffsetDateTime::now_utc(),
        );
        let (standby, reason) = match decision {
            Decision::Leave { reason, attention } => {
                return Ok(Rotation::left(account, reason, attention));
            }
            Decision::Rotate { regenerate, reason } => (regenerate, reason),
        };

        // Another instance may have rotated since the account was read: look again just before
        // regenerating, and leave it to the next tick if anything moved.
        if self.read_account(account).await?.key_creation_time() != before {
            return Ok(Rotation::left(
                account,
                "the keys changed while keysync was deciding; the next run decides again".into(),
                false,
            ));
        }
        let keys = self.arm().regenerate_key(account, standby).await?;
        tracing::info!(account = account.name(), key = %standby, outcome = "regenerated", "rotation");
        let request = Request {
            account: account.clone(),
            target: Target::Exactly(standby),
            dry_run: false,
            keys: Some(keys),
            inventory,
        };
        let report = self.reconcile_locked(request).await?;
        Ok(Rotation {
            account: account.to_string(),
            outcome: "rotated".into(),
            reason,
            regenerated: Some(standby),
            report: Some(report),
            attention: false,
        })
    }

    /// The current key held by each AccountKey datastore on the account, read without writing;
    /// or why keysync could not see them all (it then must not regenerate anything).
    async fn keys_in_use(
        &self,
        account: &StorageAccountId,
        keys: AccountKeys,
        inventory: Option<Arc<Inventory>>,
    ) -> Result<Result<Vec<KeySlot>, String>, ReconcileError> {
        let request = Request {
            account: account.clone(),
            target: Target::Newest,
            dry_run: true,
            keys: Some(keys),
            inventory,
        };
        let report = self.reconcile_locked(request).await?;
        if report.has_failures() {
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
