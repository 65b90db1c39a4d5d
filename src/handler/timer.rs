//! The timer binding's value, read leniently: the host may send `ScheduleStatus` as null,
//! timestamps with `Z`, `+00:00` or no offset at all, and the whole value as a JSON string. None
//! of it decides anything: keysync only logs it.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};

/// What keysync reads from a timer invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerInfo {
    pub is_past_due: bool,
    /// When the schedule last fired, if the host said (and it could be read).
    pub last: Option<OffsetDateTime>,
    pub next: Option<OffsetDateTime>,
}

impl TimerInfo {
    /// Reads whatever can be read; anything unreadable is simply absent.
    pub fn read(value: &Value) -> TimerInfo {
        let value = unwrap_strings(value);
        let field = |name: &str| lookup(&value, name);
        let status = field("ScheduleStatus");
        let time = |name: &str| {
            status
                .and_then(|s| lookup(s, name))
                .and_then(Value::as_str)
                .and_then(parse_time)
        };
        TimerInfo {
            is_past_due: field("IsPastDue").and_then(Value::as_bool).unwrap_or(false),
            last: time("Last"),
            next: time("Next"),
        }
    }
}

fn unwrap_strings(value: &Value) -> Value {
    let mut current = value.clone();
    for _ in 0..3 {
        match &current {
            Value::String(text) => match serde_json::from_str(text) {
                Ok(inner) => current = inner,
                Err(_) => break,
            },
            _ => break,
        }
    }
    current
}

/// A field by name, ignoring case (the host's casing has varied).
fn lookup<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// RFC 3339 with an offset, or the same without one (taken as UTC, the timer's time zone).
fn parse_time(text: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    let format = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(text, &format)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn fixture_timer() -> Value {
        let path = format!(
            "{}/tests/fixtures/azure-contract/events/envelope_timer.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let envelope: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        envelope["Data"]["timer"].clone()
    }

    fn fixture_info() -> TimerInfo {
        TimerInfo {
            is_past_due: false,
            last: Some(datetime!(2026-11-19 3:00 UTC)),
            next: Some(datetime!(2026-11-20 3:00 UTC)),
        }
    }

    #[test]
    fn the_host_fixture_reads() {
        assert_eq!(TimerInfo::read(&fixture_timer()), fixture_info());
    }

    #[test]
    fn the_fixture_encoded_once_or_twice_as_a_json_string_reads_the_same() {
        let mut timer = fixture_timer();
        timer["IsPastDue"] = json!(true);
        let once = Value::String(timer.to_string());
        let twice = Value::String(once.to_string());
        let expected = TimerInfo {
            is_past_due: true,
            ..fixture_info()
        };
        assert_eq!(TimerInfo::read(&once), expected);
        assert_eq!(TimerInfo::read(&twice), expected);
    }

    #[test]
    fn every_timestamp_form_reads_as_the_same_instant() {
        for text in [
            "2026-11-20T03:00:00Z",
            "2026-11-20T03:00:00+00:00",
            "2026-11-20T03:00:00",
            "2026-11-20T03:00:00.0000000",
        ] {
            assert_eq!(
                parse_time(text),
                Some(datetime!(2026-11-20 3:00 UTC)),
                "{text}"
            );
        }
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn odd_payloads_read_as_defaults_without_failing() {
        assert_eq!(
            TimerInfo::read(&json!({"ScheduleStatus": null, "IsPastDue": true})),
            TimerInfo {
                is_past_due: true,
                ..TimerInfo::default()
            }
        );
        assert_eq!(TimerInfo::read(&json!("not json")), TimerInfo::default());
        assert_eq!(TimerInfo::read(&json!(42)), TimerInfo::default());
        let as_string = Value::String(json!({"isPastDue": true}).to_string());
        assert!(TimerInfo::read(&as_string).is_past_due);
    }
}
