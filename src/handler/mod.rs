//! `keysync serve`: the custom handler the Functions host starts. It binds IPv4 loopback on
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, answers `GET /` at once, and serves one route per function.

pub mod envelope;
mod key_regenerated;
pub mod reconcile_http;
mod rotate_keys;
pub mod timer;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::arm::{ArmClient, ArmOptions, RetrySettings};
use crate::config::Config;
use crate::reconcile::Reconciler;

/// Event Grid's limit on one event: 1 MB, taken as 1 MiB.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The largest invocation body accepted: room for the largest event in any envelope the host
/// sends. `Metadata` repeats the event's `data`, and the host may put a value in as a JSON string
/// holding the JSON, encoded twice; each encoding can double the text (every `"` and `\` gets
/// escaped), so each of the two copies takes up to four times the event, and 64 KiB more is
/// plenty for the rest of the envelope. Anything bigger is not from the host. `/api/reconcile`
/// has its own, much smaller limit ([`reconcile_http::MAX_BODY_BYTES`]).
pub const MAX_BODY_BYTES: usize = 2 * 4 * MAX_EVENT_BYTES + 64 * 1024;

/// What every route shares.
pub struct Handler {
    pub config: Config,
    pub reconciler: Reconciler,
}

impl Handler {
    /// Builds the ARM client and reconciler. Sends nothing: the first token is fetched on the first
    /// invocation, so start-up stays fast.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let credential = crate::arm::auth::credential(&config.credential)
            .context("creating the Azure credential")?;
        let options = ArmOptions {
            endpoint: config.arm_endpoint.clone(),
            scope: config.arm_scope.clone(),
            max_concurrency: config.max_concurrency,
            request_timeout: config.request_timeout,
            retry: RetrySettings::default(),
            credential_secrets: config.identity_header.iter().cloned().collect(),
        };
        let arm = ArmClient::new(options, credential).context("creating the ARM client")?;
        let reconciler = Reconciler::new(arm, config.subscriptions.clone())
            .with_verification(&config.verification);
        Ok(Handler { config, reconciler })
    }
}

/// The handler's routes.
pub fn router(handler: Arc<Handler>) -> Router {
    Router::new()
        .route("/", get(ready))
        .route("/KeyRegenerated", post(key_regenerated::invoke))
        .route("/RotateKeys", post(rotate_keys::invoke))
        .route(
            reconcile_http::ROUTE,
            post(reconcile_http::invoke)
                .layer(DefaultBodyLimit::max(reconcile_http::MAX_BODY_BYTES)),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(handler)
}

/// Serves until SIGINT or SIGTERM, then exits cleanly (exit code 0: the host need not restart it).
pub async fn serve(port: u16, config: Config) -> anyhow::Result<()> {
    let handler = Arc::new(Handler::new(config)?);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (FUNCTIONS_CUSTOMHANDLER_PORT)"))?;
    tracing::info!(addr = %listener.local_addr()?, "keysync handler listening");
    axum::serve(listener, router(handler))
        .with_graceful_shutdown(crate::shutdown_signal())
        .await
        .context("serving")
}

async fn ready() -> &'static str {
    "keysync"
}

/// Every function is invoked with `POST` (and `/` answered to `GET`): say so, as JSON.
async fn wrong_method() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({"error": "method not allowed: functions are invoked with POST"})),
    )
        .into_response()
}

async fn unknown_route() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "no such function"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app() -> Router {
        let config = Config::from_lookup(|name| {
            (name == "KEYSYNC_SUBSCRIPTIONS")
                .then(|| "11111111-2222-3333-4444-555555555555".to_string())
        })
        .unwrap();
        router(Arc::new(Handler::new(config).unwrap()))
    }

    #[tokio::test]
    async fn a_function_called_with_another_method_gets_a_json_405() {
        for (method, path) in [
            ("GET", "/KeyRegenerated"),
            ("PUT", "/RotateKeys"),
            ("DELETE", reconcile_http::ROUTE),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let response = app().oneshot(request).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                body["error"], "method not allowed: functions are invoked with POST",
                "{method} {path}"
            );
        }
    }
}
