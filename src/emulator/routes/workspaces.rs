//! Workspace operations: list, get, and `resyncKeys` with its long-running operation in either
//! of ARM's two styles. The resync completes when the client has polled its status enough
//! times, so a client that does not follow the operation leaves the workspace's cached keys
//! stale, where a test can see it.

use axum::http::StatusCode;
use axum::http::header::{HeaderName, LOCATION, RETRY_AFTER};
use serde_json::{Value, json};

use super::path::{Named, Scope};
use super::{Call, list_page, resolve};
use crate::emulator::clock::azure_time;
use crate::emulator::paging;
use crate::emulator::random;
use crate::emulator::reply::Reply;
use crate::emulator::resources::ResyncOperation;
use crate::emulator::scenario::LroStyle;
use crate::emulator::state::State;
use crate::model::storage::KeySlot;
use crate::resource_id::{StorageAccountId, WorkspaceId};

const AZURE_ASYNC_OPERATION: HeaderName = HeaderName::from_static("azure-asyncoperation");

/// `Workspaces_ListBySubscription` and `Workspaces_ListByResourceGroup`, paged.
pub(super) fn list(state: &State, call: &Call, scope: &Scope) -> Reply {
    let tenant = &state.settings.tenant_id;
    let items = state
        .workspaces
        .iter()
        .filter(|w| resolve::in_scope(w.id.resource_id(), scope))
        .map(|w| w.resource(tenant))
        .collect();
    list_page(call, items, state.settings.workspaces_page_size)
}

/// `Workspaces_Get`.
pub(super) fn get(state: &State, workspace: &Named) -> Reply {
    match resolve::workspace(state, workspace) {
        Ok(i) => Reply::ok(state.workspaces[i].resource(&state.settings.tenant_id)),
        Err(reply) => reply,
    }
}

/// `Workspaces_ResyncKeys`: starts the operation and answers `202` with where to poll.
pub(super) fn resync(state: &mut State, call: &Call, workspace: &Named) -> Reply {
    let index = match resolve::workspace(state, workspace) {
        Ok(i) => i,
        Err(reply) => return reply,
    };
    let style = state.settings.lro_style;
    let workspace = &mut state.workspaces[index];
    workspace.resync_count += 1;
    let operation = ResyncOperation {
        id: random::guid(),
        workspace: workspace.id.clone(),
        style,
        polls: 0,
        polls_needed: state.settings.resync_polls,
        completed_at: None,
        started_at: state.clock.now(),
    };
    let url = status_url(call, &workspace.id, &workspace.location, &operation);
    state.operations.push(operation);

    let header = match style {
        LroStyle::Location => LOCATION,
        LroStyle::AzureAsyncOperation => AZURE_ASYNC_OPERATION,
    };
    Reply::empty(StatusCode::ACCEPTED)
        .header(header, url)
        .header(RETRY_AFTER, state.settings.lro_retry_after.to_string())
}

fn status_url(
    call: &Call,
    workspace: &WorkspaceId,
    location: &str,
    operation: &ResyncOperation,
) -> String {
    let kind = match operation.style {
        LroStyle::Location => "workspaceOperationsStatus",
        LroStyle::AzureAsyncOperation => "mfeOperationsStatus",
    };
    let path = format!(
        "/subscriptions/{}/providers/Microsoft.MachineLearningServices/locations/{location}/{kind}/{}",
        workspace.subscription(),
        operation.id
    );
    paging::absolute_url(
        call.base_url,
        &path,
        &[("api-version", call.api_version().to_string())],
    )
}

/// Polling a resync's status URL.
pub(super) fn status(state: &mut State, call: &Call, subscription: &str, id: &str) -> Reply {
    let Some(index) = state.operations.iter().position(|op| {
        op.id.eq_ignore_ascii_case(id)
            && op
                .workspace
                .subscription()
                .eq_ignore_ascii_case(subscription)
    }) else {
        return Reply::error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The operation '{id}' was not found."),
        );
    };
    let retry_after = state.settings.lro_retry_after.to_string();
    let operation = &mut state.operations[index];
    let running = operation.completed_at.is_none() && operation.polls < operation.polls_needed;
    if running {
        operation.polls += 1;
    } else {
        complete(state, index);
    }
    let operation = &state.operations[index];
    match (operation.style, running) {
        (LroStyle::Location, true) => Reply::empty(StatusCode::ACCEPTED)
            .header(LOCATION, call.url())
            .header(RETRY_AFTER, retry_after),
        (LroStyle::Location, false) => Reply::ok(json!({})),
        (LroStyle::AzureAsyncOperation, true) => {
            Reply::ok(async_status(operation, "InProgress")).header(RETRY_AFTER, retry_after)
        }
        (LroStyle::AzureAsyncOperation, false) => Reply::ok(async_status(operation, "Succeeded")),
    }
}

fn async_status(operation: &ResyncOperation, status: &str) -> Value {
    let mut body = json!({
        "id": operation.id,
        "name": operation.id,
        "status": status,
        "startTime": azure_time(operation.started_at),
    });
    if let (Some(end), Some(map)) = (operation.completed_at, body.as_object_mut()) {
        map.insert("endTime".into(), json!(azure_time(end)));
    }
    body
}

/// Finishes a resync: the workspace now caches the account's current keys.
fn complete(state: &mut State, index: usize) {
    if state.operations[index].completed_at.is_some() {
        return;
    }
    state.operations[index].completed_at = Some(state.clock.now());
    let workspace_id = state.operations[index].workspace.clone();
    let Some(w) = state.workspaces.iter().position(|w| w.id == workspace_id) else {
        return;
    };
    let keys = StorageAccountId::parse(&state.workspaces[w].storage_account)
        .ok()
        .and_then(|id| state.account_by_id(&id))
        .map(|a| {
            [
                a.key(KeySlot::Key1).to_string(),
                a.key(KeySlot::Key2).to_string(),
            ]
        });
    let workspace = &mut state.workspaces[w];
    if let Some(keys) = keys {
        workspace.cached_keys = keys;
    }
    workspace.resyncs_completed += 1;
    tracing::info!(workspace = workspace.name(), "workspace keys resynced");
}
