//! ARM request paths, matched the way ARM matches them: segment names (`subscriptions`,
//! `resourceGroups`, provider namespaces, resource types, actions) and resource names ignore
//! case; a trailing slash is tolerated; segments are percent-decoded.

use axum::http::Method;

/// Azure operationIds of what the emulator serves, as they appear in the request log.
pub(crate) mod op {
    pub const ACCOUNTS_LIST: &str = "StorageAccounts_List";
    pub const ACCOUNTS_LIST_BY_GROUP: &str = "StorageAccounts_ListByResourceGroup";
    pub const ACCOUNT_GET: &str = "StorageAccounts_GetProperties";
    pub const LIST_KEYS: &str = "StorageAccounts_ListKeys";
    pub const REGENERATE_KEY: &str = "StorageAccounts_RegenerateKey";
    pub const WORKSPACES_LIST: &str = "Workspaces_ListBySubscription";
    pub const WORKSPACES_LIST_BY_GROUP: &str = "Workspaces_ListByResourceGroup";
    pub const WORKSPACE_GET: &str = "Workspaces_Get";
    pub const RESYNC_KEYS: &str = "Workspaces_ResyncKeys";
    /// Polling the status URL a `resyncKeys` answer pointed to (not an operationId of the
    /// specification, which leaves that URL opaque).
    pub const RESYNC_STATUS: &str = "Workspaces_ResyncKeysStatus";
    pub const DATASTORES_LIST: &str = "Datastores_List";
    pub const DATASTORE_GET: &str = "Datastores_Get";
    pub const DATASTORE_PUT: &str = "Datastores_CreateOrUpdate";
    pub const DATASTORE_DELETE: &str = "Datastores_Delete";
    pub const LIST_SECRETS: &str = "Datastores_ListSecrets";
    /// A path the emulator does not serve.
    pub const UNKNOWN: &str = "Unknown";
}

/// A list scope: a subscription, optionally narrowed to a resource group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    pub subscription: String,
    pub group: Option<String>,
}

/// A top-level resource named in a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub subscription: String,
    pub group: String,
    pub name: String,
}

/// A datastore named in a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatastorePath {
    pub workspace: Named,
    pub name: String,
}

/// The operation a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    ListAccounts(Scope),
    GetAccount(Named),
    ListKeys(Named),
    RegenerateKey(Named),
    ListWorkspaces(Scope),
    GetWorkspace(Named),
    ResyncKeys(Named),
    OperationStatus { subscription: String, id: String },
    ListDatastores(Named),
    GetDatastore(DatastorePath),
    PutDatastore(DatastorePath),
    DeleteDatastore(DatastorePath),
    ListSecrets(DatastorePath),
}

/// The resource provider that owns a route (it decides the accepted api-versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    Storage,
    MachineLearning,
}

/// Why a path does not name a served operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteError {
    NotFound,
    MethodNotAllowed,
}

impl Route {
    /// The operationId for the request log.
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Route::ListAccounts(scope) if scope.group.is_some() => op::ACCOUNTS_LIST_BY_GROUP,
            Route::ListAccounts(_) => op::ACCOUNTS_LIST,
            Route::GetAccount(_) => op::ACCOUNT_GET,
            Route::ListKeys(_) => op::LIST_KEYS,
            Route::RegenerateKey(_) => op::REGENERATE_KEY,
            Route::ListWorkspaces(scope) if scope.group.is_some() => op::WORKSPACES_LIST_BY_GROUP,
            Route::ListWorkspaces(_) => op::WORKSPACES_LIST,
            Route::GetWorkspace(_) => op::WORKSPACE_GET,
            Route::ResyncKeys(_) => op::RESYNC_KEYS,
            Route::OperationStatus { .. } => op::RESYNC_STATUS,
            Route::ListDatastores(_) => op::DATASTORES_LIST,
            Route::GetDatastore(_) => op::DATASTORE_GET,
            Route::PutDatastore(_) => op::DATASTORE_PUT,
            Route::DeleteDatastore(_) => op::DATASTORE_DELETE,
            Route::ListSecrets(_) => op::LIST_SECRETS,
        }
    }

    pub(crate) fn provider(&self) -> Provider {
        match self {
            Route::ListAccounts(_)
            | Route::GetAccount(_)
            | Route::ListKeys(_)
            | Route::RegenerateKey(_) => Provider::Storage,
            _ => Provider::MachineLearning,
        }
    }

    /// The subscription and, for resources in a group, the resource group.
    pub(crate) fn scope(&self) -> (&str, Option<&str>) {
        match self {
            Route::ListAccounts(scope) | Route::ListWorkspaces(scope) => {
                (&scope.subscription, scope.group.as_deref())
            }
            Route::OperationStatus { subscription, .. } => (subscription, None),
            Route::GetAccount(n)
            | Route::ListKeys(n)
            | Route::RegenerateKey(n)
            | Route::GetWorkspace(n)
            | Route::ResyncKeys(n)
            | Route::ListDatastores(n) => (&n.subscription, Some(&n.group)),
            Route::GetDatastore(d)
            | Route::PutDatastore(d)
            | Route::DeleteDatastore(d)
            | Route::ListSecrets(d) => (&d.workspace.subscription, Some(&d.workspace.group)),
        }
    }
}

/// What a path names, before the method is considered.
enum Target {
    Accounts(Scope),
    Account(Named, Option<String>),
    Workspaces(Scope),
    Workspace(Named, Option<String>),
    Datastores(Named),
    Datastore(DatastorePath, Option<String>),
    Status { subscription: String, id: String },
}

const STORAGE: &str = "microsoft.storage";
const ML: &str = "microsoft.machinelearningservices";

/// Finds the operation a method and path ask for.
pub(crate) fn parse(method: &Method, path: &str) -> Result<Route, RouteError> {
    let segments = segments(path);
    let target = target(&segments).ok_or(RouteError::NotFound)?;
    route(target, method)
}

fn segments(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn target(segments: &[String]) -> Option<Target> {
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    if segments.iter().any(String::is_empty) {
        return None;
    }
    let at = |i: usize| segments[i].clone();
    let named = || Named {
        subscription: at(1),
        group: at(3),
        name: at(7),
    };
    let datastore = || DatastorePath {
        workspace: named(),
        name: at(9),
    };
    let scope = |group: bool| Scope {
        subscription: at(1),
        group: group.then(|| at(3)),
    };
    let target = match lower.as_slice() {
        ["subscriptions", _, "providers", STORAGE, "storageaccounts"] => {
            Target::Accounts(scope(false))
        }
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            STORAGE,
            "storageaccounts",
        ] => Target::Accounts(scope(true)),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            STORAGE,
            "storageaccounts",
            _,
        ] => Target::Account(named(), None),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            STORAGE,
            "storageaccounts",
            _,
            action,
        ] => Target::Account(named(), Some(action.to_string())),
        ["subscriptions", _, "providers", ML, "workspaces"] => Target::Workspaces(scope(false)),
        ["subscriptions", _, "providers", ML, "locations", _, kind, _] if is_status_kind(kind) => {
            Target::Status {
                subscription: at(1),
                id: at(7),
            }
        }
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ML,
            "workspaces",
        ] => Target::Workspaces(scope(true)),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ML,
            "workspaces",
            _,
        ] => Target::Workspace(named(), None),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ML,
            "workspaces",
            _,
            "datastores",
        ] => Target::Datastores(named()),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ML,
            "workspaces",
            _,
            action,
        ] => Target::Workspace(named(), Some(action.to_string())),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ML,
            "workspaces",
            _,
            "datastores",
            _,
        ] => Target::Datastore(datastore(), None),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ML,
            "workspaces",
            _,
            "datastores",
            _,
            action,
        ] => Target::Datastore(datastore(), Some(action.to_string())),
        _ => return None,
    };
    Some(target)
}

/// The status resources a `resyncKeys` answer may point to.
fn is_status_kind(kind: &str) -> bool {
    matches!(
        kind,
        "workspaceoperationsstatus" | "mfeoperationsstatus" | "mfeoperationresults"
    )
}

fn route(target: Target, method: &Method) -> Result<Route, RouteError> {
    let (allowed, route) = match target {
        Target::Accounts(scope) => (Method::GET, Route::ListAccounts(scope)),
        Target::Account(n, None) => (Method::GET, Route::GetAccount(n)),
        Target::Account(n, Some(action)) => match action.as_str() {
            "listkeys" => (Method::POST, Route::ListKeys(n)),
            "regeneratekey" => (Method::POST, Route::RegenerateKey(n)),
            _ => return Err(RouteError::NotFound),
        },
        Target::Workspaces(scope) => (Method::GET, Route::ListWorkspaces(scope)),
        Target::Workspace(n, None) => (Method::GET, Route::GetWorkspace(n)),
        Target::Workspace(n, Some(action)) if action == "resynckeys" => {
            (Method::POST, Route::ResyncKeys(n))
        }
        Target::Workspace(_, Some(_)) => return Err(RouteError::NotFound),
        Target::Status { subscription, id } => {
            (Method::GET, Route::OperationStatus { subscription, id })
        }
        Target::Datastores(n) => (Method::GET, Route::ListDatastores(n)),
        Target::Datastore(d, None) => return datastore_route(d, method),
        Target::Datastore(d, Some(action)) if action == "listsecrets" => {
            (Method::POST, Route::ListSecrets(d))
        }
        Target::Datastore(_, Some(_)) => return Err(RouteError::NotFound),
    };
    if method == allowed {
        Ok(route)
    } else {
        Err(RouteError::MethodNotAllowed)
    }
}

fn datastore_route(d: DatastorePath, method: &Method) -> Result<Route, RouteError> {
    match *method {
        Method::GET => Ok(Route::GetDatastore(d)),
        Method::PUT => Ok(Route::PutDatastore(d)),
        Method::DELETE => Ok(Route::DeleteDatastore(d)),
        _ => Err(RouteError::MethodNotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arm::Operation;

    const SUB: &str = "11111111-2222-3333-4444-555555555555";

    fn named(name: &str) -> Named {
        Named {
            subscription: SUB.into(),
            group: "rg-ml".into(),
            name: name.into(),
        }
    }

    #[test]
    fn segment_names_ignore_case_and_resource_names_keep_theirs() {
        let path = format!(
            "/SUBSCRIPTIONS/{SUB}/resourcegroups/rg-ml/PROVIDERS/microsoft.STORAGE/StorageAccounts/StMlShared01/ListKeys/"
        );
        assert_eq!(
            parse(&Method::POST, &path),
            Ok(Route::ListKeys(named("StMlShared01")))
        );
    }

    #[test]
    fn datastore_paths_route_by_method() {
        let path = format!(
            "/subscriptions/{SUB}/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-vision/datastores/curated"
        );
        let expected = DatastorePath {
            workspace: named("mlw-vision"),
            name: "curated".into(),
        };
        assert_eq!(
            parse(&Method::PUT, &path),
            Ok(Route::PutDatastore(expected.clone()))
        );
        assert_eq!(
            parse(&Method::DELETE, &path),
            Ok(Route::DeleteDatastore(expected))
        );
        assert_eq!(
            parse(&Method::POST, &path),
            Err(RouteError::MethodNotAllowed)
        );
        let secrets = format!("{path}/listSecrets");
        assert_eq!(
            parse(&Method::GET, &secrets),
            Err(RouteError::MethodNotAllowed)
        );
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "/",
            "/subscriptions",
            &format!("/subscriptions/{SUB}/providers/Microsoft.Web/sites"),
            &format!(
                "/subscriptions/{SUB}/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/a/listAccountSas"
            ),
            &format!("/subscriptions/{SUB}//providers/Microsoft.Storage/storageAccounts"),
        ] {
            assert_eq!(
                parse(&Method::GET, path).err(),
                Some(RouteError::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn status_urls_are_routed_to_the_status_operation() {
        let path = format!(
            "/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/westeurope/workspaceOperationsStatus/op-1"
        );
        let route = parse(&Method::GET, &path).unwrap();
        assert_eq!(route.operation(), op::RESYNC_STATUS);
    }

    #[test]
    fn every_operation_keysync_calls_is_served() {
        let sample_paths = [
            (
                Method::GET,
                format!("/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts"),
            ),
            (
                Method::GET,
                format!(
                    "/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a"
                ),
            ),
            (
                Method::POST,
                format!(
                    "/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a/listKeys"
                ),
            ),
            (
                Method::POST,
                format!(
                    "/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a/regenerateKey"
                ),
            ),
            (
                Method::GET,
                format!(
                    "/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/workspaces"
                ),
            ),
            (
                Method::GET,
                format!(
                    "/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w"
                ),
            ),
            (
                Method::POST,
                format!(
                    "/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w/resyncKeys"
                ),
            ),
            (
                Method::GET,
                format!(
                    "/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w/datastores"
                ),
            ),
            (
                Method::GET,
                format!(
                    "/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w/datastores/d"
                ),
            ),
            (
                Method::PUT,
                format!(
                    "/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w/datastores/d"
                ),
            ),
            (
                Method::POST,
                format!(
                    "/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w/datastores/d/listSecrets"
                ),
            ),
        ];
        let served: Vec<&str> = sample_paths
            .iter()
            .map(|(method, path)| parse(method, path).unwrap().operation())
            .collect();
        for operation in Operation::ALL {
            assert!(served.contains(&operation.operation_id()), "{operation}");
        }
    }
}
