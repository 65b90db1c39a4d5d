//! What storage said when keysync tried a datastore's credential: one cheap, authenticated
//! request to the account's data plane after the run.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a credential check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VerifyOutcome {
    /// Storage accepted the credential.
    Verified,
    /// Storage refused the credential: a wrong or regenerated key, a SAS signed with one, or an
    /// expired SAS. `code` holds storage's error code.
    Rejected,
    /// No answer about the credential: DNS, connection, TLS, timeout, or the account's network
    /// rules (firewall, private endpoint) turned keysync's request away before checking it.
    Unreachable,
    /// Storage answered, but neither accepted nor refused the credential (busy, failing, or an
    /// answer keysync does not know).
    Inconclusive,
    /// keysync did not send a request; `detail` says why.
    NotChecked,
}

impl VerifyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyOutcome::Verified => "verified",
            VerifyOutcome::Rejected => "rejected",
            VerifyOutcome::Unreachable => "unreachable",
            VerifyOutcome::Inconclusive => "inconclusive",
            VerifyOutcome::NotChecked => "notChecked",
        }
    }

    /// True when the check did not pass: the line is logged as a warning.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            VerifyOutcome::Rejected | VerifyOutcome::Unreachable | VerifyOutcome::Inconclusive
        )
    }
}

impl fmt::Display for VerifyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which credential was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CredentialUsed {
    AccountKey,
    Sas,
}

/// The result of checking one datastore's credential against storage. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub outcome: VerifyOutcome,
    pub credential: CredentialUsed,
    /// Storage's error code (`x-ms-error-code`), such as `AuthenticationFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What was checked, or why the outcome is what it is.
    pub detail: String,
}

impl Verification {
    pub fn new(outcome: VerifyOutcome, credential: CredentialUsed, detail: String) -> Self {
        Verification {
            outcome,
            credential,
            code: None,
            detail,
        }
    }

    pub fn with_code(mut self, code: Option<String>) -> Self {
        self.code = code;
        self
    }

    /// `verified`, `rejected (AuthenticationFailed)` or `not checked: <why>`: the outcome with
    /// its code, for tables. A check that never ran says why, since nothing else on the line does.
    pub fn label(&self) -> String {
        match (&self.code, self.outcome) {
            (_, VerifyOutcome::NotChecked) => format!("not checked: {}", self.detail),
            (Some(code), outcome) if outcome != VerifyOutcome::Verified => {
                format!("{outcome} ({code})")
            }
            (_, outcome) => outcome.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_in_camel_case_and_labels_with_the_code() {
        let v = Verification::new(
            VerifyOutcome::Rejected,
            CredentialUsed::AccountKey,
            "Get Container Properties of 'raw'".into(),
        )
        .with_code(Some("AuthenticationFailed".into()));
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["outcome"], "rejected");
        assert_eq!(json["credential"], "accountKey");
        assert_eq!(json["code"], "AuthenticationFailed");
        assert_eq!(v.label(), "rejected (AuthenticationFailed)");
        let share = Verification::new(
            VerifyOutcome::NotChecked,
            CredentialUsed::AccountKey,
            "the account lists no file endpoint".into(),
        );
        assert_eq!(
            share.label(),
            "not checked: the account lists no file endpoint"
        );
        let not = Verification::new(VerifyOutcome::NotChecked, CredentialUsed::Sas, "x".into());
        assert_eq!(serde_json::to_value(&not).unwrap()["outcome"], "notChecked");
        assert!(serde_json::to_value(&not).unwrap().get("code").is_none());
    }
}
