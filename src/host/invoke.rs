//! Building invocation requests, and reading their replies, the way the Functions host does.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How a binding value is put into `Data`. The host usually sends an object, but has been seen
/// sending a JSON string holding the JSON, even encoded twice; the handler must accept all three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BindingEncoding {
    #[default]
    Object,
    String,
    DoubleString,
}

impl BindingEncoding {
    pub fn encode(self, value: &Value) -> Value {
        match self {
            BindingEncoding::Object => value.clone(),
            BindingEncoding::String => Value::String(value.to_string()),
            BindingEncoding::DoubleString => {
                Value::String(Value::String(value.to_string()).to_string())
            }
        }
    }
}

/// The `{"Data": ..., "Metadata": ...}` body for one invocation of `function`.
pub fn envelope(
    function: &str,
    binding: &str,
    value: &Value,
    encoding: BindingEncoding,
    trigger_metadata: Map<String, Value>,
) -> Value {
    let mut metadata = trigger_metadata;
    metadata.insert("sys".into(), sys(function));
    json!({
        "Data": { binding: encoding.encode(value) },
        "Metadata": metadata,
    })
}

/// The metadata the host adds for an Event Grid trigger: the event's `data`, as in the fixture.
pub fn event_grid_metadata(event: &Value) -> Map<String, Value> {
    let mut metadata = Map::new();
    if let Some(data) = event.get("data") {
        metadata.insert("data".into(), data.clone());
    }
    metadata
}

/// A timer binding value as the host sends it for a tick due now.
pub fn timer_value(past_due: bool) -> Value {
    let now = OffsetDateTime::now_utc();
    let at = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    json!({
        "Schedule": {"AdjustForDST": true},
        "ScheduleStatus": {
            "Last": at(now - time::Duration::days(1)),
            "Next": at(now + time::Duration::days(1)),
            "LastUpdated": at(now - time::Duration::days(1)),
        },
        "IsPastDue": past_due,
    })
}

/// Why the host cannot use a 2xx reply to a non-HTTP invocation, if it cannot. The host
/// deserializes the body as `{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}` (names
/// without regard to case, each optional), and only from a JSON media type: any other reply fails
/// the invocation just as a non-2xx one does.
pub fn unreadable_reply(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let media_type = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json" | "text/json") => {}
        Some(other) => return Some(format!("its Content-Type is {other}, not application/json")),
        None => return Some("it has no Content-Type (application/json)".to_string()),
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Some("its body is not JSON".to_string());
    };
    let Value::Object(result) = value else {
        return Some(format!(
            "its body is {}, not a JSON object (at least {{}})",
            kind(&value)
        ));
    };
    let field = |name: &str| {
        result
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    };
    match (field("Outputs"), field("Logs")) {
        (Some(outputs), _) if !matches!(outputs, Value::Object(_) | Value::Null) => {
            Some(format!("its Outputs is {}, not an object", kind(outputs)))
        }
        (_, Some(logs)) if !matches!(logs, Value::Array(_) | Value::Null) => {
            Some(format!("its Logs is {}, not a list", kind(logs)))
        }
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn sys(function: &str) -> Value {
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    json!({
        "MethodName": function,
        "UtcNow": now,
        "RandGuid": uuid::Uuid::new_v4().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_nest_the_json_as_the_host_does() {
        let v = json!({"a": 1});
        assert_eq!(BindingEncoding::Object.encode(&v), v);
        assert_eq!(BindingEncoding::String.encode(&v), json!("{\"a\":1}"));
        assert_eq!(
            BindingEncoding::DoubleString.encode(&v),
            json!("\"{\\\"a\\\":1}\"")
        );
    }

    #[test]
    fn a_reply_is_read_only_as_a_json_object_from_a_json_media_type() {
        let json = Some("application/json");
        assert_eq!(unreadable_reply(json, b"{}"), None);
        assert_eq!(
            unreadable_reply(Some("Text/JSON; charset=utf-8"), b"{}"),
            None
        );
        let reply = br#"{"outputs": null, "logs": ["a"], "returnValue": "x"}"#;
        assert_eq!(unreadable_reply(json, reply), None);
        for (content_type, body, why) in [
            (None, "{}", "it has no Content-Type (application/json)"),
            (
                Some("text/plain"),
                "{}",
                "its Content-Type is text/plain, not application/json",
            ),
            (json, "", "its body is not JSON"),
            (
                json,
                "null",
                "its body is null, not a JSON object (at least {})",
            ),
            (
                json,
                r#""{}""#,
                "its body is a string, not a JSON object (at least {})",
            ),
            (
                json,
                r#"{"Outputs": []}"#,
                "its Outputs is an array, not an object",
            ),
            (json, r#"{"Logs": "l"}"#, "its Logs is a string, not a list"),
        ] {
            let why = Some(why.to_string());
            assert_eq!(
                unreadable_reply(content_type, body.as_bytes()),
                why,
                "{body}"
            );
        }
    }

    #[test]
    fn the_envelope_matches_the_fixture_shape() {
        let event = json!({"id": "e", "data": {"operationName": "x"}});
        let env = envelope(
            "KeyRegenerated",
            "event",
            &event,
            BindingEncoding::Object,
            event_grid_metadata(&event),
        );
        assert_eq!(env["Data"]["event"], event);
        assert_eq!(env["Metadata"]["data"]["operationName"], "x");
        assert_eq!(env["Metadata"]["sys"]["MethodName"], "KeyRegenerated");
    }
}
