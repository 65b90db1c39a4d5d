//! Reading what one HTTP attempt brought back: the JSON of a success, ARM's error shape of a
//! failure, the correlation id, and the throttling hints in the headers.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::error::shorten;
use super::redact::redact;
use super::{ArmError, ArmErrorKind, Operation};

/// A complete HTTP answer: the body is read before the concurrency permit is released.
pub(super) struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ResponseBody,
}

/// A response body. The answer of an operation that can carry keys or secrets is copied into a
/// buffer of its size that is zeroed on drop, and decoded from there; the original is zeroed.
pub(super) enum ResponseBody {
    Plain(Bytes),
    Secret(Zeroizing<Vec<u8>>),
}

impl ResponseBody {
    /// The body `operation` got, kept according to what it can hold.
    pub fn new(body: Bytes, operation: Operation) -> Self {
        if !carries_secrets(operation) {
            return ResponseBody::Plain(body);
        }
        let kept = Zeroizing::new(body.to_vec());
        wipe(body);
        ResponseBody::Secret(kept)
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            ResponseBody::Plain(bytes) => bytes,
            ResponseBody::Secret(bytes) => bytes,
        }
    }
}

/// Zeroes `body` if keysync holds the only reference to it, as it does with what reqwest hands
/// over (checked with reqwest 0.13). Copies made on the way there, in rustls' buffers over HTTPS
/// and in hyper's when a body is shared, are freed without zeroing: out of keysync's reach.
fn wipe(body: Bytes) {
    if let Ok(mut owned) = body.try_into_mut() {
        owned[..].zeroize();
    }
}

impl RawResponse {
    /// A header as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// `x-ms-correlation-request-id`, else `x-ms-request-id`, if it looks like an id.
    pub fn correlation_id(&self) -> Option<String> {
        ["x-ms-correlation-request-id", "x-ms-request-id"]
            .into_iter()
            .filter_map(|name| self.header(name))
            .find(|value| is_id_like(value))
            .map(str::to_string)
    }

    /// How long the server asked us to wait before the next request, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers, SystemTime::now())
    }

    /// An error about this response, with its status and correlation id but no code yet.
    pub fn error(
        &self,
        kind: ArmErrorKind,
        operation: Operation,
        resource: &str,
        message: impl AsRef<str>,
    ) -> ArmError {
        let mut error = ArmError::new(kind, operation, resource, message);
        error.status = Some(self.status.as_u16());
        error.correlation_id = self.correlation_id();
        error
    }

    /// The error for a non-success answer, with ARM's code and shortened message. Both are
    /// redacted first: every piece of `sent` (what the request sent as secrets) and anything
    /// shaped like a SAS token, and for the operations that carry keys every key-like run.
    pub fn status_error<'a>(
        &self,
        operation: Operation,
        resource: &str,
        sent: impl IntoIterator<Item = &'a [u8]>,
    ) -> ArmError {
        let content_type = self.header(CONTENT_TYPE.as_str());
        let (code, message) = describe_error_body(self.body.as_slice(), content_type);
        let sent: Vec<&[u8]> = sent.into_iter().collect();
        let clean = |text: &str| redact(text, sent.iter().copied(), carries_secrets(operation));
        let mut error = self.error(ArmErrorKind::Status, operation, resource, clean(&message));
        error.code = code.map(|code| shorten(&clean(&code)));
        error
    }

    /// Decodes a success body. The error never quotes the body: for the secret-bearing
    /// operations it says only that the body could not be read, for the others it says where.
    pub fn json<T: DeserializeOwned>(
        &self,
        operation: Operation,
        resource: &str,
    ) -> Result<T, ArmError> {
        // A string with escapes to undo (such as `\/` or `\u002B`, which some servers write in
        // base64) is built in serde_json's scratch buffer, freed without zeroing.
        serde_json::from_slice(self.body.as_slice()).map_err(|e| {
            let message = if operation.returns_secrets() {
                "the response body could not be read".to_string()
            } else {
                // serde's own message can quote values from the body; line and column cannot.
                format!(
                    "the response body is not the expected JSON ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                )
            };
            self.error(ArmErrorKind::Decode, operation, resource, message)
        })
    }
}

/// A header as text, if present and printable.
pub(super) fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok()
}

/// Operations whose request or response holds a key or secret.
fn carries_secrets(operation: Operation) -> bool {
    operation.returns_secrets() || operation == Operation::DatastoresCreateOrUpdate
}

fn is_id_like(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// ARM's `error.code` and `error.message` (or the older top-level `code`/`message`), as they are:
/// the caller redacts, then shortens them. For a body that is not JSON, only its media type and
/// size, since gateways answer with whole HTML pages.
pub(super) fn describe_error_body(
    body: &[u8],
    content_type: Option<&str>,
) -> (Option<String>, String) {
    if body.iter().all(u8::is_ascii_whitespace) {
        return (None, "empty error body".to_string());
    }
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        let media_type = media_type(content_type);
        let message = format!("non-JSON error body ({media_type}, {} bytes)", body.len());
        return (None, message);
    };
    let detail = json.get("error").filter(|e| e.is_object()).unwrap_or(&json);
    let text = |field: &str| {
        detail
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match (text("code"), text("message")) {
        (None, None) => {
            let message = format!("error body without code or message ({} bytes)", body.len());
            (None, message)
        }
        (code, message) => (code, message.unwrap_or_default()),
    }
}

/// The media type of a `Content-Type` value (`text/html; charset=utf-8` → `text/html`), only if
/// it looks like one: the header comes from whatever proxy answered.
fn media_type(content_type: Option<&str>) -> &str {
    let essence = content_type
        .and_then(|value| value.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    let well_formed = essence.len() <= 64
        && essence
            .split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && essence
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/.+-_".contains(c));
    if well_formed { essence } else { "unknown type" }
}

/// The wait a 429 or 503 asks for: `retry-after-ms` or `x-ms-retry-after-ms` (milliseconds), else
/// `Retry-After` in seconds or as an HTTP date (a date in the past means now).
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    asked_wait(headers, now).map(|wait| wait.min(LONGEST_RETRY_AFTER))
}

/// Longer waits are read as this one: every wait is added to the clock, and an absurd one
/// (`Retry-After: 10000000000000000000`) would overflow it. No caller waits a day anyway.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(86_400);

fn asked_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = header(headers, name).and_then(|v| v.trim().parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let value = header(headers, RETRY_AFTER.as_str())?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        let seconds = Some(seconds).filter(|s| !s.is_nan())?;
        return Duration::try_from_secs_f64(seconds.min(LONGEST_RETRY_AFTER.as_secs_f64())).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        fn at(pairs: &[(&'static str, &str)]) -> Option<Duration> {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
            retry_after(&headers(pairs), now)
        }
        assert_eq!(at(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(at(&[("retry-after", "0")]), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            at(&[("retry-after", &later)]),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(at(&[("retry-after", &earlier)]), Some(Duration::ZERO));
        let both = [("retry-after", "7"), ("x-ms-retry-after-ms", "1500")];
        assert_eq!(at(&both), Some(Duration::from_millis(1500)));
        assert_eq!(at(&[("retry-after", "soon")]), None);
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(at(&[("retry-after", "10000000000000000000")]), day);
        assert_eq!(at(&[("retry-after", "1e300")]), day);
        assert_eq!(at(&[("retry-after", "NaN")]), None);
        assert_eq!(at(&[("retry-after-ms", "18446744073709551615")]), day);
        assert_eq!(at(&[("retry-after", "-1")]), None);
        assert_eq!(at(&[]), None);
    }

    #[test]
    fn answers_that_can_hold_a_secret_are_kept_in_a_zeroed_buffer() {
        let kept = |operation| {
            let body = ResponseBody::new(Bytes::from_static(b"{}"), operation);
            assert_eq!(body.as_slice(), b"{}");
            matches!(body, ResponseBody::Secret(_))
        };
        for operation in Operation::ALL {
            let expected = matches!(
                operation,
                Operation::StorageAccountsListKeys
                    | Operation::StorageAccountsRegenerateKey
                    | Operation::DatastoresListSecrets
                    | Operation::DatastoresCreateOrUpdate
            );
            assert_eq!(kept(operation), expected, "{operation}");
        }
    }

    #[test]
    fn error_bodies_in_both_arm_shapes_give_code_and_message() {
        let nested =
            br#"{"error": {"code": "ResourceNotFound", "message": "The Resource was not found."}}"#;
        assert_eq!(
            describe_error_body(nested, Some("application/json")),
            (
                Some("ResourceNotFound".into()),
                "The Resource was not found.".into()
            )
        );
        let flat = br#"{"code": "Conflict", "message": "busy"}"#;
        assert_eq!(
            describe_error_body(flat, None),
            (Some("Conflict".into()), "busy".into())
        );
        assert_eq!(describe_error_body(b"", None).1, "empty error body");
        assert_eq!(
            describe_error_body(b"{}", None).1,
            "error body without code or message (2 bytes)"
        );
    }

    #[test]
    fn html_error_bodies_are_described_never_quoted() {
        let html = b"<html><body><h1>502 Bad Gateway</h1></body></html>";
        let (code, message) = describe_error_body(html, Some("text/html; charset=utf-8"));
        assert_eq!(code, None);
        assert_eq!(message, "non-JSON error body (text/html, 50 bytes)");
        let (_, message) = describe_error_body(html, Some("<script>x</script>"));
        assert_eq!(message, "non-JSON error body (unknown type, 50 bytes)");
    }
}
