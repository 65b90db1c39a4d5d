//! keysync keeps Azure Machine Learning workspaces and datastores in step with the access keys of
//! the storage accounts they use. It runs as an Azure Functions custom handler; see `DESIGN.md`.

pub mod arm;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod emulator;
pub mod events;
pub mod handler;
pub mod host;
pub mod model;
pub mod ondemand;
pub mod reconcile;
pub mod report;
pub mod resource_id;
pub mod rotation;
pub mod storage;
pub mod telemetry;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what the Functions host sends on shutdown).
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
