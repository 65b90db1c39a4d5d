//! The benchmark's results as tables for a person and as JSON for a test or a pipeline. Both end
//! with the ratios the targets are about: sequential / keysync and keysync / lower bound.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::footprint::median;
use super::run::{Measured, Path};
use super::{PathResults, Results};

/// True when every run left its accounts converged and answered 2xx.
pub fn all_converged(results: &Results) -> bool {
    [&results.event, &results.sweep]
        .iter()
        .flat_map(|p| std::iter::once(&p.keysync).chain(&p.sequential))
        .all(|m| m.succeeded && m.convergence.converged())
}

/// The readable report.
pub fn tables(results: &Results) -> String {
    let mut out = String::new();
    let shape = &results.setup.shape;
    let _ = writeln!(
        out,
        "keysync bench: {} workspaces x {} datastores, {} storage accounts, {} subscription(s); the busiest account\n\
         has {} datastores in {} workspaces; {} ms on every answer; keysync at {} requests in flight per subscription\n",
        shape.workspaces,
        shape.datastores_per_workspace,
        shape.accounts,
        shape.subscriptions,
        shape.busy_datastores,
        shape.busy_workspaces,
        results.setup.latency.as_millis(),
        results.concurrency,
    );
    path_table(&mut out, &results.event, results.concurrency);
    path_table(&mut out, &results.sweep, results.concurrency);
    footprint_lines(&mut out, results);
    let _ = writeln!(out, "\n{}", ratio_line(results));
    out
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

fn path_table(out: &mut String, results: &PathResults, cap: usize) {
    let runs: Vec<(&str, &Measured)> = std::iter::once(("keysync", &results.keysync))
        .chain(results.sequential.iter().map(|m| ("sequential", m)))
        .collect();
    let _ = writeln!(out, "{}", title(results.path));
    let header: String = runs.iter().map(|(name, _)| format!("{name:>12}")).collect();
    let _ = writeln!(out, "  {:<34}{header}", "requests by operation");
    let operations: BTreeSet<String> = runs
        .iter()
        .flat_map(|(_, m)| m.by_operation().into_keys())
        .collect();
    for operation in &operations {
        let cells: String = runs
            .iter()
            .map(|(_, m)| format!("{:>12}", m.count(operation)))
            .collect();
        let _ = writeln!(out, "    {operation:<32}{cells}");
    }
    let row = |out: &mut String, label: &str, cell: &dyn Fn(&Measured) -> String| {
        let cells: String = runs
            .iter()
            .map(|(_, m)| format!("{:>12}", cell(m)))
            .collect();
        let _ = writeln!(out, "  {label:<34}{cells}");
    };
    row(out, "total ARM requests", &|m| m.requests.len().to_string());
    row(out, "managed identity tokens", &|m| m.tokens.to_string());
    row(out, "handler's reply (bytes)", &|m| {
        m.reply_bytes.to_string()
    });
    row(out, "handler's log lines", &|m| m.log_lines.to_string());
    row(out, "wall time", &|m| seconds(m.wall));
    row(out, "converged", &|m| converged(m).to_string());
    let bound = &results.bound;
    let busiest = results
        .keysync
        .per_subscription()
        .first()
        .copied()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "  lower bound {}: the larger of {} dependent round trips ({}) and {busiest} requests / {cap} in flight ({})",
        seconds(bound.value()),
        results.chain.round_trips(),
        seconds(bound.chain),
        seconds(bound.throughput),
    );
    let _ = writeln!(out, "  {}\n", path_ratios(results));
}

fn converged(m: &Measured) -> &'static str {
    match (m.succeeded, m.convergence.converged()) {
        (true, true) => "yes",
        (false, _) => "FAILED",
        (true, false) => "NO",
    }
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
    if let Some(overhead) = results.event.keysync.emulator_overhead {
        let _ = writeln!(
            out,
            "Emulator: {:.0} us of its own per request, next to the {} ms latency it adds",
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
    format!(
        "ratios {}; {}",
        path("event", &results.event),
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
        "concurrency": results.concurrency,
        "event": path_json(&results.event),
        "sweep": path_json(&results.sweep),
        "startupMs": results.startups.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        "startupMedianMs": median(&results.startups).map(|d| d.as_secs_f64() * 1e3),
        "idleResidentBytes": results.sweep.keysync.idle.map(|m| m.resident),
        "peakResidentBytes": results.sweep.keysync.after.map(|m| m.peak),
        "emulatorOverheadMicros": results.event.keysync.emulator_overhead.map(|d| d.as_secs_f64() * 1e6),
        "ratios": ratio_line(results),
        "converged": all_converged(results),
    })
}

fn path_json(results: &PathResults) -> Value {
    json!({
        "keysync": measured_json(&results.keysync),
        "sequential": results.sequential.as_ref().map(measured_json),
        "lowerBound": {
            "seconds": results.bound.value().as_secs_f64(),
            "chainRoundTrips": results.chain.round_trips(),
            "chainSeconds": results.bound.chain.as_secs_f64(),
            "throughputSeconds": results.bound.throughput.as_secs_f64(),
            "boundBy": results.bound.bound_by(),
        },
        "sequentialOverKeysync": sequential_ratio(results),
        "keysyncOverBound": bound_ratio(results),
    })
}

fn measured_json(m: &Measured) -> Value {
    json!({
        "seconds": m.wall.as_secs_f64(),
        "requests": m.requests.len(),
        "byOperation": m.by_operation(),
        "tokens": m.tokens,
        "replyBytes": m.reply_bytes,
        "logLines": m.log_lines,
        "succeeded": m.succeeded,
        "converged": m.convergence.converged(),
        "accountKeyDatastores": m.convergence.key_datastores,
        "invalidDatastores": m.convergence.invalid,
        "workspacesOnAccounts": m.convergence.workspaces,
        "unsyncedWorkspaces": m.convergence.unsynced,
        "failedRequests": m.requests.iter().filter(|r| !(200..300).contains(&r.status)).count(),
    })
}
