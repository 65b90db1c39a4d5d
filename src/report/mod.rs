//! The report of a reconcile or rotation: one entry per datastore and workspace looked at, with
//! what was observed, what was (or would be) done, and why. It never holds a secret: keys are
//! named by slot (`key1`, `key2`), never by value.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::storage::KeySlot;

pub mod explain;
mod run;
mod table;
mod verification;

pub use verification::{CredentialUsed, Verification, VerifyOutcome};

pub use run::RunReport;

/// The reason given for a datastore on another storage account than the one reconciled (which
/// [`Entry::other_account`] marks).
pub const ON_ANOTHER_ACCOUNT: &str = "on another storage account";

/// The reason given for a SAS datastore before its token is checked against storage: a plan
/// never checks one, a sync (or an event, or the timer) does, with or without writing anything.
pub const SAS_TOKEN: &str =
    "SAS token: no account key stored; checked against storage by sync, not by a plan";

/// The reason given for a SAS datastore after a run with storage checks off: nobody knows
/// whether its token still works.
pub const SAS_TOKEN_UNCHECKED: &str = "SAS token: no account key stored; not checked against storage, since storage checks are off (KEYSYNC_VERIFY=false): whether it still works is unknown";

/// Text from outside (Azure, an event, a setting, a request) made safe to print on one line of
/// a report, a log or an error: control characters, line separators and bidirectional overrides
/// dropped (none can then make the line read as another), cut to `max` characters with `…`.
pub fn printable(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() && !crate::resource_id::is_invisible(*c))
        .collect();
    let clean = clean.trim();
    match clean.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean.to_string(),
    }
}

/// Everything one run did or would do on one storage account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The storage account's ARM id.
    pub account: String,
    pub dry_run: bool,
    /// The key stale datastores move to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_key: Option<KeySlot>,
    /// Account-level findings, such as shared-key access being disabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    pub entries: Vec<Entry>,
}

/// An account-level finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    pub outcome: Outcome,
    pub message: String,
}

/// What kind of Azure object an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectKind {
    Datastore,
    Workspace,
}

/// Which key a datastore held when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Held {
    Key1,
    Key2,
    /// A key that is neither current key: the datastore cannot reach its storage.
    Stale,
    /// No secret stored (`listSecrets` found none).
    Missing,
}

impl From<KeySlot> for Held {
    fn from(slot: KeySlot) -> Self {
        match slot {
            KeySlot::Key1 => Held::Key1,
            KeySlot::Key2 => Held::Key2,
        }
    }
}

/// What keysync decided to do with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    None,
    UpdateKey,
    /// Replace a dead SAS token with a re-minted one.
    UpdateSas,
    Resync,
    Skip,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Nothing to do: the object already works with a current key.
    InSync,
    Updated,
    Resynced,
    /// Azure accepted the work and finishes it on its own.
    Accepted,
    /// Dry run: the action would be taken.
    Planned,
    Skipped,
    Failed,
    /// Not started: the invocation's deadline came first. Redelivery or the next sweep does it.
    Deferred,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InSync => "inSync",
            Outcome::Updated => "updated",
            Outcome::Resynced => "resynced",
            Outcome::Accepted => "accepted",
            Outcome::Planned => "planned",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Deferred => "deferred",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One datastore or workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub kind: ObjectKind,
    /// The workspace's ARM id (for a datastore, the workspace that holds it).
    pub workspace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    pub action: Action,
    /// The key written, or to be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeySlot>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A person must act: the credential does not work and keysync cannot fix it (storage
    /// refused it, shared-key access is off), or keysync cannot tell (an unknown credentials
    /// type, an object it cannot read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attention: bool,
    /// A datastore on another storage account, listed only because its workspace has something
    /// on this one: nothing was done to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub other_account: bool,
    /// A SAS datastore on the account (for keysync's own use: a rotation reads these tokens to
    /// learn which key signed them; the reason tells a reader).
    #[serde(skip)]
    pub sas_token: bool,
    /// An object keysync cannot address at all (a datastore with no usable id or name, a
    /// workspace whose id is not an ARM id): it may hold either key, which a rotation must know.
    #[serde(skip)]
    pub unreadable: bool,
    /// What storage said when the datastore's credential was tried after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

impl Entry {
    /// True for a datastore listed only because its workspace has something on the account:
    /// it is on another account, and nothing was done to it.
    pub fn is_on_another_account(&self) -> bool {
        self.other_account
    }

    /// The workspace's name, the last segment of its id.
    pub fn workspace_name(&self) -> &str {
        self.workspace.rsplit('/').next().unwrap_or(&self.workspace)
    }

    /// `workspace/datastore`, or `workspace` for a workspace's own line.
    pub fn display_name(&self) -> String {
        match &self.datastore {
            Some(datastore) => format!("{}/{datastore}", self.workspace_name()),
            None => self.workspace_name().to_string(),
        }
    }
}

impl Report {
    pub fn new(account: &str, dry_run: bool) -> Self {
        Report {
            account: account.to_string(),
            dry_run,
            ..Report::default()
        }
    }

    /// True when anything failed; the caller should then have the work retried.
    pub fn has_failures(&self) -> bool {
        self.entries.iter().any(|e| e.outcome == Outcome::Failed)
            || self.notes.iter().any(|n| n.outcome == Outcome::Failed)
    }

    /// True when some work is left (failed or deferred): the trigger should be retried.
    pub fn needs_retry(&self) -> bool {
        self.has_failures() || self.count(Outcome::Deferred) > 0
    }

    /// True when an object on the account could not be addressed at all, so what it holds is
    /// unknown.
    pub fn has_unreadable(&self) -> bool {
        self.entries.iter().any(|e| e.unreadable)
    }

    /// The entries a person must act on (see [`Entry::attention`]). Retrying does not help them.
    pub fn needing_attention(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.attention)
    }

    /// How many entries ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.entries.iter().filter(|e| e.outcome == outcome).count()
    }

    /// One short line such as `3 updated, 1 resynced, 2 inSync`, then what failed on the
    /// account as a whole (a listing, say): `failed: could not list all the workspaces: ...`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = count_outcomes(self.entries.iter()).into_iter().collect();
        let mut failed = self.notes.iter().filter(|n| n.outcome == Outcome::Failed);
        if let Some(first) = failed.next() {
            let more = match failed.count() {
                0 => String::new(),
                1 => " (and 1 more failure: see the notes)".to_string(),
                n => format!(" (and {n} more failures: see the notes)"),
            };
            parts.push(format!("failed: {}{more}", first.message));
        }
        let summary = match parts.is_empty() {
            true => "nothing on this account".to_string(),
            false => parts.join("; "),
        };
        match self.verification_summary() {
            Some(checks) => format!("{summary}; storage: {checks}"),
            None => summary,
        }
    }

    /// `3 verified, 1 rejected`: the storage checks by outcome, if any ran.
    pub fn verification_summary(&self) -> Option<String> {
        let outcomes: Vec<VerifyOutcome> = self
            .entries
            .iter()
            .filter_map(|e| e.verification.as_ref().map(|v| v.outcome))
            .collect();
        let parts: Vec<String> = [
            VerifyOutcome::Verified,
            VerifyOutcome::Rejected,
            VerifyOutcome::Unreachable,
            VerifyOutcome::Inconclusive,
            VerifyOutcome::NotChecked,
        ]
        .into_iter()
        .filter_map(|o| match outcomes.iter().filter(|v| **v == o).count() {
            0 => None,
            n => Some(format!("{n} {o}")),
        })
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// Writes one `tracing` event per note and entry: `info` for every object (changed, in sync
    /// or skipped, so that the host's log, kept at Information, answers "what happened to this
    /// datastore?" without the report), `warn` for what needs a human, `error` for failures.
    pub fn log(&self) {
        for note in &self.notes {
            match note.outcome {
                Outcome::Failed => {
                    tracing::error!(account = %self.account, outcome = %note.outcome, "{}", note.message)
                }
                _ => {
                    tracing::warn!(account = %self.account, outcome = %note.outcome, "{}", note.message)
                }
            }
        }
        for entry in &self.entries {
            log_entry(&self.account, entry);
        }
    }
}

/// `3 updated, 1 resynced, 2 inSync`, in a fixed order; `None` when there are no entries.
fn count_outcomes<'a>(entries: impl Iterator<Item = &'a Entry>) -> Option<String> {
    const ORDER: [Outcome; 8] = [
        Outcome::Updated,
        Outcome::Resynced,
        Outcome::Accepted,
        Outcome::Planned,
        Outcome::InSync,
        Outcome::Skipped,
        Outcome::Deferred,
        Outcome::Failed,
    ];
    let mut counts = [0usize; ORDER.len()];
    for entry in entries {
        if let Some(i) = ORDER.iter().position(|o| *o == entry.outcome) {
            counts[i] += 1;
        }
    }
    let parts: Vec<String> = ORDER
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(o, n)| format!("{n} {o}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn log_entry(account: &str, e: &Entry) {
    let datastore = e.datastore.as_deref().unwrap_or("-");
    let held = e
        .held
        .map(|h| format!("{h:?}").to_lowercase())
        .unwrap_or_else(|| "-".into());
    let key = e.key.map(KeySlot::as_str).unwrap_or("-");
    let reason = e.reason.as_deref().unwrap_or("-");
    let check = e.verification.as_ref();
    let verification = check.map_or("-", |v| v.outcome.as_str());
    let code = check.and_then(|v| v.code.as_deref()).unwrap_or("-");
    let detail = check.map_or("-", |v| v.detail.as_str());
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                account,
                workspace = e.workspace_name(),
                datastore,
                held = %held,
                key,
                outcome = %e.outcome,
                reason,
                verification,
                code,
                detail,
                "{}", if e.kind == ObjectKind::Workspace { "workspace" } else { "datastore" }
            )
        };
    }
    let check_failed = check.is_some_and(|v| v.outcome.is_warning());
    match e.outcome {
        Outcome::Failed => emit!(error),
        Outcome::Deferred => emit!(warn),
        _ if e.attention || check_failed => emit!(warn),
        Outcome::Updated
        | Outcome::Resynced
        | Outcome::Accepted
        | Outcome::Planned
        | Outcome::Skipped
        | Outcome::InSync => emit!(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(outcome: Outcome) -> Entry {
        Entry {
            kind: ObjectKind::Datastore,
            workspace: "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w".into(),
            datastore: Some("d".into()),
            held: Some(Held::Stale),
            action: Action::UpdateKey,
            key: Some(KeySlot::Key1),
            outcome,
            reason: None,
            attention: false,
            other_account: false,
            sas_token: false,
            unreadable: false,
            verification: None,
        }
    }

    #[test]
    fn the_summary_counts_outcomes_in_a_fixed_order() {
        let mut report = Report::new("acct", false);
        report.entries = vec![
            entry(Outcome::InSync),
            entry(Outcome::Updated),
            entry(Outcome::Updated),
        ];
        assert_eq!(report.summary(), "2 updated, 1 inSync");
        assert!(!report.has_failures());
        report.entries.push(entry(Outcome::Failed));
        assert!(report.has_failures());
    }

    #[test]
    fn the_summary_says_what_failed_on_the_account_as_a_whole() {
        let mut report = Report::new("acct", false);
        assert_eq!(report.summary(), "nothing on this account");
        let note = |outcome, message: &str| Note {
            outcome,
            message: message.into(),
        };
        report
            .notes
            .push(note(Outcome::Skipped, "shared-key access is disabled"));
        assert_eq!(report.summary(), "nothing on this account");
        report.notes.push(note(
            Outcome::Failed,
            "could not list all the workspaces: HTTP 503",
        ));
        assert_eq!(
            report.summary(),
            "failed: could not list all the workspaces: HTTP 503"
        );
        report.notes.push(note(Outcome::Failed, "another"));
        report.entries.push(entry(Outcome::Updated));
        assert_eq!(
            report.summary(),
            "1 updated; failed: could not list all the workspaces: HTTP 503 (and 1 more failure: see the notes)"
        );
    }

    #[test]
    fn printable_drops_control_characters_and_cuts_long_text() {
        assert_eq!(printable(" a\u{1b}[31mb\nc\t ", 10), "a[31mbc");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("abc", 3), "abc");
        assert_eq!(printable("x\u{2028}\u{202e}y", 10), "xy");
    }

    #[test]
    fn entries_serialize_in_camel_case_with_slots_not_values() {
        let json = serde_json::to_value(entry(Outcome::Updated)).unwrap();
        assert_eq!(json["held"], "stale");
        assert_eq!(json["action"], "updateKey");
        assert_eq!(json["key"], "key1");
        assert_eq!(json["outcome"], "updated");
        assert_eq!(entry(Outcome::Updated).workspace_name(), "w");
    }
}
