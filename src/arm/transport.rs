//! One HTTP attempt: a fresh bearer token, a slot in the subscription's concurrency limit, the
//! request, and the whole response body, read before the slot is given back.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use tokio::time::Instant;
use tracing::debug;
use zeroize::Zeroizing;

use super::request::ArmRequest;
use super::response::{RawResponse, ResponseBody};
use super::{ArmClient, ArmError, ArmErrorKind};

/// The scheme of the `Authorization` header.
const BEARER: &[u8] = b"Bearer ";

/// Statuses worth another attempt: timeouts, throttling and transient server failures.
pub(super) const RETRYABLE_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// A 409 on `resyncKeys` means another resync of the workspace is running (started by someone
/// else, or by another instance): it ends on its own, so waiting and asking again succeeds.
fn conflict_worth_retrying(request: &ArmRequest<'_>, response: &RawResponse) -> bool {
    response.status.as_u16() == 409 && request.operation == super::Operation::WorkspacesResyncKeys
}

/// A failed attempt and what the retry policy needs to know about it.
pub(super) struct Failure {
    pub error: ArmError,
    pub retryable: bool,
    /// What the server asked for (`Retry-After`), already checked against the cap.
    pub retry_after: Option<Duration>,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl Failure {
    fn fatal(error: ArmError, attempt: u32) -> Self {
        Failure {
            error,
            retryable: false,
            retry_after: None,
            attempt,
        }
    }
}

impl ArmClient {
    /// Sends `request` once; any non-2xx answer is a [`Failure`].
    pub(super) async fn attempt(
        &self,
        request: &ArmRequest<'_>,
        attempt: u32,
    ) -> Result<RawResponse, Failure> {
        let fatal = |error| Failure::fatal(error, attempt);
        self.attempt_timeout(request).map_err(fatal)?;
        let authorization = self.authorization(request).await.map_err(fatal)?;

        // The permit covers the HTTP exchange only, never a retry sleep or a token request. A
        // request may queue for it behind many others, so the deadline bounds the wait too, and
        // the attempt's timeout is measured from the moment it can really be sent.
        let permit = self.permit(request).await.map_err(fatal)?;
        let timeout = self.attempt_timeout(request).map_err(fatal)?;
        let started = Instant::now();
        let client_request_id = uuid::Uuid::new_v4();
        let result = self
            .exchange(request, authorization.clone(), timeout, client_request_id)
            .await;
        drop(permit);

        // The id sent is the one trace of an attempt that got no answer.
        let traced = |mut failure: Failure| {
            failure.error.client_request_id = Some(client_request_id);
            failure
        };
        let response = result.map_err(|e| traced(transport_failure(request, e, attempt)))?;
        debug!(
            operation = %request.operation,
            resource = %request.resource,
            status = response.status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            attempt,
            "ARM request completed"
        );
        if response.status.is_success() {
            Ok(response)
        } else {
            let failure = self.status_failure(request, &response, &authorization, attempt);
            Err(traced(failure))
        }
    }

    /// A slot in the subscription's concurrency limit, waited for until the deadline at most.
    async fn permit(
        &self,
        request: &ArmRequest<'_>,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ArmError> {
        let acquire = self.inner.limits.acquire(request.subscription);
        let Some(deadline) = self.deadline_for(request) else {
            return Ok(acquire.await);
        };
        tokio::time::timeout_at(deadline, acquire)
            .await
            .map_err(|_| {
                let message = "the deadline passed while the request waited for a free slot";
                request.error(ArmErrorKind::Deadline, message)
            })
    }

    /// The client's request timeout, shortened so the attempt ends by the deadline.
    pub(super) fn attempt_timeout(&self, request: &ArmRequest<'_>) -> Result<Duration, ArmError> {
        let timeout = self.options().request_timeout;
        let Some(deadline) = self.deadline_for(request) else {
            return Ok(timeout);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let message = "the deadline passed before the request could be sent";
            return Err(request.error(ArmErrorKind::Deadline, message));
        }
        Ok(timeout.min(left))
    }

    /// `Bearer <token>`, marked sensitive so no `Debug` of the request shows it. Its bytes are
    /// written once, into a buffer of their size that is zeroed when the header is dropped.
    async fn authorization(&self, request: &ArmRequest<'_>) -> Result<HeaderValue, ArmError> {
        let token = self.token(request).await?;
        let secret = token.token.secret().as_bytes();
        let mut bearer = Zeroizing::new(Vec::with_capacity(BEARER.len() + secret.len()));
        bearer.extend_from_slice(BEARER);
        bearer.extend_from_slice(secret);
        // From `Bytes`, the header value takes the buffer as it is rather than copying it.
        let mut value =
            HeaderValue::from_maybe_shared(Bytes::from_owner(bearer)).map_err(|_| {
                let message = "the credential returned a token that is not a valid header value";
                request.error(ArmErrorKind::Credential, message)
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    async fn exchange(
        &self,
        request: &ArmRequest<'_>,
        authorization: HeaderValue,
        timeout: Duration,
        client_request_id: uuid::Uuid,
    ) -> Result<RawResponse, reqwest::Error> {
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), request.url.clone())
            .timeout(timeout)
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json")
            .header("x-ms-client-request-id", client_request_id.to_string());
        builder = match &request.body {
            // The attempt shares the request's zeroed-on-drop bytes. hyper, and rustls over
            // HTTPS, copy them (and the bearer token) into write buffers of their own, which are
            // freed without zeroing: keysync cannot reach those.
            Some(body) => builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.expose()),
            // ARM's front door answers 411 to a POST without a length, and hyper sends none for
            // an empty body, so a bodiless POST such as listKeys says `Content-Length: 0`.
            None if request.method == reqwest::Method::POST => builder.header(CONTENT_LENGTH, "0"),
            None => builder,
        };

        let response = builder.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = ResponseBody::new(response.bytes().await?, request.operation);
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// The failure of a non-success answer. Its text is cleared of what the attempt sent as
    /// secrets: the body's and the bearer token.
    fn status_failure(
        &self,
        request: &ArmRequest<'_>,
        response: &RawResponse,
        authorization: &HeaderValue,
        attempt: u32,
    ) -> Failure {
        let token = authorization.as_bytes().get(BEARER.len()..);
        let sent = request.secrets.expose().chain(token);
        let mut error = response.status_error(request.operation, request.resource, sent);
        let mut retryable = RETRYABLE_STATUSES.contains(&response.status.as_u16())
            || conflict_worth_retrying(request, response);
        let retry_after = response.retry_after();
        let cap = self.options().retry.max_retry_after;
        if let Some(wait) = retry_after.filter(|wait| retryable && *wait > cap) {
            // Waiting that long would hold up the whole run; the next trigger will try again.
            retryable = false;
            let note = format!(
                " (Retry-After {} s is above the {} s this client waits)",
                wait.as_secs(),
                cap.as_secs()
            );
            error.message.push_str(&note);
        }
        Failure {
            error,
            retryable,
            retry_after,
            attempt,
        }
    }
}

/// A connection, TLS, timeout or body-read failure. The message names the host but never the
/// URL, whose query can hold a continuation token.
fn transport_failure(request: &ArmRequest<'_>, err: reqwest::Error, attempt: u32) -> Failure {
    let err = err.without_url();
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "the connection failed while reading the response"
    } else {
        "the request failed"
    };
    let host = request.url.host_str().unwrap_or("?");
    let port = request.url.port_or_known_default().unwrap_or_default();
    let message = format!("{what} ({host}:{port}): {}", root_cause(&err));
    Failure {
        error: request.error(ArmErrorKind::Transport, message),
        retryable: err.is_timeout() || err.is_connect() || err.is_request() || err.is_body(),
        retry_after: None,
        attempt,
    }
}

/// The innermost error of the chain, such as "Connection refused (os error 111)": the most
/// specific one.
pub(super) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}
