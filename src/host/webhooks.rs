//! The host's own HTTP endpoints: the Event Grid webhook, the admin API, and the routes of HTTP
//! functions.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use super::functions::Trigger;
use super::invoke::event_grid_metadata;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/runtime/webhooks/eventgrid",
            post(event_grid).options(cloud_events_handshake),
        )
        .route("/admin/functions/{name}", post(run_function))
        // The forwarder reads the body itself, up to the host's own limit.
        .route(
            "/api/{*route}",
            any(super::http::forward).layer(DefaultBodyLimit::disable()),
        )
        .with_state(shared)
}

#[derive(Deserialize)]
struct WebhookQuery {
    #[serde(rename = "functionName")]
    function_name: Option<String>,
}

/// Event Grid delivery: answers the validation handshake itself, as the host does, and invokes
/// the function once per event. Any failed invocation fails the delivery, so Event Grid retries.
async fn event_grid(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(function) = query.function_name.filter(|f| {
        shared
            .app
            .function(f)
            .is_some_and(|f| f.trigger == Trigger::EventGrid)
    }) else {
        return (StatusCode::NOT_FOUND, "no Event Grid function by that name").into_response();
    };
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not JSON").into_response();
    };
    let events = match payload {
        Value::Array(events) => events,
        single => vec![single],
    };
    let event_type = headers
        .get("aeg-event-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if event_type.eq_ignore_ascii_case("SubscriptionValidation") {
        return validation_response(&events);
    }
    let mut all_ok = true;
    for event in &events {
        let ok = match shared
            .invoke(&function, event, event_grid_metadata(event))
            .await
        {
            Ok(record) => record.succeeded(),
            Err(_) => false,
        };
        all_ok &= ok;
    }
    if all_ok {
        StatusCode::OK.into_response()
    } else {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

/// The host's admin API for running a non-HTTP function by hand; like the host it answers 202
/// and runs the function in the background.
async fn run_function(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let Some(function) = shared.app.function(&name).cloned() else {
        return (StatusCode::NOT_FOUND, "no function by that name").into_response();
    };
    let value = match function.trigger {
        Trigger::Timer { .. } => super::invoke::timer_value(false),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "only timer functions can be run by hand here",
            )
                .into_response();
        }
    };
    tokio::spawn(async move {
        let _ = shared
            .invoke(&function.name, &value, serde_json::Map::new())
            .await;
    });
    StatusCode::ACCEPTED.into_response()
}

fn validation_response(events: &[Value]) -> Response {
    match events
        .first()
        .and_then(|e| e["data"]["validationCode"].as_str())
    {
        Some(code) => axum::Json(json!({ "validationResponse": code })).into_response(),
        None => (StatusCode::BAD_REQUEST, "no validationCode").into_response(),
    }
}

/// The CloudEvents webhook handshake (an OPTIONS request) that Event Grid sends before delivering
/// CloudEvents.
async fn cloud_events_handshake(headers: HeaderMap) -> Response {
    let origin = headers.get("webhook-request-origin").cloned();
    match origin {
        Some(origin) => (StatusCode::OK, [("webhook-allowed-origin", origin)]).into_response(),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}
