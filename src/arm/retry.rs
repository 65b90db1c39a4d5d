//! The retry policy: exponential backoff with jitter, stretched to what `Retry-After` asks for,
//! on throttling, transient server errors, timeouts and connection failures.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tracing::warn;

use super::request::ArmRequest;
use super::response::RawResponse;
use super::transport::Failure;
use super::{ArmClient, ArmError, RetrySettings};

impl ArmClient {
    /// Sends `request`, retrying what is worth retrying; the last failure is the error.
    pub(super) async fn send(&self, request: &ArmRequest<'_>) -> Result<RawResponse, ArmError> {
        let settings = &self.options().retry;
        let mut attempt = 0;
        let result = (|| {
            attempt += 1;
            self.attempt(request, attempt)
        })
        .retry(backoff(settings))
        .when(|failure| failure.retryable)
        .adjust(|failure, backoff| next_delay(settings, failure, backoff, request.deadline))
        .notify(|failure, delay| log_retry(request, failure, delay))
        .await;
        result.map_err(|failure| failure.error)
    }
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
/// or the server's `Retry-After`, whichever is longer. `None` stops retrying: the retries are used
/// up, or the wait would end past the deadline.
fn next_delay(
    settings: &RetrySettings,
    failure: &Failure,
    backoff: Option<Duration>,
    deadline: Option<Instant>,
) -> Option<Duration> {
    let backoff = backoff?.min(settings.max_delay);
    let delay = backoff.max(failure.retry_after.unwrap_or_default());
    match deadline {
        Some(deadline) if Instant::now() + delay >= deadline => None,
        _ => Some(delay),
    }
}

fn log_retry(request: &ArmRequest<'_>, failure: &Failure, delay: Duration) {
    warn!(
        operation = %request.operation,
        resource = request.resource,
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
    use crate::arm::{ArmErrorKind, Operation};

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
        assert_eq!(at(None, Some(ms(500))), Some(ms(500)));
        assert_eq!(at(Some(ms(2000)), Some(ms(500))), Some(ms(2000)));
        assert_eq!(at(Some(ms(0)), Some(ms(500))), Some(ms(500)));
        assert_eq!(at(None, Some(ms(60_000))), Some(settings.max_delay));
        assert_eq!(at(Some(ms(2000)), None), None, "retries used up");
    }

    #[test]
    fn no_retry_sleeps_past_the_deadline() {
        let settings = RetrySettings::default();
        let soon = Some(Instant::now() + Duration::from_secs(1));
        let later = Some(Instant::now() + Duration::from_secs(60));
        let wait = Some(Duration::from_secs(5));
        assert_eq!(next_delay(&settings, &failure(None), wait, soon), None);
        assert_eq!(next_delay(&settings, &failure(None), wait, later), wait);
    }
}
