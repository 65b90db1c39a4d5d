//! `keysync bench`: how fast keysync converges a large estate, next to one call at a time (as
//! the documented procedure works), the lower bound that Azure's round trips allow, and the
//! documented procedure itself run with the Azure ML Python SDK, against the local emulator with
//! a fixed latency on every answer. Also the handler's start-up time and memory.

mod bound;
mod estate;
mod footprint;
mod output;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

pub use bound::{Chain, LowerBound};
pub use estate::Shape;
use run::{Measured, Path, Setup};

/// The options of `keysync bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Workspaces in the estate.
    #[arg(long, default_value_t = 100)]
    pub workspaces: usize,
    /// Datastores per workspace (two of them the workspace's default blob and file datastores).
    #[arg(long, default_value_t = 20)]
    pub datastores: usize,
    /// Storage accounts.
    #[arg(long, default_value_t = 50)]
    pub accounts: usize,
    /// Datastores on the busiest account, whose regeneration the event path times.
    #[arg(long, default_value_t = 200)]
    pub busy_datastores: usize,
    /// Workspaces those datastores are spread over.
    #[arg(long, default_value_t = 40)]
    pub busy_workspaces: usize,
    /// Subscriptions the estate is spread over.
    #[arg(long, default_value_t = 1)]
    pub subscriptions: usize,
    /// Latency the emulator adds to every answer, in milliseconds.
    #[arg(long, default_value_t = 25)]
    pub latency_ms: u64,
    /// ARM requests in flight per subscription for "keysync as configured" (default: keysync's
    /// own default, as KEYSYNC_MAX_CONCURRENCY would set it).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Starts of the handler for the start-up median.
    #[arg(long, default_value_t = 21)]
    pub startups: usize,
    /// Seed of the estate's layout.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Leave out the sequential runs (one call at a time), which take longest.
    #[arg(long)]
    pub skip_sequential: bool,
    /// The folder holding host.json and the function folders (default: found automatically).
    #[arg(long)]
    pub app_root: Option<PathBuf>,
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write the generated estate to FILE as an emulator scenario (for `keysync emulator
    /// --scenario FILE`) and exit without measuring.
    #[arg(long, value_name = "FILE")]
    pub save_estate: Option<PathBuf>,
}

impl BenchArgs {
    fn shape(&self) -> Shape {
        Shape {
            workspaces: self.workspaces,
            datastores_per_workspace: self.datastores,
            accounts: self.accounts,
            busy_datastores: self.busy_datastores,
            busy_workspaces: self.busy_workspaces,
            subscriptions: self.subscriptions,
            seed: self.seed,
        }
    }
}

/// Everything one benchmark measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub setup: Setup,
    pub concurrency: usize,
    pub event: PathResults,
    pub sweep: PathResults,
    pub startups: Vec<Duration>,
}

/// One path measured every way.
#[derive(Debug, Clone)]
pub struct PathResults {
    pub path: Path,
    pub keysync: Measured,
    pub sequential: Option<Measured>,
    pub bound: LowerBound,
    pub chain: Chain,
}

/// Runs the benchmark and prints its results; exits 1 if a run did not converge.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let shape = args.shape();
    if let Err(problem) = shape.validate() {
        eprintln!("error: {problem}");
        return Ok(ExitCode::from(2));
    }
    if let Some(file) = &args.save_estate {
        let latency_ms = args.latency_ms;
        let scenario = serde_json::to_vec_pretty(&estate::scenario(&shape, latency_ms)?)?;
        std::fs::write(file, scenario).with_context(|| format!("writing {}", file.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let setup = Setup {
        shape,
        latency: Duration::from_millis(args.latency_ms),
        app_root: crate::demo::find_app_root(args.app_root.clone())?,
        executable: std::env::current_exe().context("locating the keysync binary")?,
    };
    let concurrency = args
        .concurrency
        .unwrap_or(crate::config::DEFAULT_MAX_CONCURRENCY);
    let progress = !args.json;

    let event = measure(&setup, Path::Event, concurrency, &args, progress).await?;
    let sweep = measure(&setup, Path::Sweep, concurrency, &args, progress).await?;
    let startups = startups(&setup, args.startups).await?;
    let results = Results {
        setup,
        concurrency,
        event,
        sweep,
        startups,
    };
    if args.json {
        println!("{:#}", output::json(&results));
    } else {
        print!("{}", output::tables(&results));
    }
    Ok(if output::all_converged(&results) {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: a run left datastores with invalid keys or workspaces unsynced");
        ExitCode::FAILURE
    })
}

async fn measure(
    setup: &Setup,
    path: Path,
    concurrency: usize,
    args: &BenchArgs,
    progress: bool,
) -> anyhow::Result<PathResults> {
    let say = |what: &str| {
        if progress {
            eprintln!("bench: {path:?} path, {what}");
        }
    };
    say(&format!("keysync with {concurrency} requests in flight"));
    let keysync = run::keysync(setup, path, concurrency).await?;
    let sequential = if args.skip_sequential {
        None
    } else {
        say("keysync with 1 request in flight");
        Some(run::keysync(setup, path, 1).await?)
    };
    let chain = chain(setup, path, &keysync);
    let bound = LowerBound::new(
        &chain,
        &keysync.per_subscription(),
        concurrency,
        setup.latency,
    );
    Ok(PathResults {
        path,
        keysync,
        sequential,
        bound,
        chain,
    })
}

/// The dependent round trips of the run, from the pages it actually read.
fn chain(setup: &Setup, path: Path, run: &Measured) -> Chain {
    let subscriptions = setup.shape.subscriptions.max(1);
    let per_subscription = |operation: &str| run.count(operation).div_ceil(subscriptions);
    let workspaces = setup.shape.workspaces.max(1);
    Chain {
        account_pages: match path {
            Path::Event => 0,
            Path::Sweep => per_subscription("StorageAccounts_List"),
        },
        workspace_pages: per_subscription("Workspaces_ListBySubscription"),
        datastore_pages: run.count("Datastores_List").div_ceil(workspaces),
        updated: run.count("Datastores_CreateOrUpdate") > 0,
        resync_polls: (run.count("Workspaces_ResyncKeys") > 0)
            .then(|| run.count("Workspaces_ResyncKeysStatus") / run.count("Workspaces_ResyncKeys")),
    }
}

async fn startups(setup: &Setup, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let emulator = run::start_emulator(setup).await?;
    let env = run::handler_env(&emulator, 1);
    let executable = setup.executable.clone();
    let samples =
        tokio::task::spawn_blocking(move || footprint::startups(&executable, &env, runs)).await?;
    emulator.shutdown().await;
    samples
}
