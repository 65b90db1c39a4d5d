//! The ARM surface: one fallback handler that takes every request outside `/msi` and
//! `/_emulator`, and runs it through the steps ARM would: global latency, authentication,
//! routing, api-version and content checks, fault rules, then the operation itself. Every
//! answer carries ARM's request and correlation ids and is recorded in the request log.

mod datastores;
pub(crate) mod path;
mod resolve;
mod storage;
mod workspaces;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::Value;
use url::Url;

use self::path::{Provider, Route, RouteError, op};
use super::RequestRecord;
use super::events::{self, PendingEvent};
use super::faults::Decision;
use super::identity::{Principal, auth_failure};
use super::origin::{ListenerBase, request_base};
use super::paging;
use super::query::Query;
use super::random;
use super::reply::Reply;
use super::server::{Shared, stopped};
use super::state::State;
use crate::arm::operation::{ML_API_VERSION, STORAGE_API_VERSION};

/// The largest request body the emulator reads.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The Machine Learning api-versions served besides the pinned one.
const EXTRA_ML_API_VERSIONS: [&str; 1] = ["2024-10-01-preview"];

const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
const CORRELATION_ID: HeaderName = HeaderName::from_static("x-ms-correlation-request-id");
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");

/// The ids ARM attaches to a request.
#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    pub request_id: String,
    /// The client's `x-ms-correlation-request-id` when it sent a GUID (ARM keeps it), else
    /// fresh.
    pub correlation_id: String,
    pub client_request_id: Option<String>,
}

impl RequestIds {
    fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let correlation_id = text(&CORRELATION_ID)
            .filter(|v| uuid::Uuid::try_parse(v).is_ok())
            .map_or_else(random::guid, str::to_string);
        RequestIds {
            request_id: random::guid(),
            correlation_id,
            client_request_id: text(&CLIENT_REQUEST_ID).map(str::to_string),
        }
    }
}

/// What a handler is told about the request it serves.
pub(crate) struct Call<'a> {
    pub query: &'a Query,
    pub body: &'a [u8],
    pub caller: &'a Principal,
    /// The base of absolute links in the answer: the scheme, host and port the request came in
    /// on.
    pub base_url: &'a Url,
    pub path: &'a str,
    pub raw_query: Option<&'a str>,
    pub ids: &'a RequestIds,
    pub peer: IpAddr,
}

impl Call<'_> {
    /// The api-version the request was made with (already checked).
    pub(crate) fn api_version(&self) -> &str {
        self.query.get("api-version").unwrap_or_default()
    }

    /// The absolute URL of the request, as an event's `httpRequest.url` shows it.
    pub(crate) fn url(&self) -> String {
        let mut url = self.base_url.clone();
        url.set_path(self.path);
        url.set_query(self.raw_query);
        url.to_string()
    }
}

/// A handler's result: the answer, and an event to post after answering.
pub(crate) struct Outcome {
    pub reply: Reply,
    pub event: Option<PendingEvent>,
    /// Carried out, but the connection is closed instead of answering (a `loseAnswer` fault).
    pub lost: bool,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Self {
        Outcome {
            reply,
            event: None,
            lost: false,
        }
    }
}

/// A request as it came in.
struct Incoming {
    method: Method,
    path: String,
    raw_query: Option<String>,
    query: Query,
    headers: HeaderMap,
    /// `None` when the body could not be read whole (too large, or the client went away).
    body: Option<Vec<u8>>,
    peer: IpAddr,
    /// Where links in the answer point (see `origin`).
    base: Url,
}

/// The fallback handler: every ARM request comes through here.
pub(crate) async fn arm(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let ids = RequestIds::from_headers(&parts.headers);
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip());
    let listener = parts.extensions.get::<ListenerBase>();
    let host = parts.headers.get(HOST).and_then(|v| v.to_str().ok());
    let base = request_base(listener.map_or(&shared.base_url, |l| &l.0), host);
    let latency = shared.lock().latency;
    pause(latency).await;
    let started = std::time::Instant::now();

    let incoming = Incoming {
        method: parts.method,
        path: parts.uri.path().to_string(),
        raw_query: parts.uri.query().map(str::to_string),
        query: Query::parse(parts.uri.query()),
        headers: parts.headers,
        body: to_bytes(body, BODY_LIMIT).await.map(|b| b.to_vec()).ok(),
        peer,
        base,
    };
    let (operation, outcome) = serve(&shared, &incoming, &ids).await;
    if operation == op::REGENERATE_KEY && outcome.reply.status().is_success() {
        // The data plane takes the new keys before anyone hears of them.
        super::data_plane::keys_changed(&shared).await;
    }
    let reply = match outcome.lost {
        true => Reply::dropped(),
        false => outcome.reply,
    };
    record(&shared, &incoming, operation, &reply);
    if let Some(event) = outcome.event {
        spawn_delivery(Arc::clone(&shared), event);
    }
    let response = finish(reply, &ids);
    shared.overhead.add(started.elapsed());
    response
}

async fn serve(shared: &Shared, incoming: &Incoming, ids: &RequestIds) -> (&'static str, Outcome) {
    let route = path::parse(&incoming.method, &incoming.path);
    let operation = route.as_ref().map_or(op::UNKNOWN, Route::operation);
    let (route, caller, lose_answer) = match admit(shared, incoming, route).await {
        Ok(admitted) => admitted,
        Err(reply) => return (operation, reply.into()),
    };
    let call = Call {
        query: &incoming.query,
        body: incoming.body.as_deref().unwrap_or_default(),
        caller: &caller,
        base_url: &incoming.base,
        path: &incoming.path,
        raw_query: incoming.raw_query.as_deref(),
        ids,
        peer: incoming.peer,
    };
    let mut outcome = handle(&mut shared.lock(), &route, &call);
    outcome.lost = lose_answer;
    (operation, outcome)
}

/// The checks before an operation runs, in ARM's order; the fault rules come last so that a
/// faulted request was otherwise valid. Admitted, with whether its answer is to be lost.
async fn admit(
    shared: &Shared,
    incoming: &Incoming,
    route: Result<Route, RouteError>,
) -> Result<(Route, Principal, bool), Reply> {
    let authorization = incoming
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = {
        let state = shared.lock();
        state
            .tokens
            .check(authorization)
            .map_err(|e| auth_failure(&e, &state.settings.tenant_id))?
    };
    let route = route.map_err(route_failure)?;
    check_api_version(&route, &incoming.query)?;
    check_content_type(incoming)?;

    let decision = decide_faults(&mut shared.lock(), &route);
    pause(decision.delay).await;
    match decision.failure {
        Some(failure) => Err(failure),
        None => Ok((route, caller, decision.lose_answer)),
    }
}

/// Sleeps for `duration`, and not at all for zero: tokio's timer rounds every sleep up to its
/// next millisecond tick, which would add a millisecond to every request of a benchmark.
pub(crate) async fn pause(duration: std::time::Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn decide_faults(state: &mut State, route: &Route) -> Decision {
    let busy = match route {
        Route::ResyncKeys(n) => state
            .workspace_index(&n.subscription, &n.group, &n.name)
            .is_some_and(|i| state.resync_running(i)),
        _ => false,
    };
    state.faults.decide(route.operation(), busy)
}

fn handle(state: &mut State, route: &Route, call: &Call) -> Outcome {
    if let Err(reply) = check_scope(state, route) {
        return reply.into();
    }
    match route {
        Route::ListAccounts(scope) => storage::list(state, call, scope).into(),
        Route::GetAccount(n) => storage::get(state, n).into(),
        Route::ListKeys(n) => storage::list_keys(state, call, n).into(),
        Route::RegenerateKey(n) => storage::regenerate(state, call, n),
        Route::ListWorkspaces(scope) => workspaces::list(state, call, scope).into(),
        Route::GetWorkspace(n) => workspaces::get(state, n).into(),
        Route::ResyncKeys(n) => workspaces::resync(state, call, n).into(),
        Route::OperationStatus { subscription, id } => {
            workspaces::status(state, call, subscription, id).into()
        }
        Route::ListDatastores(n) => datastores::list(state, call, n).into(),
        Route::GetDatastore(d) => datastores::get(state, d).into(),
        Route::PutDatastore(d) => datastores::put(state, call, d).into(),
        Route::DeleteDatastore(d) => datastores::delete(state, d).into(),
        Route::ListSecrets(d) => datastores::list_secrets(state, d).into(),
    }
}

fn check_scope(state: &State, route: &Route) -> Result<(), Reply> {
    let (subscription, group) = route.scope();
    if !state.has_subscription(subscription) {
        return Err(Reply::error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' could not be found."),
        ));
    }
    match group {
        Some(group) if !state.has_group(subscription, group) => Err(Reply::error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("Resource group '{group}' could not be found."),
        )),
        _ => Ok(()),
    }
}

fn route_failure(error: RouteError) -> Reply {
    match error {
        RouteError::NotFound => Reply::error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found: the emulator does not serve this path.",
        ),
        RouteError::MethodNotAllowed => Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The HTTP method is not supported for this resource.",
        ),
    }
}

fn check_api_version(route: &Route, query: &Query) -> Result<(), Reply> {
    let Some(requested) = query.get("api-version") else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let supported: Vec<&str> = match route.provider() {
        Provider::Storage => vec![STORAGE_API_VERSION],
        Provider::MachineLearning => [ML_API_VERSION]
            .into_iter()
            .chain(EXTRA_ML_API_VERSIONS)
            .collect(),
    };
    if supported.iter().any(|v| v.eq_ignore_ascii_case(requested)) {
        return Ok(());
    }
    Err(Reply::error(
        StatusCode::BAD_REQUEST,
        "InvalidApiVersionParameter",
        format!(
            "The api-version '{requested}' is invalid. The supported versions are '{}'.",
            supported.join(",")
        ),
    ))
}

/// ARM refuses a body it cannot read, or cannot read as JSON.
fn check_content_type(incoming: &Incoming) -> Result<(), Reply> {
    let Some(body) = &incoming.body else {
        return Err(Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request body could not be read: it is larger than the service accepts.",
        ));
    };
    if body.is_empty() {
        return Ok(());
    }
    let content_type = incoming
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Ok(());
    }
    Err(Reply::error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        "The content media type is not supported. Only 'application/json' is supported.",
    ))
}

/// The offset a list continues at, read from the first of `names` present; `Err` names the
/// parameter whose token this emulator did not mint.
pub(crate) fn continuation(query: &Query, names: &[&'static str]) -> Result<usize, &'static str> {
    for name in names {
        if let Some(token) = query.get(name) {
            return paging::read_token(token).ok_or(*name);
        }
    }
    Ok(0)
}

/// One page of a subscription or resource group list, continued with `$skipToken`.
fn list_page(call: &Call, items: Vec<Value>, page_size: usize) -> Reply {
    let start = match continuation(call.query, &["$skipToken"]) {
        Ok(start) => start,
        Err(name) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "InvalidSkipToken",
                format!("The {name} parameter is not a continuation token this service issued."),
            );
        }
    };
    let page = paging::cut(items, start, page_size);
    let next_link = page.next.map(|next| {
        let params = [
            ("api-version", call.api_version().to_string()),
            ("$skipToken", paging::mint_token(next)),
        ];
        paging::absolute_url(call.base_url, call.path, &params)
    });
    Reply::ok(paging::body(page.items, next_link))
}

fn record(shared: &Shared, incoming: &Incoming, operation: &str, reply: &Reply) {
    let record = RequestRecord {
        method: incoming.method.to_string(),
        path: incoming.path.clone(),
        operation: operation.to_string(),
        status: reply.logged_status(),
    };
    tracing::debug!(method = %record.method, operation, status = record.status, "ARM request");
    shared.lock().requests.push(record);
}

fn spawn_delivery(shared: Arc<Shared>, event: PendingEvent) {
    let mut shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = events::deliver(shared, event) => {}
            () = stopped(&mut shutdown) => {}
        }
    });
}

fn finish(reply: Reply, ids: &RequestIds) -> Response {
    let mut reply = reply
        .header(REQUEST_ID, &ids.request_id)
        .header(CORRELATION_ID, &ids.correlation_id);
    if let Some(client_request_id) = &ids.client_request_id {
        reply = reply.header(CLIENT_REQUEST_ID, client_request_id);
    }
    reply.into_response()
}
