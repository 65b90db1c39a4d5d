//! `keysync host`: the local stand-in for the Functions host, run by hand beside
//! `keysync emulator`, for anyone who wants to drive the pieces the demo drives.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::host::{BindingEncoding, HostOptions, LocalHost};

/// Starts `keysync serve` as the Functions host would, prints where to reach it, and serves
/// until Ctrl-C or SIGTERM. The handler inherits this process's environment as its app settings.
pub async fn run(listen: SocketAddr, app_root: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let app_root = crate::demo::find_app_root(app_root)?;
    // The packaged app runs the binary next to host.json; from a source tree that is this one.
    let executable = std::env::current_exe().context("locating the keysync binary")?;
    let host = LocalHost::start(HostOptions {
        app_root,
        executable: Some(executable),
        env: Vec::new(),
        env_remove: Vec::new(),
        echo_output: true,
        encoding: BindingEncoding::Object,
        listen,
        function_key: None,
    })
    .await?;
    print_endpoints(&host);
    crate::shutdown_signal().await;
    host.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// One `NAME=value` line per endpoint, as `keysync emulator` prints its settings: a script can
/// source them. The function key is random per start and guards only this loopback listener.
fn print_endpoints(host: &LocalHost) {
    println!(
        "KEYSYNC_EVENT_WEBHOOK={}",
        host.event_grid_webhook("KeyRegenerated")
    );
    println!(
        "KEYSYNC_TIMER_URL=http://{}/admin/functions/RotateKeys",
        host.addr()
    );
    println!("KEYSYNC_RECONCILE_URL={}", host.http_url("reconcile"));
    println!("KEYSYNC_FUNCTION_KEY={}", host.function_key());
}
