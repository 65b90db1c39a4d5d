//! The pure rotation decision: from the account's key times and the keys its datastores hold, to
//! "regenerate this key" or "leave it, because".

use std::time::Duration;

use time::OffsetDateTime;

use crate::model::storage::KeySlot;
use crate::reconcile::plan::AccountFacts;

/// What the rotation guards are set to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_age: Duration,
    pub min_interval: Duration,
    /// `--force`: rotate even if the key in use is younger than `max_age`.
    pub ignore_age: bool,
}

/// What to do with one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Regenerate `regenerate` (the standby key) and move every datastore to it.
    Rotate { regenerate: KeySlot, reason: String },
    /// Leave the keys alone; `attention` when a human should look.
    Leave { reason: String, attention: bool },
}

fn leave(reason: impl Into<String>, attention: bool) -> Decision {
    Decision::Leave {
        reason: reason.into(),
        attention,
    }
}

/// Decides for one account. `held` lists the key of each AccountKey datastore on the account
/// that holds a current key; `account_created` stands in for a key never regenerated.
pub fn decide(
    facts: &AccountFacts,
    account_created: Option<OffsetDateTime>,
    held: &[KeySlot],
    limits: Limits,
    now: OffsetDateTime,
) -> Decision {
    if !facts.shared_key_allowed {
        return leave(
            "shared-key access is disabled on the account: its keys are not used",
            false,
        );
    }
    if let Some(newest) = facts.newest_key_time() {
        let since = now - newest;
        if since < limits.min_interval {
            return leave(
                format!(
                    "a key was created {} ago, less than the minimum interval of {} between rotations",
                    human(since),
                    human_std(limits.min_interval)
                ),
                false,
            );
        }
    }
    let active = match in_use(held) {
        InUse::One(slot) => slot,
        InUse::Neither => facts.key_creation_time.newest(),
        InUse::Both { key1, key2 } => {
            return leave(
                format!(
                    "datastores hold both keys ({key1} on key1, {key2} on key2): both are in use, so neither is regenerated"
                ),
                true,
            );
        }
    };
    let standby = active.other();
    let created = facts.key_creation_time.of(active).or(account_created);
    let age = created.map(|c| now - c);
    let due = age.is_none_or(|a| a >= limits.max_age) || limits.ignore_age;
    let age_text = age
        .map(human)
        .unwrap_or_else(|| "of unknown age".to_string());
    if !due {
        return leave(
            format!(
                "{active} (in use) is {age_text} old; it is due at {}",
                human_std(limits.max_age)
            ),
            false,
        );
    }
    let why = if limits.ignore_age {
        "rotation forced".to_string()
    } else {
        format!(
            "{active} (in use) is {age_text} old, due at {}",
            human_std(limits.max_age)
        )
    };
    Decision::Rotate {
        regenerate: standby,
        reason: format!("{why}: regenerating {standby} and moving every datastore to it"),
    }
}

enum InUse {
    Neither,
    One(KeySlot),
    Both { key1: usize, key2: usize },
}

fn in_use(held: &[KeySlot]) -> InUse {
    let key1 = held.iter().filter(|k| **k == KeySlot::Key1).count();
    let key2 = held.len() - key1;
    match (key1, key2) {
        (0, 0) => InUse::Neither,
        (_, 0) => InUse::One(KeySlot::Key1),
        (0, _) => InUse::One(KeySlot::Key2),
        _ => InUse::Both { key1, key2 },
    }
}

fn human(d: time::Duration) -> String {
    human_std(Duration::from_secs(d.whole_seconds().max(0) as u64))
}

/// `95 days`, `5 hours`, `12 minutes`.
fn human_std(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s => format!("{} minutes", s / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::storage::KeyCreationTime;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 03:00 UTC);
    const DAY: Duration = Duration::from_secs(86_400);

    fn limits() -> Limits {
        Limits {
            max_age: 90 * DAY,
            min_interval: DAY,
            ignore_age: false,
        }
    }

    fn facts(key1_age_days: Option<i64>, key2_age_days: Option<i64>) -> AccountFacts {
        let at = |days: Option<i64>| days.map(|d| NOW - time::Duration::days(d));
        AccountFacts {
            name: "st".into(),
            endpoint_suffix: None,
            shared_key_allowed: true,
            key_creation_time: KeyCreationTime {
                key1: at(key1_age_days),
                key2: at(key2_age_days),
            },
        }
    }

    #[test]
    fn an_old_key_in_use_makes_the_standby_key_regenerate() {
        let d = decide(
            &facts(Some(120), Some(200)),
            None,
            &[KeySlot::Key1, KeySlot::Key1],
            limits(),
            NOW,
        );
        assert!(
            matches!(&d, Decision::Rotate { regenerate: KeySlot::Key2, reason } if reason.starts_with("key1 (in use) is 120 days old")),
            "{d:?}"
        );
        let d = decide(
            &facts(Some(200), Some(95)),
            None,
            &[KeySlot::Key2],
            limits(),
            NOW,
        );
        assert!(
            matches!(
                d,
                Decision::Rotate {
                    regenerate: KeySlot::Key1,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn a_young_key_in_use_is_left_alone() {
        let d = decide(
            &facts(Some(10), Some(200)),
            None,
            &[KeySlot::Key1],
            limits(),
            NOW,
        );
        assert_eq!(
            d,
            leave("key1 (in use) is 10 days old; it is due at 90 days", false)
        );
    }

    #[test]
    fn datastores_that_disagree_block_the_rotation() {
        let d = decide(
            &facts(Some(120), Some(130)),
            None,
            &[KeySlot::Key1, KeySlot::Key2, KeySlot::Key1],
            limits(),
            NOW,
        );
        assert!(
            matches!(&d, Decision::Leave { attention: true, reason } if reason.contains("2 on key1, 1 on key2")),
            "{d:?}"
        );
    }

    #[test]
    fn a_recent_rotation_blocks_another_whatever_the_ages() {
        let d = decide(
            &facts(Some(120), Some(0)),
            None,
            &[KeySlot::Key1],
            Limits {
                ignore_age: true,
                ..limits()
            },
            NOW,
        );
        assert!(
            matches!(&d, Decision::Leave { reason, .. } if reason.contains("minimum interval")),
            "{d:?}"
        );
    }

    #[test]
    fn a_key_never_regenerated_is_as_old_as_its_account() {
        let created = Some(NOW - time::Duration::days(400));
        let d = decide(&facts(None, None), created, &[KeySlot::Key1], limits(), NOW);
        assert!(
            matches!(&d, Decision::Rotate { regenerate: KeySlot::Key2, reason } if reason.contains("400 days")),
            "{d:?}"
        );
        let d = decide(&facts(None, None), None, &[KeySlot::Key1], limits(), NOW);
        assert!(
            matches!(&d, Decision::Rotate { reason, .. } if reason.contains("unknown age")),
            "{d:?}"
        );
    }

    #[test]
    fn without_datastores_the_newest_key_counts_as_in_use() {
        let d = decide(&facts(Some(100), Some(120)), None, &[], limits(), NOW);
        assert!(
            matches!(
                d,
                Decision::Rotate {
                    regenerate: KeySlot::Key2,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn force_lifts_only_the_age_check() {
        let d = decide(
            &facts(Some(10), Some(30)),
            None,
            &[KeySlot::Key1],
            Limits {
                ignore_age: true,
                ..limits()
            },
            NOW,
        );
        assert!(
            matches!(&d, Decision::Rotate { regenerate: KeySlot::Key2, reason } if reason.starts_with("rotation forced")),
            "{d:?}"
        );
        let mut disabled = facts(Some(120), None);
        disabled.shared_key_allowed = false;
        assert!(matches!(
            decide(
                &disabled,
                None,
                &[],
                Limits {
                    ignore_age: true,
                    ..limits()
                },
                NOW
            ),
            Decision::Leave { .. }
        ));
    }
}
