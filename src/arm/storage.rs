//! Storage account operations.

use reqwest::Method;
use serde_json::json;
use zeroize::Zeroizing;

use crate::model::storage::{AccountKeyList, AccountKeys, KeySlot, StorageAccount};
use crate::resource_id::StorageAccountId;

use super::request::{ArmRequest, account_path, subscription_path};
use super::response::RawResponse;
use super::{ArmClient, ArmError, ArmErrorKind, Operation};

impl ArmClient {
    /// `GET` one account (endpoints, `allowSharedKeyAccess`, `keyCreationTime`, tags).
    pub async fn get_storage_account(
        &self,
        id: &StorageAccountId,
    ) -> Result<StorageAccount, ArmError> {
        let operation = Operation::StorageAccountsGetProperties;
        let resource = id.as_str();
        let url = self.url(operation, resource, &account_path(id), &[])?;
        let request = ArmRequest::new(operation, resource, id.subscription(), Method::GET, url);
        self.send(&request).await?.json(operation, resource)
    }

    /// Every storage account in a subscription, following `nextLink`.
    pub async fn list_storage_accounts(
        &self,
        subscription: &str,
    ) -> Result<Vec<StorageAccount>, ArmError> {
        let operation = Operation::StorageAccountsList;
        let resource = format!("/subscriptions/{subscription}");
        let path = subscription_path(subscription, "Microsoft.Storage", "storageAccounts");
        let url = self.url(operation, &resource, &path, &[])?;
        let request = ArmRequest::new(operation, &resource, subscription, Method::GET, url);
        self.list_all(request).await
    }

    /// `listKeys`: key1 and key2 (Kerberos keys are dropped).
    pub async fn list_keys(&self, id: &StorageAccountId) -> Result<AccountKeys, ArmError> {
        // No `$expand=kerb`: keysync never needs the Kerberos keys, so it does not fetch them.
        let operation = Operation::StorageAccountsListKeys;
        let response = self.account_action(operation, id, "listKeys", None).await?;
        account_keys(operation, id, &response)
    }

    /// `regenerateKey`; returns the keys as they are afterwards.
    pub async fn regenerate_key(
        &self,
        id: &StorageAccountId,
        slot: KeySlot,
    ) -> Result<AccountKeys, ArmError> {
        let operation = Operation::StorageAccountsRegenerateKey;
        // Not idempotent, yet retried like every call on timeouts, dropped connections and 5xx:
        // an attempt whose answer was lost may already have regenerated the key, and the retry
        // regenerates it once more. That is safe because keysync regenerates only the standby
        // key, which no datastore holds (rotation checks this just before), and the keys returned
        // are those after the last attempt, so the reconcile that follows targets the key as it
        // now is. The extra regeneration's event finds everything in sync.
        let body = Zeroizing::new(json!({ "keyName": slot.as_str() }).to_string().into_bytes());
        let response = self
            .account_action(operation, id, "regenerateKey", Some(body))
            .await?;
        account_keys(operation, id, &response)
    }

    /// `POST` an action on an account, such as `listKeys`.
    async fn account_action(
        &self,
        operation: Operation,
        id: &StorageAccountId,
        action: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<RawResponse, ArmError> {
        let resource = id.as_str();
        let mut path = account_path(id);
        path.push(action.to_string());
        let url = self.url(operation, resource, &path, &[])?;
        let mut request =
            ArmRequest::new(operation, resource, id.subscription(), Method::POST, url);
        if let Some(body) = body {
            request = request.with_body(body);
        }
        self.send(&request).await
    }
}

/// key1 and key2 out of a `listKeys` or `regenerateKey` answer.
fn account_keys(
    operation: Operation,
    id: &StorageAccountId,
    response: &RawResponse,
) -> Result<AccountKeys, ArmError> {
    let list: AccountKeyList = response.json(operation, id.as_str())?;
    AccountKeys::try_from(list).map_err(|missing| {
        // `MissingKey` names the slot only, never a value.
        response.error(
            ArmErrorKind::Decode,
            operation,
            id.as_str(),
            missing.to_string(),
        )
    })
}
