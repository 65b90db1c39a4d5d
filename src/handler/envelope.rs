//! The custom-handler protocol: the invocation request the Functions host posts for a
//! non-HTTP trigger, and the response it expects back.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The reply to an invocation that cannot be run.
pub type Refusal = (StatusCode, Json<InvocationResponse>);

/// An invocation body keysync cannot use. The message is safe to log and to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the invocation body is not JSON")]
    NotJson,
    #[error("the invocation body has no `Data` object")]
    NoData,
    #[error("the invocation's `Data` has no `{0}` binding")]
    NoBinding(String),
}

/// `{"Data": {...}, "Metadata": {...}}` as the host posts it. Metadata repeats the trigger's
/// payload (including an event's claims), so keysync never reads or logs it.
#[derive(Debug)]
pub struct Invocation {
    data: Map<String, Value>,
}

impl Invocation {
    /// Parses the body; names are matched without regard to case, as the host is lenient too.
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let value: Value = serde_json::from_slice(body).map_err(|_| EnvelopeError::NotJson)?;
        let Value::Object(envelope) = value else {
            return Err(EnvelopeError::NoData);
        };
        let data = envelope
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("Data"))
            .and_then(|(_, data)| match data {
                Value::Object(data) => Some(data),
                _ => None,
            })
            .ok_or(EnvelopeError::NoData)?;
        Ok(Invocation { data })
    }

    /// The value of a trigger binding, as sent (an object, or a string holding JSON).
    pub fn binding(&self, name: &str) -> Result<&Value, EnvelopeError> {
        self.data
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .filter(|value| !value.is_null())
            .ok_or_else(|| EnvelopeError::NoBinding(name.to_string()))
    }
}

/// The reply to an invocation: `{"Outputs": {}, "Logs": [...], "ReturnValue": ...}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvocationResponse {
    pub outputs: Map<String, Value>,
    pub logs: Vec<String>,
    pub return_value: Value,
}

impl InvocationResponse {
    pub fn new(logs: Vec<String>, return_value: Value) -> Self {
        InvocationResponse {
            outputs: Map::new(),
            logs,
            return_value,
        }
    }
}

/// Refuses an invocation: non-2xx, so the host fails it (Event Grid delivers again, then
/// dead-letters), with the reason on stderr (the host keeps `Logs` only on success) and in the
/// JSON reply the host expects.
pub fn refuse(function: &str, status: StatusCode, message: &str) -> Refusal {
    tracing::error!(function, error = message, "invocation rejected");
    let body = InvocationResponse::new(vec![], json!({ "error": message }));
    (status, Json(body))
}

/// The invocation's body, or its refusal when it could not be read: too large (413), or cut
/// off. The reply stays the host's JSON rather than axum's plain text.
pub fn read_body(
    function: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Box<Refusal>> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                format!(
                    "the invocation body is larger than {} bytes",
                    super::MAX_BODY_BYTES
                )
            }
            _ => "the invocation body could not be read".to_string(),
        };
        Box::new(refuse(function, status, &message))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_host_fixture_yields_the_event_binding() {
        let path = format!(
            "{}/tests/fixtures/azure-contract/events/envelope_eventgrid_object.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(path).unwrap();
        let invocation = Invocation::parse(&body).unwrap();
        assert_eq!(
            invocation.binding("event").unwrap()["eventType"],
            "Microsoft.Resources.ResourceActionSuccess"
        );
    }

    #[test]
    fn names_match_without_case() {
        let body = json!({"data": {"Event": {"eventType": "x"}}}).to_string();
        assert!(
            Invocation::parse(body.as_bytes())
                .unwrap()
                .binding("event")
                .is_ok()
        );
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert_eq!(Invocation::parse(b"{").unwrap_err(), EnvelopeError::NotJson);
        assert_eq!(Invocation::parse(b"[]").unwrap_err(), EnvelopeError::NoData);
        assert_eq!(
            Invocation::parse(br#"{"Data": "x"}"#).unwrap_err(),
            EnvelopeError::NoData
        );
        let no_event = Invocation::parse(br#"{"Data": {"timer": {}}}"#).unwrap();
        assert_eq!(
            no_event.binding("event").unwrap_err(),
            EnvelopeError::NoBinding("event".into())
        );
        let null_event = Invocation::parse(br#"{"Data": {"event": null}}"#).unwrap();
        assert!(null_event.binding("event").is_err());
    }

    #[test]
    fn the_response_uses_the_hosts_field_names() {
        let json =
            serde_json::to_value(InvocationResponse::new(vec!["l".into()], json!(1))).unwrap();
        assert_eq!(
            json,
            json!({"Outputs": {}, "Logs": ["l"], "ReturnValue": 1})
        );
    }
}
