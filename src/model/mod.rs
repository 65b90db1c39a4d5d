//! Typed views of the ARM payloads keysync reads. They deserialize both Azure's published samples
//! and the local emulator's answers; fields keysync does not use are left out, except on
//! datastores, which are kept whole so that an update can write back everything it did not change.

pub mod ml;
pub mod storage;

use serde::Deserialize;

/// One page of an ARM list operation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default)]
    pub next_link: Option<String>,
}
