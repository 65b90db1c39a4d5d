//! Long-running operations: ARM answers `202 Accepted` and names a URL to poll, either
//! `Azure-AsyncOperation` (a status document) or `Location` (202 until done).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;
use tracing::instrument;
use url::Url;

use super::error::shorten;
use super::request::{ArmRequest, same_origin};
use super::response::RawResponse;
use super::{ArmClient, ArmError, ArmErrorKind};

/// How long `resync_keys` polls before giving up; `resync_keys_until` takes its own deadline.
pub(super) const DEFAULT_LRO_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The wait between polls when the answer has no `Retry-After`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where and how to learn the outcome.
enum Monitor {
    AsyncOperation(Url),
    Location(Url),
}

enum Progress {
    Running,
    Done,
}

impl ArmClient {
    /// Sends `request` and, if ARM accepts it for later, polls until it ends or `deadline`.
    #[instrument(skip_all, fields(operation = %request.operation, resource = %request.resource))]
    pub(super) async fn run_to_completion(
        &self,
        request: ArmRequest<'_>,
        deadline: Instant,
    ) -> Result<(), ArmError> {
        let request = request.with_deadline(Some(deadline));
        let first = self.send(&request).await?;
        if first.status != StatusCode::ACCEPTED {
            return Ok(());
        }

        let monitor = self.monitor(&request, &first)?;
        let mut wait = poll_interval(&first);
        let polled = async {
            loop {
                sleep_unless_past(&request, wait, deadline).await?;
                let poll = self.send(&request.follow(monitor.url().clone())).await?;
                match monitor.progress(&request, &poll)? {
                    Progress::Done => return Ok(()),
                    Progress::Running => wait = poll_interval(&poll),
                }
            }
        };
        // Once ARM has accepted the operation, running out of time only stops the watching.
        polled.await.map_err(|mut e: ArmError| {
            if e.kind == ArmErrorKind::Deadline {
                e.kind = ArmErrorKind::StillRunning;
            }
            e
        })
    }

    /// The status URL of a 202: `Azure-AsyncOperation` if present, else `Location`.
    fn monitor(
        &self,
        request: &ArmRequest<'_>,
        accepted: &RawResponse,
    ) -> Result<Monitor, ArmError> {
        let refuse = |why: &str| {
            accepted.error(
                ArmErrorKind::Decode,
                request.operation,
                request.resource,
                why,
            )
        };
        let (header, is_async_operation) = match accepted.header("azure-asyncoperation") {
            Some(value) => (value, true),
            None => match accepted.header("location") {
                Some(value) => (value, false),
                None => return Err(refuse("202 Accepted without a status URL to poll")),
            },
        };
        // A relative Location is resolved against the endpoint; an absolute one is kept as is.
        let endpoint = &self.options().endpoint;
        let url = endpoint
            .join(header)
            .map_err(|_| refuse("the status URL of the 202 is not a URL"))?;
        if !same_origin(&url, endpoint) {
            // The bearer token goes with every poll, so it must not leave the ARM endpoint.
            return Err(refuse(
                "the status URL points away from the ARM endpoint; not polled",
            ));
        }
        Ok(if is_async_operation {
            Monitor::AsyncOperation(url)
        } else {
            Monitor::Location(url)
        })
    }
}

impl Monitor {
    fn url(&self) -> &Url {
        match self {
            Monitor::AsyncOperation(url) | Monitor::Location(url) => url,
        }
    }

    fn progress(&self, request: &ArmRequest<'_>, poll: &RawResponse) -> Result<Progress, ArmError> {
        if poll.status == StatusCode::ACCEPTED {
            return Ok(Progress::Running);
        }
        match self {
            Monitor::Location(_) => Ok(Progress::Done),
            Monitor::AsyncOperation(_) => operation_status(request, poll),
        }
    }
}

/// Reads an `Azure-AsyncOperation` status document: `{"status": ..., "error": {...}}`.
fn operation_status(request: &ArmRequest<'_>, poll: &RawResponse) -> Result<Progress, ArmError> {
    let (operation, resource) = (request.operation, request.resource);
    let document: Value = poll.json(operation, resource)?;
    let Some(status) = document.get("status").and_then(Value::as_str) else {
        let message = "the operation status has no status field";
        return Err(poll.error(ArmErrorKind::Decode, operation, resource, message));
    };
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => Ok(Progress::Done),
        "failed" | "canceled" | "cancelled" => {
            let detail = document.get("error");
            let text = |field: &str| detail?.get(field)?.as_str().map(shorten);
            let message =
                text("message").unwrap_or_else(|| format!("the operation ended {status}"));
            let mut error = poll.error(ArmErrorKind::OperationFailed, operation, resource, message);
            error.code = text("code");
            Err(error)
        }
        _ => Ok(Progress::Running),
    }
}

/// The wait the answer asks for before the next poll; 0 is allowed.
fn poll_interval(response: &RawResponse) -> Duration {
    response.retry_after().unwrap_or(DEFAULT_POLL_INTERVAL)
}

/// Sleeps `wait`, unless the next poll would come after `deadline`: then the operation is still
/// running when the caller stops caring, and waiting longer cannot change that.
async fn sleep_unless_past(
    request: &ArmRequest<'_>,
    wait: Duration,
    deadline: Instant,
) -> Result<(), ArmError> {
    if Instant::now() + wait >= deadline {
        let message = "the operation was still running at the deadline; polling stopped";
        return Err(request.error(ArmErrorKind::Deadline, message));
    }
    tokio::time::sleep(wait).await;
    Ok(())
}
