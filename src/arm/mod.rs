//! The Azure Resource Manager client: bearer tokens, bounded concurrency, retries, paging,
//! long-running operations and precise errors, with the storage and ML operations on top.

pub mod auth;
pub mod error;
mod limits;
mod lro;
pub mod ml;
pub mod operation;
mod paging;
mod redact;
mod request;
mod response;
mod retry;
pub mod storage;
mod token;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use url::Url;

use limits::SubscriptionLimits;

pub use error::{ArmError, ArmErrorKind};
pub use operation::Operation;

/// How the client retries throttled and failed calls.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// The first backoff delay; it doubles (with jitter) up to `max_delay`.
    pub base_delay: Duration,
    /// The longest backoff delay, jitter included.
    pub max_delay: Duration,
    /// The longest `Retry-After` keysync will wait; a longer one fails the call instead.
    pub max_retry_after: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_retries: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What the client needs besides the credential.
#[derive(Debug, Clone)]
pub struct ArmOptions {
    /// Base URL, such as `https://management.azure.com`.
    pub endpoint: Url,
    /// Token scope, such as `https://management.azure.com/.default`.
    pub scope: String,
    /// ARM requests in flight per subscription.
    pub max_concurrency: usize,
    /// One attempt, from connecting to the last byte of the body.
    pub request_timeout: Duration,
    /// How throttled and failed calls are retried.
    pub retry: RetrySettings,
    /// What the credential sends that its errors must not repeat (`IDENTITY_HEADER`'s value):
    /// an identity endpoint may quote the request it refused.
    pub credential_secrets: Vec<secrecy::SecretString>,
}

/// A cheap-to-clone ARM client; clones share one connection pool, one credential (and so one
/// token cache) and the per-subscription concurrency limits.
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
    /// No request of this handle starts, and no retry sleeps, past this instant.
    deadline: Option<tokio::time::Instant>,
}

struct Inner {
    options: ArmOptions,
    credential: Arc<dyn TokenCredential>,
    /// One connection pool for every call of every clone.
    http: reqwest::Client,
    limits: SubscriptionLimits,
}

/// The longest wait for a TCP and TLS connection; a healthy ARM endpoint answers far sooner, and
/// a dead one should fail fast into a retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl ArmClient {
    /// Creates a client. Nothing is sent until the first call.
    ///
    /// It fails only when the HTTP client cannot be built (no TLS backend) or the endpoint
    /// cannot carry a path; the error then names the first operation, as none has run yet.
    pub fn new(
        options: ArmOptions,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, ArmError> {
        let setup_error = |message: String| {
            let operation = Operation::ALL[0];
            ArmError::new(
                ArmErrorKind::Transport,
                operation,
                options.endpoint.as_str(),
                message,
            )
        };
        if options.endpoint.cannot_be_a_base() {
            return Err(setup_error("the ARM endpoint is not a base URL".into()));
        }
        let http = http_client(&options)
            .map_err(|e| setup_error(format!("could not create the HTTP client: {e}")))?;
        let limits = SubscriptionLimits::new(options.max_concurrency);
        Ok(ArmClient {
            inner: Arc::new(Inner {
                options,
                credential,
                http,
                limits,
            }),
            deadline: None,
        })
    }

    /// A handle on the same client whose requests all end by `deadline`: no attempt starts and
    /// no retry or poll sleeps past it, and long-running operations stop being followed there.
    pub fn with_deadline(&self, deadline: tokio::time::Instant) -> ArmClient {
        ArmClient {
            inner: self.inner.clone(),
            deadline: Some(self.deadline.map_or(deadline, |d| d.min(deadline))),
        }
    }

    /// The deadline of this handle, if any.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// The earlier of the request's own deadline and this handle's.
    fn deadline_for(&self, request: &request::ArmRequest<'_>) -> Option<tokio::time::Instant> {
        match (request.deadline, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The options the client was created with.
    pub fn options(&self) -> &ArmOptions {
        &self.inner.options
    }
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.options().endpoint.as_str())
            .finish_non_exhaustive()
    }
}

fn http_client(options: &ArmOptions) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("keysync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT.min(options.request_timeout))
        .timeout(options.request_timeout)
        // ARM does not redirect; following one could carry the bearer token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}
