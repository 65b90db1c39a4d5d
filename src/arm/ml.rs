//! Azure Machine Learning workspace and datastore operations.

use crate::model::ml::{Datastore, DatastoreBody, DatastoreSecrets, Workspace};
use crate::resource_id::{DatastoreId, WorkspaceId};

use super::{ArmClient, ArmError};

impl ArmClient {
    /// Every workspace in a subscription, following `nextLink`.
    pub async fn list_workspaces(&self, subscription: &str) -> Result<Vec<Workspace>, ArmError> {
        let _ = subscription;
        todo!("arm helper")
    }

    pub async fn get_workspace(&self, id: &WorkspaceId) -> Result<Workspace, ArmError> {
        let _ = id;
        todo!("arm helper")
    }

    /// `resyncKeys`, followed to the end of its long-running operation.
    pub async fn resync_keys(&self, id: &WorkspaceId) -> Result<(), ArmError> {
        let _ = id;
        todo!("arm helper")
    }

    /// Every datastore of a workspace, following `nextLink`, with the largest page size.
    pub async fn list_datastores(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<Datastore>, ArmError> {
        let _ = workspace;
        todo!("arm helper")
    }

    pub async fn get_datastore(&self, id: &DatastoreId) -> Result<Datastore, ArmError> {
        let _ = id;
        todo!("arm helper")
    }

    /// `PUT` the whole datastore; returns it as Azure stored it.
    pub async fn put_datastore(
        &self,
        id: &DatastoreId,
        body: &DatastoreBody,
    ) -> Result<Datastore, ArmError> {
        let _ = (id, body);
        todo!("arm helper")
    }

    /// `listSecrets`; a 404 means no secret is stored.
    pub async fn list_datastore_secrets(
        &self,
        id: &DatastoreId,
    ) -> Result<DatastoreSecrets, ArmError> {
        let _ = id;
        todo!("arm helper")
    }
}
