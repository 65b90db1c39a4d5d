//! Every ARM operation keysync calls, with its pinned api-version and the RBAC action it needs.
//! This list is the single source for both the client and the custom role in `infra/`.

use std::fmt;

/// The api-version pinned for `Microsoft.Storage`.
pub const STORAGE_API_VERSION: &str = "2025-08-01";
/// The api-version pinned for `Microsoft.MachineLearningServices`.
pub const ML_API_VERSION: &str = "2025-12-01";

/// The RBAC action for polling an ML workspace operation such as `resyncKeys`.
const STATUS_READ_ACTION: &str =
    "Microsoft.MachineLearningServices/locations/workspaceOperationsStatus/read";

/// Declares [`Operation`] and [`Operation::ALL`] from one list, so that a variant cannot be added
/// without being in `ALL`, from which the custom role in `infra/` is derived
/// ([`Operation::rbac_actions`]).
macro_rules! operations {
    ($($(#[$attr:meta])* $variant:ident,)+) => {
        /// An ARM operation, named by its operationId in Azure's REST API specification.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation {
            $($(#[$attr])* $variant,)+
        }

        impl Operation {
            /// Every operation keysync may call, in declaration order.
            pub const ALL: [Operation; [$(stringify!($variant)),+].len()] =
                [$(Operation::$variant),+];
        }
    };
}

operations! {
    StorageAccountsGetProperties,
    StorageAccountsList,
    StorageAccountsListKeys,
    StorageAccountsRegenerateKey,
    WorkspacesListBySubscription,
    WorkspacesGet,
    WorkspacesResyncKeys,
    /// A `GET` of the status URL a `resyncKeys` answer names. The specification leaves that URL
    /// opaque, so this is not one of its operationIds; it is how the emulator logs such a poll.
    WorkspacesResyncKeysStatus,
    DatastoresList,
    DatastoresGet,
    DatastoresCreateOrUpdate,
    DatastoresListSecrets,
}

impl Operation {
    /// The operationId in Azure's REST API specification, such as `StorageAccounts_ListKeys`.
    pub fn operation_id(self) -> &'static str {
        match self {
            Operation::StorageAccountsGetProperties => "StorageAccounts_GetProperties",
            Operation::StorageAccountsList => "StorageAccounts_List",
            Operation::StorageAccountsListKeys => "StorageAccounts_ListKeys",
            Operation::StorageAccountsRegenerateKey => "StorageAccounts_RegenerateKey",
            Operation::WorkspacesListBySubscription => "Workspaces_ListBySubscription",
            Operation::WorkspacesGet => "Workspaces_Get",
            Operation::WorkspacesResyncKeys => "Workspaces_ResyncKeys",
            Operation::WorkspacesResyncKeysStatus => "Workspaces_ResyncKeysStatus",
            Operation::DatastoresList => "Datastores_List",
            Operation::DatastoresGet => "Datastores_Get",
            Operation::DatastoresCreateOrUpdate => "Datastores_CreateOrUpdate",
            Operation::DatastoresListSecrets => "Datastores_ListSecrets",
        }
    }

    /// The Azure RBAC action that authorizes this operation.
    pub fn rbac_action(self) -> &'static str {
        match self {
            Operation::StorageAccountsGetProperties | Operation::StorageAccountsList => {
                "Microsoft.Storage/storageAccounts/read"
            }
            Operation::StorageAccountsListKeys => {
                "Microsoft.Storage/storageAccounts/listkeys/action"
            }
            Operation::StorageAccountsRegenerateKey => {
                "Microsoft.Storage/storageAccounts/regeneratekey/action"
            }
            Operation::WorkspacesListBySubscription | Operation::WorkspacesGet => {
                "Microsoft.MachineLearningServices/workspaces/read"
            }
            Operation::WorkspacesResyncKeys => {
                "Microsoft.MachineLearningServices/workspaces/resynckeys/action"
            }
            // ARM authorizes a poll like any GET: as a read of the provider's status resource
            // type (`/subscriptions/<id>/providers/.../locations/<region>/<type>/<operation>`).
            Operation::WorkspacesResyncKeysStatus => STATUS_READ_ACTION,
            Operation::DatastoresList | Operation::DatastoresGet => {
                "Microsoft.MachineLearningServices/workspaces/datastores/read"
            }
            Operation::DatastoresCreateOrUpdate => {
                "Microsoft.MachineLearningServices/workspaces/datastores/write"
            }
            Operation::DatastoresListSecrets => {
                "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action"
            }
        }
    }

    /// The pinned api-version for this operation's resource provider.
    pub fn api_version(self) -> &'static str {
        match self {
            Operation::StorageAccountsGetProperties
            | Operation::StorageAccountsList
            | Operation::StorageAccountsListKeys
            | Operation::StorageAccountsRegenerateKey => STORAGE_API_VERSION,
            _ => ML_API_VERSION,
        }
    }

    /// True for operations whose response carries secrets (account keys, datastore secrets): their
    /// bodies are never logged, and a body that cannot be decoded is not described.
    pub fn returns_secrets(self) -> bool {
        matches!(
            self,
            Operation::StorageAccountsListKeys
                | Operation::StorageAccountsRegenerateKey
                | Operation::DatastoresListSecrets
        )
    }

    /// True for operations that change something in Azure.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Operation::StorageAccountsRegenerateKey
                | Operation::WorkspacesResyncKeys
                | Operation::DatastoresCreateOrUpdate
        )
    }

    /// Every RBAC action keysync needs, sorted and each once: the custom role in `infra/` grants
    /// exactly these (a test compares the two).
    pub fn rbac_actions() -> Vec<&'static str> {
        let mut actions: Vec<&'static str> =
            Operation::ALL.iter().map(|o| o.rbac_action()).collect();
        actions.sort_unstable();
        actions.dedup();
        actions
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.operation_id())
    }
}
