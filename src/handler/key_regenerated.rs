//! The `KeyRegenerated` function: an Event Grid event in, a reconcile of the account it names out.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::Handler;
use super::envelope::{Invocation, InvocationResponse, read_body, refuse};
use crate::events::{self, Decision, Event};
use crate::reconcile::{ReconcileError, Request};
use crate::report::Report;
use crate::resource_id::StorageAccountId;

/// The binding name in `functions/KeyRegenerated/function.json`.
pub const BINDING: &str = "event";

/// The function's name, as its folder is named.
const FUNCTION: &str = "KeyRegenerated";

/// What became of one event; the invocation's `ReturnValue` is the list of these.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EventResult {
    event: String,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<Report>,
    /// One line for the host's `Logs`.
    summary: String,
}

impl EventResult {
    fn ignored(event: &Event, reason: String) -> Self {
        tracing::info!(event = %event.id, outcome = %"ignored", reason = %reason, "event");
        let summary = format!("event {} ignored: {reason}", event.id);
        EventResult {
            event: event.id.clone(),
            outcome: "ignored",
            reason: Some(reason),
            report: None,
            summary,
        }
    }

    fn failed(event: &Event, account: &str, reason: String) -> Self {
        tracing::error!(event = %event.id, account, outcome = %"failed", error = %reason, "event");
        let summary = format!("account {account}: failed: {reason}");
        EventResult {
            event: event.id.clone(),
            outcome: "failed",
            reason: Some(reason),
            report: None,
            summary,
        }
    }

    fn reconciled(event: &Event, account: &str, report: Report) -> Self {
        report.log();
        // Failed or deferred work fails the invocation, so Event Grid delivers it again.
        let outcome = if report.has_failures() {
            "failed"
        } else if report.needs_retry() {
            "deferred"
        } else {
            "reconciled"
        };
        let summary = format!("account {account}: {}", report.summary());
        tracing::info!(event = %event.id, account, outcome = %outcome, summary = %report.summary(), "event done");
        EventResult {
            event: event.id.clone(),
            outcome,
            reason: None,
            report: Some(report),
            summary,
        }
    }

    /// An event for an account that an earlier event of the same batch already reconciled: it
    /// shares that outcome rather than running (and reporting) the same reconcile again.
    fn same_as(event: &Event, first: &EventResult) -> Self {
        let reason = format!(
            "same account as event {}: reconciled once for both",
            first.event
        );
        EventResult {
            event: event.id.clone(),
            outcome: first.outcome,
            summary: format!("event {}: {reason}", event.id),
            reason: Some(reason),
            report: None,
        }
    }

    fn succeeded(&self) -> bool {
        !matches!(self.outcome, "failed" | "deferred")
    }
}

/// Handles one invocation. Replies non-2xx when the body is unusable (Event Grid then retries
/// and dead-letters it) or when any work failed (so it is delivered again and converges).
pub async fn invoke(
    State(handler): State<Arc<Handler>>,
    body: Result<Bytes, BytesRejection>,
) -> (StatusCode, Json<InvocationResponse>) {
    let body = match read_body(FUNCTION, body) {
        Ok(body) => body,
        Err(refusal) => return *refusal,
    };
    let events = match decode(&body) {
        Ok(events) => events,
        Err(message) => return refuse(FUNCTION, StatusCode::BAD_REQUEST, &message),
    };
    // One deadline for the whole invocation: Event Grid waits for the answer, not per event.
    let deadline = Instant::now() + handler.config.event_deadline;
    let mut results: Vec<EventResult> = Vec::with_capacity(events.len());
    let mut reconciled: HashMap<StorageAccountId, usize> = HashMap::new();
    for event in &events {
        let account = match event.decide(|sub| handler.config.in_scope(sub)) {
            Decision::Ignore(reason) => {
                results.push(EventResult::ignored(event, reason));
                continue;
            }
            Decision::Reconcile(account) => account,
        };
        // A batch that names one account many times costs one reconcile, not one per copy.
        let result = match reconciled.get(&account) {
            Some(&first) => EventResult::same_as(event, &results[first]),
            None => {
                reconciled.insert(account.clone(), results.len());
                handle(&handler, event, account, deadline).await
            }
        };
        results.push(result);
    }
    let status = match results.iter().all(EventResult::succeeded) {
        true => StatusCode::OK,
        false => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let logs = results.iter().map(|r| r.summary.clone()).collect();
    let return_value = serde_json::to_value(&results).unwrap_or(Value::Null);
    (status, Json(InvocationResponse::new(logs, return_value)))
}

fn decode(body: &[u8]) -> Result<Vec<Event>, String> {
    let invocation = Invocation::parse(body).map_err(|e| e.to_string())?;
    let value = invocation.binding(BINDING).map_err(|e| e.to_string())?;
    events::decode(value).map_err(|e| e.to_string())
}

async fn handle(
    handler: &Handler,
    event: &Event,
    account: StorageAccountId,
    deadline: Instant,
) -> EventResult {
    // Quoted (Debug), as every name from an event is logged: it cannot pose as another field.
    tracing::info!(event = %event.id, account = account.as_str(), "key regeneration event: reconciling");
    let request = Request {
        deadline: Some(deadline),
        ..Request::apply(account.clone())
    };
    match handler.reconciler.reconcile(request).await {
        Ok(report) => EventResult::reconciled(event, account.name(), report),
        Err(ReconcileError::AccountNotFound(_)) => {
            EventResult::ignored(event, "the storage account no longer exists".to_string())
        }
        Err(ReconcileError::Arm(e)) => EventResult::failed(
            event,
            account.name(),
            crate::reconcile::execute::reported(&e),
        ),
        Err(busy @ ReconcileError::Busy) => {
            EventResult::failed(event, account.name(), busy.to_string())
        }
    }
}
