//! End-to-end tests: the real `keysync serve` binary behind the local Functions host, against the
//! local Azure emulator. One test binary, so the crate is built once.

mod batches;
mod chaos;
mod clouds;
mod guarantees;
mod helpers;
mod identity;
mod isolation;
mod key_regenerated;
mod reconcile_http;
mod resilience;
mod rotation;
mod summaries;
mod verify;
