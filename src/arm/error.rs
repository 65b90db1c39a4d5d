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
}

/// A failed ARM call.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ArmError {
    pub kind: ArmErrorKind,
    pub operation: Operation,
    /// The ARM id of the resource (or the subscription, for list operations).
    pub resource: String,
    pub status: Option<u16>,
    /// ARM's `error.code`, such as `ResourceNotFound`.
    pub code: Option<String>,
    /// ARM's `error.message`, shortened; or a description of the transport failure.
    pub message: String,
    /// `x-ms-correlation-request-id` (or `x-ms-request-id`) of the failed response.
    pub correlation_id: Option<String>,
}

impl ArmError {
    /// True for 404 (the resource or the secret does not exist).
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
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
        if let Some(id) = &self.correlation_id {
            write!(f, " (correlation id {id})")?;
        }
        Ok(())
    }
}
