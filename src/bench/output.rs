//! The benchmark's results as tables for a person and as JSON for a test or a pipeline. Both end
//! with the ratios the targets are about: sequential / keysync, keysync / lower bound, and (on
//! the event path) SDK procedure / keysync, with and without azure-core's poller waits.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::footprint::median;
use super::run::{Convergence, Measured, Path, by_operation};
use super::sdk::SdkRun;
use super::{PathResults, Results};

/// True when every keysync run left its accounts converged and answered 2xx.
pub fn all_converged(results: &Results) -> bool {
    [&results.event, &results.sweep]
        .iter()
        .flat_map(|p| std::iter::once(&p.keysync).chain(&p.sequential))
        .all(|m| m.succeeded && m.convergence.converged())
}

/// One column of a path's table: a keysync run, the SDK's, or what the lower bound is taken for
/// (the requests a correct run needs, and the bound's time). A cell that does not apply is empty.
struct Column<'a> {
    name: &'static str,
    requests: BTreeMap<String, usize>,
    total: usize,
    tokens: Option<u64>,
    reply_bytes: Option<usize>,
    log_lines: Option<usize>,
    wall: Duration,
    converged: &'static str,
    field_changes: Option<&'a BTreeMap<String, usize>>,
    needless_writes: Option<usize>,
}

impl<'a> Column<'a> {
    fn keysync(name: &'static str, m: &'a Measured) -> Self {
        Column {
            name,
            requests: m.by_operation(),
            total: m.requests.len(),
            tokens: Some(m.tokens),
            reply_bytes: Some(m.reply_bytes),
            log_lines: Some(m.log_lines),
            wall: m.wall,
            converged: converged(m.succeeded, &m.convergence),
            field_changes: Some(&m.field_changes),
            needless_writes: Some(m.needless_writes),
        }
    }

    fn bound(results: &PathResults) -> Self {
        Column {
            name: "lower bound",
            requests: results.needed.by_operation(),
            total: results.needed.total(),
            tokens: Some(results.needed.tokens),
            reply_bytes: None,
            log_lines: None,
            wall: results.bound.value(),
            converged: "-",
            field_changes: None,
            needless_writes: None,
        }
    }

    fn sdk(run: &'a SdkRun) -> Self {
        Column {
            name: "SDK procedure",
            requests: by_operation(&run.requests),
            total: run.requests.len(),
            tokens: None,
            reply_bytes: None,
            log_lines: None,
            wall: run.wall,
            converged: converged(run.errors.is_empty(), &run.convergence),
            field_changes: Some(&run.field_changes),
            needless_writes: Some(run.needless_writes),
        }
    }
}

fn converged(succeeded: bool, convergence: &Convergence) -> &'static str {
    match (succeeded, convergence.converged()) {
        (true, true) => "yes",
        (false, _) => "FAILED",
        (true, false) => "NO",
    }
}

/// The readable report.
pub fn tables(results: &Results) -> String {
    let mut out = String::new();
    header(&mut out, results);
    let sdk = results.sdk.as_ref().ok();
    path_table(&mut out, &results.event, sdk, results.concurrency);
    sdk_lines(&mut out, results);
    path_table(&mut out, &results.sweep, None, results.concurrency);
    footprint_lines(&mut out, results);
    let _ = writeln!(out, "\n{}", ratio_line(results));
    out
}

/// The estate, how it is served, and what keysync runs with: storage checks above all, which
/// are on by default and off here.
fn header(out: &mut String, results: &Results) {
    let shape = &results.setup.shape;
    let _ = writeln!(
        out,
        "keysync bench: {} workspaces x {} datastores, {} storage accounts, {} subscription(s); the busiest account\n\
         has {} datastores in {} workspaces; {} ms on every answer, at most {} datastores a page; keysync at {}\n\
         requests in flight per subscription.",
        shape.workspaces,
        shape.datastores_per_workspace,
        shape.accounts,
        shape.subscriptions,
        shape.busy_datastores,
        shape.busy_workspaces,
        results.setup.latency.as_millis(),
        results.setup.datastores_page,
        results.concurrency,
    );
    let _ = writeln!(
        out,
        "Storage checks are OFF in every run here (KEYSYNC_VERIFY=false), though on by default: the estate's\n\
         storage endpoints are fictional, so a check would time a failed connection, not keysync. With the\n\
         default, keysync would also send one storage request per AccountKey and SAS datastore on the\n\
         accounts it reconciles: {} on the event path, {} in the sweep, none of them counted or timed below.\n",
        results.event.needed.storage_checks, results.sweep.needed.storage_checks,
    );
}

fn title(path: Path) -> &'static str {
    match path {
        Path::Event => {
            "Event path: key1 of the busiest account regenerated, from the event to converged"
        }
        Path::Sweep => {
            "Sweep: key1 of every account regenerated with the events lost, one timer tick repairs all"
        }
    }
}

fn path_table(out: &mut String, results: &PathResults, sdk: Option<&SdkRun>, cap: usize) {
    let mut columns = vec![
        Column::keysync("keysync", &results.keysync),
        Column::bound(results),
    ];
    columns.extend(
        results
            .sequential
            .iter()
            .map(|m| Column::keysync("sequential", m)),
    );
    columns.extend(sdk.map(Column::sdk));
    let _ = writeln!(out, "{}", title(results.path));
    let header: String = columns.iter().map(|c| format!("{:>15}", c.name)).collect();
    let _ = writeln!(out, "  {:<34}{header}", "requests by operation");
    let operations: BTreeSet<&String> = columns.iter().flat_map(|c| c.requests.keys()).collect();
    for operation in operations {
        let cells: String = columns
            .iter()
            .map(|c| format!("{:>15}", c.requests.get(operation).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(out, "    {operation:<32}{cells}");
    }
    summary_rows(out, &columns);
    bound_lines(out, results, cap);
}

/// The rows under the requests: totals, what the handler said, time, and what it did to the
/// estate.
fn summary_rows(out: &mut String, columns: &[Column]) {
    let row = |out: &mut String, label: &str, cell: &dyn Fn(&Column) -> String| {
        let cells: String = columns.iter().map(|c| format!("{:>15}", cell(c))).collect();
        let _ = writeln!(out, "  {label:<34}{cells}");
    };
    let or_dash = |v: Option<usize>| v.map_or_else(|| "-".into(), |n| n.to_string());
    row(out, "total ARM requests", &|c| c.total.to_string());
    row(out, "managed identity tokens", &|c| {
        or_dash(c.tokens.map(|t| t as usize))
    });
    row(out, "handler's reply (bytes)", &|c| or_dash(c.reply_bytes));
    row(out, "handler's log lines", &|c| or_dash(c.log_lines));
    row(out, "wall time", &|c| seconds(c.wall));
    row(out, "converged", &|c| c.converged.to_string());
    row(out, "other datastore fields changed", &|c| {
        or_dash(c.field_changes.map(|f| f.values().sum()))
    });
    row(out, "still-valid keys rewritten", &|c| {
        or_dash(c.needless_writes)
    });
}

fn bound_lines(out: &mut String, results: &PathResults, cap: usize) {
    let _ = writeln!(out, "  {}", surplus_line(results));
    let bound = &results.bound;
    let per_subscription = results.needed.per_subscription();
    let busiest = per_subscription.first().copied().unwrap_or(0);
    let within = match per_subscription.len() {
        0 | 1 => "",
        _ => " (the busiest subscription's)",
    };
    let _ = writeln!(
        out,
        "  lower bound {}: the larger of {} dependent round trips ({}) and {busiest} needed requests{within} / {cap} in flight ({})",
        seconds(bound.value()),
        results.chain.round_trips,
        seconds(bound.chain),
        seconds(bound.throughput),
    );
    if let Some(sequential) = &results.sequential {
        let requests = sequential.requests.len().max(1) as u32;
        let _ = writeln!(
            out,
            "  one request at a time took {} per request: the latency plus loopback, emulator and client",
            millis(sequential.wall / requests)
        );
    }
    let _ = writeln!(out, "  {}\n", path_ratios(results));
}

/// keysync's ARM requests next to those the estate needs, and the operations that differ.
fn surplus_line(results: &PathResults) -> String {
    let made = results.keysync.requests.len();
    let needed = results.needed.total();
    let surplus = results.needed.surplus(&results.keysync.by_operation());
    if surplus.is_empty() {
        return format!("keysync sent exactly the {needed} ARM requests the estate needs");
    }
    let more = match made.cmp(&needed) {
        std::cmp::Ordering::Less => format!("{} fewer than", needed - made),
        std::cmp::Ordering::Equal => "as many as".to_string(),
        std::cmp::Ordering::Greater => format!("{} more than", made - needed),
    };
    let by_operation: Vec<String> = surplus
        .iter()
        .map(|(operation, n)| format!("{operation} {n:+}"))
        .collect();
    format!(
        "keysync sent {made} ARM requests, {more} the {needed} the estate needs: {}",
        by_operation.join(", ")
    )
}

fn sdk_lines(out: &mut String, results: &Results) {
    let run = match &results.sdk {
        Ok(run) => run,
        Err(why) => {
            let _ = writeln!(out, "SDK procedure not run: {why}\n");
            return;
        }
    };
    let version = run.sdk_version.as_deref().unwrap_or("?");
    let asked = match results.setup.retry_after {
        0 => {
            "Azure asks for a wait of 0 here: azure-core takes it for none and waits 30 s, keysync \
              polls again at once"
                .to_string()
        }
        n => format!("Azure asks for {n} s here, which both azure-core and keysync wait"),
    };
    let _ = writeln!(
        out,
        "SDK procedure (azure-ai-ml {version}): {} re-registered, {} workspaces synced, {} in all; {} of it syncing\n\
         \x20 the keys, of which {} asleep in azure-core's poller ({} waits)\n\
         \x20 {asked}",
        run.reregistered,
        run.synced,
        seconds(run.wall),
        seconds(run.sync_wait),
        seconds(run.poller_wait),
        run.poller_waits,
    );
    let keysync = results.event.keysync.wall;
    let _ = writeln!(
        out,
        "  SDK procedure / keysync {:.1}; without the poller's waits ({}) {:.1}",
        ratio(run.wall, keysync),
        seconds(run.without_poller_waits()),
        ratio(run.without_poller_waits(), keysync),
    );
    for (change, count) in &run.field_changes {
        let _ = writeln!(out, "  its re-registration: {change} in {count} datastores");
    }
    for error in &run.errors {
        let _ = writeln!(out, "  error: {error}");
    }
    let _ = writeln!(out);
}

fn path_ratios(results: &PathResults) -> String {
    let mut parts = Vec::new();
    if let Some(sequential) = sequential_ratio(results) {
        parts.push(format!("sequential / keysync {sequential:.1}"));
    }
    parts.push(format!("keysync / lower bound {:.2}", bound_ratio(results)));
    parts.join("    ")
}

fn sequential_ratio(results: &PathResults) -> Option<f64> {
    let sequential = results.sequential.as_ref()?;
    Some(ratio(sequential.wall, results.keysync.wall))
}

fn bound_ratio(results: &PathResults) -> f64 {
    ratio(results.keysync.wall, results.bound.value())
}

fn sdk_ratio(results: &Results) -> Option<f64> {
    let run = results.sdk.as_ref().ok()?;
    Some(ratio(run.wall, results.event.keysync.wall))
}

fn sdk_without_waits_ratio(results: &Results) -> Option<f64> {
    let run = results.sdk.as_ref().ok()?;
    Some(ratio(
        run.without_poller_waits(),
        results.event.keysync.wall,
    ))
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn footprint_lines(out: &mut String, results: &Results) {
    if let Some(startup) = median(&results.startups) {
        let _ = writeln!(
            out,
            "Handler start-up (spawn to first answer on GET /): median {} over {} starts",
            millis(startup),
            results.startups.len()
        );
    }
    let sweep = &results.sweep.keysync;
    if let (Some(idle), Some(after)) = (sweep.idle, sweep.after) {
        let _ = writeln!(
            out,
            "Handler memory: {} resident when idle, {} at its peak during the sweep",
            megabytes(idle.resident),
            megabytes(after.peak)
        );
    }
    if let Some(overhead) = results.sweep.keysync.emulator_overhead {
        let _ = writeln!(
            out,
            "Emulator: {:.0} us of its own per request during the sweep, next to the {} ms latency it adds",
            overhead.as_secs_f64() * 1e6,
            results.setup.latency.as_millis()
        );
    }
}

/// The line the targets are read from.
pub fn ratio_line(results: &Results) -> String {
    let path = |name: &str, p: &PathResults| {
        let sequential = sequential_ratio(p).map_or("-".to_string(), |r| format!("{r:.1}"));
        format!(
            "{name}: sequential/keysync={sequential} keysync/bound={:.2}",
            bound_ratio(p)
        )
    };
    let one_place = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.1}"));
    format!(
        "ratios {} sdk/keysync={} sdk-without-poller-waits/keysync={}; {}",
        path("event", &results.event),
        one_place(sdk_ratio(results)),
        one_place(sdk_without_waits_ratio(results)),
        path("sweep", &results.sweep)
    )
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The results for machines.
pub fn json(results: &Results) -> Value {
    let shape = &results.setup.shape;
    json!({
        "shape": {
            "workspaces": shape.workspaces,
            "datastoresPerWorkspace": shape.datastores_per_workspace,
            "accounts": shape.accounts,
            "busyDatastores": shape.busy_datastores,
            "busyWorkspaces": shape.busy_workspaces,
            "subscriptions": shape.subscriptions,
            "seed": shape.seed,
        },
        "latencyMs": results.setup.latency.as_millis() as u64,
        "datastoresPageSize": results.setup.datastores_page,
        "concurrency": results.concurrency,
        // On by default; off in every run here (see `handler_env`).
        "storageChecks": false,
        "event": path_json(&results.event),
        "sdk": match &results.sdk {
            Ok(run) => sdk_json(run),
            Err(why) => json!({"notRun": why}),
        },
        "sweep": path_json(&results.sweep),
        "startupMs": results.startups.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        "startupMedianMs": median(&results.startups).map(|d| d.as_secs_f64() * 1e3),
        "idleResidentBytes": results.sweep.keysync.idle.map(|m| m.resident),
        "peakResidentBytes": results.sweep.keysync.after.map(|m| m.peak),
        "emulatorOverheadMicros": results.sweep.keysync.emulator_overhead.map(|d| d.as_secs_f64() * 1e6),
        "sdkOverKeysync": sdk_ratio(results),
        "sdkWithoutPollerWaitsOverKeysync": sdk_without_waits_ratio(results),
        "ratios": ratio_line(results),
        "converged": all_converged(results),
    })
}

fn path_json(results: &PathResults) -> Value {
    json!({
        "keysync": measured_json(&results.keysync),
        "sequential": results.sequential.as_ref().map(measured_json),
        "needed": {
            "requests": results.needed.total(),
            "byOperation": results.needed.by_operation(),
            "perSubscription": results.needed.per_subscription(),
            "tokens": results.needed.tokens,
        },
        "keysyncSurplus": results.needed.surplus(&results.keysync.by_operation()),
        "storageRequestsWithChecksOn": results.needed.storage_checks,
        "lowerBound": {
            "seconds": results.bound.value().as_secs_f64(),
            "chainRoundTrips": results.chain.round_trips,
            "chainSeconds": results.bound.chain.as_secs_f64(),
            "throughputSeconds": results.bound.throughput.as_secs_f64(),
            "boundBy": results.bound.bound_by(),
        },
        "sequentialOverKeysync": sequential_ratio(results),
        "keysyncOverBound": bound_ratio(results),
    })
}

fn convergence_json(c: &Convergence) -> Value {
    json!({
        "converged": c.converged(),
        "accountKeyDatastores": c.key_datastores,
        "invalidDatastores": c.invalid,
        "workspacesOnAccounts": c.workspaces,
        "unsyncedWorkspaces": c.unsynced,
    })
}

fn measured_json(m: &Measured) -> Value {
    json!({
        "seconds": m.wall.as_secs_f64(),
        "requests": m.requests.len(),
        "byOperation": m.by_operation(),
        "perSubscription": m.per_subscription(),
        "tokens": m.tokens,
        "replyBytes": m.reply_bytes,
        "logLines": m.log_lines,
        "succeeded": m.succeeded,
        "convergence": convergence_json(&m.convergence),
        "fieldChanges": m.field_changes,
        "needlessWrites": m.needless_writes,
        "failedRequests": m.requests.iter().filter(|r| !(200..300).contains(&r.status)).count(),
    })
}

fn sdk_json(run: &SdkRun) -> Value {
    json!({
        "sdkVersion": run.sdk_version,
        "seconds": run.wall.as_secs_f64(),
        "syncWaitSeconds": run.sync_wait.as_secs_f64(),
        "pollerWaitSeconds": run.poller_wait.as_secs_f64(),
        "pollerWaits": run.poller_waits,
        "secondsWithoutPollerWaits": run.without_poller_waits().as_secs_f64(),
        "requests": run.requests.len(),
        "byOperation": by_operation(&run.requests),
        "reregistered": run.reregistered,
        "synced": run.synced,
        "convergence": convergence_json(&run.convergence),
        "fieldChanges": run.field_changes,
        "needlessWrites": run.needless_writes,
        "errors": run.errors,
    })
}
