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

/// The path shapes the emulator serves. `*` captures a segment; any other part must equal
/// the segment, ignoring case. The first match wins, so `datastores` comes before a workspace
/// action.
const SHAPES: [(&str, Shape); 12] = [
    (
        "subscriptions/*/providers/microsoft.storage/storageaccounts",
        Shape::Accounts,
    ),
    (
        "subscriptions/*/resourcegroups/*/providers/microsoft.storage/storageaccounts",
        Shape::GroupAccounts,
    ),
    (
        "subscriptions/*/resourcegroups/*/providers/microsoft.storage/storageaccounts/*",
        Shape::Account,
    ),
    (
        "subscriptions/*/resourcegroups/*/providers/microsoft.storage/storageaccounts/*/*",
        Shape::AccountAction,
    ),
    (
        "subscriptions/*/providers/microsoft.machinelearningservices/workspaces",
        Shape::Workspaces,
    ),
    (
        "subscriptions/*/providers/microsoft.machinelearningservices/locations/*/*/*",
        Shape::Status,
    ),
    (
        "subscriptions/*/resourcegroups/*/providers/microsoft.machinelearningservices/workspaces",
        Shape::GroupWorkspaces,
    ),
    (
        "subscriptions/*/resourcegroups/*/providers/microsoft.machinelearningservices/workspaces/*",
        Shape::Workspace,
    ),
    (
        "subscriptions/*/resourcegroups/*/providers/microsoft.machinelearningservices/workspaces/*/datastores",
        Shape::Datastores,
    ),
    (
        "subscriptions/*/resourcegroups/*/providers/microsoft.machinelearningservices/workspaces/*/*",
        Shape::WorkspaceAction,
    ),
    (
        "subscriptions/*/resourcegroups/*/providers/microsoft.machinelearningservices/workspaces/*/datastores/*",
        Shape::Datastore,
    ),
    (
        "subscriptions/*/resourcegroups/*/providers/microsoft.machinelearningservices/workspaces/*/datastores/*/*",
        Shape::DatastoreAction,
    ),
];

#[derive(Debug, Clone, Copy)]
enum Shape {
    Accounts,
    GroupAccounts,
    Account,
    AccountAction,
    Workspaces,
    Status,
    GroupWorkspaces,
    Workspace,
    Datastores,
    WorkspaceAction,
    Datastore,
    DatastoreAction,
}

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

/// The captured segments when `segments` have the shape of `pattern`.
fn captures<'a>(pattern: &str, segments: &'a [String]) -> Option<Vec<&'a str>> {
    let parts: Vec<&str> = pattern.split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut captured = Vec::new();
    for (part, segment) in parts.iter().zip(segments) {
        if *part == "*" {
            captured.push(segment.as_str());
        } else if !part.eq_ignore_ascii_case(segment) {
            return None;
        }
    }
    Some(captured)
}

fn target(segments: &[String]) -> Option<Target> {
    if segments.iter().any(String::is_empty) {
        return None;
    }
    let (shape, c) = SHAPES
        .iter()
        .find_map(|(pattern, shape)| captures(pattern, segments).map(|c| (*shape, c)))?;
    let at = |i: usize| c[i].to_string();
    let action = |i: usize| Some(c[i].to_ascii_lowercase());
    let scope = |group: bool| Scope {
        subscription: at(0),
        group: group.then(|| at(1)),
    };
    let named = || Named {
        subscription: at(0),
        group: at(1),
        name: at(2),
    };
    let datastore = || DatastorePath {
        workspace: named(),
        name: at(3),
    };
    let target = match shape {
        Shape::Accounts => Target::Accounts(scope(false)),
        Shape::GroupAccounts => Target::Accounts(scope(true)),
        Shape::Account => Target::Account(named(), None),
        Shape::AccountAction => Target::Account(named(), action(3)),
        Shape::Workspaces => Target::Workspaces(scope(false)),
        Shape::GroupWorkspaces => Target::Workspaces(scope(true)),
        Shape::Workspace => Target::Workspace(named(), None),
        Shape::WorkspaceAction => Target::Workspace(named(), action(3)),
        Shape::Datastores => Target::Datastores(named()),
        Shape::Datastore => Target::Datastore(datastore(), None),
        Shape::DatastoreAction => Target::Datastore(datastore(), action(4)),
        Shape::Status if is_status_kind(&c[2].to_ascii_lowercase()) => Target::Status {
            subscription: at(0),
            id: at(3),
        },
        Shape::Status => return None,
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
                    "/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/westeurope/workspaceOperationsStatus/op-1"
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
