//! The pure rotation decision: from the account's key times and the keys its datastores hold, to
//! "regenerate this key" or "leave it, because".

use std::time::Duration;

use time::OffsetDateTime;

use crate::model::storage::{KeyCreationTime, KeySlot};
use crate::reconcile::plan::AccountFacts;

/// What the rotation guards are set to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_age: Duration,
    pub min_interval: Duration,
    /// How long after a regeneration datastores split between the two keys are still taken for a
    /// rotation keysync cut short, and moved to the newer key (which never breaks a datastore:
    /// both keys are valid). At least `min_interval`; see [`Limits::completion_window`].
    pub completion_window: Duration,
    /// `--force`: rotate even if the key in use is younger than `max_age`.
    pub ignore_age: bool,
}

/// What to do with one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Regenerate `regenerate` (the standby key) and move every datastore to it.
    Rotate { regenerate: KeySlot, reason: String },
    /// Regenerate nothing, but move every AccountKey datastore to `target`, the newest key: the
    /// rotation that created it was cut short before every datastore had moved.
    Complete { target: KeySlot, reason: String },
    /// Leave the keys alone; `attention` when a human should look.
    Leave { reason: String, attention: bool },
}

/// Why an account with shared-key access disabled is not rotated.
pub const SHARED_KEY_DISABLED: &str =
    "shared-key access is disabled on the account: its keys are not used";

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
        return leave(SHARED_KEY_DISABLED, false);
    }
    if let Some(since) = facts.newest_key_time().map(|newest| now - newest)
        && since < limits.min_interval
    {
        return within_interval(facts, held, since, limits);
    }
    let active = match in_use(held) {
        InUse::One(slot) => slot,
        InUse::Neither => facts.key_creation_time.newest(),
        InUse::Both { key1, key2 } => {
            return match facts.newest_key_time().map(|newest| now - newest) {
                Some(since) if since < limits.completion_window => {
                    complete(facts, held, since, limits)
                }
                _ => split(key1, key2, limits),
            };
        }
    };
    due(facts, active, account_created, limits, now)
}

impl Limits {
    /// The completion window for a policy's minimum interval and its schedule's longest wait
    /// between ticks: two waits, so that a rotation cut short is still completed when the next
    /// tick is late or missed, or the minimum interval if that is longer.
    pub fn completion_window(
        min_interval: Duration,
        schedule_period: Option<Duration>,
    ) -> Duration {
        let two_ticks = schedule_period.map_or(Duration::ZERO, |p| p.saturating_mul(2));
        min_interval.max(two_ticks)
    }
}

/// A key was created less than the minimum interval ago, so nothing is regenerated. Datastores
/// that still hold the other key are what a rotation leaves when it is cut short (by its
/// deadline, or a failed write) after `regenerateKey`: they move to the new key now, so that the
/// next rotation can regenerate the key they held. Past the interval, a split is still completed
/// within the completion window; past that, keysync no longer assumes that it was its own doing
/// (see [`split`]).
fn within_interval(
    facts: &AccountFacts,
    held: &[KeySlot],
    since: time::Duration,
    limits: Limits,
) -> Decision {
    let newest = facts.key_creation_time.newest();
    match held.iter().all(|slot| *slot == newest) {
        true => leave(
            format!(
                "a key was created {} ago, less than the minimum interval of {} between rotations",
                human(since),
                human_std(limits.min_interval)
            ),
            false,
        ),
        false => complete(facts, held, since, limits),
    }
}

/// Moves the datastores that still hold the older key to the newest, created `since` ago,
/// within the completion window: what a rotation cut short after `regenerateKey` leaves.
fn complete(
    facts: &AccountFacts,
    held: &[KeySlot],
    since: time::Duration,
    limits: Limits,
) -> Decision {
    let newest = facts.key_creation_time.newest();
    let count = held.iter().filter(|slot| **slot != newest).count();
    Decision::Complete {
        target: newest,
        reason: format!(
            "{newest} was created {} ago, within the {} in which keysync completes a rotation it cut short, and {}: completing that rotation by moving {} to {newest}",
            human(since),
            human_std(limits.completion_window),
            match count {
                1 => format!("1 datastore still holds {}", newest.other()),
                n => format!("{n} datastores still hold {}", newest.other()),
            },
            if count == 1 { "it" } else { "them" }
        ),
    }
}

/// Datastores hold both keys, and neither key is recent enough for the split to be a rotation
/// cut short: someone chose it, so both keys are in use and keysync moves nobody.
fn split(key1: usize, key2: usize, limits: Limits) -> Decision {
    let (fewer, more) = match key1 <= key2 {
        true => (KeySlot::Key1, KeySlot::Key2),
        false => (KeySlot::Key2, KeySlot::Key1),
    };
    leave(
        format!(
            "datastores hold both keys ({key1} on key1, {key2} on key2): both are in use, so neither is regenerated; no key was created within the last {}, so this is not a rotation keysync left unfinished. Move every datastore to one key (re-register those on {fewer} with {more}) and the next run rotates the account",
            human_std(limits.completion_window)
        ),
        true,
    )
}

/// Rotate when the key in use is as old as `max_age` (or `--force`), else leave it.
fn due(
    facts: &AccountFacts,
    active: KeySlot,
    account_created: Option<OffsetDateTime>,
    limits: Limits,
    now: OffsetDateTime,
) -> Decision {
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

/// The last look before `regenerateKey`: the key times read again just now must be those the
/// decision was made on, and the deadline must leave the time to move every datastore
/// (`too_late` says it does not). Another process (`keysync rotate` by hand while a tick runs)
/// may have rotated the account meanwhile; then the decision is stale and the next run decides
/// again. This narrows the window between two processes to
/// the one ARM request between this read and `regenerateKey`, but cannot close it: ARM has no
/// conditional `regenerateKey` (the README's "Scheduled rotation" says what that window costs).
pub fn last_look(
    decided_on: KeyCreationTime,
    read_again: KeyCreationTime,
    too_late: bool,
) -> Result<(), String> {
    if read_again != decided_on {
        return Err(
            "the keys changed while keysync was deciding; the next run decides again".into(),
        );
    }
    match too_late {
        true => Err("too little time was left before the invocation's deadline to move every datastore to a new key; the next tick rotates it".into()),
        false => Ok(()),
    }
}

/// Which key signed a SAS datastore's token, as far as it matters to a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// Signed with this current key: the token dies when that key is regenerated.
    Key(KeySlot),
    /// No regeneration can hurt it: signed with neither current key (dead already), expired, not
    /// a SAS storage would accept, signed by Entra ID (user delegation), or no token stored.
    NotAConsumer,
    /// keysync cannot tell (the token or the datastore could not be read, or its string to sign
    /// is one keysync does not know); says why, without the token.
    Unknown(String),
}

/// A SAS datastore on an account about to be rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasFinding {
    /// `workspace/datastore`, as the report names it.
    pub datastore: String,
    pub signer: Signer,
}

/// SAS tokens are consumers of the key that signed them, like AccountKey datastores of the key
/// they hold. Before `standby` is regenerated: a token signed with it blocks the rotation, unless
/// `remint` (`KEYSYNC_REMINT_SAS`) lets keysync first re-mint it with the active key; a token
/// whose signer keysync cannot tell blocks it too, since it may be signed with `standby`.
/// Returns the indexes of the findings to re-mint, or why the account is left alone (which needs
/// a human).
pub fn sas_guard(
    standby: KeySlot,
    found: &[SasFinding],
    remint: bool,
) -> Result<Vec<usize>, String> {
    let active = standby.other();
    let on_standby: Vec<usize> = (0..found.len())
        .filter(|i| found[*i].signer == Signer::Key(standby))
        .collect();
    let unknown: Vec<String> = found
        .iter()
        .filter_map(|f| match &f.signer {
            Signer::Unknown(why) => Some(format!("{} ({why})", f.datastore)),
            _ => None,
        })
        .collect();
    let mut reasons = Vec::new();
    if !on_standby.is_empty() && !remint {
        let names: Vec<&str> = on_standby
            .iter()
            .map(|i| found[*i].datastore.as_str())
            .collect();
        reasons.push(format!(
            "the SAS token of {} is signed with {standby}, which the rotation would regenerate: re-sign it with {active} (the key in use), or set KEYSYNC_REMINT_SAS=true to have keysync re-mint it with {active} before rotating",
            names.join(", ")
        ));
    }
    if !unknown.is_empty() {
        reasons.push(format!(
            "keysync cannot tell which key signed the SAS token of {}, so it may be {standby}: replace it with a token signed with {active}",
            unknown.join(", ")
        ));
    }
    match reasons.is_empty() {
        true => Ok(on_standby),
        false => Err(format!("nothing regenerated: {}", reasons.join("; "))),
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
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 03:00 UTC);
    const DAY: Duration = Duration::from_secs(86_400);

    fn limits() -> Limits {
        Limits {
            max_age: 90 * DAY,
            min_interval: DAY,
            completion_window: DAY,
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
    fn datastores_that_have_disagreed_for_long_block_the_rotation_and_stay_where_they_are() {
        let d = decide(
            &facts(Some(120), Some(130)),
            None,
            &[KeySlot::Key1, KeySlot::Key2, KeySlot::Key1],
            limits(),
            NOW,
        );
        let Decision::Leave { reason, attention } = d else {
            panic!("{d:?}");
        };
        assert!(attention);
        assert!(
            reason.starts_with("datastores hold both keys (2 on key1, 1 on key2): both are in use, so neither is regenerated;"),
            "{reason}"
        );
        assert!(
            reason.ends_with("Move every datastore to one key (re-register those on key2 with key1) and the next run rotates the account"),
            "{reason}"
        );
    }

    #[test]
    fn a_split_just_past_the_minimum_interval_is_no_longer_taken_for_a_rotation_cut_short() {
        let d = decide(
            &facts(Some(200), Some(1)),
            None,
            &[KeySlot::Key1, KeySlot::Key2],
            Limits {
                min_interval: Duration::from_secs(86_400 - 60),
                completion_window: Duration::from_secs(86_400 - 60),
                ..limits()
            },
            NOW,
        );
        assert!(
            matches!(&d, Decision::Leave { attention: true, reason } if reason.contains("(1 on key1, 1 on key2)")),
            "{d:?}"
        );
    }

    #[test]
    fn a_split_left_by_a_rotation_cut_short_is_completed_on_the_newest_key() {
        // key2 was regenerated five hours ago; one datastore moved to it before the rotation
        // stopped, two still hold key1.
        let five_hours_ago = KeyCreationTime {
            key2: Some(NOW - time::Duration::hours(5)),
            ..facts(Some(120), None).key_creation_time
        };
        let facts = AccountFacts {
            key_creation_time: five_hours_ago,
            ..facts(None, None)
        };
        let held = [KeySlot::Key1, KeySlot::Key2, KeySlot::Key1];
        assert_eq!(
            decide(&facts, None, &held, limits(), NOW),
            Decision::Complete {
                target: KeySlot::Key2,
                reason: "key2 was created 5 hours ago, within the 24 hours in which keysync completes a rotation it cut short, and 2 datastores still hold key1: completing that rotation by moving them to key2".into()
            }
        );
        // Cut short before any datastore moved: the same.
        let d = decide(&facts, None, &[KeySlot::Key1], limits(), NOW);
        assert!(
            matches!(
                d,
                Decision::Complete {
                    target: KeySlot::Key2,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn a_split_past_the_minimum_interval_is_still_completed_within_two_ticks_of_the_schedule() {
        // A daily tick: a rotation cut short at 03:04 is met by the next tick 24 hours later, or
        // by a late or missed one; the split is a rotation cut short for two days.
        let window = Limits::completion_window(DAY, Some(DAY));
        assert_eq!(window, 2 * DAY);
        let limits = Limits {
            completion_window: window,
            ..limits()
        };
        let held = [KeySlot::Key1, KeySlot::Key2, KeySlot::Key1];
        let late = decide(&facts(Some(200), Some(1)), None, &held, limits, NOW);
        assert_eq!(
            late,
            Decision::Complete {
                target: KeySlot::Key2,
                reason: "key2 was created 24 hours ago, within the 2 days in which keysync completes a rotation it cut short, and 2 datastores still hold key1: completing that rotation by moving them to key2".into()
            }
        );
        let older = decide(&facts(Some(200), Some(3)), None, &held, limits, NOW);
        assert!(
            matches!(&older, Decision::Leave { attention: true, reason } if reason.contains("no key was created within the last 2 days")),
            "{older:?}"
        );
        // The minimum interval when it is the longer, and with no schedule.
        assert_eq!(Limits::completion_window(3 * DAY, Some(DAY)), 3 * DAY);
        assert_eq!(Limits::completion_window(DAY, None), DAY);
    }

    #[test]
    fn a_recent_rotation_blocks_another_whatever_the_ages() {
        let d = decide(
            &facts(Some(120), Some(0)),
            None,
            &[KeySlot::Key2],
            Limits {
                ignore_age: true,
                ..limits()
            },
            NOW,
        );
        assert_eq!(
            d,
            leave(
                "a key was created 0 minutes ago, less than the minimum interval of 24 hours between rotations",
                false
            )
        );
        let nobody = decide(&facts(Some(120), Some(0)), None, &[], limits(), NOW);
        assert!(matches!(nobody, Decision::Leave { .. }), "{nobody:?}");
    }

    #[test]
    fn keys_that_changed_while_deciding_or_a_passed_deadline_stop_the_regeneration() {
        let decided_on = facts(Some(120), Some(200)).key_creation_time;
        assert_eq!(last_look(decided_on, decided_on, false), Ok(()));

        let rotated_elsewhere = KeyCreationTime {
            key2: Some(NOW),
            ..decided_on
        };
        assert_eq!(
            last_look(decided_on, rotated_elsewhere, false).unwrap_err(),
            "the keys changed while keysync was deciding; the next run decides again"
        );
        // A key never regenerated before gets its first time.
        let first_time = KeyCreationTime {
            key1: None,
            ..decided_on
        };
        assert!(last_look(first_time, decided_on, false).is_err());
        assert_eq!(
            last_look(decided_on, decided_on, true).unwrap_err(),
            "too little time was left before the invocation's deadline to move every datastore to a new key; the next tick rotates it"
        );
    }

    fn sas(datastore: &str, signer: Signer) -> SasFinding {
        SasFinding {
            datastore: datastore.into(),
            signer,
        }
    }

    #[test]
    fn a_sas_token_signed_with_the_standby_key_blocks_its_regeneration() {
        let found = [
            sas("ws/on_active", Signer::Key(KeySlot::Key1)),
            sas("ws/on_standby", Signer::Key(KeySlot::Key2)),
            sas("ws/dead", Signer::NotAConsumer),
        ];
        assert_eq!(
            sas_guard(KeySlot::Key2, &found, false),
            Err("nothing regenerated: the SAS token of ws/on_standby is signed with key2, which the rotation would regenerate: re-sign it with key1 (the key in use), or set KEYSYNC_REMINT_SAS=true to have keysync re-mint it with key1 before rotating".into())
        );
        // Re-minting allowed: that token is re-minted with the active key first.
        assert_eq!(sas_guard(KeySlot::Key2, &found, true), Ok(vec![1]));
        // Regenerating key1 instead would kill the other one.
        let blocked = sas_guard(KeySlot::Key1, &found, false).unwrap_err();
        assert!(
            blocked.contains("ws/on_active is signed with key1"),
            "{blocked}"
        );
    }

    #[test]
    fn tokens_signed_with_the_active_key_or_dead_already_do_not_block() {
        let found = [
            sas("ws/a", Signer::Key(KeySlot::Key1)),
            sas("ws/b", Signer::NotAConsumer),
        ];
        assert_eq!(sas_guard(KeySlot::Key2, &found, false), Ok(vec![]));
        assert_eq!(sas_guard(KeySlot::Key2, &[], false), Ok(vec![]));
    }

    #[test]
    fn a_token_whose_signer_is_unknown_blocks_even_with_reminting() {
        let found = [sas(
            "ws/old",
            Signer::Unknown("SAS version 2019-12-12".into()),
        )];
        assert_eq!(
            sas_guard(KeySlot::Key2, &found, true),
            Err("nothing regenerated: keysync cannot tell which key signed the SAS token of ws/old (SAS version 2019-12-12), so it may be key2: replace it with a token signed with key1".into())
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
        let forced = Limits {
            ignore_age: true,
            ..limits()
        };
        // The other guards stand: a key created within the minimum interval, and datastores
        // that hold both keys.
        let recent = decide(
            &facts(Some(120), Some(0)),
            None,
            &[KeySlot::Key2],
            forced,
            NOW,
        );
        assert!(matches!(recent, Decision::Leave { .. }), "{recent:?}");
        let both = [KeySlot::Key1, KeySlot::Key2];
        let split = decide(&facts(Some(120), Some(100)), None, &both, forced, NOW);
        assert!(
            matches!(
                split,
                Decision::Leave {
                    attention: true,
                    ..
                }
            ),
            "{split:?}"
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
