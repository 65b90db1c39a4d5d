//! What a failure means and what to do next, in one place: the reasons in reports, the errors
//! the command line prints and the `Reconcile` function answers all take their advice from here.

use crate::arm::{ArmError, ArmErrorKind, Operation};

/// The advice when no bearer token could be had.
pub const NO_TOKEN: &str = "keysync could not get a token: on a workstation run `az login`; in Azure, check that the Function App has a managed identity";

/// The advice when the workspace's Key Vault still holds a soft-deleted secret of the name a
/// datastore update needs.
pub const SOFT_DELETED_SECRET: &str = "the workspace Key Vault holds a soft-deleted secret for this datastore: recover it (az keyvault secret recover) or purge it, then run keysync again. keysync never deletes datastores or purges secrets";

/// The advice for a named account that does not exist where keysync looks.
pub const ACCOUNT_NOT_FOUND: &str =
    "check the name or id, and that its subscription is in KEYSYNC_SUBSCRIPTIONS";

/// The error, then what to do about it when keysync knows.
pub fn explain(e: &ArmError) -> String {
    match advice(e) {
        Some(advice) => format!("{e}; {advice}"),
        None => e.to_string(),
    }
}

/// A failed call as a report tells it: the operation, the resource, the HTTP status, ARM's error
/// code, the correlation id and what to do. Azure's own message is left out, since it can name
/// the caller's identity (a 403 gives its object id) and reports reach the `Reconcile` function's
/// callers; it is logged here instead, once, with the same correlation id, so that the report's
/// line leads to the log's. Use it for every failure that becomes report text.
pub fn reported(e: &ArmError) -> String {
    tracing::warn!(
        operation = %e.operation,
        resource = %e.resource,
        status = e.status,
        code = e.code.as_deref(),
        correlation_id = e.correlation_id.as_deref(),
        detail = %e.message,
        "ARM call failed"
    );
    brief(e)
}

/// [`explain`] without Azure's message.
pub fn brief(e: &ArmError) -> String {
    let mut text = format!("{} on {} failed", e.operation, e.resource);
    if let Some(status) = e.status {
        text.push_str(&format!(": HTTP {status}"));
    }
    if let Some(code) = &e.code {
        text.push_str(&format!(" {code}"));
    }
    if let Some(id) = &e.correlation_id {
        text.push_str(&format!(" (correlation id {id})"));
    }
    match advice(e) {
        Some(advice) => format!("{text}; {advice}"),
        None => text,
    }
}

/// A failed call told to a client outside the process: the operation, the HTTP status and the
/// advice, without Azure's message or ids (those go to the log).
pub fn public_summary(e: &ArmError) -> String {
    let status = e.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    let advice = advice(e).map(|a| format!(": {a}")).unwrap_or_default();
    format!("{} failed{status}{advice}", e.operation)
}

/// What to do next about a failed ARM call, when keysync knows.
pub fn advice(e: &ArmError) -> Option<String> {
    let text = |s: &str| Some(s.to_string());
    match (e.kind, e.status) {
        (ArmErrorKind::Credential, _) => text(NO_TOKEN),
        (_, Some(401)) => {
            text("check keysync's credential and the token scope (KEYSYNC_ARM_SCOPE)")
        }
        (_, Some(403)) => Some(format!(
            "grant keysync's identity {} on this resource",
            e.operation.rbac_action()
        )),
        _ if is_soft_delete_conflict(e) => text(SOFT_DELETED_SECRET),
        (ArmErrorKind::Deadline, _) => {
            text("keysync ran out of time before Azure finished: retry later")
        }
        (_, Some(404)) => text(not_found(e.operation)),
        (_, Some(409)) => text("another operation on this resource was in progress: retry later"),
        (_, Some(429)) => text(
            "Azure kept throttling keysync until its retries ran out: retry later, or lower KEYSYNC_MAX_CONCURRENCY",
        ),
        (_, Some(500..=599)) => text("Azure failed to answer: retry later"),
        (ArmErrorKind::OperationFailed, _) => text(
            "Azure reported the operation as failed: run keysync again, and if it fails again see the resource's activity log",
        ),
        (ArmErrorKind::Transport, _) => text(
            "Azure could not be reached: check the network and KEYSYNC_ARM_ENDPOINT, then retry",
        ),
        (ArmErrorKind::Decode, _) => {
            text("Azure answered in a form keysync cannot read: report it with the correlation id")
        }
        _ => None,
    }
}

fn not_found(operation: Operation) -> &'static str {
    use Operation::*;
    match operation {
        StorageAccountsGetProperties | StorageAccountsListKeys | StorageAccountsRegenerateKey => {
            "the storage account does not exist: it was deleted, or the name or id is wrong"
        }
        StorageAccountsList | WorkspacesListBySubscription => {
            "the subscription does not exist or keysync's identity cannot see it: check KEYSYNC_SUBSCRIPTIONS"
        }
        WorkspacesResyncKeysStatus => {
            "Azure no longer knows the resync: run keysync again to check the workspace"
        }
        WorkspacesGet | WorkspacesResyncKeys | DatastoresList => {
            "the workspace was deleted while keysync was working: nothing left to do"
        }
        DatastoresGet | DatastoresCreateOrUpdate | DatastoresListSecrets => {
            "the datastore was deleted while keysync was working: nothing left to do"
        }
    }
}

/// Key Vault keeps a deleted secret for its retention period, and a datastore write that needs
/// the name fails until it is recovered or purged. Azure words this in several ways.
fn is_soft_delete_conflict(e: &ArmError) -> bool {
    let words =
        format!("{} {}", e.code.as_deref().unwrap_or_default(), e.message).to_ascii_lowercase();
    [
        "deletedbutrecoverable",
        "deleted but recoverable",
        "soft-delete",
        "soft delete",
        "softdelete",
    ]
    .iter()
    .any(|w| words.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(operation: Operation, status: Option<u16>, code: &str, message: &str) -> ArmError {
        let kind = match status {
            Some(_) => ArmErrorKind::Status,
            None => ArmErrorKind::Transport,
        };
        let mut e = ArmError::new(kind, operation, "/subscriptions/s/x", message);
        e.status = status;
        e.code = (!code.is_empty()).then(|| code.to_string());
        e
    }

    #[test]
    fn a_403_names_the_permission_to_grant() {
        let e = error(
            Operation::DatastoresCreateOrUpdate,
            Some(403),
            "AuthorizationFailed",
            "no",
        );
        assert!(explain(&e).ends_with(
            "; grant keysync's identity Microsoft.MachineLearningServices/workspaces/datastores/write on this resource"
        ));
    }

    #[test]
    fn a_soft_deleted_secret_says_recover_or_purge() {
        let e = error(
            Operation::DatastoresCreateOrUpdate,
            Some(409),
            "Conflict",
            "Secret ws-blob is currently in a deleted but recoverable state",
        );
        assert_eq!(advice(&e).as_deref(), Some(SOFT_DELETED_SECRET));
        let plain = error(
            Operation::DatastoresCreateOrUpdate,
            Some(409),
            "Conflict",
            "busy",
        );
        assert!(advice(&plain).unwrap().contains("retry later"));
    }

    #[test]
    fn throttling_and_outages_say_retry_later() {
        for status in [429, 503] {
            let e = error(Operation::DatastoresList, Some(status), "", "");
            assert!(advice(&e).unwrap().contains("retry later"), "{status}");
        }
        let mut late = error(Operation::WorkspacesResyncKeys, Some(429), "", "");
        late.kind = ArmErrorKind::Deadline;
        assert!(advice(&late).unwrap().contains("ran out of time"));
    }

    #[test]
    fn a_missing_account_is_told_apart_from_a_missing_datastore() {
        let account = error(Operation::StorageAccountsGetProperties, Some(404), "", "");
        assert!(
            advice(&account)
                .unwrap()
                .contains("storage account does not exist")
        );
        let datastore = error(Operation::DatastoresGet, Some(404), "", "");
        assert!(
            advice(&datastore)
                .unwrap()
                .contains("datastore was deleted")
        );
    }

    #[test]
    fn a_reported_failure_keeps_what_leads_to_the_log_but_not_azures_message() {
        let mut e = error(
            Operation::DatastoresCreateOrUpdate,
            Some(403),
            "AuthorizationFailed",
            "The client 'c0ffee' with object id 'abc' does not have authorization",
        );
        e.correlation_id = Some("corr-1".into());
        assert_eq!(
            brief(&e),
            "Datastores_CreateOrUpdate on /subscriptions/s/x failed: HTTP 403 AuthorizationFailed (correlation id corr-1); grant keysync's identity Microsoft.MachineLearningServices/workspaces/datastores/write on this resource"
        );
        assert!(
            explain(&e).contains("object id 'abc'"),
            "the full text keeps it"
        );
        // Advice that comes from the message survives its removal.
        let conflict = error(
            Operation::DatastoresCreateOrUpdate,
            Some(409),
            "Conflict",
            "Secret ws-blob is currently in a deleted but recoverable state",
        );
        assert!(brief(&conflict).ends_with(SOFT_DELETED_SECRET));
        assert!(!brief(&conflict).contains("ws-blob"));
    }

    #[test]
    fn the_public_summary_leaves_out_azures_message_and_ids() {
        let mut e = error(
            Operation::StorageAccountsListKeys,
            Some(403),
            "AuthorizationFailed",
            "The client 'c0ffee' with object id 'abc' does not have authorization",
        );
        e.correlation_id = Some("corr-1".into());
        let summary = public_summary(&e);
        assert_eq!(
            summary,
            "StorageAccounts_ListKeys failed (HTTP 403): grant keysync's identity Microsoft.Storage/storageAccounts/listkeys/action on this resource"
        );
    }
}
