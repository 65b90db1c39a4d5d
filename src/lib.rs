//! keysync keeps Azure Machine Learning workspaces and datastores in step with the access keys of
//! the storage accounts they use. It runs as an Azure Functions custom handler; see `DESIGN.md`.

pub mod arm;
pub mod config;
pub mod emulator;
pub mod model;
pub mod report;
pub mod resource_id;
