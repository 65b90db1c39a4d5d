//! The storage data plane: Shared Key signing, SAS tokens, and the check that proves a
//! datastore's credential works against its storage account. keysync never reads or writes
//! data; it sends one properties or list request per datastore.

pub mod sas;
pub mod shared_key;
pub mod verify;

/// The storage service version keysync sends (`x-ms-version`) and signs new SAS tokens with.
pub const STORAGE_VERSION: &str = "2024-11-04";
