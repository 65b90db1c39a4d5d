//! Azure Machine Learning workspace and datastore operations.

use reqwest::Method;
use tokio::time::Instant;

use crate::model::ml::{Datastore, DatastoreBody, DatastoreSecrets, Workspace};
use crate::resource_id::{DatastoreId, WorkspaceId};

use super::lro::DEFAULT_LRO_TIMEOUT;
use super::request::{ArmRequest, datastore_path, subscription_path, workspace_path};
use super::{ArmClient, ArmError, ArmErrorKind, Operation};

/// The largest page `Datastores_List` serves; fewer pages mean fewer throttled calls.
const DATASTORE_PAGE_SIZE: &str = "100";

impl ArmClient {
    /// Every workspace in a subscription, following `nextLink`.
    pub async fn list_workspaces(&self, subscription: &str) -> Result<Vec<Workspace>, ArmError> {
        let mut workspaces = Vec::new();
        self.list_workspaces_by_page(subscription, |page| workspaces.extend(page))
            .await?;
        Ok(workspaces)
    }

    /// The workspaces of a subscription, a page at a time: `on_page` gets each page as it
    /// arrives, while the next one is fetched.
    pub async fn list_workspaces_by_page(
        &self,
        subscription: &str,
        on_page: impl FnMut(Vec<Workspace>),
    ) -> Result<(), ArmError> {
        let operation = Operation::WorkspacesListBySubscription;
        let resource = format!("/subscriptions/{subscription}");
        let provider = "Microsoft.MachineLearningServices";
        let path = subscription_path(subscription, provider, "workspaces");
        let url = self.url(operation, &resource, &path, &[])?;
        let request = ArmRequest::new(operation, &resource, subscription, Method::GET, url);
        self.for_each_page(request, on_page).await
    }

    /// `GET` one workspace.
    pub async fn get_workspace(&self, id: &WorkspaceId) -> Result<Workspace, ArmError> {
        let operation = Operation::WorkspacesGet;
        let resource = id.as_str();
        let url = self.url(operation, resource, &workspace_path(id), &[])?;
        let request = ArmRequest::new(operation, resource, id.subscription(), Method::GET, url);
        self.send(&request).await?.json(operation, resource)
    }

    /// `resyncKeys`, followed to the end of its long-running operation.
    pub async fn resync_keys(&self, id: &WorkspaceId) -> Result<(), ArmError> {
        let deadline = self
            .deadline()
            .unwrap_or_else(|| Instant::now() + DEFAULT_LRO_TIMEOUT);
        self.resync_keys_until(id, deadline).await
    }

    /// [`resync_keys`](Self::resync_keys), giving up once `deadline` passes: with kind
    /// `StillRunning` if ARM had accepted the resync (it finishes on its own), else `Deadline`.
    /// An accepted resync whose status cannot be read ends with kind `Unconfirmed`.
    pub async fn resync_keys_until(
        &self,
        id: &WorkspaceId,
        deadline: Instant,
    ) -> Result<(), ArmError> {
        let operation = Operation::WorkspacesResyncKeys;
        let resource = id.as_str();
        let mut path = workspace_path(id);
        path.push("resyncKeys".to_string());
        let url = self.url(operation, resource, &path, &[])?;
        let request = ArmRequest::new(operation, resource, id.subscription(), Method::POST, url);
        let poll = Operation::WorkspacesResyncKeysStatus;
        self.run_to_completion(request, poll, deadline).await
    }

    /// Every datastore of a workspace, following `nextLink`, with the largest page size.
    pub async fn list_datastores(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<Datastore>, ArmError> {
        let operation = Operation::DatastoresList;
        let resource = workspace.as_str();
        let mut path = workspace_path(workspace);
        path.push("datastores".to_string());
        let query = [("count", DATASTORE_PAGE_SIZE)];
        let url = self.url(operation, resource, &path, &query)?;
        let subscription = workspace.subscription();
        let request = ArmRequest::new(operation, resource, subscription, Method::GET, url);
        self.list_all(request).await
    }

    /// `GET` one datastore (never with its secret).
    pub async fn get_datastore(&self, id: &DatastoreId) -> Result<Datastore, ArmError> {
        let operation = Operation::DatastoresGet;
        let resource = id.as_str();
        let url = self.url(operation, resource, &datastore_path(id), &[])?;
        let request = ArmRequest::new(operation, resource, id.subscription(), Method::GET, url);
        self.send(&request).await?.json(operation, resource)
    }

    /// `PUT` the whole datastore; returns it as Azure stored it.
    pub async fn put_datastore(
        &self,
        id: &DatastoreId,
        body: &DatastoreBody,
    ) -> Result<Datastore, ArmError> {
        let operation = Operation::DatastoresCreateOrUpdate;
        let resource = id.as_str();
        let url = self.url(operation, resource, &datastore_path(id), &[])?;
        let bytes = body.to_json().map_err(|_| {
            let message = "the datastore body could not be serialized";
            ArmError::new(ArmErrorKind::Decode, operation, resource, message)
        })?;
        let request = ArmRequest::new(operation, resource, id.subscription(), Method::PUT, url)
            .with_body(bytes);
        self.send(&request).await?.json(operation, resource)
    }

    /// `listSecrets`; a 404 means no secret is stored.
    pub async fn list_datastore_secrets(
        &self,
        id: &DatastoreId,
    ) -> Result<DatastoreSecrets, ArmError> {
        let operation = Operation::DatastoresListSecrets;
        let resource = id.as_str();
        let mut path = datastore_path(id);
        path.push("listSecrets".to_string());
        let url = self.url(operation, resource, &path, &[])?;
        let request = ArmRequest::new(operation, resource, id.subscription(), Method::POST, url);
        self.send(&request).await?.json(operation, resource)
    }
}
