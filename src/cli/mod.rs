//! The command line: `keysync serve` for the Functions host, `keysync emulator` and
//! `keysync demo` for running without Azure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keeps Azure Machine Learning workspaces and datastores in step with storage account keys.
#[derive(Debug, Parser)]
#[command(name = "keysync", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as an Azure Functions custom handler (started by the Functions host).
    ///
    /// Listens on 127.0.0.1 at FUNCTIONS_CUSTOMHANDLER_PORT. Configuration comes from the
    /// environment (app settings): see the README.
    ///
    /// Example: FUNCTIONS_CUSTOMHANDLER_PORT=7071 KEYSYNC_SUBSCRIPTIONS=<id> keysync serve
    Serve {
        /// The port to listen on.
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
        port: u16,
    },
    /// Run the local Azure emulator (ARM storage and ML APIs, managed identity, Event Grid).
    ///
    /// Prints NAME=value lines for a handler once ready, then serves until Ctrl-C.
    ///
    /// Example: keysync emulator --listen 127.0.0.1:0 --scenario demo --event-webhook http://127.0.0.1:7072/runtime/webhooks/eventgrid?functionName=KeyRegenerated
    Emulator {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// A scenario file, or `demo` for the built-in scenario.
        #[arg(long, default_value = "demo")]
        scenario: String,
        /// Where to post Event Grid events when a key is regenerated.
        #[arg(long)]
        event_webhook: Option<url::Url>,
    },
    /// Watch keysync work end to end against the local emulator: a key is regenerated, the event
    /// reaches the handler through a local Functions host, and every stale datastore is repaired.
    ///
    /// Exits non-zero if any AccountKey datastore is left holding an invalid key.
    ///
    /// Example: keysync demo
    Demo {
        /// The folder holding host.json and the function folders (default: found automatically).
        #[arg(long)]
        app_root: Option<PathBuf>,
        /// Show the handler's own log lines.
        #[arg(long)]
        verbose: bool,
    },
}

/// Parses the command line, runs the command, and maps the outcome to an exit code: 0 success,
/// 1 failure, 2 usage error (from clap).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    crate::telemetry::init(default_filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { port } => {
            let config = crate::config::Config::from_env()?;
            crate::handler::serve(port, config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Emulator {
            listen,
            scenario,
            event_webhook,
        } => {
            let scenario = load_scenario(&scenario)?;
            let options = crate::emulator::EmulatorOptions {
                listen,
                event_webhook,
            };
            crate::emulator::run_cli(scenario, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { app_root, verbose } => crate::demo::run(app_root, verbose).await,
    }
}

fn load_scenario(name: &str) -> anyhow::Result<crate::emulator::Scenario> {
    if name == "demo" {
        Ok(crate::emulator::Scenario::demo())
    } else {
        crate::emulator::Scenario::from_file(std::path::Path::new(name))
    }
}
