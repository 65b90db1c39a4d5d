//! The `Reconcile` function: `POST /api/reconcile`, which the Functions host forwards as the raw
//! HTTP request (`enableForwardingHttpRequest`) and whose answer it passes back unchanged. The
//! body names an account, or nothing for the whole scope, and whether to only plan; the answer
//! is the run's report as JSON. Callers get short errors; the detail goes to the log.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Handler;
use crate::arm::ArmErrorKind;
use crate::ondemand::{self, Quiet, RunError, RunOptions, Scope};
use crate::reconcile::ResolveError;
use crate::report::printable;

/// The handler's route: the function's public path, as the host forwards it.
pub const ROUTE: &str = "/api/reconcile";

/// The largest body accepted; a real one is a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `{"account": "<name or id>", "dryRun": true}`; both optional.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Body {
    #[serde(default)]
    account: Option<String>,
    /// Planning is the default: a caller must ask for writes.
    #[serde(default = "plan_only")]
    dry_run: bool,
}

fn plan_only() -> bool {
    true
}

/// A request keysync will not run, as `{"error": "..."}` with its status.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self.status.is_server_error() {
            true => {
                tracing::error!(function = "Reconcile", status = self.status.as_u16(), error = %self.message, "request failed")
            }
            false => {
                tracing::info!(function = "Reconcile", status = self.status.as_u16(), error = %self.message, "request refused")
            }
        }
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Handles one request: 200 with the report when nothing failed (its `outcome` is `attention`
/// when a person must act on a line), 502 with the report when part
/// of the work failed in Azure, 503 with the report when the deadline left work undone,
/// 400/404/413 with a short error when nothing was run (502/503 when the account's lookup failed
/// or ran out of time). The deadline (`KEYSYNC_HTTP_DEADLINE_SECS`) counts from the request's
/// arrival, the lookup included.
pub async fn invoke(
    State(handler): State<Arc<Handler>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match run(&handler, body).await {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(),
    }
}

async fn run(
    handler: &Handler,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Rejection> {
    let body = parse(body)?;
    // One deadline from the start: looking a name up lists the accounts of every subscription,
    // and a hung listing must not leave the run that follows its full time.
    let deadline = tokio::time::Instant::now() + handler.config.http_deadline;
    let scope = match body.account.as_deref() {
        None => Scope::All,
        Some(text) => Scope::Account(resolve(handler, text, deadline).await?),
    };
    tracing::info!(
        function = "Reconcile",
        scope = scope_name(&scope),
        dry_run = body.dry_run,
        "on-demand run"
    );

    let options = RunOptions {
        dry_run: body.dry_run,
        deadline: Some(deadline),
    };
    let run = ondemand::reconcile(&handler.reconciler, &scope, options, &Quiet)
        .await
        .map_err(refused_run)?;
    for report in &run.accounts {
        report.log();
    }
    let status = match run.outcome() {
        // A line a person must act on is in the report; the run itself did all it could, and
        // running it again would change nothing.
        "ok" | "attention" => StatusCode::OK,
        "incomplete" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    tracing::info!(function = "Reconcile", status = status.as_u16(), summary = %run.summary(), "on-demand run done");
    Ok((status, Json(run)).into_response())
}

/// A run that could not start, told without Azure's words (the log has them).
fn refused_run(e: RunError) -> Rejection {
    tracing::error!(function = "Reconcile", error = %e, "run failed");
    let status = match e {
        RunError::AccountNotFound(_) => StatusCode::NOT_FOUND,
        RunError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        RunError::Arm(_) => StatusCode::BAD_GATEWAY,
    };
    Rejection::new(status, e.public_message())
}

fn scope_name(scope: &Scope) -> &str {
    match scope {
        Scope::Account(id) => id.name(),
        Scope::All => "all",
    }
}

/// The body as JSON: empty means `{}`; anything but an object of the two known fields is refused.
fn parse(body: Result<Bytes, BytesRejection>) -> Result<Body, Rejection> {
    let bytes = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} KiB", MAX_BODY_BYTES / 1024),
        ),
        _ => Rejection::new(StatusCode::BAD_REQUEST, "the body could not be read"),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body {
            account: None,
            dry_run: plan_only(),
        });
    }
    let bad = |message: String| Rejection::new(StatusCode::BAD_REQUEST, message);
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| bad("the body is not valid JSON".into()))?;
    if !value.is_object() {
        return Err(bad(format!("the body must be a JSON object: {SHAPE}")));
    }
    // From the bytes, not the value: a value keeps only the last of two `dryRun`s, and a body
    // that says both must not be read as whichever came last.
    let body: Body = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "{}; expected {SHAPE}",
            printable(&e.to_string(), 200)
        ))
    })?;
    if body.account.as_deref().is_some_and(|a| a.trim().is_empty()) {
        return Err(bad(
            "account is empty: give a storage account name or id, or leave it out for the whole scope"
                .into(),
        ));
    }
    Ok(body)
}

/// The accepted body, for error messages.
const SHAPE: &str = r#"{"account": "<storage account name or id>" (optional), "dryRun": true|false (optional, default true)}"#;

async fn resolve(
    handler: &Handler,
    text: &str,
    deadline: tokio::time::Instant,
) -> Result<crate::resource_id::StorageAccountId, Rejection> {
    let found = handler
        .reconciler
        .resolve_account(text, Some(deadline))
        .await;
    found.map_err(|e| {
        let status = match &e {
            ResolveError::Malformed(_) => StatusCode::BAD_REQUEST,
            // Outside the scope is as good as absent: keysync may not touch it either way.
            ResolveError::OutOfScope(_) | ResolveError::NotFound(_) => StatusCode::NOT_FOUND,
            ResolveError::Arm { error, .. } => {
                tracing::error!(function = "Reconcile", error = %crate::report::explain::explain(error), "finding the account failed");
                // Out of time is what a run cut short by its deadline answers: try again.
                let status = match error.kind {
                    ArmErrorKind::Deadline => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_GATEWAY,
                };
                return Rejection::new(
                    status,
                    format!(
                        "could not look the account up: {}",
                        crate::report::explain::public_summary(error)
                    ),
                );
            }
        };
        Rejection::new(status, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> Result<Body, Rejection> {
        parse(Ok(Bytes::from(body.to_string())))
    }

    #[test]
    fn an_empty_body_plans_the_whole_scope() {
        for body in ["", "  \n", "{}"] {
            let body = parsed(body).unwrap();
            assert!(body.account.is_none());
            assert!(body.dry_run);
        }
    }

    #[test]
    fn bad_bodies_are_refused_with_a_short_reason() {
        for (body, words) in [
            ("not json", "not valid JSON"),
            ("[]", "must be a JSON object"),
            (r#"{"dryRun": "yes"}"#, "expected a boolean"),
            (r#"{"acount": "st"}"#, "unknown field `acount`"),
            (r#"{"account": 7}"#, "expected a string"),
            (r#"{"account": " "}"#, "account is empty"),
            (
                r#"{"account": "st", "dryRun": true, "dryRun": false}"#,
                "duplicate field `dryRun`",
            ),
        ] {
            let rejection = parsed(body).unwrap_err();
            assert_eq!(rejection.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(
                rejection.message.contains(words),
                "{body}: {}",
                rejection.message
            );
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Bodies near the accepted shape: any account text, a `dryRun` of any JSON type, an
        /// unknown field; or any bytes at all.
        fn bodies() -> impl Strategy<Value = Vec<u8>> {
            let dry_run = prop_oneof![
                any::<bool>().prop_map(|b| json!(b)),
                ".{0,20}".prop_map(|s| json!(s)),
                any::<i64>().prop_map(|n| json!(n)),
            ];
            let fields = (
                proptest::option::of(".{0,40}"),
                proptest::option::of(dry_run),
                proptest::option::of(("[a-zA-Z]{1,10}", ".{0,10}")),
            );
            let object = fields.prop_map(|(account, dry_run, extra)| {
                let mut body = serde_json::Map::new();
                if let Some(account) = account {
                    body.insert("account".into(), json!(account));
                }
                if let Some(dry_run) = dry_run {
                    body.insert("dryRun".into(), dry_run);
                }
                if let Some((name, value)) = extra {
                    body.insert(name, json!(value));
                }
                Value::Object(body).to_string().into_bytes()
            });
            prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), object]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            /// No body makes the decoding panic; a refusal is a 400 with a short message, and an
            /// accepted body names a non-empty account or none.
            #[test]
            fn no_body_panics_and_every_refusal_is_a_short_400(body in bodies()) {
                match parse(Ok(Bytes::from(body))) {
                    Ok(parsed) => prop_assert!(
                        parsed.account.as_deref().is_none_or(|a| !a.trim().is_empty())
                    ),
                    Err(rejection) => {
                        prop_assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
                        prop_assert!(rejection.message.chars().count() <= 400, "{}", rejection.message);
                    }
                }
            }
        }
    }

    #[test]
    fn dry_run_false_must_be_said() {
        let body = parsed(r#"{"account": "stmlshared01", "dryRun": false}"#).unwrap();
        assert_eq!(body.account.as_deref(), Some("stmlshared01"));
        assert!(!body.dry_run);
    }
}
