//! Long-running operations: ARM answers `202 Accepted` and names a URL to poll, either
//! `Azure-AsyncOperation` (a status document) or `Location` (202 until done).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;
use tracing::instrument;
use url::Url;

use super::error::shorten;
use super::redact::redact;
use super::request::{ArmRequest, same_origin};
use super::response::RawResponse;
use super::{ArmClient, ArmError, ArmErrorKind, Operation};

/// How long `resync_keys` polls before giving up; `resync_keys_until` takes its own deadline.
pub(super) const DEFAULT_LRO_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The wait between polls when the answer has no `Retry-After`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Polls sent as soon as ARM asks. ARM may ask for no wait at all (`Retry-After: 0`); an
/// operation that keeps running must still not be polled back to back until the timeout, so
/// after these the waits grow to the default interval.
const PROMPT_POLLS: u32 = 3;
/// The first wait once the prompt polls are spent; it doubles up to `DEFAULT_POLL_INTERVAL`.
const FIRST_SPACED_POLL: Duration = Duration::from_millis(250);

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
    /// Sends `request` and, if ARM accepts it for later, polls until it ends or `deadline`. The
    /// polls are `poll_operation`: ARM authorizes them apart from the request itself.
    ///
    /// Once ARM has accepted the operation, Azure finishes it whether or not keysync watches, so
    /// only the operation's own failure fails the call: a `Failed` or `Canceled` status document,
    /// or an ARM error from a `Location` URL. Running out of time ends it with `StillRunning`; a
    /// poll refused, unanswered or failing past the retries without an ARM error ends it with
    /// `Unconfirmed`.
    #[instrument(skip_all, fields(operation = %request.operation, resource = %request.resource))]
    pub(super) async fn run_to_completion(
        &self,
        request: ArmRequest<'_>,
        poll_operation: Operation,
        deadline: Instant,
    ) -> Result<(), ArmError> {
        let request = request.with_deadline(Some(deadline));
        let first = self.send(&request).await?;
        if first.status != StatusCode::ACCEPTED {
            return Ok(());
        }

        let monitor = self.monitor(&request, &first)?;
        let poll = request.follow_as(poll_operation, monitor.url().clone());
        let mut wait = poll_interval(&first, 0);
        let mut polls = 0;
        let polled = async {
            loop {
                sleep_unless_past(&request, wait, deadline).await?;
                let answer = self.send(&poll).await?;
                polls += 1;
                match monitor.progress(&request, &poll, &answer)? {
                    Progress::Done => return Ok(()),
                    Progress::Running => wait = poll_interval(&answer, polls),
                }
            }
        };
        polled
            .await
            .map_err(|e: ArmError| after_acceptance(e, request.operation, &monitor))
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

    /// True when the poll's error `e` is the operation's own outcome. A `Location` URL answers a
    /// failed operation with an ARM error (ARM's asynchronous-operation contract), so an error
    /// status with an ARM error body is the operation's failure, unless it refuses keysync the
    /// status (401, 403: the poll's authorization, not the operation). A gateway page or other
    /// unreadable body says nothing about the operation. A status document's poll failing is
    /// never the operation's failure: the document is.
    fn tells_failure(&self, e: &ArmError) -> bool {
        let refused = matches!(e.status, Some(401 | 403));
        matches!(self, Monitor::Location(_)) && e.code.is_some() && !refused
    }

    /// Where the operation `accepted` stands after the `poll` answered `answer`.
    fn progress(
        &self,
        accepted: &ArmRequest<'_>,
        poll: &ArmRequest<'_>,
        answer: &RawResponse,
    ) -> Result<Progress, ArmError> {
        if answer.status == StatusCode::ACCEPTED {
            return Ok(Progress::Running);
        }
        match self {
            Monitor::Location(_) => Ok(Progress::Done),
            Monitor::AsyncOperation(_) => operation_status(accepted, poll, answer),
        }
    }
}

/// Reads an `Azure-AsyncOperation` status document: `{"status": ..., "error": {...}}`. A
/// document keysync cannot read is the poll's error; a failed status is the operation's.
fn operation_status(
    accepted: &ArmRequest<'_>,
    poll: &ArmRequest<'_>,
    answer: &RawResponse,
) -> Result<Progress, ArmError> {
    let resource = poll.resource;
    let document: Value = answer.json(poll.operation, resource)?;
    let Some(status) = document.get("status").and_then(Value::as_str) else {
        let message = "the operation status has no status field";
        return Err(answer.error(ArmErrorKind::Decode, poll.operation, resource, message));
    };
    let operation = accepted.operation;
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => Ok(Progress::Done),
        "failed" | "canceled" | "cancelled" => {
            let detail = document.get("error");
            // The status of a resync holds no secret, but its text gets the SAS net all the same.
            let text = |field: &str| {
                let text = detail?.get(field)?.as_str()?;
                Some(shorten(&redact(text, [], false)))
            };
            let message =
                text("message").unwrap_or_else(|| format!("the operation ended {status}"));
            let mut error =
                answer.error(ArmErrorKind::OperationFailed, operation, resource, message);
            error.code = text("code");
            Err(error)
        }
        _ => Ok(Progress::Running),
    }
}

/// What a failure after ARM accepted the `accepted` operation means. Only the operation's own
/// failure fails it; otherwise Azure finishes it without keysync, which only stopped watching.
fn after_acceptance(mut e: ArmError, accepted: Operation, monitor: &Monitor) -> ArmError {
    match e.kind {
        ArmErrorKind::OperationFailed | ArmErrorKind::StillRunning => {}
        ArmErrorKind::Deadline => {
            e.kind = ArmErrorKind::StillRunning;
            e.operation = accepted;
        }
        ArmErrorKind::Status if monitor.tells_failure(&e) => {
            e.kind = ArmErrorKind::OperationFailed;
            e.operation = accepted;
        }
        _ => {
            let why = unread_status(&e, monitor.url());
            e.kind = ArmErrorKind::Unconfirmed;
            e.message = shorten(&format!("accepted by Azure, which finishes it; {why}"));
        }
    }
    e
}

/// Why the status of an accepted operation could not be read; a refusal names the action.
fn unread_status(e: &ArmError, status_url: &Url) -> String {
    if e.status != Some(403) {
        // Status and code only: Azure's own message stays out of report text (see
        // `report::explain::reported`), and the poll's log line carries it.
        let status = e.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
        let code = e
            .code
            .as_deref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default();
        return format!("its status could not be read{status}{code}");
    }
    let code = e
        .code
        .as_deref()
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    let action =
        status_read_action(status_url).unwrap_or_else(|| e.operation.rbac_action().to_string());
    format!(
        "Azure refused keysync its status (HTTP 403{code}): grant keysync's identity {action} to \
         follow it"
    )
}

/// The action ARM checks for a `GET` of a provider's status URL,
/// `.../providers/<namespace>/locations/<region>/<type>/<operation>`:
/// `<namespace>/locations/<type>/read`. `None` for a URL of another shape.
fn status_read_action(url: &Url) -> Option<String> {
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    let [.., providers, namespace, locations, _, kind, _] = segments.as_slice() else {
        return None;
    };
    let shaped =
        providers.eq_ignore_ascii_case("providers") && locations.eq_ignore_ascii_case("locations");
    shaped.then(|| format!("{namespace}/locations/{kind}/read"))
}

/// The wait before the next poll, after `polls` polls: what the answer asks for (0 is allowed),
/// but no less than [`least_wait`].
fn poll_interval(response: &RawResponse, polls: u32) -> Duration {
    let asked = response.retry_after().unwrap_or(DEFAULT_POLL_INTERVAL);
    asked.max(least_wait(polls))
}

/// No wait for the first [`PROMPT_POLLS`] polls, then [`FIRST_SPACED_POLL`] doubling up to
/// [`DEFAULT_POLL_INTERVAL`]. Never above the default, so a `Retry-After` of a second or more is
/// followed exactly.
fn least_wait(polls: u32) -> Duration {
    match polls.checked_sub(PROMPT_POLLS) {
        None => Duration::ZERO,
        Some(spaced) => FIRST_SPACED_POLL
            .saturating_mul(2u32.saturating_pow(spaced.min(8)))
            .min(DEFAULT_POLL_INTERVAL),
    }
}

/// Sleeps `wait`, unless the next poll would come after `deadline`: then the operation is still
/// running when the caller stops caring, and waiting longer cannot change that.
async fn sleep_unless_past(
    request: &ArmRequest<'_>,
    wait: Duration,
    deadline: Instant,
) -> Result<(), ArmError> {
    if Instant::now()
        .checked_add(wait)
        .is_none_or(|next| next >= deadline)
    {
        let message = "the operation was still running at the deadline; polling stopped";
        return Err(request.error(ArmErrorKind::Deadline, message));
    }
    tokio::time::sleep(wait).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_asked_to_wait_for_nothing_are_spaced_out_after_the_first_few() {
        let waits: Vec<u128> = (0..8).map(|n| least_wait(n).as_millis()).collect();
        assert_eq!(waits, [0, 0, 0, 250, 500, 1000, 1000, 1000]);
        assert_eq!(least_wait(u32::MAX), DEFAULT_POLL_INTERVAL);
    }

    #[test]
    fn a_status_url_names_the_read_action_of_its_resource_type() {
        let action = |url: &str| status_read_action(&Url::parse(url).unwrap());
        assert_eq!(
            action(
                "https://management.azure.com/subscriptions/s/providers/Microsoft.MachineLearningServices/locations/westeurope/workspaceOperationsStatus/op-1?api-version=2025-12-01&type=async"
            )
            .as_deref(),
            Some("Microsoft.MachineLearningServices/locations/workspaceOperationsStatus/read")
        );
        assert_eq!(
            action("http://127.0.0.1:1/arm/subscriptions/s/providers/Microsoft.MachineLearningServices/locations/eastus/mfeOperationsStatus/op-2").as_deref(),
            Some("Microsoft.MachineLearningServices/locations/mfeOperationsStatus/read")
        );
        assert_eq!(action("https://management.azure.com/operations/op-3"), None);
    }
}
