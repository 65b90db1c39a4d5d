//! The command line: `keysync serve` for the Functions host; `plan`, `sync` and `rotate` for a
//! person at a terminal or a pipeline; `emulator` and `demo` for running without Azure.
//!
//! Exit codes: 0 success, 1 something failed or needs a person (see each command's help), 2
//! usage error (bad flags, missing configuration, an account that names nothing in scope).

mod common;
mod host;
mod operate;
mod output;
mod progress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

pub use common::CommonArgs;

/// Keeps Azure Machine Learning workspaces and datastores in step with storage account keys.
#[derive(Debug, Parser)]
#[command(name = "keysync", version, about, propagate_version = true, after_help = TOP_EXAMPLES)]
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
        /// The port to listen on; the Functions host passes it in FUNCTIONS_CUSTOMHANDLER_PORT.
        // Optional to clap so that a missing port gets a message naming the variable (see
        // `missing_port`): the host never passes --port, so clap's own message misleads.
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
        port: Option<u16>,
    },
    /// Show what a reconcile would do, writing nothing.
    ///
    /// Reads the storage account (or, without --account, every account that a workspace or
    /// datastore in scope uses), its keys, and the key each AccountKey datastore holds, and shows
    /// per workspace which datastores would move to which key and which workspaces would be
    /// resynced. Only reads: no datastore is written, no workspace resynced, no key regenerated.
    ///
    /// Exits 0 when everything could be planned, 1 when something could not be read (the reason
    /// on one line of stderr), 2 on a usage error. Lines that need a person (`attention`) are
    /// shown but do not change the exit code: a plan only reads. SAS tokens are checked against
    /// storage by `sync`, not by a plan.
    #[command(after_help = PLAN_EXAMPLES)]
    Plan(ReconcileArgs),
    /// Reconcile now: move every stale datastore to a current key and resync workspaces.
    ///
    /// The same work as the KeyRegenerated function, for one account or (without --account) for
    /// every account that a workspace or datastore in scope uses. Datastores are updated in
    /// place; nothing is deleted. Running it twice writes nothing the second time.
    ///
    /// Exits 0 when everything is in sync or was fixed; 1 when something failed, or when a line
    /// needs a person: a credential storage refused and keysync could not replace (such as a
    /// dead SAS token without KEYSYNC_REMINT_SAS), an AccountKey or SAS datastore on an account
    /// with shared-key access disabled, or an object keysync cannot judge (an unknown credentials
    /// type, an unusable id); 2 on a usage error. On 1, stderr says why on one line. A storage
    /// endpoint keysync cannot reach is a warning only: it says nothing about the credential.
    #[command(after_help = SYNC_EXAMPLES)]
    Sync(ReconcileArgs),
    /// Rotate one storage account's key now, with the timer's guards.
    ///
    /// Finds the key the account's datastores hold; when it is older than
    /// KEYSYNC_ROTATE_AFTER_DAYS (90 by default), regenerates the other key, moves every
    /// datastore to it and resyncs the workspace, so that nothing ever holds an invalid key.
    /// Refuses when a key was created within KEYSYNC_ROTATE_MIN_INTERVAL_HOURS (24), when the
    /// datastores hold both keys, when shared-key access is disabled, and when the Function App
    /// runs on the account (unless it is listed in KEYSYNC_ROTATE_ACCOUNTS). --force lifts the
    /// age check only.
    ///
    /// Exits 0 when the account was rotated or left alone for a reason that needs nobody (its key
    /// is young, a key is too recent, shared keys are disabled), 1 when the rotation failed,
    /// a person must decide (both keys in use, datastores unreadable, the Function App's own
    /// storage) or the reconcile after it left a line that needs a person (as for sync), 2 on a
    /// usage error.
    #[command(after_help = ROTATE_EXAMPLES)]
    Rotate(RotateArgs),
    /// Run the local Azure emulator (ARM storage and ML APIs, managed identity, Event Grid).
    ///
    /// Prints NAME=value lines for a handler once ready, then serves until Ctrl-C. With --https
    /// it also serves HTTPS on a free loopback port and prints two more lines:
    /// KEYSYNC_EMULATOR_HTTPS (its base URL) and KEYSYNC_EMULATOR_CA_FILE (a PEM file of the
    /// certificate to trust, e.g. through REQUESTS_CA_BUNDLE; removed when the emulator stops).
    ///
    /// Example: keysync emulator --listen 127.0.0.1:0 --scenario demo --event-webhook 'http://127.0.0.1:7072/runtime/webhooks/eventgrid?functionName=KeyRegenerated'
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
        /// Also serve HTTPS, with a certificate made at start for 127.0.0.1 and localhost.
        #[arg(long)]
        https: bool,
    },
    /// Run the local stand-in for the Azure Functions host, with `keysync serve` behind it
    ///
    /// Starts the handler as the host would (from host.json, port in
    /// FUNCTIONS_CUSTOMHANDLER_PORT, ready on GET /), with this process's environment as its app
    /// settings, and serves what the host serves: the Event Grid webhook
    /// (/runtime/webhooks/eventgrid?functionName=KeyRegenerated), timer functions run by hand
    /// (POST /admin/functions/RotateKeys) and the Reconcile HTTP function (/api/reconcile, behind
    /// a function key). Prints those as NAME=value lines once ready, echoes the handler's log
    /// lines on stderr, and serves until Ctrl-C.
    ///
    /// Example, beside the emulator (wait for its lines, then set -a exports them):
    ///   keysync emulator --event-webhook 'http://127.0.0.1:7072/runtime/webhooks/eventgrid?functionName=KeyRegenerated' > emulator.env &
    ///   until grep -q KEYSYNC_SUBSCRIPTIONS emulator.env 2>/dev/null; do sleep 0.1; done
    ///   set -a; . ./emulator.env; set +a
    ///   keysync host --listen 127.0.0.1:7072
    #[command(verbatim_doc_comment)]
    Host {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:7072")]
        listen: SocketAddr,
        /// The folder holding host.json and the function folders (default: found automatically).
        #[arg(long)]
        app_root: Option<PathBuf>,
    },
    /// Measure how fast keysync converges a large estate against the local emulator.
    ///
    /// Generates an estate (by default 100 workspaces of 20 datastores, 50 storage accounts, the
    /// busiest used by 200 datastores in 40 workspaces), adds a fixed latency to every emulator
    /// answer, and times the event path (one regeneration of the busiest account) and the sweep
    /// (every account), each with keysync as configured and with one request in flight, next to
    /// the lower bound Azure's round trips allow. Also the handler's start-up and memory.
    ///
    /// Exits 1 if a run left an invalid key or an unsynced workspace behind.
    ///
    /// Example: cargo run --release -- bench
    Bench(crate::bench::BenchArgs),
    /// Watch keysync repair a regenerated key end to end, against the local emulator.
    ///
    /// A key is regenerated, the event reaches the handler through a local Functions host, and
    /// every stale datastore is repaired; then the timer rotates a due account.
    ///
    /// Exits non-zero if any AccountKey datastore on the account is left holding an invalid key,
    /// the workspace was not resynced, the rotation broke a datastore or rotated the wrong
    /// accounts, or the echo of keysync's own regeneration wrote anything; and, with Azurite
    /// (`npm ci`), if storage did not accept a credential or the dead SAS token was not
    /// re-minted.
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

/// What `plan` and `sync` work on.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The storage account: its ARM id, or its name (looked up in the subscriptions in scope,
    /// ignoring case). Without it, every account that a workspace or datastore in scope uses.
    #[arg(long, value_name = "NAME_OR_ID")]
    pub account: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What `rotate` works on.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The storage account: its ARM id, or its name (looked up in the subscriptions in scope,
    /// ignoring case).
    #[arg(long, value_name = "NAME_OR_ID")]
    pub account: String,
    /// Rotate even if the key in use is younger than KEYSYNC_ROTATE_AFTER_DAYS. Every other guard
    /// still applies.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// How `plan`, `sync` and `rotate` authenticate, for their help.
macro_rules! credentials_help {
    () => {
        "Credentials: developer tools (`az login`, `azd auth login`) on a workstation; the managed
identity where IDENTITY_ENDPOINT and IDENTITY_HEADER are set (in Azure, and with the local
emulator, whose `keysync emulator` prints them)."
    };
}

const TOP_EXAMPLES: &str = "Examples:
  keysync demo                                   # the whole story against the local emulator
  keysync plan --account stmlshared01            # what a reconcile of one account would do
  keysync sync --account stmlshared01            # do it now
  keysync rotate --account stmlshared01 --force  # rotate its key now, with the timer's guards

Exit codes: 0 success, 1 something failed or needs a person, 2 usage error.
`keysync <COMMAND> --help` explains each command, with examples.";

const PLAN_EXAMPLES: &str = concat!(
    "Examples:
  keysync plan --account stmlshared01
  keysync plan --subscriptions 11111111-2222-3333-4444-555555555555 --json

Against the local emulator: run `keysync emulator`, export the NAME=value lines it prints
(KEYSYNC_ARM_ENDPOINT, IDENTITY_ENDPOINT, IDENTITY_HEADER, KEYSYNC_SUBSCRIPTIONS), then
  keysync plan

",
    credentials_help!()
);

const SYNC_EXAMPLES: &str = concat!(
    "Examples:
  keysync sync --account stmlshared01
  keysync sync --account /subscriptions/<id>/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlshared01 --json

",
    credentials_help!()
);

const ROTATE_EXAMPLES: &str = concat!(
    "Examples:
  keysync rotate --account stmlother02
  keysync rotate --account stmlfresh03 --force --json

",
    credentials_help!()
);

/// Parses the command line, runs the command, and maps the outcome to an exit code: 0 success,
/// 1 failure, 2 usage error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve { port: None } = cli.command {
        missing_port().exit();
    }
    match cli.command {
        Command::Serve { .. } => crate::telemetry::init("info"),
        // The others print what they are for on stdout (a table, JSON, the emulator's NAME=value
        // lines that a script sources), so their own log lines go to stderr.
        _ => crate::telemetry::init_stderr("warn"),
    }
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

/// The usage error (exit 2) for `serve` without a port.
fn missing_port() -> clap::Error {
    let message = "no port to listen on: the Functions host sets FUNCTIONS_CUSTOMHANDLER_PORT; \
                   outside the host, set it or pass --port <PORT>";
    let mut command = Cli::command();
    // Built, so that the subcommand's usage line reads `keysync serve`.
    command.build();
    let serve = command.find_subcommand("serve").cloned();
    serve
        .unwrap_or(command)
        .error(clap::error::ErrorKind::MissingRequiredArgument, message)
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { port } => {
            // `main` has refused a missing port already.
            let Some(port) = port else {
                return Err(missing_port().into());
            };
            let config = crate::config::Config::from_env()?;
            crate::handler::serve(port, config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(args) => Ok(operate::reconcile(&args, true).await),
        Command::Sync(args) => Ok(operate::reconcile(&args, false).await),
        Command::Rotate(args) => Ok(operate::rotate(&args).await),
        Command::Emulator {
            listen,
            scenario,
            event_webhook,
            https,
        } => {
            let scenario = load_scenario(&scenario)?;
            let options = crate::emulator::EmulatorOptions {
                listen,
                event_webhook,
                https,
            };
            crate::emulator::run_cli(scenario, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { app_root, verbose } => crate::demo::run(app_root, verbose).await,
        Command::Host { listen, app_root } => host::run(listen, app_root).await,
        Command::Bench(args) => crate::bench::run(args).await,
    }
}

fn load_scenario(name: &str) -> anyhow::Result<crate::emulator::Scenario> {
    if name == "demo" {
        Ok(crate::emulator::Scenario::demo())
    } else {
        crate::emulator::Scenario::from_file(std::path::Path::new(name))
    }
}
