//! `keysync bench`: how fast keysync converges a large estate, next to one call at a time (as
//! the documented procedure works), the lower bound that Azure's round trips allow, and the
//! documented procedure itself run with the Azure ML Python SDK, against the local emulator with
//! a fixed latency on every answer. Also the handler's start-up time and memory.

mod bound;
mod estate;
mod footprint;
mod needed;
mod output;
mod run;
mod sdk;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

pub use bound::{Chain, LowerBound};
pub use estate::Shape;
pub use needed::Needed;
use run::{Measured, Path, Setup};
use sdk::SdkRun;

/// Whether to run the documented procedure with the Azure ML Python SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SdkMode {
    /// When a Python with azure-ai-ml is found (see --python).
    Auto,
    /// Never.
    Skip,
    /// Always: fail when it cannot run.
    Require,
}

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
    /// The `Retry-After` (seconds) of a resync and its status polls. Azure's samples show none;
    /// the SDK's poller then waits 30 s, keysync polls at once.
    #[arg(long, default_value_t = 0)]
    pub retry_after: u64,
    /// The most datastores the emulator puts in one page of a datastore listing, whatever the
    /// client asks (its `datastoresMaxPageSize`; keysync asks for 100, the SDK for 30).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub datastores_page_size: u16,
    /// ARM requests in flight per subscription for "keysync as configured" (default: keysync's
    /// own default, as KEYSYNC_MAX_CONCURRENCY would set it).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,
    /// Starts of the handler for the start-up median.
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u16).range(1..))]
    pub startups: u16,
    /// Seed of the estate's layout.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Leave out the sequential runs (one call at a time), which take longest.
    #[arg(long)]
    pub skip_sequential: bool,
    /// Run the documented procedure with the Azure ML Python SDK on the event path.
    #[arg(long, value_enum, default_value_t = SdkMode::Auto)]
    pub sdk: SdkMode,
    /// The Python with azure-ai-ml and azure-identity (default: .bench-venv/bin/python, which
    /// scripts/bench/setup-sdk.sh makes).
    #[arg(long, env = "KEYSYNC_BENCH_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,
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

    fn serving(&self) -> estate::Serving {
        estate::Serving {
            latency_ms: self.latency_ms,
            retry_after: self.retry_after,
            datastores_page: usize::from(self.datastores_page_size),
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
    /// The documented procedure on the event path, or why it did not run.
    pub sdk: Result<SdkRun, String>,
    pub startups: Vec<Duration>,
}

/// One path measured every way.
#[derive(Debug, Clone)]
pub struct PathResults {
    pub path: Path,
    pub keysync: Measured,
    pub sequential: Option<Measured>,
    /// The requests a correct run needs on the estate, which the bound is taken for.
    pub needed: Needed,
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
        save_estate(&shape, &args, file)?;
        return Ok(ExitCode::SUCCESS);
    }
    let setup = Setup {
        shape,
        latency: Duration::from_millis(args.latency_ms),
        retry_after: args.retry_after,
        datastores_page: usize::from(args.datastores_page_size),
        app_root: crate::demo::find_app_root(args.app_root.clone())?,
        executable: std::env::current_exe().context("locating the keysync binary")?,
    };
    if args.sdk == SdkMode::Require
        && let Err(why) = sdk_python(&setup, &args).await
    {
        eprintln!("error: --sdk require, but {why}");
        return Ok(ExitCode::from(2));
    }
    let results = measure_all(setup, &args).await?;
    if args.json {
        println!("{:#}", output::json(&results));
    } else {
        print!("{}", output::tables(&results));
    }
    Ok(verdict(&results, args.sdk))
}

fn save_estate(shape: &Shape, args: &BenchArgs, file: &std::path::Path) -> anyhow::Result<()> {
    let scenario = estate::scenario(shape, args.serving())?;
    let scenario = serde_json::to_vec_pretty(&scenario)?;
    std::fs::write(file, scenario).with_context(|| format!("writing {}", file.display()))
}

/// Every run, in the order the results are printed.
async fn measure_all(setup: Setup, args: &BenchArgs) -> anyhow::Result<Results> {
    let concurrency = args
        .concurrency
        .map_or(crate::config::DEFAULT_MAX_CONCURRENCY, usize::from);
    let progress = !args.json;
    let event = measure(&setup, Path::Event, concurrency, args, progress).await?;
    let sdk = sdk_procedure(&setup, args, progress).await;
    if let (SdkMode::Require, Err(why)) = (args.sdk, &sdk) {
        anyhow::bail!("the SDK procedure could not run: {why}");
    }
    let sweep = measure(&setup, Path::Sweep, concurrency, args, progress).await?;
    let startups = startups(&setup, usize::from(args.startups)).await?;
    Ok(Results {
        setup,
        concurrency,
        event,
        sweep,
        sdk,
        startups,
    })
}

/// 1 when a keysync run did not converge, or a required SDK run failed; 0 otherwise.
fn verdict(results: &Results, sdk: SdkMode) -> ExitCode {
    let sdk_failed = sdk == SdkMode::Require
        && results
            .sdk
            .as_ref()
            .is_ok_and(|run| !run.errors.is_empty() || !run.convergence.converged());
    if sdk_failed {
        eprintln!("error: the SDK procedure failed or did not converge");
        return ExitCode::FAILURE;
    }
    if !output::all_converged(results) {
        eprintln!("error: a run left datastores with invalid keys or workspaces unsynced");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
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
    let (needed, chain) = needed_and_chain(setup, path)?;
    let bound = LowerBound::new(
        &chain,
        &needed.per_subscription(),
        concurrency,
        setup.latency,
    );
    Ok(PathResults {
        path,
        keysync,
        sequential,
        needed,
        bound,
        chain,
    })
}

/// The documented procedure with the SDK, when it can run here; else why not.
async fn sdk_procedure(setup: &Setup, args: &BenchArgs, progress: bool) -> Result<SdkRun, String> {
    if args.sdk == SdkMode::Skip {
        return Err("left out (--sdk skip)".into());
    }
    let python = sdk_python(setup, args).await?;
    if progress {
        eprintln!("bench: Event path, the documented procedure with the Azure ML Python SDK");
    }
    sdk::run(setup, &python).await.map_err(|e| format!("{e:#}"))
}

/// The Python to run the SDK with, checked; or what is missing, in words.
async fn sdk_python(setup: &Setup, args: &BenchArgs) -> Result<PathBuf, String> {
    let given = args.python.is_some();
    let Some(python) = sdk::find_python(args.python.clone(), &setup.app_root) else {
        return Err(format!(
            "no Python with azure-ai-ml: run scripts/bench/setup-sdk.sh (it makes {}), or pass --python",
            sdk::VENV_PYTHON
        ));
    };
    match sdk::unavailable(&python).await {
        None => Ok(python),
        Some(why) if given => Err(why),
        Some(why) => Err(format!("{why}: run scripts/bench/setup-sdk.sh")),
    }
}

/// The requests a correct run needs on the estate for `path`, and the longest chain of
/// dependent ones, both read from the scenario the emulator serves.
fn needed_and_chain(setup: &Setup, path: Path) -> anyhow::Result<(Needed, Chain)> {
    let scenario = serde_json::to_value(setup.scenario()?)?;
    let regenerated: Vec<String> = run::regenerated_accounts(setup, path)
        .iter()
        .filter_map(|id| id.rsplit('/').next().map(str::to_string))
        .collect();
    let sweep = path == Path::Sweep;
    let needs = bound::needs(&scenario, &regenerated, sweep);
    let polls = needed::status_polls(&scenario);
    let poll_wait = Duration::from_secs(setup.retry_after);
    let chain = Chain::longest(&needs, polls, poll_wait, setup.latency);
    Ok((Needed::of(&scenario, &regenerated, sweep), chain))
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
