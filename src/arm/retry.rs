//! The retry policy: exponential backoff with jitter, stretched to what `Retry-After` asks for,
//! on throttling, transient server errors, timeouts and connection failures.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tracing::warn;

use super::error::shorten;
use super::request::ArmRequest;
use super::response::RawResponse;
use super::transport::Failure;
use super::{ArmClient, ArmError, ArmErrorKind, RetrySettings};

impl ArmClient {
    /// Sends `request`, retrying what is worth retrying; the last failure is the error, of kind
    /// `Deadline` when the deadline rather than the policy ended the retries.
    pub(super) async fn send(&self, request: &ArmRequest<'_>) -> Result<RawResponse, ArmError> {
        let settings = &self.options().retry;
        let mut attempt = 0;
        let mut out_of_time = false;
        let result = (|| {
            attempt += 1;
            self.attempt(request, attempt)
        })
        .retry(backoff(settings))
        .when(|failure| failure.retryable)
        .adjust(|failure, backoff| {
            let next = next_delay(settings, failure, backoff, self.deadline_for(request));
            out_of_time = next == Err(Stop::Deadline);
            next.ok()
        })
        .notify(|failure, delay| log_retry(request, failure, delay))
        .await;
        result.map_err(|failure| {
            if out_of_time {
                past_deadline(failure.error)
            } else {
                failure.error
            }
        })
    }
}

/// Why no further attempt is made.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    RetriesUsedUp,
    Deadline,
}

fn backoff(settings: &RetrySettings) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(settings.base_delay)
        .with_max_delay(settings.max_delay)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(settings.max_retries)
}

/// The wait before the next attempt: the backoff (jitter included, but never above `max_delay`)
/// or the server's `Retry-After`, whichever is longer; no wait that would end past the deadline.
fn next_delay(
    settings: &RetrySettings,
    failure: &Failure,
    backoff: Option<Duration>,
    deadline: Option<Instant>,
) -> Result<Duration, Stop> {
    let backoff = backoff.ok_or(Stop::RetriesUsedUp)?.min(settings.max_delay);
    let delay = backoff.max(failure.retry_after.unwrap_or_default());
    match deadline {
        Some(deadline) if Instant::now() + delay >= deadline => Err(Stop::Deadline),
        _ => Ok(delay),
    }
}

/// The last failure, relabelled: it would have been retried had there been time. Its status,
/// code and correlation id stay.
fn past_deadline(mut error: ArmError) -> ArmError {
    error.kind = ArmErrorKind::Deadline;
    error.message = shorten(&format!(
        "deadline reached while retrying: {}",
        error.message
    ));
    error
}

fn log_retry(request: &ArmRequest<'_>, failure: &Failure, delay: Duration) {
    warn!(
        operation = %request.operation,
        resource = %request.resource,
        status = failure.error.status,
        code = failure.error.code.as_deref(),
        attempt = failure.attempt,
        delay_ms = delay.as_millis() as u64,
        "retrying ARM request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arm::Operation;

    fn failure(retry_after: Option<Duration>) -> Failure {
        let error = ArmError::new(
            ArmErrorKind::Status,
            Operation::WorkspacesGet,
            "/subscriptions/s",
            "throttled",
        );
        Failure {
            error,
            retryable: true,
            retry_after,
            attempt: 1,
        }
    }

    #[test]
    fn the_longer_of_backoff_and_retry_after_wins() {
        let settings = RetrySettings::default();
        let ms = Duration::from_millis;
        let at = |retry_after, backoff| next_delay(&settings, &failure(retry_after), backoff, None);
        assert_eq!(at(None, Some(ms(500))), Ok(ms(500)));
        assert_eq!(at(Some(ms(2000)), Some(ms(500))), Ok(ms(2000)));
        assert_eq!(at(Some(ms(0)), Some(ms(500))), Ok(ms(500)));
        assert_eq!(at(None, Some(ms(60_000))), Ok(settings.max_delay));
        assert_eq!(at(Some(ms(2000)), None), Err(Stop::RetriesUsedUp));
    }

    #[test]
    fn no_retry_sleeps_past_the_deadline() {
        let settings = RetrySettings::default();
        let soon = Some(Instant::now() + Duration::from_secs(1));
        let later = Some(Instant::now() + Duration::from_secs(60));
        let wait = Some(Duration::from_secs(5));
        let at = |deadline| next_delay(&settings, &failure(None), wait, deadline);
        assert_eq!(at(soon), Err(Stop::Deadline));
        assert_eq!(at(later), Ok(Duration::from_secs(5)));
    }
}
