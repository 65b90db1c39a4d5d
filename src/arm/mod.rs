//! The Azure Resource Manager client: bearer tokens, bounded concurrency, retries, paging,
//! long-running operations and precise errors, with the storage and ML operations on top.

pub mod auth;
pub mod error;
pub mod ml;
pub mod operation;
pub mod storage;

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use url::Url;

pub use error::{ArmError, ArmErrorKind};
pub use operation::Operation;

/// How the client retries throttled and failed calls.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// The first backoff delay; it doubles (with jitter) up to `max_delay`.
    pub base_delay: Duration,
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
    pub request_timeout: Duration,
    pub retry: RetrySettings,
}

/// A cheap-to-clone ARM client; clones share one connection pool, one credential (and so one
/// token cache) and the per-subscription concurrency limits.
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

struct Inner {
    #[allow(dead_code)]
    options: ArmOptions,
    #[allow(dead_code)]
    credential: Arc<dyn TokenCredential>,
}

impl ArmClient {
    /// Creates a client. Nothing is sent until the first call.
    pub fn new(
        options: ArmOptions,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, ArmError> {
        Ok(ArmClient {
            inner: Arc::new(Inner {
                options,
                credential,
            }),
        })
    }

    pub fn options(&self) -> &ArmOptions {
        &self.inner.options
    }
}
