//! The storage check: one cheap, authenticated request to a storage account's data plane with a
//! datastore's credential, and what storage's answer means.
//!
//! | datastore | credential | request |
//! |---|---|---|
//! | `AzureBlob`, `AzureDataLakeGen2` | account key, account SAS | `GET {blob}{container}?restype=container` (Get Container Properties) |
//! | `AzureBlob`, `AzureDataLakeGen2` | service SAS | `GET {blob}{container}?restype=container&comp=list&maxresults=1` (List Blobs) |
//! | `AzureFile` | account key, account SAS | `GET {file}{share}?restype=share` (Get Share Properties) |
//! | `AzureFile` | service SAS | `GET {file}{share}?restype=directory&comp=list&maxresults=1` (List Directories and Files) |
//!
//! An ADLS Gen2 filesystem is a blob container, so it is checked on the blob endpoint. A service
//! SAS may not read container or share properties, so it lists at most one item instead.
//!
//! How an answer is read:
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx | verified |
//! | 404 (`ContainerNotFound`, `ShareNotFound`, ...) | verified: storage authenticates before it looks the resource up; the detail says the container is missing |
//! | 403 `Authorization{Permission,ResourceType,Service,Protocol,SourceIP}Mismatch` with a SAS | verified: the signature was accepted, the token just does not allow this request from here |
//! | 403 `AuthenticationFailed`, `KeyBasedAuthenticationNotPermitted` | rejected |
//! | 403 `AuthorizationFailure` with storage's authentication message (Azurite's answer to a bad signature or an expired SAS) | rejected |
//! | 403 `AuthorizationFailure` otherwise (Azure's firewall and private endpoint answer, given before any credential check) | unreachable |
//! | DNS, connection, TLS failure, no answer within the timeout | unreachable |
//! | 408, 429, 5xx, anything else | inconclusive |
//!
//! There is exactly one request per check: a rejected credential is reported, never retried.
//! Once an endpoint could not be reached, the other checks of the same run on that endpoint are
//! reported unreachable without another attempt, so a dead endpoint costs one timeout, not one
//! per datastore.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use url::Url;

use super::STORAGE_VERSION;
use super::sas::{SasKind, SasToken};
use super::shared_key::{self, AccountKey};
use crate::config::is_loopback;
use crate::report::{CredentialUsed, Verification, VerifyOutcome};

/// The characters escaped in a container or share name put into a path.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The most of an error answer keysync reads.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// The message storage gives with a failed authentication; Azurite gives it with the
/// `AuthorizationFailure` code too.
const AUTHENTICATION_MESSAGE: &str = "Server failed to authenticate the request";

/// The storage service a datastore lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Blob,
    File,
}

/// What to check: a container (blob) or share (file) under the account's endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: Service,
    /// The account's endpoint for the service, from `primaryEndpoints`.
    pub endpoint: Url,
    /// The container, filesystem or share.
    pub name: String,
}

/// The credential a check sends.
pub enum Credential<'a> {
    Key(&'a AccountKey),
    Sas(&'a SecretString),
}

impl Credential<'_> {
    fn used(&self) -> CredentialUsed {
        match self {
            Credential::Key(_) => CredentialUsed::AccountKey,
            Credential::Sas(_) => CredentialUsed::Sas,
        }
    }
}

/// Endpoints that could not be reached during one run, with why.
#[derive(Debug, Default)]
pub struct DeadEndpoints(Mutex<HashMap<String, String>>);

impl DeadEndpoints {
    fn get(&self, origin: &str) -> Option<String> {
        let dead = self.0.lock().unwrap_or_else(|p| p.into_inner());
        dead.get(origin).cloned()
    }

    fn insert(&self, origin: String, reason: String) {
        let mut dead = self.0.lock().unwrap_or_else(|p| p.into_inner());
        dead.entry(origin).or_insert(reason);
    }
}

/// Sends storage checks. Cheap to share; one connection pool.
#[derive(Debug, Clone)]
pub struct Checker {
    http: reqwest::Client,
    timeout: Duration,
    /// No check starts after this, and none runs past it.
    deadline: Option<Instant>,
}

impl Checker {
    /// A checker whose every request, body included, ends within `timeout`.
    pub fn new(timeout: Duration) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("keysync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .timeout(timeout)
            // A redirect could carry a SAS token elsewhere; storage never redirects.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Checker {
            http,
            timeout,
            deadline: None,
        })
    }

    /// This checker, starting no check after `deadline` and cutting checks short at it.
    pub fn until(&self, deadline: Option<Instant>) -> Checker {
        Checker {
            deadline,
            ..self.clone()
        }
    }

    /// The time one check may take now; `None` once the deadline has passed.
    fn time_left(&self) -> Option<Duration> {
        let Some(deadline) = self.deadline else {
            return Some(self.timeout);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| left.min(self.timeout))
    }

    /// Checks `credential` on `target` with one request, and says what storage made of it.
    pub async fn check(
        &self,
        target: &Target,
        credential: Credential<'_>,
        dead: &DeadEndpoints,
    ) -> Verification {
        let used = credential.used();
        let request = match Request::new(target, &credential) {
            Ok(request) => request,
            Err(reason) => return Verification::new(VerifyOutcome::NotChecked, used, reason),
        };
        let Some(timeout) = self.time_left() else {
            let reason = "the run's deadline came first; the next run checks it".to_string();
            return Verification::new(VerifyOutcome::NotChecked, used, reason);
        };
        let origin = request.url.origin().ascii_serialization();
        if let Some(reason) = dead.get(&origin) {
            let detail = format!("{reason} (an earlier check on this endpoint; not tried again)");
            return Verification::new(VerifyOutcome::Unreachable, used, detail);
        }
        match self.send(&request, &credential, timeout).await {
            Ok(answer) => answer.read(&request, used),
            Err(reason) => {
                dead.insert(origin, reason.clone());
                Verification::new(VerifyOutcome::Unreachable, used, reason)
            }
        }
    }

    async fn send(
        &self,
        request: &Request,
        credential: &Credential<'_>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let date = httpdate::fmt_http_date(SystemTime::now());
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let headers = [
            ("x-ms-date", date.as_str()),
            ("x-ms-version", STORAGE_VERSION),
            ("x-ms-client-request-id", client_request_id.as_str()),
        ];
        let mut builder = self.http.get(request.url.clone()).timeout(timeout);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        if let Credential::Key(key) = credential {
            let signed = shared_key::authorization(key, "GET", &request.url, &headers);
            let mut value = HeaderValue::try_from(signed)
                .map_err(|_| "the account name cannot be sent in a header".to_string())?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        let response = builder.send().await.map_err(|e| explain(e, timeout))?;
        let status = response.status().as_u16();
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match status {
            200..=299 => Vec::new(),
            _ => read_limited(response).await,
        };
        Ok(Answer { status, code, body })
    }
}

/// A transport failure in words, without the URL (it can hold a SAS token).
fn explain(error: reqwest::Error, timeout: Duration) -> String {
    let error = error.without_url();
    if error.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f32())
    } else if error.is_connect() {
        format!("could not connect: {}", root_cause(&error))
    } else {
        format!("the request failed: {}", root_cause(&error))
    }
}

async fn read_limited(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    body
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// The request a check sends: its URL (with the SAS, if any) and what it is, in words.
struct Request {
    url: Url,
    operation: &'static str,
    name: String,
    is_sas: bool,
}

impl Request {
    fn new(target: &Target, credential: &Credential<'_>) -> Result<Request, String> {
        let endpoint = &target.endpoint;
        if endpoint.scheme() == "http" && !is_loopback(endpoint) {
            return Err("the endpoint is plain http: keysync sends credentials only over https (or to loopback)".into());
        }
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.cannot_be_a_base() {
            return Err("the account's endpoint is not an http(s) URL".into());
        }
        let service_sas = match credential {
            Credential::Sas(token) => SasToken::parse(token.expose_secret())
                .is_ok_and(|t| t.kind() == Ok(SasKind::Service)),
            Credential::Key(_) => false,
        };
        let (operation, query) = operation(target.service, service_sas);
        let mut base = endpoint.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let segment = utf8_percent_encode(&target.name, SEGMENT).to_string();
        let mut url = base
            .join(&segment)
            .map_err(|_| "the container or share name does not fit in a URL".to_string())?;
        match credential {
            Credential::Key(_) => url.set_query(Some(query)),
            Credential::Sas(token) => {
                let token = token.expose_secret().trim().trim_start_matches('?');
                url.set_query(Some(&format!("{query}&{token}")));
            }
        }
        Ok(Request {
            url,
            operation,
            name: target.name.clone(),
            is_sas: matches!(credential, Credential::Sas(_)),
        })
    }
}

/// The cheapest request a credential may make on the container or share, and its query.
fn operation(service: Service, service_sas: bool) -> (&'static str, &'static str) {
    match (service, service_sas) {
        (Service::Blob, false) => ("Get Container Properties", "restype=container"),
        (Service::Blob, true) => ("List Blobs", "restype=container&comp=list&maxresults=1"),
        (Service::File, false) => ("Get Share Properties", "restype=share"),
        (Service::File, true) => (
            "List Directories and Files",
            "restype=directory&comp=list&maxresults=1",
        ),
    }
}

/// Storage's answer, as far as a check reads it.
struct Answer {
    status: u16,
    code: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn read(self, request: &Request, used: CredentialUsed) -> Verification {
        let body = String::from_utf8_lossy(&self.body);
        let code = self.code.or_else(|| xml_element(&body, "Code"));
        let message = xml_element(&body, "Message");
        let (outcome, detail) = classify(
            self.status,
            code.as_deref(),
            message.as_deref(),
            request.is_sas,
        );
        let what = format!("{} of '{}'", request.operation, request.name);
        let code = code.filter(|_| !(200..300).contains(&self.status));
        Verification::new(outcome, used, format!("{what}: {detail}")).with_code(code)
    }
}

/// What an answer means for the credential (see the module documentation).
fn classify(
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    is_sas: bool,
) -> (VerifyOutcome, String) {
    let code = code.unwrap_or_default();
    let authentication_message = message.is_some_and(|m| m.starts_with(AUTHENTICATION_MESSAGE));
    match (status, code) {
        (200..=299, _) => (VerifyOutcome::Verified, "accepted".into()),
        (404, _) => (
            VerifyOutcome::Verified,
            "storage accepted the credential, but the container or share does not exist".into(),
        ),
        (403, "AuthenticationFailed") => (
            VerifyOutcome::Rejected,
            "storage refused the credential".into(),
        ),
        (403, "KeyBasedAuthenticationNotPermitted") => (
            VerifyOutcome::Rejected,
            "storage refuses shared-key access on this account".into(),
        ),
        (403, "AuthorizationFailure") if authentication_message => (
            VerifyOutcome::Rejected,
            "storage refused the credential".into(),
        ),
        (403, "AuthorizationFailure") => (
            VerifyOutcome::Unreachable,
            "storage turned the request away before checking the credential: the account's network rules or private endpoint do not admit keysync".into(),
        ),
        (
            403,
            "AuthorizationPermissionMismatch"
            | "AuthorizationResourceTypeMismatch"
            | "AuthorizationServiceMismatch"
            | "AuthorizationProtocolMismatch"
            | "AuthorizationSourceIPMismatch",
        ) if is_sas => (
            VerifyOutcome::Verified,
            "storage accepted the signature; the token does not allow this request from keysync"
                .into(),
        ),
        (408 | 429 | 500..=599, _) => (
            VerifyOutcome::Inconclusive,
            format!("storage answered HTTP {status}: busy or failing, try again later"),
        ),
        _ => (
            VerifyOutcome::Inconclusive,
            format!("storage answered HTTP {status}, which says nothing about the credential"),
        ),
    }
}

/// The text of the first `<name>` element of an XML error body, on one line.
fn xml_element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    let text = body[start..end].lines().next().unwrap_or_default().trim();
    Some(text.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(service: Service, endpoint: &str) -> Target {
        Target {
            service,
            endpoint: Url::parse(endpoint).unwrap(),
            name: "data".into(),
        }
    }

    fn key() -> AccountKey {
        AccountKey::new("st1", &SecretString::from("a2V5")).unwrap()
    }

    #[test]
    fn requests_name_the_container_or_share_and_the_operation() {
        let key = key();
        let blob = Request::new(
            &target(Service::Blob, "https://st1.blob.core.windows.net/"),
            &Credential::Key(&key),
        )
        .unwrap();
        assert_eq!(
            blob.url.as_str(),
            "https://st1.blob.core.windows.net/data?restype=container"
        );
        let path_style = Request::new(
            &target(Service::Blob, "http://127.0.0.1:10000/st1"),
            &Credential::Key(&key),
        )
        .unwrap();
        assert_eq!(
            path_style.url.as_str(),
            "http://127.0.0.1:10000/st1/data?restype=container"
        );
        let token = SecretString::from("?sv=2024-11-04&sr=s&sp=l&sig=x");
        let share = Request::new(
            &target(Service::File, "https://st1.file.core.windows.net/"),
            &Credential::Sas(&token),
        )
        .unwrap();
        assert_eq!(share.operation, "List Directories and Files");
        assert!(share.url.as_str().ends_with(
            "/data?restype=directory&comp=list&maxresults=1&sv=2024-11-04&sr=s&sp=l&sig=x"
        ));
    }

    #[test]
    fn credentials_never_go_over_plain_http_off_loopback() {
        let key = key();
        let reason = Request::new(
            &target(Service::Blob, "http://st1.blob.core.windows.net/"),
            &Credential::Key(&key),
        )
        .err()
        .unwrap();
        assert!(reason.contains("plain http"), "{reason}");
    }

    #[test]
    fn answers_are_read_as_the_module_documents() {
        let auth = Some("Server failed to authenticate the request. Make sure ...");
        let firewall = Some("This request is not authorized to perform this operation.");
        let cases = [
            (200, None, None, false, VerifyOutcome::Verified),
            (
                404,
                Some("ContainerNotFound"),
                None,
                false,
                VerifyOutcome::Verified,
            ),
            (
                403,
                Some("AuthenticationFailed"),
                auth,
                false,
                VerifyOutcome::Rejected,
            ),
            (
                403,
                Some("AuthorizationFailure"),
                auth,
                true,
                VerifyOutcome::Rejected,
            ),
            (
                403,
                Some("AuthorizationFailure"),
                firewall,
                false,
                VerifyOutcome::Unreachable,
            ),
            (
                403,
                Some("KeyBasedAuthenticationNotPermitted"),
                None,
                false,
                VerifyOutcome::Rejected,
            ),
            (
                403,
                Some("AuthorizationPermissionMismatch"),
                None,
                true,
                VerifyOutcome::Verified,
            ),
            (
                403,
                Some("AuthorizationPermissionMismatch"),
                None,
                false,
                VerifyOutcome::Inconclusive,
            ),
            (
                503,
                Some("ServerBusy"),
                None,
                false,
                VerifyOutcome::Inconclusive,
            ),
            (
                400,
                Some("InvalidHeaderValue"),
                None,
                false,
                VerifyOutcome::Inconclusive,
            ),
        ];
        for (status, code, message, sas, expected) in cases {
            assert_eq!(
                classify(status, code, message, sas).0,
                expected,
                "{status} {code:?} sas={sas}"
            );
        }
    }

    #[test]
    fn error_bodies_give_their_code_and_first_message_line() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1\nTime:2</Message><AuthenticationErrorDetail>The MAC signature found in the HTTP request 'c2ln' is not the same</AuthenticationErrorDetail></Error>";
        assert_eq!(
            xml_element(body, "Code").as_deref(),
            Some("AuthenticationFailed")
        );
        assert_eq!(
            xml_element(body, "Message").as_deref(),
            Some("Server failed to authenticate the request.")
        );
    }
}
