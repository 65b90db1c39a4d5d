//! The `RotateKeys` function: on the timer, rotate the accounts that are due, then sweep.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;

use super::Handler;
use super::envelope::{Invocation, InvocationResponse, read_body, refuse};
use super::timer::TimerInfo;

/// The binding name in `functions/RotateKeys/function.json`.
pub const BINDING: &str = "timer";

/// Handles one tick. The timer's own fields (past due, last and next run) are logged and
/// ignored: what is due comes from Azure's state. Replies 500 when anything failed, so the
/// host records the failure; the next tick repairs what is left.
pub async fn invoke(
    State(handler): State<Arc<Handler>>,
    body: Result<Bytes, BytesRejection>,
) -> (StatusCode, Json<InvocationResponse>) {
    let body = match read_body("RotateKeys", body) {
        Ok(body) => body,
        Err(refusal) => return *refusal,
    };
    let timer = match Invocation::parse(&body) {
        // A missing or unreadable timer value changes nothing about what is due.
        Ok(invocation) => invocation
            .binding(BINDING)
            .map(TimerInfo::read)
            .unwrap_or_default(),
        Err(e) => return refuse("RotateKeys", StatusCode::BAD_REQUEST, &e.to_string()),
    };
    tracing::info!(
        function = "RotateKeys",
        past_due = timer.is_past_due,
        "timer tick"
    );

    let deadline = tokio::time::Instant::now() + handler.config.timer_deadline;
    let report = handler
        .reconciler
        .tick(&handler.config.rotation, Some(deadline))
        .await;
    for rotation in &report.rotations {
        rotation.log();
    }
    for account in &report.sweep {
        account.log();
    }
    for note in &report.notes {
        tracing::warn!(outcome = %note.outcome, "{}", note.message);
    }
    let summary = report.summary();
    let status = if report.has_failures() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    tracing::info!(function = "RotateKeys", summary = %summary, "tick done");
    let value = serde_json::to_value(&report).unwrap_or(Value::Null);
    (status, Json(InvocationResponse::new(vec![summary], value)))
}
