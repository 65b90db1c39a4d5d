//! Getting a bearer token within bounds. Each attempt ends by the request timeout, a credential
//! that could not be reached is asked again a few times, and nothing waits past the deadline.
//!
//! The credential itself does not retry (see [`auth`](super::auth)): left to azure_core's default
//! policy, a managed identity endpoint that refused connections held a run for minutes.

use std::time::Duration;

use azure_core::credentials::AccessToken;
use azure_core::error::ErrorKind as AzureErrorKind;
use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tracing::warn;

use secrecy::ExposeSecret;

use super::redact::redact;
use super::request::ArmRequest;
use super::transport::root_cause;
use super::{ArmClient, ArmError, ArmErrorKind};

/// Retries after a first attempt that could not reach the credential. An attempt that got no
/// answer is not retried: an endpoint that hung once for a whole timeout is not worth a second.
const TOKEN_RETRIES: usize = 2;

/// Where a token comes from, for messages: the ARM client holds whichever credential it was given.
const SOURCE: &str =
    "the identity endpoint in IDENTITY_ENDPOINT on Azure; `az` or `azd` on a workstation";

/// A token attempt that failed.
enum TokenFailure {
    /// No answer within `waited`; `cut` when the deadline, not the request timeout, set it.
    NoAnswer { waited: Duration, cut: bool },
    /// The credential answered with an error; `unreached` when it could not be reached at all
    /// (connection refused or dropped, a gateway or throttling status): worth another attempt.
    Failed {
        error: azure_core::Error,
        unreached: bool,
    },
    /// The deadline had passed before the attempt could start.
    TooLate(ArmError),
}

impl TokenFailure {
    fn is_worth_retrying(&self) -> bool {
        matches!(
            self,
            TokenFailure::Failed {
                unreached: true,
                ..
            }
        )
    }
}

impl ArmClient {
    /// A token for the client's scope, or an error of kind `Credential` (or `Deadline`, when the
    /// deadline rather than the credential ended the wait) that says what happened.
    pub(super) async fn token(&self, request: &ArmRequest<'_>) -> Result<AccessToken, ArmError> {
        let settings = &self.options().retry;
        let deadline = self.deadline_for(request);
        let mut attempts = 0;
        let mut out_of_time = false;
        let result = (|| {
            attempts += 1;
            self.token_attempt(request)
        })
        .retry(
            ExponentialBuilder::new()
                .with_min_delay(settings.base_delay)
                .with_max_delay(settings.max_delay)
                .with_jitter()
                .with_max_times(TOKEN_RETRIES.min(settings.max_retries)),
        )
        .when(TokenFailure::is_worth_retrying)
        .adjust(|_, delay| {
            let delay = delay?.min(settings.max_delay);
            out_of_time = deadline.is_some_and(|d| Instant::now() + delay >= d);
            (!out_of_time).then_some(delay)
        })
        .notify(|_, delay| {
            warn!(
                operation = %request.operation,
                resource = %request.resource,
                delay_ms = delay.as_millis() as u64,
                "retrying token request: the credential could not be reached"
            );
        })
        .await;
        result.map_err(|failure| self.token_error(request, failure, attempts, out_of_time))
    }

    async fn token_attempt(&self, request: &ArmRequest<'_>) -> Result<AccessToken, TokenFailure> {
        let timeout = self
            .attempt_timeout(request)
            .map_err(TokenFailure::TooLate)?;
        let scopes = [self.options().scope.as_str()];
        let fetch = self.inner.credential.get_token(&scopes, None);
        match tokio::time::timeout(timeout, fetch).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(error)) => Err(TokenFailure::Failed {
                unreached: is_unreached(&error),
                error,
            }),
            Err(_) => Err(TokenFailure::NoAnswer {
                waited: timeout,
                cut: timeout < self.options().request_timeout,
            }),
        }
    }

    /// The error of a token request that failed after `attempts`; `out_of_time` when the
    /// deadline left no time for another.
    fn token_error(
        &self,
        request: &ArmRequest<'_>,
        failure: TokenFailure,
        attempts: usize,
        out_of_time: bool,
    ) -> ArmError {
        let scope = &self.options().scope;
        let tries = match attempts {
            1 => String::new(),
            n => format!(" ({n} attempts)"),
        };
        let (kind, message) = match failure {
            TokenFailure::TooLate(error) => return error,
            TokenFailure::NoAnswer { waited, cut } => {
                let kind = if cut {
                    ArmErrorKind::Deadline
                } else {
                    ArmErrorKind::Credential
                };
                let wait = match cut {
                    true => format!("before the deadline ({waited:.1?})"),
                    false => format!("within {waited:.1?}"),
                };
                let message = format!(
                    "no token for {scope}: the credential did not answer {wait}{tries} ({SOURCE})"
                );
                (kind, message)
            }
            TokenFailure::Failed {
                error,
                unreached: true,
            } => {
                let kind = if out_of_time {
                    ArmErrorKind::Deadline
                } else {
                    ArmErrorKind::Credential
                };
                let message = format!(
                    "no token for {scope}: the credential could not be reached{tries} ({SOURCE}): \
                     {}",
                    self.without_credential_secrets(&root_cause(&error))
                );
                (kind, message)
            }
            TokenFailure::Failed { error, .. } => {
                // azure_identity's messages name the failing tool; they never hold a token.
                let message = format!(
                    "no token for {scope} (locally run `az login` or `azd auth login`; on Azure \
                     check the function app's managed identity and AZURE_CLIENT_ID): {}",
                    self.without_credential_secrets(&error.to_string())
                );
                (ArmErrorKind::Credential, message)
            }
        };
        // Not shortened here: `ArmError::new` keeps a credential error longer than others, so
        // that each developer tool's reason survives.
        request.error(kind, message)
    }
}

impl ArmClient {
    /// `text` (a credential's error) without what the credential sent as a secret, in any
    /// encoding the answer may quote it in, nor anything shaped like a SAS token.
    fn without_credential_secrets(&self, text: &str) -> String {
        let secrets = &self.options().credential_secrets;
        redact(
            text,
            secrets.iter().map(|s| s.expose_secret().as_bytes()),
            false,
        )
    }
}

/// True when `error` says the credential could not be reached, or answered as a busy or broken
/// gateway does, rather than refusing: another attempt may succeed.
fn is_unreached(error: &azure_core::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(error) = err.downcast_ref::<azure_core::Error>() {
            match error.kind() {
                AzureErrorKind::Connection | AzureErrorKind::Io => return true,
                AzureErrorKind::HttpResponse { status, .. } => {
                    return super::transport::RETRYABLE_STATUSES.contains(&u16::from(*status));
                }
                _ => {}
            }
        }
        current = err.source();
    }
    false
}
