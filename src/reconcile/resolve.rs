//! Finding the storage account a person or a caller names: an ARM id, or a bare account name
//! looked up in the subscriptions in scope.

use futures::future::join_all;
use tokio::time::Instant;

use super::Reconciler;
use crate::arm::ArmError;
use crate::report::printable;
use crate::resource_id::{StorageAccountId, is_storage_account_name};

/// Why a name or id leads to no account keysync may work on. The messages are safe to show to
/// the caller; only `Arm` carries Azure's own words.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "'{0}' is neither a storage account name (3 to 24 letters and digits) nor a storage account id (/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<name>)"
    )]
    Malformed(String),
    #[error(
        "storage account {0} is in a subscription outside keysync's scope (KEYSYNC_SUBSCRIPTIONS)"
    )]
    OutOfScope(String),
    #[error("no storage account named '{0}' in the subscriptions in scope (KEYSYNC_SUBSCRIPTIONS)")]
    NotFound(String),
    #[error(
        "could not list the storage accounts to find '{name}': {}",
        crate::report::explain::explain(.error)
    )]
    Arm { name: String, error: ArmError },
}

impl Reconciler {
    /// The in-scope account that `name_or_id` names: an ARM id (whose subscription must be in
    /// scope; the account itself is read later) or a bare name, matched case-insensitively
    /// against the accounts listed in every subscription in scope. No listing request starts,
    /// and none runs on, past `deadline`: the lookup is part of the run that follows.
    pub async fn resolve_account(
        &self,
        name_or_id: &str,
        deadline: Option<Instant>,
    ) -> Result<StorageAccountId, ResolveError> {
        let input = name_or_id.trim();
        if input.contains('/') {
            let id = StorageAccountId::parse(input)
                .map_err(|_| ResolveError::Malformed(printable(input, 200)))?;
            let in_scope = self
                .subscriptions()
                .iter()
                .any(|s| s.eq_ignore_ascii_case(id.subscription()));
            return match in_scope {
                true => Ok(id),
                false => Err(ResolveError::OutOfScope(id.to_string())),
            };
        }
        if !is_storage_account_name(input) {
            return Err(ResolveError::Malformed(printable(input, 200)));
        }
        self.find_account_named(input, deadline).await
    }

    async fn find_account_named(
        &self,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<StorageAccountId, ResolveError> {
        let arm = self.arm_until(deadline);
        let listings = self
            .subscriptions()
            .iter()
            .map(|s| arm.list_storage_accounts(s));
        let mut first_error = None;
        for listing in join_all(listings).await {
            match listing {
                Ok(accounts) => {
                    let found = accounts
                        .iter()
                        .filter(|a| a.name.eq_ignore_ascii_case(name))
                        .find_map(|a| StorageAccountId::parse(&a.id).ok());
                    if let Some(id) = found {
                        return Ok(id);
                    }
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        // Names are unique in a cloud, so a hit settles it; a miss only counts if every
        // subscription could be listed.
        match first_error {
            Some(error) => Err(ResolveError::Arm {
                name: name.to_string(),
                error,
            }),
            None => Err(ResolveError::NotFound(name.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_follow_azures_rule_in_either_case() {
        assert!(is_storage_account_name("stmlshared01"));
        assert!(is_storage_account_name("StMlShared01"));
        for bad in ["st", "a-b-c", "st ml", "", &"s".repeat(25)] {
            assert!(!is_storage_account_name(bad), "{bad}");
        }
    }
}
