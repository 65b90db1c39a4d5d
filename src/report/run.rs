//! The answer of an on-demand run (`keysync plan` and `sync`, the `Reconcile` function): one
//! report per storage account, plus findings about the scope as a whole.

use serde::Serialize;

use super::{Entry, Note, Outcome, Report, count_outcomes};

/// What one on-demand run did or would do.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub dry_run: bool,
    /// One report per account looked at: the named one, or every account in use in the scope.
    pub accounts: Vec<Report>,
    /// Findings about the scope, such as a listing that failed or accounts outside it.
    pub notes: Vec<Note>,
}

impl RunReport {
    pub fn new(dry_run: bool, accounts: Vec<Report>, notes: Vec<Note>) -> Self {
        RunReport {
            dry_run,
            accounts,
            notes,
        }
    }

    /// True when anything failed, in any account or in the scope's notes.
    pub fn has_failures(&self) -> bool {
        self.accounts.iter().any(Report::has_failures)
            || self.notes.iter().any(|n| n.outcome == Outcome::Failed)
    }

    /// True when work is left: something failed, or was deferred by the deadline.
    pub fn needs_retry(&self) -> bool {
        self.has_failures() || self.accounts.iter().any(Report::needs_retry)
    }

    /// The entries of every account that a person must act on.
    pub fn needing_attention(&self) -> impl Iterator<Item = &Entry> {
        self.accounts.iter().flat_map(Report::needing_attention)
    }

    /// `failed`; `incomplete` when only deferred work is left (run again); `attention` when
    /// nothing is left to retry but a person must act on some line (such as a credential storage
    /// refused); `ok`.
    pub fn outcome(&self) -> &'static str {
        if self.has_failures() {
            "failed"
        } else if self.needs_retry() {
            "incomplete"
        } else if self.needing_attention().next().is_some() {
            "attention"
        } else {
            "ok"
        }
    }

    /// Notes, the run's and its accounts', that say something could not be listed or read.
    fn failed_notes(&self) -> usize {
        self.accounts
            .iter()
            .flat_map(|r| &r.notes)
            .chain(&self.notes)
            .filter(|n| n.outcome == Outcome::Failed)
            .count()
    }

    /// Why the outcome is not `ok`, on one line naming the lines concerned (such as `1 needs a
    /// person (mlw/exports_sas)`); `None` when it is `ok`.
    pub fn problem(&self) -> Option<String> {
        let entries = || self.accounts.iter().flat_map(|r| &r.entries);
        let failed: Vec<&Entry> = entries().filter(|e| e.outcome == Outcome::Failed).collect();
        let failed_notes = self.failed_notes();
        let deferred: Vec<&Entry> = entries()
            .filter(|e| e.outcome == Outcome::Deferred)
            .collect();
        let attention: Vec<&Entry> = self.needing_attention().collect();
        let mut parts = Vec::new();
        if !failed.is_empty() {
            parts.push(format!("{} failed ({})", failed.len(), names(&failed)));
        }
        if failed_notes > 0 {
            parts.push(format!(
                "{failed_notes} could not be listed or read (see the notes)"
            ));
        }
        if !deferred.is_empty() {
            parts.push(format!(
                "{} deferred to the next run ({})",
                deferred.len(),
                names(&deferred)
            ));
        }
        if !attention.is_empty() {
            let verb = if attention.len() == 1 {
                "needs"
            } else {
                "need"
            };
            parts.push(format!(
                "{} {verb} a person ({})",
                attention.len(),
                names(&attention)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// One line such as `2 accounts: 3 updated, 1 resynced, 4 skipped`.
    pub fn summary(&self) -> String {
        let accounts = match self.accounts.len() {
            1 => "1 account".to_string(),
            n => format!("{n} accounts"),
        };
        let entries: Vec<&Entry> = self.accounts.iter().flat_map(|r| &r.entries).collect();
        let failed_notes = self.failed_notes();
        let mut summary = match count_outcomes(entries.into_iter()) {
            Some(counts) => format!("{accounts}: {counts}"),
            None => accounts,
        };
        if failed_notes > 0 {
            summary.push_str(&format!(", {failed_notes} failed (see notes)"));
        }
        summary
    }
}

/// Up to three lines by name, and how many more.
fn names(entries: &[&Entry]) -> String {
    const SHOWN: usize = 3;
    let mut names: Vec<String> = entries
        .iter()
        .take(SHOWN)
        .map(|e| e.display_name())
        .collect();
    if entries.len() > SHOWN {
        names.push(format!("and {} more", entries.len() - SHOWN));
    }
    names.join(", ")
}

/// The JSON form: `outcome` and `summary` are derived when it is written, so they always agree
/// with the reports.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    dry_run: bool,
    outcome: &'static str,
    summary: String,
    accounts: &'a [Report],
    notes: &'a [Note],
}

impl Serialize for RunReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            dry_run: self.dry_run,
            outcome: self.outcome(),
            summary: self.summary(),
            accounts: &self.accounts,
            notes: &self.notes,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_work_makes_a_run_incomplete_not_failed() {
        let mut report = Report::new("/subscriptions/s/x/st1", false);
        report.entries.push(Entry {
            kind: crate::report::ObjectKind::Datastore,
            workspace: "/subscriptions/s/x/w".into(),
            datastore: Some("d".into()),
            held: None,
            action: crate::report::Action::UpdateKey,
            key: None,
            outcome: Outcome::Deferred,
            reason: None,
            attention: false,
            other_account: false,
            sas_token: false,
            unreadable: false,
            verification: None,
        });
        let run = RunReport::new(false, vec![report], vec![]);
        assert_eq!(run.outcome(), "incomplete");
        assert!(run.needs_retry() && !run.has_failures());
    }

    fn datastore(name: &str, outcome: Outcome, attention: bool) -> Entry {
        Entry {
            kind: crate::report::ObjectKind::Datastore,
            workspace: "/subscriptions/s/x/workspaces/mlw".into(),
            datastore: Some(name.into()),
            held: None,
            action: crate::report::Action::Skip,
            key: None,
            outcome,
            reason: None,
            attention,
            other_account: false,
            sas_token: false,
            unreadable: false,
            verification: None,
        }
    }

    #[test]
    fn a_line_that_needs_a_person_is_not_ok_and_is_named() {
        let mut report = Report::new("/subscriptions/s/x/st1", false);
        report.entries = vec![
            datastore("fine", Outcome::InSync, false),
            datastore("dead_sas", Outcome::Skipped, true),
        ];
        let run = RunReport::new(false, vec![report.clone()], vec![]);
        assert_eq!(run.outcome(), "attention");
        assert!(!run.needs_retry(), "retrying would not help");
        assert_eq!(
            run.problem().as_deref(),
            Some("1 needs a person (mlw/dead_sas)")
        );

        report.entries[1].attention = false;
        let run = RunReport::new(false, vec![report], vec![]);
        assert_eq!((run.outcome(), run.problem()), ("ok", None));
    }

    #[test]
    fn a_failure_outranks_attention_and_long_lists_are_cut() {
        let mut report = Report::new("/subscriptions/s/x/st1", false);
        report.entries = (1..=5)
            .map(|n| datastore(&format!("d{n}"), Outcome::Failed, false))
            .chain([datastore("dead_sas", Outcome::Skipped, true)])
            .collect();
        let run = RunReport::new(false, vec![report], vec![]);
        assert_eq!(run.outcome(), "failed");
        assert_eq!(
            run.problem().as_deref(),
            Some("5 failed (mlw/d1, mlw/d2, mlw/d3, and 2 more); 1 needs a person (mlw/dead_sas)")
        );
    }

    #[test]
    fn the_json_shape_is_stable_and_camel_case() {
        let mut failed = Report::new("/subscriptions/s/x/st1", true);
        failed.notes.push(Note {
            outcome: Outcome::Failed,
            message: "could not read".into(),
        });
        let run = RunReport::new(true, vec![failed], vec![]);
        let json = serde_json::to_value(&run).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["dryRun", "outcome", "summary", "accounts", "notes"]);
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["summary"], "1 account, 1 failed (see notes)");
        assert_eq!(json["accounts"][0]["dryRun"], true);
    }
}
