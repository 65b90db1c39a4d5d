//! Finding the resources a request names, with ARM's answer when one is missing.

use axum::http::StatusCode;
use serde_json::json;

use super::path::{DatastorePath, Named, Scope};
use crate::emulator::reply::Reply;
use crate::emulator::state::State;
use crate::resource_id::ResourceId;

/// Whether a resource lies in a list's scope.
pub(super) fn in_scope(id: &ResourceId, scope: &Scope) -> bool {
    id.subscription().eq_ignore_ascii_case(&scope.subscription)
        && scope
            .group
            .as_ref()
            .is_none_or(|g| id.resource_group().eq_ignore_ascii_case(g))
}

/// The position of the storage account a path names.
pub(super) fn account(state: &State, account: &Named) -> Result<usize, Reply> {
    state
        .account_index(&account.subscription, &account.group, &account.name)
        .ok_or_else(|| not_found("Microsoft.Storage/storageAccounts", account))
}

/// The position of the workspace a path names.
pub(super) fn workspace(state: &State, workspace: &Named) -> Result<usize, Reply> {
    state
        .workspace_index(&workspace.subscription, &workspace.group, &workspace.name)
        .ok_or_else(|| not_found("Microsoft.MachineLearningServices/workspaces", workspace))
}

/// The positions of the workspace and datastore a path names. A missing datastore gets Azure
/// Machine Learning's `UserError`, not ARM's `ResourceNotFound`.
pub(super) fn datastore(state: &State, path: &DatastorePath) -> Result<(usize, usize), Reply> {
    let w = workspace(state, &path.workspace)?;
    let d = state.workspaces[w]
        .datastore_index(&path.name)
        .ok_or_else(|| {
            Reply::json(
                StatusCode::NOT_FOUND,
                json!({"error": {
                    "code": "UserError",
                    "message": format!(
                        "DatastoreNotFound: datastore '{}' was not found in workspace '{}'.",
                        path.name, path.workspace.name
                    ),
                    "innerError": {"code": "NotFoundError"}
                }}),
            )
        })?;
    Ok((w, d))
}

/// ARM's 404 for a top-level resource.
fn not_found(resource_type: &str, resource: &Named) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{resource_type}/{}' under resource group '{}' was not found. For more \
             details please go to https://aka.ms/ARMResourceNotFoundFix",
            resource.name, resource.group
        ),
    )
}
