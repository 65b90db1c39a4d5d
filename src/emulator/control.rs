//! The test and control surface under `/_emulator/` (no authentication, not in the request log)
//! and the managed identity endpoint `/msi/token`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;
use url::Url;

use super::clock::azure_time;
use super::faults::{FaultEngine, FaultRule};
use super::identity;
use super::query::Query;
use super::reply::Reply;
use super::server::Shared;

type SharedState = AxumState<Arc<Shared>>;

/// The `/_emulator` routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/state", get(state))
        .route("/requests", get(requests))
        .route("/faults", get(faults).post(set_faults))
        .route("/latency", post(set_latency))
        .route("/clock", post(set_clock))
        .route("/user-token", post(user_token))
        .route("/webhook", post(set_webhook))
}

/// `GET /msi/token`: App Service's managed identity endpoint.
pub(crate) async fn msi_token(
    AxumState(shared): SharedState,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let latency = shared.lock().latency;
    super::routes::pause(latency).await;
    let query = Query::parse(uri.query());
    let secret = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    let mut state = shared.lock();
    let state = &mut *state;
    let reply = identity::token_request(
        &mut state.tokens,
        &state.settings.identities,
        &query,
        secret,
        &shared.identity_secret,
    );
    tracing::debug!(status = reply.status().as_u16(), "identity token request");
    reply.into_response()
}

async fn state(AxumState(shared): SharedState) -> Response {
    Reply::ok(shared.snapshot()).into_response()
}

async fn requests(AxumState(shared): SharedState) -> Response {
    let requests = shared.lock().requests.clone();
    Reply::ok(json!(requests)).into_response()
}

async fn faults(AxumState(shared): SharedState) -> Response {
    Reply::ok(json!(shared.lock().faults.rules())).into_response()
}

/// Replaces the fault rules with a JSON array of rules (or `{"faults": [...]}`).
async fn set_faults(AxumState(shared): SharedState, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rules {
        List(Vec<FaultRule>),
        Wrapped { faults: Vec<FaultRule> },
    }
    let rules = match parse::<Rules>(&body) {
        Ok(Rules::List(rules) | Rules::Wrapped { faults: rules }) => rules,
        Err(reply) => return reply.into_response(),
    };
    for (i, rule) in rules.iter().enumerate() {
        if let Err(problem) = rule.validate() {
            return bad_request(format!("faults[{i}]: {problem}")).into_response();
        }
    }
    let count = rules.len();
    shared.lock().faults = FaultEngine::new(rules);
    Reply::ok(json!({ "faults": count })).into_response()
}

async fn set_latency(AxumState(shared): SharedState, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Latency {
        ms: u64,
    }
    match parse::<Latency>(&body) {
        Ok(latency) => {
            shared.lock().latency = Duration::from_millis(latency.ms);
            Reply::ok(json!({ "ms": latency.ms })).into_response()
        }
        Err(reply) => reply.into_response(),
    }
}

/// Moves the emulator clock: `{"advanceSeconds": N}` or `{"now": "<RFC 3339>"}`.
async fn set_clock(AxumState(shared): SharedState, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct ClockChange {
        #[serde(default)]
        advance_seconds: Option<i64>,
        #[serde(default, with = "time::serde::rfc3339::option")]
        now: Option<OffsetDateTime>,
    }
    let change = match parse::<ClockChange>(&body) {
        Ok(change) => change,
        Err(reply) => return reply.into_response(),
    };
    let mut state = shared.lock();
    match (change.now, change.advance_seconds) {
        (Some(now), None) => state.clock.set(now),
        (None, Some(seconds)) => state.clock.advance(seconds),
        _ => return bad_request("give exactly one of advanceSeconds and now").into_response(),
    }
    Reply::ok(json!({ "now": azure_time(state.clock.now()) })).into_response()
}

/// A token for the simulated portal user; events it causes carry the user's claims.
async fn user_token(AxumState(shared): SharedState) -> Response {
    let mut state = shared.lock();
    let state = &mut *state;
    let lifetime = state.settings.identities.lifetime;
    let token = identity::user_token(&mut state.tokens, &state.settings.portal_user, lifetime);
    Reply::ok(token).into_response()
}

/// Sets or clears the event webhook: `{"url": "http://..." | null}`.
async fn set_webhook(AxumState(shared): SharedState, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Webhook {
        url: Option<String>,
    }
    let url = match parse::<Webhook>(&body).map(|w| w.url.as_deref().map(Url::parse)) {
        Ok(None) => None,
        Ok(Some(Ok(url))) => Some(url),
        Ok(Some(Err(e))) => return bad_request(format!("url is not a URL: {e}")).into_response(),
        Err(reply) => return reply.into_response(),
    };
    let set = url.is_some();
    shared.lock().webhook = url;
    Reply::ok(json!({ "webhook": set })).into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid request body: {e}")))
}

fn bad_request(message: impl Into<String>) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}
