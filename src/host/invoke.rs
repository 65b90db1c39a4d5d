//! Building invocation requests the way the Functions host does.

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
