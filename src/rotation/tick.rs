//! One timer tick: list everything in scope once, rotate the accounts that are due, then sweep
//! (reconcile) every other account in use, so that a lost event is repaired within one period.

use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{KnownKeys, Limits, Rotation};
use crate::config::{ROTATE_TAG, RotationPolicy};
use crate::reconcile::execute::reported;
use crate::reconcile::{Inventory, ReconcileError, Reconciler, Request, bounded};
use crate::report::{Note, Outcome, Report};
use crate::resource_id::StorageAccountId;

/// Why an account the Function App runs on is not rotated unless listed by id.
pub const HOST_STORAGE_REASON: &str =
    "the Function App runs on this account: list it in KEYSYNC_ROTATE_ACCOUNTS to rotate it anyway";

/// Accounts the sweep reconciles at once. Their ARM requests share the subscription's
/// concurrency limit anyway; this keeps enough accounts going that one account's slow tail (a
/// resync being polled) leaves no slot idle, while bounding the memory the runs in flight hold
/// (measured with `keysync bench`: 4 left the limit half used, 64 doubled the peak).
pub const ACCOUNT_CONCURRENCY: usize = 16;

/// Accounts rotated at once in a tick: fewer than the sweep, because each regenerates a key and
/// rewrites its datastores, all of which count against ARM's write limits, and a rotation cut
/// short by the deadline is finished only at the next tick.
pub const ROTATION_CONCURRENCY: usize = 4;

/// Everything a tick did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TickReport {
    pub rotations: Vec<Rotation>,
    pub sweep: Vec<Report>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
}

impl TickReport {
    /// True when anything failed or was left for later, by a rotation (a completion cut short
    /// again, say) or by the sweep: the invocation then fails, and the next tick picks it up.
    pub fn has_failures(&self) -> bool {
        let rotation_reports = self.rotations.iter().filter_map(|r| r.report.as_ref());
        self.rotations.iter().any(|r| !r.succeeded())
            || rotation_reports.chain(&self.sweep).any(Report::needs_retry)
            || self.notes.iter().any(|n| n.outcome == Outcome::Failed)
    }

    /// The ARM writes this report stands for: each regeneration, each datastore updated (key or
    /// re-minted SAS token) and each workspace resynced, by the rotations and the sweep.
    pub fn writes(&self) -> usize {
        let regenerations = self.rotations.iter().filter(|r| r.regenerated.is_some());
        let reports = self.rotations.iter().filter_map(|r| r.report.as_ref());
        let written = |report: &Report| {
            [Outcome::Updated, Outcome::Resynced, Outcome::Accepted]
                .into_iter()
                .map(|o| report.count(o))
                .sum::<usize>()
        };
        regenerations.count() + reports.chain(&self.sweep).map(written).sum::<usize>()
    }

    /// One line: `rotated 1 of 2 candidate accounts; swept 3 accounts: 2 datastores updated, 0
    /// with failures`, with the rotations completed, incomplete or failed, the sweep's accounts
    /// cut short by the deadline and the scope's failed listings when there are any: whatever
    /// fails the tick shows here.
    pub fn summary(&self) -> String {
        let count = |outcome| {
            self.rotations
                .iter()
                .filter(|r| r.outcome == outcome)
                .count()
        };
        let rotated = self
            .rotations
            .iter()
            .filter(|r| r.regenerated.is_some())
            .count();
        let rotations = format!(
            "rotated {rotated} of {}{}",
            plural(self.rotations.len(), "candidate account"),
            parenthesised(&[
                (count("completed"), "completed {} cut short"),
                (count("incomplete"), "{} incomplete"),
                (count("failed"), "{} failed"),
            ])
        );
        let failed = self.sweep.iter().filter(|r| r.has_failures()).count();
        let deferred = self
            .sweep
            .iter()
            .filter(|r| r.needs_retry() && !r.has_failures())
            .count();
        let changed: usize = self.sweep.iter().map(|r| r.count(Outcome::Updated)).sum();
        let listings = self
            .notes
            .iter()
            .filter(|n| n.outcome == Outcome::Failed)
            .count();
        let mut summary = format!(
            "{rotations}; swept {}: {} updated, {failed} with failures",
            plural(self.sweep.len(), "account"),
            plural(changed, "datastore"),
        );
        if deferred > 0 {
            summary.push_str(&format!(", {deferred} cut short by the deadline"));
        }
        if listings > 0 {
            summary.push_str(&format!("; {listings} of the scope's listings failed"));
        }
        summary
    }
}

/// `1 account`, `2 accounts`.
fn plural(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// ` (completed 1 cut short, 1 incomplete)`: the counts that are not zero, each put into its
/// pattern's `{}`; nothing when all are zero.
fn parenthesised(counts: &[(usize, &str)]) -> String {
    let parts: Vec<String> = counts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, pattern)| pattern.replacen("{}", &n.to_string(), 1))
        .collect();
    match parts.is_empty() {
        true => String::new(),
        false => format!(" ({})", parts.join(", ")),
    }
}

impl Reconciler {
    /// Runs one tick under `policy`.
    pub async fn tick(&self, policy: &RotationPolicy, deadline: Option<Instant>) -> TickReport {
        let inventory =
            Arc::new(Inventory::scan(&self.arm_until(deadline), self.subscriptions()).await);
        let mut report = TickReport::default();
        let failed = |message: &String| Note {
            outcome: Outcome::Failed,
            message: message.clone(),
        };
        report.notes.extend(inventory.failures.iter().map(failed));

        let candidates = candidates(policy, &inventory, self.subscriptions());
        let limits = Limits::from_policy(policy, false);
        let rotating = futures::stream::iter(candidates).map(|(account, blocked)| {
            self.rotate_candidate(account, blocked, limits, inventory.clone(), deadline)
        });
        let (rotations, known): (Vec<Rotation>, Vec<Option<KnownKeys>>) =
            bounded::in_order(rotating, ROTATION_CONCURRENCY, |_| {})
                .await
                .into_iter()
                .unzip();
        report.rotations = rotations;
        let known: Vec<KnownKeys> = known.into_iter().flatten().collect();

        // A rotated or completed account was reconciled by its rotation.
        let reconciled: Vec<StorageAccountId> = report
            .rotations
            .iter()
            .filter(|r| r.report.is_some())
            .filter_map(|r| StorageAccountId::parse(&r.account).ok())
            .collect();
        let sweep = Sweep {
            inventory,
            skip: &reconciled,
            known: &known,
            deadline,
        };
        let (reports, notes) = self.sweep(sweep).await;
        report.sweep = reports;
        report.notes.extend(notes);
        report
    }

    async fn rotate_candidate(
        &self,
        account: StorageAccountId,
        blocked: Option<String>,
        limits: Limits,
        inventory: Arc<Inventory>,
        deadline: Option<Instant>,
    ) -> (Rotation, Option<KnownKeys>) {
        if let Some(reason) = blocked {
            return (Rotation::left(&account, reason, false), None);
        }
        match self
            .rotate_keeping_keys(&account, limits, Some(inventory), deadline)
            .await
        {
            Ok(done) => done,
            Err(e) => (Rotation::failed(&account, describe(e)), None),
        }
    }

    /// Reconciles every in-scope account that a workspace or datastore uses, except those the
    /// sweep skips, each once, a few at a time, from one inventory.
    pub async fn sweep(&self, sweep: Sweep<'_>) -> (Vec<Report>, Vec<Note>) {
        self.sweep_with(sweep, false, &|_| {}).await
    }

    /// [`sweep`](Self::sweep) that only plans when `dry_run`, and calls `done` with each
    /// account's report as it arrives (for progress).
    pub async fn sweep_with(
        &self,
        sweep: Sweep<'_>,
        dry_run: bool,
        done: &(dyn Fn(&Report) + Sync),
    ) -> (Vec<Report>, Vec<Note>) {
        let (used, out_of_scope) = sweep.inventory.accounts_in_use();
        let mut notes = Vec::new();
        if !out_of_scope.is_empty() {
            let message = format!(
                "datastores or workspaces use storage accounts outside KEYSYNC_SUBSCRIPTIONS, left alone: {}",
                out_of_scope.join(", ")
            );
            notes.push(Note {
                outcome: Outcome::Skipped,
                message,
            });
        }
        let accounts = used.into_iter().filter(|a| !sweep.skip.contains(a));
        let sweeping = futures::stream::iter(accounts).map(|account| {
            self.sweep_account(Request {
                dry_run,
                ..sweep.request(account)
            })
        });
        let reports = bounded::in_order(sweeping, ACCOUNT_CONCURRENCY, done).await;
        (reports, notes)
    }

    async fn sweep_account(&self, request: Request) -> Report {
        let account = request.account.clone();
        let dry_run = request.dry_run;
        match self.reconcile(request).await {
            Ok(report) => report,
            Err(e) => {
                let mut report = Report::new(account.as_str(), dry_run);
                report.notes.push(Note {
                    outcome: Outcome::Failed,
                    message: describe(e),
                });
                report
            }
        }
    }
}

/// What a sweep covers and how.
pub struct Sweep<'a> {
    pub inventory: Arc<Inventory>,
    /// Accounts already reconciled (by their rotation).
    pub skip: &'a [StorageAccountId],
    /// Keys the tick's rotations read for accounts they left alone.
    pub known: &'a [KnownKeys],
    pub deadline: Option<Instant>,
}

impl Sweep<'_> {
    /// A plain reconcile: datastores that hold either current key stay where they are, so an
    /// account whose datastores disagree on purpose is left as it is (see `decide::split`).
    fn request(&self, account: StorageAccountId) -> Request {
        let known = self.known.iter().find(|k| k.account == account);
        Request {
            inventory: Some(self.inventory.clone()),
            keys: known.map(|k| k.keys.clone()),
            keys_as_of: known.map(|k| k.as_of),
            deadline: self.deadline,
            // The sweep reports every account in use, so each datastore has a line under its own
            // account; repeating it under every other account its workspace touches would
            // multiply the work, the memory and the report by the number of accounts.
            report_other_accounts: false,
            ..Request::apply(account)
        }
    }
}

/// A run that could not start, in words for the report.
fn describe(e: ReconcileError) -> String {
    match e {
        ReconcileError::Arm(e) => reported(&e),
        other => other.to_string(),
    }
}

/// The accounts that rotate: those listed by id, and those tagged `keysync-rotate: true`. An
/// account the Function App runs on is held back unless listed; one outside the subscriptions in
/// scope is held back. Each comes with why it is held back, if it is.
fn candidates(
    policy: &RotationPolicy,
    inventory: &Inventory,
    subscriptions: &[String],
) -> Vec<(StorageAccountId, Option<String>)> {
    let in_scope = |id: &StorageAccountId| {
        subscriptions
            .iter()
            .any(|s| s.eq_ignore_ascii_case(id.subscription()))
    };
    let mut out: Vec<(StorageAccountId, Option<String>)> = Vec::new();
    for id in &policy.accounts {
        let blocked =
            (!in_scope(id)).then(|| "its subscription is not in KEYSYNC_SUBSCRIPTIONS".to_string());
        out.push((id.clone(), blocked));
    }
    for account in inventory
        .accounts
        .iter()
        .filter(|a| a.has_true_tag(ROTATE_TAG))
    {
        let Ok(id) = StorageAccountId::parse(&account.id) else {
            continue;
        };
        if out.iter().any(|(known, _)| known == &id) {
            continue;
        }
        let blocked = policy
            .is_host_storage(&account.name)
            .then(|| HOST_STORAGE_REASON.to_string());
        out.push((id, blocked));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::storage::StorageAccount;

    const SUB: &str = "11111111-2222-3333-4444-555555555555";

    fn account(name: &str, tags: serde_json::Value) -> StorageAccount {
        serde_json::from_value(serde_json::json!({
            "id": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{name}"),
            "name": name,
            "tags": tags,
        }))
        .unwrap()
    }

    fn policy(accounts: &[&str], host: &[&str]) -> RotationPolicy {
        RotationPolicy {
            schedule: None,
            accounts: accounts
                .iter()
                .map(|a| StorageAccountId::parse(a).unwrap())
                .collect(),
            max_age: std::time::Duration::from_secs(90 * 86_400),
            min_interval: std::time::Duration::from_secs(86_400),
            host_accounts: host.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn tagged_and_listed_accounts_are_candidates_once_and_host_storage_is_held_back() {
        let inventory = Inventory {
            accounts: vec![
                account("sttagged", serde_json::json!({"Keysync-Rotate": " TRUE "})),
                account("stuntagged", serde_json::json!({"keysync-rotate": "no"})),
                account("sthost", serde_json::json!({"keysync-rotate": "true"})),
                account("stlisted", serde_json::json!({"keysync-rotate": "true"})),
            ],
            ..Inventory::default()
        };
        let listed = format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stlisted"
        );
        let foreign = "/subscriptions/99999999-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stforeign";
        let found = candidates(
            &policy(&[&listed, foreign], &["sthost"]),
            &inventory,
            &[SUB.to_string()],
        );
        let summary: Vec<(&str, bool)> = found
            .iter()
            .map(|(id, blocked)| (id.name(), blocked.is_some()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("stlisted", false),
                ("stforeign", true),
                ("sttagged", false),
                ("sthost", true)
            ]
        );
        assert!(
            found[3]
                .1
                .as_deref()
                .unwrap()
                .contains("Function App runs on this account")
        );
    }

    #[test]
    fn work_a_rotation_left_for_later_fails_the_tick_like_the_sweeps() {
        use crate::report::{Action, Entry, ObjectKind};
        let deferred = Entry {
            kind: ObjectKind::Datastore,
            workspace: "ws".into(),
            datastore: Some("cut_1".into()),
            held: None,
            action: Action::UpdateKey,
            key: None,
            outcome: Outcome::Deferred,
            reason: None,
            attention: false,
            other_account: false,
            sas_token: false,
            unreadable: false,
            verification: None,
        };
        let id = StorageAccountId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stcut"
        ))
        .unwrap();
        let mut report = Report::new(id.as_str(), false);
        let completed = |report: Report| Rotation {
            report: Some(report),
            outcome: "completed".into(),
            ..Rotation::left(&id, String::new(), false)
        };
        let tick = TickReport {
            rotations: vec![completed(report.clone())],
            ..TickReport::default()
        };
        assert!(!tick.has_failures());
        report.entries.push(deferred);
        let tick = TickReport {
            rotations: vec![completed(report)],
            ..TickReport::default()
        };
        assert!(tick.has_failures());
    }

    fn datastore_entry(name: &str, outcome: Outcome) -> crate::report::Entry {
        crate::report::Entry {
            kind: crate::report::ObjectKind::Datastore,
            workspace: "ws".into(),
            datastore: Some(name.into()),
            held: None,
            action: crate::report::Action::UpdateKey,
            key: None,
            outcome,
            reason: None,
            attention: false,
            other_account: false,
            sas_token: false,
            unreadable: false,
            verification: None,
        }
    }

    fn account_id(name: &str) -> StorageAccountId {
        StorageAccountId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{name}"
        ))
        .unwrap()
    }

    #[test]
    fn a_rotation_whose_moves_failed_is_incomplete_and_the_summary_counts_it() {
        use crate::model::storage::KeySlot;
        let id = account_id("stdue");
        let mut moves = Report::new(id.as_str(), false);
        moves.target_key = Some(KeySlot::Key2);
        moves.entries = vec![
            datastore_entry("a", Outcome::Failed),
            datastore_entry("b", Outcome::Failed),
        ];
        let rotated = Rotation::done(
            &id,
            "rotated",
            "key1 is due".into(),
            Some(KeySlot::Key2),
            moves,
        );
        assert_eq!(rotated.outcome, "incomplete");
        assert!(rotated.attention && !rotated.succeeded());
        assert_eq!(
            rotated.reason,
            "key1 is due; but not everything moved to key2 (2 failed): the next tick completes the move"
        );
        let tick = TickReport {
            rotations: vec![
                rotated,
                Rotation::left(&account_id("styoung"), "young".into(), false),
            ],
            sweep: vec![Report::new(account_id("styoung").as_str(), false)],
            notes: Vec::new(),
        };
        assert!(tick.has_failures());
        assert_eq!(
            tick.summary(),
            "rotated 1 of 2 candidate accounts (1 incomplete); swept 1 account: 0 datastores updated, 0 with failures"
        );
    }

    #[test]
    fn a_rotation_whose_moves_were_deferred_is_incomplete_without_attention() {
        let id = account_id("stdue");
        let mut moves = Report::new(id.as_str(), false);
        moves.entries = vec![datastore_entry("a", Outcome::Deferred)];
        let done = Rotation::done(&id, "completed", "completing".into(), None, moves);
        assert_eq!(done.outcome, "incomplete");
        assert!(!done.attention);
        assert!(
            done.reason
                .ends_with("(1 deferred): the next tick completes the move")
        );
    }

    #[test]
    fn the_tick_summary_names_every_kind_of_trouble() {
        let mut cut = Report::new(account_id("stcut").as_str(), false);
        cut.entries = vec![datastore_entry("a", Outcome::Deferred)];
        let mut broken = Report::new(account_id("stbroken").as_str(), false);
        broken.entries = vec![datastore_entry("b", Outcome::Failed)];
        let tick = TickReport {
            rotations: vec![Rotation::failed(&account_id("stfail"), "no".into())],
            sweep: vec![cut, broken],
            notes: vec![Note {
                outcome: Outcome::Failed,
                message: "could not list the workspaces".into(),
            }],
        };
        assert_eq!(
            tick.summary(),
            "rotated 0 of 1 candidate account (1 failed); swept 2 accounts: 0 datastores updated, 1 with failures, 1 cut short by the deadline; 1 of the scope's listings failed"
        );
        assert_eq!(
            TickReport::default().summary(),
            "rotated 0 of 0 candidate accounts; swept 0 accounts: 0 datastores updated, 0 with failures"
        );
    }

    #[test]
    fn a_listed_host_account_rotates() {
        let inventory = Inventory {
            accounts: vec![account("sthost", serde_json::json!({}))],
            ..Inventory::default()
        };
        let id = format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sthost"
        );
        let found = candidates(&policy(&[&id], &["sthost"]), &inventory, &[SUB.to_string()]);
        assert_eq!(found.len(), 1);
        assert!(found[0].1.is_none());
    }
}
