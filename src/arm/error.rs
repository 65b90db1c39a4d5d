//! The error of an ARM call: which operation on which resource failed, how, and the ids Azure
//! support needs to trace it. It never holds a request body, a token or a key.

use std::fmt;

use super::operation::Operation;

/// What went wrong, broadly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmErrorKind {
    /// ARM answered with a non-success status.
    Status,
    /// No usable answer: connection refused or dropped, timeout, TLS.
    Transport,
    /// No bearer token could be obtained.
    Credential,
    /// ARM answered success with a body keysync cannot read.
    Decode,
    /// A long-running operation ended in `Failed` or `Canceled`.
    OperationFailed,
    /// The caller's deadline passed before the call could finish.
    Deadline,
    /// ARM accepted a long-running operation, which was still running at the caller's deadline.
    /// Azure finishes it on its own.
    StillRunning,
    /// ARM accepted a long-running operation whose status keysync could not read (the poll was
    /// refused, or kept failing past the retries). Azure finishes it on its own; the message
    /// says why it was not followed, naming the missing permission for a refusal.
    Unconfirmed,
}

/// A failed ARM call.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ArmError {
    /// What went wrong, broadly.
    pub kind: ArmErrorKind,
    /// The operation that failed.
    pub operation: Operation,
    /// The ARM id of the resource (or the subscription, for list operations).
    pub resource: String,
    /// The HTTP status of the answer that failed the call, if there was one.
    pub status: Option<u16>,
    /// ARM's `error.code`, such as `ResourceNotFound`.
    pub code: Option<String>,
    /// ARM's `error.message`, shortened; or a description of the transport failure.
    pub message: String,
    /// `x-ms-correlation-request-id` (or `x-ms-request-id`) of the failed response.
    pub correlation_id: Option<String>,
    /// The `x-ms-client-request-id` keysync sent with the failed attempt: the one id a timeout or
    /// a dropped connection has, since no answer brought a correlation id. ARM logs it too.
    pub client_request_id: Option<uuid::Uuid>,
}

/// The longest message an error keeps, in characters: ARM messages can run to kilobytes, and an
/// error ends up in one log line and one report line.
const MAX_MESSAGE_CHARS: usize = 300;

impl ArmError {
    /// True when ARM said the resource (or the secret) does not exist: a 404 with an ARM error
    /// body. A 404 without one (a gateway's page, a proxy's) says nothing about the resource,
    /// and taking it for "gone" would have an event acknowledged while its datastores stay broken.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404) && self.code.is_some()
    }

    /// An error without an HTTP answer; `message` is shortened to one line.
    pub(crate) fn new(
        kind: ArmErrorKind,
        operation: Operation,
        resource: impl Into<String>,
        message: impl AsRef<str>,
    ) -> Self {
        // A credential failure lists one reason per developer tool tried, and the operator
        // needs each of them (which tool is missing, which is not signed in).
        let limit = match kind {
            ArmErrorKind::Credential => MAX_CREDENTIAL_MESSAGE_CHARS,
            _ => MAX_MESSAGE_CHARS,
        };
        ArmError {
            kind,
            operation,
            resource: resource.into(),
            status: None,
            code: None,
            message: shorten_to(message.as_ref(), limit),
            correlation_id: None,
            client_request_id: None,
        }
    }
}

/// The longest credential failure an error keeps: azure_identity's account of every tool it
/// tried, with the troubleshooting link each one adds, fits well within it.
const MAX_CREDENTIAL_MESSAGE_CHARS: usize = 1200;

/// Folds `text` onto one line (control characters and runs of whitespace become one space) and
/// cuts it at [`MAX_MESSAGE_CHARS`], marking the cut with `…`.
pub(crate) fn shorten(text: &str) -> String {
    shorten_to(text, MAX_MESSAGE_CHARS)
}

/// [`shorten`] to `limit` characters, cut at the last space within them so that no word is
/// left half (a word longer than the limit is cut where it reaches it).
fn shorten_to(text: &str, limit: usize) -> String {
    let folded = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let Some((cut, _)) = folded.char_indices().nth(limit) else {
        return folded;
    };
    let head = &folded[..cut];
    let head = match folded[cut..].starts_with(' ') {
        true => head,
        false => head.rfind(' ').map_or(head, |space| &head[..space]),
    };
    format!("{head}…")
}

impl fmt::Display for ArmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {} failed", self.operation, self.resource)?;
        if let Some(status) = self.status {
            write!(f, ": HTTP {status}")?;
        }
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        // One id is enough to trace the call: ARM's, when it answered.
        match (&self.correlation_id, &self.client_request_id) {
            (Some(id), _) => write!(f, " (correlation id {id})"),
            (None, Some(id)) => write!(f, " (client request id {id})"),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_between_words() {
        // 300 is not a multiple of 8: the limit falls inside a word.
        let words = "abcdefg ".repeat(MAX_MESSAGE_CHARS);
        let short = shorten(&words);
        assert!(short.ends_with(" abcdefg…"), "{short}");
        assert!(short.chars().count() <= MAX_MESSAGE_CHARS + 1);
        // A cut that falls on a space keeps the whole word before it.
        let exact = format!("{} tail", "x".repeat(MAX_MESSAGE_CHARS));
        assert_eq!(
            shorten(&exact),
            format!("{}…", "x".repeat(MAX_MESSAGE_CHARS))
        );
        let credential = ArmError::new(
            ArmErrorKind::Credential,
            Operation::StorageAccountsList,
            "/subscriptions/s",
            format!("{} azd not found on PATH", "a".repeat(400)),
        );
        assert!(credential.message.ends_with("azd not found on PATH"));
    }

    #[test]
    fn shorten_folds_lines_and_caps_the_length() {
        assert_eq!(shorten("  a\r\n b\tc  "), "a b c");
        let long = "é".repeat(MAX_MESSAGE_CHARS + 50);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(short.ends_with('…'));
        assert_eq!(
            shorten(&"x".repeat(MAX_MESSAGE_CHARS)).len(),
            MAX_MESSAGE_CHARS
        );
    }

    #[test]
    fn display_names_operation_resource_status_code_and_correlation_id() {
        let mut err = ArmError::new(
            ArmErrorKind::Status,
            Operation::WorkspacesGet,
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w",
            "gone",
        );
        err.status = Some(404);
        err.code = Some("ResourceNotFound".into());
        err.correlation_id = Some("c-1".into());
        err.client_request_id = Some(uuid::Uuid::nil());
        assert!(err.is_not_found());
        let page = ArmError {
            code: None,
            ..err.clone()
        };
        assert!(!page.is_not_found(), "a 404 page without an ARM error");
        assert_eq!(
            err.to_string(),
            "Workspaces_Get on /subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w failed: HTTP 404 ResourceNotFound: gone (correlation id c-1)"
        );
    }

    #[test]
    fn display_names_the_client_request_id_when_no_answer_brought_a_correlation_id() {
        let mut err = ArmError::new(
            ArmErrorKind::Transport,
            Operation::DatastoresGet,
            "/subscriptions/s",
            "timed out (management.azure.com:443): operation timed out",
        );
        err.client_request_id = uuid::Uuid::parse_str("0f8fad5b-d9cb-469f-a165-70867728950e").ok();
        assert_eq!(
            err.to_string(),
            "Datastores_Get on /subscriptions/s failed: timed out (management.azure.com:443): operation timed out (client request id 0f8fad5b-d9cb-469f-a165-70867728950e)"
        );
    }
}
