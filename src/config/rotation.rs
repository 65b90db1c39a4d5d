//! The rotation policy: which accounts rotate, when a key is due, and the guards around it.

use std::time::Duration;

use chrono::NaiveDateTime;
use croner::parser::{CronParser, Seconds, Year};

use super::ConfigError;
use crate::resource_id::StorageAccountId;

/// The tag that opts an account into rotation: `keysync-rotate` with the value `true`.
pub const ROTATE_TAG: &str = "keysync-rotate";

/// App settings that name the storage the Function App itself runs on: the host's storage in
/// each form the host reads it (a connection string, or an identity-based connection by account
/// name or by service URI), the content share, the deployment storage, and a package URL. keysync
/// never rotates those accounts unless they are listed explicitly: the host would lose its own
/// storage, or a package URL signed with the key.
const HOST_STORAGE_SETTINGS: [&str; 9] = [
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__serviceUri",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "DEPLOYMENT_STORAGE_CONNECTION_STRING",
    "WEBSITE_RUN_FROM_PACKAGE",
];

/// How keysync rotates keys on the timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    /// `KEYSYNC_ROTATION_SCHEDULE`: the timer's NCRONTAB schedule, checked here although the
    /// Functions host is what fires it.
    pub schedule: Option<String>,
    /// `KEYSYNC_ROTATE_ACCOUNTS`: accounts that rotate, by id.
    pub accounts: Vec<StorageAccountId>,
    /// `KEYSYNC_ROTATE_AFTER_DAYS`: the age at which the key in use is replaced.
    pub max_age: Duration,
    /// `KEYSYNC_ROTATE_MIN_INTERVAL_HOURS`: no account is rotated twice within this time.
    pub min_interval: Duration,
    /// Lower-case names of the accounts the Function App runs on.
    pub host_accounts: Vec<String>,
}

impl RotationPolicy {
    /// Reads the policy; `get` returns trimmed, non-empty values.
    pub(super) fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let schedule = get("KEYSYNC_ROTATION_SCHEDULE")
            .map(|s| check_schedule(&s).map(|()| s))
            .transpose()?;
        let accounts = parse_accounts(get("KEYSYNC_ROTATE_ACCOUNTS"))?;
        let days = super::parse_number(
            "KEYSYNC_ROTATE_AFTER_DAYS",
            get("KEYSYNC_ROTATE_AFTER_DAYS"),
            90,
            1..=3650,
        )?;
        let hours = super::parse_number(
            "KEYSYNC_ROTATE_MIN_INTERVAL_HOURS",
            get("KEYSYNC_ROTATE_MIN_INTERVAL_HOURS"),
            24,
            1..=87_600,
        )?;
        let max_age = Duration::from_secs(days as u64 * 86_400);
        let min_interval = Duration::from_secs(hours as u64 * 3_600);
        if max_age <= min_interval {
            return Err(ConfigError::new(
                "KEYSYNC_ROTATE_AFTER_DAYS",
                format!(
                    "{days} days is not longer than KEYSYNC_ROTATE_MIN_INTERVAL_HOURS ({hours} hours): a key would be due before it may be rotated again"
                ),
            ));
        }
        let host_accounts = HOST_STORAGE_SETTINGS
            .iter()
            .filter_map(|name| get(name))
            .filter_map(|v| account_name_in(&v))
            .collect();
        Ok(RotationPolicy {
            schedule,
            accounts,
            max_age,
            min_interval,
            host_accounts,
        })
    }

    /// The longest wait between two ticks of the schedule in the coming year. Worked out when a
    /// rotation asks, not at start-up: a schedule that fires every minute has half a million
    /// ticks in a year, and start-up must stay quick.
    pub fn schedule_period(&self) -> Option<Duration> {
        let cron = ncrontab().parse(self.schedule.as_deref()?).ok()?;
        longest_gap(&cron, now_utc())
    }

    /// True when `account` is listed by id in `KEYSYNC_ROTATE_ACCOUNTS`.
    pub fn lists(&self, account: &StorageAccountId) -> bool {
        self.accounts.contains(account)
    }

    /// True when the Function App runs on this account (by name).
    pub fn is_host_storage(&self, account_name: &str) -> bool {
        self.host_accounts
            .iter()
            .any(|n| n.eq_ignore_ascii_case(account_name))
    }
}

/// A 6-field NCRONTAB schedule (`{second} {minute} {hour} {day} {month} {day-of-week}`), as the
/// Functions host reads it: Sunday is 0, and day-of-month and day-of-week must both match.
fn check_schedule(schedule: &str) -> Result<(), ConfigError> {
    const NAME: &str = "KEYSYNC_ROTATION_SCHEDULE";
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(ConfigError::new(
            NAME,
            format!(
                "'{schedule}' has {} fields; NCRONTAB needs 6: second minute hour day month day-of-week, e.g. '0 0 3 * * *'",
                fields.len()
            ),
        ));
    }
    // A seconds field other than one fixed second fires many times a minute (`*` every second).
    if fields[0].parse::<u8>().map_or(true, |s| s > 59) {
        return Err(ConfigError::new(
            NAME,
            format!(
                "the seconds field '{}' must be one second (0-59); '*' would rotate every second",
                fields[0]
            ),
        ));
    }
    if let Some(why) = beyond_ncrontab(&fields) {
        return Err(ConfigError::new(
            NAME,
            format!("'{schedule}' is not NCRONTAB, which the Functions host reads: {why}"),
        ));
    }
    let cron = ncrontab().parse(schedule).map_err(|e| {
        ConfigError::new(NAME, format!("'{schedule}' is not a valid schedule: {e}"))
    })?;
    match next_within_reach(&cron, now_utc()) {
        Some(_) => Ok(()),
        None => Err(ConfigError::new(
            NAME,
            format!(
                "'{schedule}' never fires in the next four years (a day that does not exist, such as 31 February, or a day of the month that is never on that day of the week): no key would ever be rotated"
            ),
        )),
    }
}

/// The largest value of each field, and the names the month and day-of-week fields take.
const FIELD_MAX: [u32; 6] = [59, 59, 23, 31, 12, 6];
const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const FIELD_LABELS: [&str; 6] = ["second", "minute", "hour", "day", "month", "day-of-week"];

/// Why one of the six fields is outside what NCRONTAB reads, if it is: croner also takes `?`,
/// `L`, `W`, `#` and a day-of-week of 7, which the host refuses, and keysync would then start
/// cleanly with a `RotateKeys` function that never runs. NCRONTAB takes `*`, numbers, ranges,
/// lists, steps, and the English three-letter names of months and days.
fn beyond_ncrontab(fields: &[&str]) -> Option<String> {
    let names: [&[&str]; 6] = [&[], &[], &[], &[], &MONTH_NAMES, &DAY_NAMES];
    for (index, field) in fields.iter().enumerate() {
        let label = FIELD_LABELS[index];
        for part in field.split(',') {
            let (range, step) = part.split_once('/').unwrap_or((part, "1"));
            let value_ok = |value: &str| {
                value == "*"
                    || value.parse::<u32>().is_ok_and(|n| n <= FIELD_MAX[index])
                    || names[index].iter().any(|n| n.eq_ignore_ascii_case(value))
            };
            let step_ok = step.parse::<u32>().is_ok_and(|n| n > 0);
            if !step_ok || !range.split('-').all(value_ok) {
                return Some(format!(
                    "the {label} field's '{part}' (NCRONTAB takes *, numbers up to {}, ranges, lists and steps{})",
                    FIELD_MAX[index],
                    if names[index].is_empty() {
                        ""
                    } else {
                        ", and three-letter names"
                    }
                ));
            }
        }
    }
    None
}

/// How long from start-up a schedule may take to fire: four years and two days hold every
/// leap day, the rarest date a sensible schedule names.
const LONGEST_WAIT_DAYS: i64 = 4 * 365 + 2;

/// The schedule's next time after `now` (UTC, as the Functions host reads schedules unless told
/// otherwise), if it comes within [`LONGEST_WAIT_DAYS`].
fn next_within_reach(cron: &croner::Cron, now: NaiveDateTime) -> Option<NaiveDateTime> {
    let next = cron.find_next_occurrence(&now, false).ok()?;
    (next - now <= chrono::TimeDelta::days(LONGEST_WAIT_DAYS)).then_some(next)
}

/// The longest wait between two consecutive times of `cron` in the year after `now` (from its
/// first two times, for a schedule that fires less than twice a year).
fn longest_gap(cron: &croner::Cron, now: NaiveDateTime) -> Option<Duration> {
    let horizon = now + chrono::TimeDelta::days(366);
    let times: Vec<NaiveDateTime> = cron
        .iter_after(now)
        .enumerate()
        .take_while(|(i, t)| *i < 2 || *t <= horizon)
        .map(|(_, t)| t)
        .take(100_000)
        .collect();
    times
        .windows(2)
        .filter_map(|pair| (pair[1] - pair[0]).to_std().ok())
        .max()
}

/// The current time in UTC, as croner reads it.
fn now_utc() -> NaiveDateTime {
    let now = time::OffsetDateTime::now_utc();
    chrono::DateTime::from_timestamp(now.unix_timestamp(), 0)
        .map(|t| t.naive_utc())
        .unwrap_or_default()
}

/// A parser that reads schedules as the Functions host does: six fields with seconds first,
/// no year, days of the week from Sunday = 0, and day-of-month AND day-of-week.
fn ncrontab() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .dom_and_dow(true)
        .build()
}

fn parse_accounts(value: Option<String>) -> Result<Vec<StorageAccountId>, ConfigError> {
    const NAME: &str = "KEYSYNC_ROTATE_ACCOUNTS";
    let mut accounts: Vec<StorageAccountId> = Vec::new();
    for item in value
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let id = StorageAccountId::parse(item)
            .map_err(|e| ConfigError::new(NAME, format!("'{item}': {e}")))?;
        if !accounts.contains(&id) {
            accounts.push(id);
        }
    }
    Ok(accounts)
}

/// The account name in a connection string (`AccountName=...`, or, in one with a shared access
/// signature and no name, a service endpoint such as `BlobEndpoint=https://<name>.blob...`), a
/// service URI (`https://<name>.blob...`) or a bare name. Keys and signatures are never kept.
fn account_name_in(value: &str) -> Option<String> {
    let fields: Vec<(&str, &str)> = value
        .split(';')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let from_connection_string = field("AccountName").map(str::to_string).or_else(|| {
        [
            "BlobEndpoint",
            "QueueEndpoint",
            "TableEndpoint",
            "FileEndpoint",
        ]
        .into_iter()
        .find_map(|name| field(name).and_then(host_label))
    });
    let from_uri = host_label(value);
    let bare = (!value.contains(['=', ';', '/', ':'])).then(|| value.trim().to_string());
    from_connection_string
        .or(from_uri)
        .or(bare)
        .filter(|n| is_account_name(n))
        .map(|n| n.to_ascii_lowercase())
}

/// The first label of a URL's host: the account in `https://<name>.blob.core.windows.net/`.
fn host_label(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.host_str()?.split('.').next().map(str::to_string)
}

/// A storage account name: 3 to 24 letters and digits (`WEBSITE_RUN_FROM_PACKAGE=1` is none).
fn is_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, Weekday};
    use std::collections::HashMap;

    fn policy(pairs: &[(&str, &str)]) -> Result<RotationPolicy, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        RotationPolicy::read(&|name| map.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn defaults_rotate_after_90_days_at_most_daily() {
        let p = policy(&[]).unwrap();
        assert_eq!(p.max_age, Duration::from_secs(90 * 86_400));
        assert_eq!(p.min_interval, Duration::from_secs(86_400));
        assert!(p.accounts.is_empty() && p.schedule.is_none());
    }

    #[test]
    fn schedules_are_ncrontab_with_one_fixed_second() {
        assert!(policy(&[("KEYSYNC_ROTATION_SCHEDULE", "0 0 3 * * *")]).is_ok());
        assert!(policy(&[("KEYSYNC_ROTATION_SCHEDULE", "0 30 2 * * 0")]).is_ok());
        for bad in [
            "* 0 3 * * *",
            "*/5 * * * * *",
            "0 3 * * *",
            "0 0 25 * * *",
            "01:00:00",
        ] {
            let err = policy(&[("KEYSYNC_ROTATION_SCHEDULE", bad)]).unwrap_err();
            assert_eq!(err.setting, "KEYSYNC_ROTATION_SCHEDULE", "{bad}");
        }
        let err = policy(&[("KEYSYNC_ROTATION_SCHEDULE", "* 0 3 * * *")]).unwrap_err();
        assert!(err.to_string().contains("every second"), "{err}");
    }

    #[test]
    fn the_schedule_period_is_its_longest_wait_between_ticks() {
        let period = |schedule: &str| {
            policy(&[("KEYSYNC_ROTATION_SCHEDULE", schedule)])
                .unwrap()
                .schedule_period()
        };
        let hours = |h: u64| Some(Duration::from_secs(h * 3_600));
        assert_eq!(period("0 0 3 * * *"), hours(24));
        assert_eq!(period("0 0 3 * * 1"), hours(7 * 24));
        // Weekdays only: Friday to Monday is the longest wait.
        assert_eq!(period("0 0 3 * * 1-5"), hours(72));
        assert_eq!(period("0 0 */6 * * *"), hours(6));
        assert_eq!(policy(&[]).unwrap().schedule_period(), None);
    }

    #[test]
    fn what_croner_reads_but_the_host_does_not_is_refused() {
        for (beyond, part) in [
            ("0 0 3 L * *", "day field's 'L'"),
            ("0 0 3 ? * 1", "day field's '?'"),
            ("0 0 3 15W * *", "day field's '15W'"),
            ("0 0 3 * * 5#2", "day-of-week field's '5#2'"),
            ("0 0 3 * * 5L", "day-of-week field's '5L'"),
            ("0 0 3 * * 7", "day-of-week field's '7'"),
            ("0 0 3 * * 1-7", "day-of-week field's '1-7'"),
            ("0 0 */0 * * *", "hour field's '*/0'"),
        ] {
            let err = policy(&[("KEYSYNC_ROTATION_SCHEDULE", beyond)]).unwrap_err();
            assert_eq!(err.setting, "KEYSYNC_ROTATION_SCHEDULE", "{beyond}");
            let text = err.to_string();
            assert!(text.contains("is not NCRONTAB"), "{beyond}: {text}");
            assert!(text.contains(part), "{beyond}: {text}");
        }
        for fine in [
            "0 0 3 * JAN-DEC MON-FRI",
            "0 */5 * * * 1,3,5",
            "0 0 3 1-7 * sun",
            "0 0 3 */2 jul *",
            "30 15 2 1,15 * *",
        ] {
            assert!(
                policy(&[("KEYSYNC_ROTATION_SCHEDULE", fine)]).is_ok(),
                "{fine}"
            );
        }
    }

    /// The next times `schedule` fires after `after`, as keysync's parser reads it.
    fn next_times(schedule: &str, after: NaiveDateTime, count: usize) -> Vec<NaiveDateTime> {
        let cron = ncrontab().parse(schedule).unwrap();
        cron.iter_after(after).take(count).collect()
    }

    fn at(year: i32, month: u32, day: u32, hour: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(year, month, day)
            .and_then(|d| d.and_hms_opt(hour, 0, 0))
            .unwrap()
    }

    #[test]
    fn sunday_is_0_and_saturday_6_as_the_functions_host_counts_days() {
        let wednesday = at(2026, 11, 18, 12);
        assert_eq!(wednesday.weekday(), Weekday::Wed);

        let sundays = next_times("0 0 9 * * 0", wednesday, 2);
        assert_eq!(sundays, [at(2026, 11, 22, 9), at(2026, 11, 29, 9)]);
        assert!(sundays.iter().all(|t| t.weekday() == Weekday::Sun));
        let saturdays = next_times("0 0 9 * * 6", wednesday, 2);
        assert_eq!(saturdays, [at(2026, 11, 21, 9), at(2026, 11, 28, 9)]);
        assert!(saturdays.iter().all(|t| t.weekday() == Weekday::Sat));
    }

    #[test]
    fn a_day_of_month_and_a_day_of_week_must_both_match() {
        // Every Friday the 13th of 2026, and not Friday 2 January nor Tuesday 13 January.
        let fridays_13th = next_times("0 0 9 13 * 5", at(2026, 1, 1, 0), 3);
        assert_eq!(
            fridays_13th,
            [at(2026, 2, 13, 9), at(2026, 3, 13, 9), at(2026, 11, 13, 9)]
        );
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        for never in ["0 0 3 31 2 *", "0 0 3 30 2 *", "0 0 3 31 4 *"] {
            let err = policy(&[("KEYSYNC_ROTATION_SCHEDULE", never)]).unwrap_err();
            assert_eq!(err.setting, "KEYSYNC_ROTATION_SCHEDULE", "{never}");
            assert!(err.to_string().contains("never fires"), "{err}");
        }
        for rare in ["0 0 3 29 2 *", "0 0 3 31 * 1", "0 0 3 13 * 5"] {
            assert!(
                policy(&[("KEYSYNC_ROTATION_SCHEDULE", rare)]).is_ok(),
                "{rare}"
            );
        }
    }

    #[test]
    fn the_next_time_must_come_within_four_years() {
        let cron = |s| ncrontab().parse(s).unwrap();
        // 29 February on a Monday: 2044 is the next after 2026, too far to wait for.
        let leap_monday = cron("0 0 3 29 2 1");
        assert_eq!(next_within_reach(&leap_monday, at(2026, 3, 1, 0)), None);
        assert_eq!(
            next_within_reach(&leap_monday, at(2043, 3, 1, 0)),
            Some(at(2044, 2, 29, 3))
        );
        // Just after one leap day, the next is four years away, and within reach.
        let leap_day = cron("0 0 3 29 2 *");
        assert_eq!(
            next_within_reach(&leap_day, at(2024, 2, 29, 4)),
            Some(at(2028, 2, 29, 3))
        );
    }

    #[test]
    fn the_maximum_age_must_exceed_the_minimum_interval() {
        let err = policy(&[
            ("KEYSYNC_ROTATE_AFTER_DAYS", "1"),
            ("KEYSYNC_ROTATE_MIN_INTERVAL_HOURS", "48"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "KEYSYNC_ROTATE_AFTER_DAYS");
        assert!(err.to_string().contains("48 hours"), "{err}");
    }

    #[test]
    fn listed_accounts_are_ids_compared_without_case() {
        let id =
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/sta";
        let p = policy(&[(
            "KEYSYNC_ROTATE_ACCOUNTS",
            &format!("{id}, {}", id.to_uppercase()),
        )])
        .unwrap();
        assert_eq!(p.accounts.len(), 1);
        assert!(p.lists(&StorageAccountId::parse(&id.to_uppercase()).unwrap()));
        let err = policy(&[("KEYSYNC_ROTATE_ACCOUNTS", "sta")]).unwrap_err();
        assert_eq!(err.setting, "KEYSYNC_ROTATE_ACCOUNTS");
    }

    #[test]
    fn the_host_storage_is_found_in_every_form_without_keeping_keys() {
        let p = policy(&[
            ("AzureWebJobsStorage", "DefaultEndpointsProtocol=https;AccountName=stfunchost;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net"),
            ("AzureWebJobsStorage__blobServiceUri", "https://stflexdeploy.blob.core.windows.net"),
            ("AzureWebJobsStorage__accountName", "StIdentityHost"),
            ("AzureWebJobsStorage__queueServiceUri", "https://stqueues.queue.core.windows.net"),
            ("AzureWebJobsStorage__tableServiceUri", "https://sttables.table.core.windows.net/"),
            (
                "WEBSITE_RUN_FROM_PACKAGE",
                "https://stpackages.blob.core.windows.net/app/keysync.zip?sv=2024-11-04&sig=c2lnbmF0dXJl",
            ),
        ])
        .unwrap();
        assert_eq!(
            p.host_accounts,
            vec![
                "stfunchost",
                "stidentityhost",
                "stflexdeploy",
                "stqueues",
                "sttables",
                "stpackages"
            ]
        );
        assert!(p.is_host_storage("STFUNCHOST"));
        assert!(!format!("{p:?}").contains("c2VjcmV0"));
        assert!(!format!("{p:?}").contains("c2lnbmF0dXJl"));
    }

    #[test]
    fn a_connection_string_with_a_shared_access_signature_names_its_account_by_endpoint() {
        let p = policy(&[(
            "AzureWebJobsStorage",
            "BlobEndpoint=https://stsashost.blob.core.windows.net/;QueueEndpoint=https://stsashost.queue.core.windows.net/;SharedAccessSignature=sv=2024-11-04&ss=bq&srt=sco&sp=rwdl&sig=c2lnbmF0dXJl",
        )])
        .unwrap();
        assert_eq!(p.host_accounts, vec!["stsashost"]);
        assert!(!format!("{p:?}").contains("c2lnbmF0dXJl"));
    }

    #[test]
    fn a_run_from_package_flag_names_no_account() {
        let p = policy(&[("WEBSITE_RUN_FROM_PACKAGE", "1")]).unwrap();
        assert!(p.host_accounts.is_empty(), "{:?}", p.host_accounts);
    }
}
