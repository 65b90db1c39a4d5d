//! The report as a table for people: grouped by workspace, one line per object.

use std::fmt::Write;

use super::{Entry, ObjectKind, Outcome, Report};

impl Report {
    /// Renders the report as aligned text, grouped by workspace in the order first seen.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let account = self.account.rsplit('/').next().unwrap_or(&self.account);
        let target = self
            .target_key
            .map(|k| format!(", target {k}"))
            .unwrap_or_default();
        let mode = if self.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        };
        let _ = writeln!(out, "storage account {account}{target}{mode}");
        for note in &self.notes {
            let _ = writeln!(out, "  ! {}: {}", note.outcome, note.message);
        }
        let width = self
            .entries
            .iter()
            .filter_map(|e| e.datastore.as_deref())
            .map(str::len)
            .max()
            .unwrap_or(0)
            .max(11);
        for workspace in workspaces_in_order(&self.entries) {
            let _ = writeln!(out, "  workspace {}", workspace_name(workspace));
            let (elsewhere, here): (Vec<&Entry>, Vec<&Entry>) = self
                .entries
                .iter()
                .filter(|e| e.workspace == workspace)
                .partition(|e| is_elsewhere(e));
            for entry in here {
                let _ = writeln!(out, "    {}", line(entry, width));
            }
            if !elsewhere.is_empty() {
                let names: Vec<&str> = elsewhere
                    .iter()
                    .filter_map(|e| e.datastore.as_deref())
                    .collect();
                let _ = writeln!(out, "    (on other storage accounts: {})", names.join(", "));
            }
        }
        let _ = write!(out, "  summary: {}", self.summary());
        out
    }
}

/// A datastore skipped because it is on another account: listed by name only, on one line.
fn is_elsewhere(entry: &Entry) -> bool {
    entry.outcome == Outcome::Skipped && entry.reason.as_deref() == Some(super::ON_ANOTHER_ACCOUNT)
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

fn workspace_name(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn line(entry: &Entry, width: usize) -> String {
    let name = match entry.kind {
        ObjectKind::Workspace => "(workspace)",
        ObjectKind::Datastore => entry.datastore.as_deref().unwrap_or("?"),
    };
    let held = entry
        .held
        .map(|h| format!("{h:?}").to_lowercase())
        .unwrap_or_default();
    let outcome = match (entry.outcome, entry.key) {
        (Outcome::Updated, Some(key)) => format!("updated to {key}"),
        (Outcome::Planned, Some(key)) => format!("would update to {key}"),
        (Outcome::Planned, None) => "would resync".to_string(),
        (outcome, _) => outcome.to_string(),
    };
    let reason = entry
        .reason
        .as_deref()
        .map(|r| format!("  ({r})"))
        .unwrap_or_default();
    format!("{name:<width$}  {held:<7}  {outcome}{reason}")
}

#[cfg(test)]
mod tests {
    use super::super::{Action, Held};
    use super::*;
    use crate::model::storage::KeySlot;

    const WS: &str = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/mlw-vision";

    #[test]
    fn groups_lines_by_workspace_and_names_slots_not_values() {
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
            },
        ];
        let table = report.to_table();
        let expected = "storage account st1, target key1\n  workspace mlw-vision\n    blob         stale    updated to key1\n    (workspace)           resynced\n  summary: 1 updated, 1 resynced";
        assert_eq!(table, expected);
    }
}
