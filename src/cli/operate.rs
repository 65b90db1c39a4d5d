//! `keysync plan`, `sync` and `rotate`: the configuration from flags and the environment, the
//! run (the same code as the `Reconcile` function's), the output and the exit code.

use std::process::ExitCode;

use super::output::Output;
use super::progress::StderrProgress;
use super::{CommonArgs, ReconcileArgs, RotateArgs};
use crate::handler::Handler;
use crate::ondemand::{self, Progress, RunError, RunOptions, Scope};
use crate::reconcile::{Reconciler, ResolveError};
use crate::report::RunReport;
use crate::resource_id::StorageAccountId;
use crate::rotation::Rotation;

/// Why a command stopped before it had a result.
enum Stop {
    /// The command line names nothing keysync can work on: exit 2.
    Usage(String),
    /// Azure or the machine failed: exit 1.
    Failed(String),
}

impl Stop {
    fn exit(self, out: &Output) -> ExitCode {
        match self {
            Stop::Usage(message) => {
                out.error(&message);
                ExitCode::from(2)
            }
            Stop::Failed(message) => {
                out.error(&message);
                ExitCode::FAILURE
            }
        }
    }
}

impl From<RunError> for Stop {
    fn from(e: RunError) -> Self {
        match e {
            RunError::AccountNotFound(_) => Stop::Usage(e.to_string()),
            RunError::Arm(_) | RunError::Busy => Stop::Failed(e.to_string()),
        }
    }
}

/// `plan` (`dry_run`) or `sync`.
pub async fn reconcile(args: &ReconcileArgs, dry_run: bool) -> ExitCode {
    let out = Output::new(args.common.json);
    match run_reconcile(args, dry_run, &out).await {
        Ok(code) => code,
        Err(stop) => stop.exit(&out),
    }
}

async fn run_reconcile(
    args: &ReconcileArgs,
    dry_run: bool,
    out: &Output,
) -> Result<ExitCode, Stop> {
    let handler = connect(&args.common)?;
    let progress = StderrProgress::new();
    let scope = match &args.account {
        Some(account) => Scope::Account(resolve(&handler.reconciler, account, &progress).await?),
        None => Scope::All,
    };
    // A person at a terminal can wait, and stop it with Ctrl-C: no deadline.
    let options = RunOptions {
        dry_run,
        deadline: None,
    };
    let run = ondemand::reconcile(&handler.reconciler, &scope, options, &progress).await;
    progress.finish();

    let run = run?;
    out.run(&run);
    // A plan succeeds when everything could be read and planned. A sync succeeds when
    // everything is in sync or was fixed: a credential still broken (storage refused it,
    // shared-key access is off) or a datastore keysync cannot judge needs a person.
    let attention = !dry_run && run.needing_attention().next().is_some();
    let success = !run.needs_retry() && !attention;
    if let (false, Some(problem)) = (success, run.problem()) {
        let verdict = match dry_run {
            true => "the plan is incomplete",
            false => "not everything is in sync",
        };
        out.reason(&format!("{verdict}: {problem}"));
    }
    Ok(exit_code(success))
}

/// `rotate`.
pub async fn rotate(args: &RotateArgs) -> ExitCode {
    let out = Output::new(args.common.json);
    match run_rotate(args, &out).await {
        Ok(code) => code,
        Err(stop) => stop.exit(&out),
    }
}

async fn run_rotate(args: &RotateArgs, out: &Output) -> Result<ExitCode, Stop> {
    let handler = connect(&args.common)?;
    let progress = StderrProgress::new();
    let account = resolve(&handler.reconciler, &args.account, &progress).await?;
    progress.step(&format!("rotating storage account {}", account.name()));
    let policy = &handler.config.rotation;
    let rotation = ondemand::rotate(&handler.reconciler, policy, &account, args.force).await;
    progress.finish();

    let rotation = rotation?;
    out.rotation(&rotation);
    let problem = rotate_problem(&rotation);
    if let Some(problem) = &problem {
        out.reason(problem);
    }
    Ok(exit_code(problem.is_none()))
}

/// Why a rotation exits 1: it failed, it left the account alone for a reason a person must
/// resolve, or the reconcile that followed left a line a person must act on (a SAS token signed
/// with the key just regenerated, when re-minting is off).
fn rotate_problem(rotation: &Rotation) -> Option<String> {
    let account = rotation.account.rsplit('/').next().unwrap_or_default();
    let lines = rotation
        .report
        .as_ref()
        .map(|report| RunReport::new(false, vec![report.clone()], Vec::new()).problem());
    match (
        rotation.outcome.as_str(),
        rotation.attention,
        lines.flatten(),
    ) {
        ("failed", _, _) => Some(format!(
            "the rotation of {account} failed: {}",
            rotation.reason
        )),
        ("left", true, _) => Some(format!("{account} was left alone: {}", rotation.reason)),
        (_, _, Some(problem)) => Some(format!(
            "after the rotation of {account}, not everything is in sync: {problem}"
        )),
        _ => None,
    }
}

/// The handler's own ARM client and reconciler, configured from the flags over the environment.
fn connect(common: &CommonArgs) -> Result<Handler, Stop> {
    let config = common.config_from_env().map_err(Stop::Usage)?;
    Handler::new(config).map_err(|e| Stop::Failed(format!("{e:#}")))
}

async fn resolve(
    reconciler: &Reconciler,
    account: &str,
    progress: &StderrProgress,
) -> Result<StorageAccountId, Stop> {
    progress.step(&format!("finding storage account {}", account.trim()));
    reconciler
        .resolve_account(account, None)
        .await
        .map_err(|e| match e {
            ResolveError::Arm { .. } => Stop::Failed(e.to_string()),
            _ => Stop::Usage(e.to_string()),
        })
}

fn exit_code(success: bool) -> ExitCode {
    match success {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}
