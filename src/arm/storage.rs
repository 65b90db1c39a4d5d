//! Storage account operations.

use crate::model::storage::{AccountKeys, KeySlot, StorageAccount};
use crate::resource_id::StorageAccountId;

use super::{ArmClient, ArmError};

impl ArmClient {
    /// `GET` one account (endpoints, `allowSharedKeyAccess`, `keyCreationTime`, tags).
    pub async fn get_storage_account(
        &self,
        id: &StorageAccountId,
    ) -> Result<StorageAccount, ArmError> {
        let _ = id;
        todo!("arm helper")
    }

    /// Every storage account in a subscription, following `nextLink`.
    pub async fn list_storage_accounts(
        &self,
        subscription: &str,
    ) -> Result<Vec<StorageAccount>, ArmError> {
        let _ = subscription;
        todo!("arm helper")
    }

    /// `listKeys`: key1 and key2 (Kerberos keys are dropped).
    pub async fn list_keys(&self, id: &StorageAccountId) -> Result<AccountKeys, ArmError> {
        let _ = id;
        todo!("arm helper")
    }

    /// `regenerateKey`; returns the keys as they are afterwards.
    pub async fn regenerate_key(
        &self,
        id: &StorageAccountId,
        slot: KeySlot,
    ) -> Result<AccountKeys, ArmError> {
        let _ = (id, slot);
        todo!("arm helper")
    }
}
