//! Event Grid events: decoding them however the Functions host delivers them, and deciding
//! whether one names a storage key regeneration keysync should act on.
//!
//! An event is only a hint about *which account* to look at. Nothing else in it is trusted or
//! logged: its `claims` carry the caller's personal data.

use serde_json::Value;

use crate::report::printable;
use crate::resource_id::StorageAccountId;

/// How much of a value from an event a log line or a reason shows.
const SHOWN: usize = 120;

/// The Event Grid type of ARM resource-action events.
pub const RESOURCE_ACTION_SUCCESS: &str = "Microsoft.Resources.ResourceActionSuccess";
/// The operation of a storage account key regeneration.
pub const REGENERATE_KEY_OPERATION: &str = "Microsoft.Storage/storageAccounts/regenerateKey/action";
const SUBSCRIPTION_VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// How deep a binding value may be JSON-in-a-string; the host has been seen encoding twice.
const MAX_STRING_NESTING: usize = 3;

/// A binding value that holds no usable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event is not JSON: {0}")]
    NotJson(String),
    #[error("the event is not a JSON object")]
    NotAnObject,
    #[error("the event has no type (neither Event Grid `eventType` nor CloudEvents `type`)")]
    NoType,
    #[error("the event batch is empty")]
    Empty,
}

/// What to do about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Reconcile this account.
    Reconcile(StorageAccountId),
    /// Acknowledge and do nothing, for this reason (safe to log).
    Ignore(String),
}

/// The fields keysync reads from an event, in either schema.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event id, shortened and cleaned for logging.
    pub id: String,
    event_type: String,
    subject: Option<String>,
    data: Value,
}

/// Decodes a binding value into events: a JSON object, an array of them, or a JSON string that
/// holds either (possibly encoded more than once).
pub fn decode(value: &Value) -> Result<Vec<Event>, EventError> {
    let value = unwrap_strings(value)?;
    let items = match value {
        Value::Array(items) if items.is_empty() => return Err(EventError::Empty),
        Value::Array(items) => items,
        other => vec![other],
    };
    items
        .iter()
        .map(|item| Event::from_value(&unwrap_strings(item)?))
        .collect()
}

fn unwrap_strings(value: &Value) -> Result<Value, EventError> {
    let mut current = value.clone();
    for _ in 0..MAX_STRING_NESTING {
        let Value::String(text) = &current else {
            return Ok(current);
        };
        current = serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
    }
    match current {
        Value::String(_) => Err(EventError::NotAnObject),
        other => Ok(other),
    }
}

impl Event {
    fn from_value(value: &Value) -> Result<Event, EventError> {
        let object = value.as_object().ok_or(EventError::NotAnObject)?;
        let text = |name: &str| object.get(name).and_then(Value::as_str);
        // CloudEvents 1.0 carries `specversion` and `type`; the Event Grid schema `eventType`.
        let event_type = if object.contains_key("specversion") {
            text("type")
        } else {
            text("eventType").or_else(|| text("type"))
        }
        .ok_or(EventError::NoType)?;
        let data = object.get("data").map(unwrap_data).unwrap_or(Value::Null);
        Ok(Event {
            id: printable(text("id").unwrap_or("-"), SHOWN),
            event_type: event_type.to_string(),
            subject: text("subject").map(str::to_string),
            data,
        })
    }

    /// Decides whether this event asks for a reconcile of an account in scope.
    pub fn decide(&self, in_scope: impl Fn(&str) -> bool) -> Decision {
        if self
            .event_type
            .eq_ignore_ascii_case(SUBSCRIPTION_VALIDATION)
        {
            return Decision::Ignore(
                "subscription validation is answered by the Functions host".into(),
            );
        }
        if !self
            .event_type
            .eq_ignore_ascii_case(RESOURCE_ACTION_SUCCESS)
        {
            return Decision::Ignore(format!(
                "event type {} is not {RESOURCE_ACTION_SUCCESS}",
                printable(&self.event_type, SHOWN)
            ));
        }
        let field = |name: &str| self.data.get(name).and_then(Value::as_str);
        let operation = field("operationName").unwrap_or("");
        if !operation.eq_ignore_ascii_case(REGENERATE_KEY_OPERATION) {
            return Decision::Ignore(format!(
                "operation {} is not a storage key regeneration",
                printable(operation, SHOWN)
            ));
        }
        // ARM writes `status` as a string; anything else there was not written by ARM.
        match self.data.get("status") {
            None => {}
            Some(Value::String(s)) if s.eq_ignore_ascii_case("Succeeded") => {}
            Some(other) => {
                let status = other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string);
                return Decision::Ignore(format!(
                    "the regeneration did not succeed (status {})",
                    printable(&status, SHOWN)
                ));
            }
        }
        self.account(field("resourceUri"), &in_scope)
    }

    fn account(&self, resource_uri: Option<&str>, in_scope: &impl Fn(&str) -> bool) -> Decision {
        let Some(uri) = resource_uri.or(self.subject.as_deref()) else {
            return Decision::Ignore("the event names no resource".into());
        };
        let Ok(account) = StorageAccountId::parse(uri) else {
            return Decision::Ignore("the event's resource is not a storage account".into());
        };
        // A subject that names something else than resourceUri was not written by ARM.
        let subject = self.subject.as_deref().filter(|s| !s.is_empty());
        if subject.is_some_and(|s| StorageAccountId::parse(s).ok().as_ref() != Some(&account)) {
            return Decision::Ignore("the event's subject and resourceUri disagree".into());
        }
        if !in_scope(account.subscription()) {
            return Decision::Ignore(format!(
                "subscription {} is not in KEYSYNC_SUBSCRIPTIONS",
                printable(account.subscription(), SHOWN)
            ));
        }
        Decision::Reconcile(account)
    }
}

/// `data` may itself arrive as a JSON string.
fn unwrap_data(data: &Value) -> Value {
    unwrap_strings(data).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUB: &str = "11111111-2222-3333-4444-555555555555";
    const ACCOUNT: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlshared01";

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/azure-contract/events/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn in_scope(sub: &str) -> bool {
        sub.eq_ignore_ascii_case(SUB)
    }

    fn decide_one(value: &Value) -> Decision {
        let events = decode(value).unwrap();
        assert_eq!(events.len(), 1);
        events[0].decide(in_scope)
    }

    fn expected() -> Decision {
        Decision::Reconcile(StorageAccountId::parse(ACCOUNT).unwrap())
    }

    #[test]
    fn both_schemas_of_a_regeneration_name_the_account() {
        assert_eq!(
            decide_one(&fixture("regenerate_key_egschema.json")),
            expected()
        );
        assert_eq!(
            decide_one(&fixture("regenerate_key_cloudevents.json")),
            expected()
        );
    }

    #[test]
    fn string_encoded_events_decode_like_objects() {
        let event = fixture("regenerate_key_cloudevents.json");
        let once = Value::String(event.to_string());
        let twice = Value::String(once.to_string());
        assert_eq!(decide_one(&once), expected());
        assert_eq!(decide_one(&twice), expected());
    }

    #[test]
    fn list_keys_events_are_ignored_with_the_operation_named() {
        for name in [
            "eventgrid_egschema_resource_action_success.json",
            "eventgrid_cloudevents_resource_action_success.json",
        ] {
            let Decision::Ignore(reason) = decide_one(&fixture(name)) else {
                panic!("{name} not ignored")
            };
            assert!(reason.contains("listKeys/action"), "{reason}");
        }
    }

    #[test]
    fn validation_events_are_ignored() {
        let decision = decide_one(&fixture(
            "eventgrid_docs_subscription_validation_event.json",
        ));
        assert!(matches!(decision, Decision::Ignore(r) if r.contains("validation")));
    }

    #[test]
    fn operation_names_compare_case_insensitively() {
        let mut event = fixture("regenerate_key_cloudevents.json");
        event["data"]["operationName"] = json!(REGENERATE_KEY_OPERATION.to_uppercase());
        event["type"] = json!(RESOURCE_ACTION_SUCCESS.to_lowercase());
        assert_eq!(decide_one(&event), expected());
    }

    #[test]
    fn out_of_scope_and_forged_events_are_ignored() {
        let mut other_sub = fixture("regenerate_key_cloudevents.json");
        let foreign = ACCOUNT.replace(SUB, "99999999-2222-3333-4444-555555555555");
        other_sub["data"]["resourceUri"] = json!(foreign);
        other_sub["subject"] = json!(foreign);
        assert!(
            matches!(decide_one(&other_sub), Decision::Ignore(r) if r.contains("not in KEYSYNC_SUBSCRIPTIONS"))
        );

        let mut forged = fixture("regenerate_key_cloudevents.json");
        forged["subject"] = json!(ACCOUNT.replace("stmlshared01", "stother"));
        assert!(matches!(decide_one(&forged), Decision::Ignore(r) if r.contains("disagree")));

        let mut not_storage = fixture("regenerate_key_cloudevents.json");
        not_storage["data"]["resourceUri"] = json!(format!("{ACCOUNT}/blobServices/default"));
        not_storage["subject"] = json!(null);
        assert!(
            matches!(decide_one(&not_storage), Decision::Ignore(r) if r.contains("not a storage account"))
        );
    }

    #[test]
    fn values_from_an_event_cannot_break_or_reverse_a_log_line() {
        let mut event = fixture("regenerate_key_cloudevents.json");
        event["type"] = json!("Other\u{2028}\u{202e}FAKE outcome=reconciled\n");
        let Decision::Ignore(reason) = decide_one(&event) else {
            panic!("an event of another type must be ignored");
        };
        assert_eq!(
            reason,
            format!("event type OtherFAKE outcome=reconciled is not {RESOURCE_ACTION_SUCCESS}")
        );
    }

    #[test]
    fn failed_regenerations_are_ignored() {
        let mut event = fixture("regenerate_key_cloudevents.json");
        event["data"]["status"] = json!("Failed");
        assert!(matches!(decide_one(&event), Decision::Ignore(r) if r.contains("status Failed")));
        // A status ARM never writes (not a string) is not taken for success either.
        event["data"]["status"] = json!(3);
        assert!(matches!(decide_one(&event), Decision::Ignore(r) if r.contains("status 3")));
    }

    #[test]
    fn malformed_values_are_errors() {
        assert_eq!(
            decode(&json!("{not json"))
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("the event is not JSON")
        );
        assert_eq!(decode(&json!(42)).unwrap_err(), EventError::NotAnObject);
        assert_eq!(decode(&json!([])).unwrap_err(), EventError::Empty);
        assert_eq!(decode(&json!({"id": "x"})).unwrap_err(), EventError::NoType);
        let mut too_deep = fixture("regenerate_key_cloudevents.json");
        for _ in 0..=MAX_STRING_NESTING {
            too_deep = Value::String(too_deep.to_string());
        }
        assert_eq!(decode(&too_deep).unwrap_err(), EventError::NotAnObject);
    }

    #[test]
    fn ignore_reasons_never_carry_claims_or_control_characters() {
        let mut event = fixture("regenerate_key_egschema.json")[0].clone();
        event["eventType"] = json!("Evil\nType\u{1b}[31m");
        let Decision::Ignore(reason) = decide_one(&event) else {
            panic!()
        };
        assert!(
            !reason.contains('\n') && !reason.contains('\u{1b}'),
            "{reason}"
        );
        assert!(!reason.contains("operator@example.com"));
    }
}
