//! The reports as tables for people: grouped by workspace, one line per object, with colour
//! only when the caller asks for it (the command line does on a terminal).

use std::fmt::Write;

use anstyle::{AnsiColor, Style};

use super::{Action, Entry, Note, ObjectKind, Outcome, Report, RunReport, VerifyOutcome};
use crate::rotation::Rotation;

impl Report {
    /// Renders the report as aligned text without colour, grouped by workspace in the order
    /// first seen.
    pub fn to_table(&self) -> String {
        self.render_table(false)
    }

    /// [`to_table`](Self::to_table), with ANSI colours when `colour` is set.
    pub fn render_table(&self, colour: bool) -> String {
        self.render_aligned(colour, self.name_width())
    }

    /// The width of the name column: the longest datastore name, and at least `(workspace)`.
    fn name_width(&self) -> usize {
        self.entries
            .iter()
            .filter_map(|e| e.datastore.as_deref())
            .map(|name| name.chars().count())
            .max()
            .unwrap_or(0)
            .max("(workspace)".len())
    }

    /// The table with the name column `width` characters wide, so that several reports printed
    /// one after the other line up.
    fn render_aligned(&self, colour: bool, width: usize) -> String {
        let paint = Painter(colour);
        let mut out = String::new();
        let account = short_name(&self.account);
        let target = self
            .target_key
            .map(|k| format!(", target {k}"))
            .unwrap_or_default();
        let mode = if self.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        };
        let header = format!("storage account {account}{target}{mode}");
        let _ = writeln!(out, "{}", paint.apply(Style::new().bold(), &header));
        for note in &self.notes {
            let _ = writeln!(out, "  {}", note_line(note, paint));
        }
        for workspace in workspaces_in_order(&self.entries) {
            self.write_workspace(&mut out, workspace, width, paint);
        }
        let _ = write!(out, "  summary: {}", self.summary());
        out
    }

    /// One workspace's lines; datastores on other accounts by name only, on one line.
    fn write_workspace(&self, out: &mut String, workspace: &str, width: usize, paint: Painter) {
        let _ = writeln!(out, "  workspace {}", short_name(workspace));
        let (elsewhere, here): (Vec<&Entry>, Vec<&Entry>) = self
            .entries
            .iter()
            .filter(|e| e.workspace == workspace)
            .partition(|e| e.is_on_another_account());
        for entry in here {
            let _ = writeln!(out, "    {}", line(entry, width, paint));
        }
        if !elsewhere.is_empty() {
            let names: Vec<&str> = elsewhere
                .iter()
                .filter_map(|e| e.datastore.as_deref())
                .collect();
            let _ = writeln!(out, "    (on other storage accounts: {})", names.join(", "));
        }
    }
}

impl RunReport {
    /// Every account's table, then the notes about the whole scope and one summary line.
    pub fn render_table(&self, colour: bool) -> String {
        let paint = Painter(colour);
        let mut out = String::new();
        let width = self.accounts.iter().map(Report::name_width).max();
        for report in &self.accounts {
            let table = report.render_aligned(colour, width.unwrap_or_default());
            let _ = writeln!(out, "{table}\n");
        }
        // After a failed listing keysync cannot know which accounts are in use; the notes say
        // what failed.
        let listed = !self.notes.iter().any(|n| n.outcome == Outcome::Failed);
        if self.accounts.is_empty() && listed {
            let _ = writeln!(
                out,
                "No storage account in scope is used by a workspace or datastore.\n"
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "{}", note_line(note, paint));
        }
        let verdict = match self.outcome() {
            "ok" => "ok".to_string(),
            other @ ("incomplete" | "attention") => paint.apply(warn_style(), other),
            other => paint.apply(failed_style(), other),
        };
        let _ = write!(out, "{verdict}: {}", self.summary());
        out
    }
}

impl Rotation {
    /// The decision on one line, then the table of the reconcile that followed, if any.
    pub fn render_table(&self, colour: bool) -> String {
        let paint = Painter(colour);
        let style = match (self.outcome.as_str(), self.attention) {
            ("failed", _) => failed_style(),
            ("rotated", _) => ok_style(),
            ("incomplete", _) | (_, true) => warn_style(),
            _ => Style::new(),
        };
        let mut out = format!(
            "rotation of storage account {}: {} ({})",
            short_name(&self.account),
            paint.apply(style, &self.outcome),
            self.reason
        );
        if let Some(report) = &self.report {
            let _ = write!(out, "\n\n{}", report.render_table(colour));
        }
        out
    }
}

/// Wraps text in an ANSI style, or leaves it alone.
#[derive(Debug, Clone, Copy)]
struct Painter(bool);

impl Painter {
    fn apply(self, style: Style, text: &str) -> String {
        match self.0 {
            true => format!("{}{text}{}", style.render(), style.render_reset()),
            false => text.to_string(),
        }
    }
}

fn ok_style() -> Style {
    Style::new().fg_color(Some(AnsiColor::Green.into()))
}

fn warn_style() -> Style {
    Style::new().fg_color(Some(AnsiColor::Yellow.into()))
}

fn failed_style() -> Style {
    Style::new().fg_color(Some(AnsiColor::Red.into())).bold()
}

fn outcome_style(outcome: Outcome) -> Style {
    match outcome {
        Outcome::Updated | Outcome::Resynced | Outcome::Accepted => ok_style(),
        Outcome::Planned | Outcome::Deferred => warn_style(),
        Outcome::Failed => failed_style(),
        Outcome::Skipped => Style::new().dimmed(),
        Outcome::InSync => Style::new(),
    }
}

fn note_line(note: &Note, paint: Painter) -> String {
    let style = match note.outcome {
        Outcome::Failed => failed_style(),
        _ => warn_style(),
    };
    let mark = paint.apply(style, &format!("! {}", note.outcome));
    format!("{mark}: {}", note.message)
}

fn workspaces_in_order(entries: &[Entry]) -> Vec<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for entry in entries {
        if !seen.contains(&entry.workspace.as_str()) {
            seen.push(&entry.workspace);
        }
    }
    seen
}

/// The last segment of an ARM id.
fn short_name(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn line(entry: &Entry, width: usize, paint: Painter) -> String {
    let name = match entry.kind {
        ObjectKind::Workspace => "(workspace)",
        ObjectKind::Datastore => entry.datastore.as_deref().unwrap_or("?"),
    };
    let held = entry
        .held
        .map(|h| format!("{h:?}").to_lowercase())
        .unwrap_or_default();
    let held = match entry.held {
        Some(super::Held::Stale | super::Held::Missing) => {
            paint.apply(failed_style(), &format!("{held:<7}"))
        }
        _ => format!("{held:<7}"),
    };
    let outcome = match (entry.outcome, entry.key) {
        (Outcome::Updated, Some(key)) if entry.action == Action::UpdateSas => {
            format!("re-minted with {key}")
        }
        (Outcome::Updated, Some(key)) => format!("updated to {key}"),
        (Outcome::Planned, Some(key)) => format!("would update to {key}"),
        (Outcome::Planned, None) => "would resync".to_string(),
        (outcome, _) => outcome.to_string(),
    };
    let style = match (entry.attention, entry.outcome) {
        (true, Outcome::Skipped | Outcome::InSync) => warn_style(),
        (_, outcome) => outcome_style(outcome),
    };
    let outcome = paint.apply(style, &outcome);
    let reason = entry
        .reason
        .as_deref()
        .map(|r| format!("  ({r})"))
        .unwrap_or_default();
    let storage = entry
        .verification
        .as_ref()
        .map(|v| {
            let label = format!("storage {}", v.label());
            let label = match v.outcome {
                VerifyOutcome::Verified | VerifyOutcome::NotChecked => label,
                VerifyOutcome::Rejected => paint.apply(failed_style(), &label),
                VerifyOutcome::Unreachable | VerifyOutcome::Inconclusive => {
                    paint.apply(warn_style(), &label)
                }
            };
            format!(", {label}")
        })
        .unwrap_or_default();
    format!("{name:<width$}  {held}  {outcome}{storage}{reason}")
}

#[cfg(test)]
mod tests {
    use super::super::Held;
    use super::*;
    use crate::model::storage::KeySlot;

    const WS: &str = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/mlw-vision";

    fn report() -> Report {
        let mut report = Report::new(
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/st1",
            false,
        );
        report.target_key = Some(KeySlot::Key1);
        report.entries = vec![
            Entry {
                kind: ObjectKind::Datastore,
                workspace: WS.into(),
                datastore: Some("blob".into()),
                held: Some(Held::Stale),
                action: Action::UpdateKey,
                key: Some(KeySlot::Key1),
                outcome: Outcome::Updated,
                reason: None,
                attention: false,
                other_account: false,
                sas_token: false,
                unreadable: false,
                verification: None,
            },
            Entry {
                kind: ObjectKind::Workspace,
                workspace: WS.into(),
                datastore: None,
                held: None,
                action: Action::Resync,
                key: None,
                outcome: Outcome::Resynced,
                reason: None,
                attention: false,
                other_account: false,
                sas_token: false,
                unreadable: false,
                verification: None,
            },
        ];
        report
    }

    #[test]
    fn groups_lines_by_workspace_and_names_slots_not_values() {
        let table = report().to_table();
        let expected = "storage account st1, target key1\n  workspace mlw-vision\n    blob         stale    updated to key1\n    (workspace)           resynced\n  summary: 1 updated, 1 resynced";
        assert_eq!(table, expected);
    }

    #[test]
    fn datastores_on_other_accounts_are_told_by_their_mark_not_their_wording() {
        let mut report = report();
        let mut elsewhere = report.entries[0].clone();
        elsewhere.datastore = Some("elsewhere".into());
        elsewhere.outcome = Outcome::Skipped;
        elsewhere.reason = Some("reworded: this one lives on a different account".into());
        elsewhere.other_account = true;
        let mut look_alike = report.entries[0].clone();
        look_alike.datastore = Some("look_alike".into());
        look_alike.outcome = Outcome::Skipped;
        look_alike.reason = Some(crate::report::ON_ANOTHER_ACCOUNT.into());
        report.entries.insert(1, elsewhere);
        report.entries.insert(2, look_alike);
        let table = report.to_table();
        assert!(
            table.contains("    (on other storage accounts: elsewhere)\n"),
            "{table}"
        );
        assert!(
            table.contains("    look_alike   stale    skipped  (on another storage account)\n"),
            "{table}"
        );
        let json = serde_json::to_value(&report.entries[1]).unwrap();
        assert_eq!(json["otherAccount"], true);
        let json = serde_json::to_value(&report.entries[2]).unwrap();
        assert!(json.get("otherAccount").is_none(), "{json}");
    }

    #[test]
    fn colour_only_adds_escape_codes_around_words() {
        let coloured = report().render_table(true);
        assert!(coloured.contains("\u{1b}["));
        let stripped = strip_ansi(&coloured);
        assert_eq!(stripped, report().to_table());
    }

    #[test]
    fn a_run_lists_every_account_then_the_scope_notes_and_a_verdict() {
        let run = RunReport::new(
            false,
            vec![report()],
            vec![Note {
                outcome: Outcome::Skipped,
                message: "outside the scope: stx".into(),
            }],
        );
        let table = run.render_table(false);
        assert!(table.starts_with("storage account st1"), "{table}");
        assert!(
            table.ends_with(
                "! skipped: outside the scope: stx\nok: 1 account: 1 updated, 1 resynced"
            ),
            "{table}"
        );
        let empty = RunReport::new(true, vec![], vec![]).render_table(false);
        assert!(empty.contains("No storage account in scope"), "{empty}");
    }

    #[test]
    fn every_account_of_a_run_shares_one_name_column() {
        let mut long = report();
        long.entries[0].datastore = Some("a_much_longer_name".into());
        let run = RunReport::new(false, vec![long, report()], vec![]);
        let table = run.render_table(false);
        let lines: Vec<&str> = table.lines().filter(|l| l.contains("updated to")).collect();
        assert_eq!(
            lines,
            [
                "    a_much_longer_name  stale    updated to key1",
                "    blob                stale    updated to key1"
            ],
            "{table}"
        );
    }

    #[test]
    fn a_failed_listing_says_what_failed_and_not_that_nothing_is_in_use() {
        let failed = Note {
            outcome: Outcome::Failed,
            message: "could not list the storage accounts: no token".into(),
        };
        let table = RunReport::new(true, vec![], vec![failed]).render_table(false);
        assert_eq!(
            table,
            "! failed: could not list the storage accounts: no token\nfailed: 0 accounts, 1 failed (see notes)"
        );
    }

    fn strip_ansi(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}
