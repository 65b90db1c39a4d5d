//! HTTP functions as the host serves them with `enableForwardingHttpRequest`: a request to
//! `/api/<route>` must use one of the function's methods and, unless the function is anonymous,
//! carry the function key (`x-functions-key` header or `code` query parameter); it then goes to
//! the handler unchanged (method, path, query, headers but the hop-by-hop ones, body), and the
//! handler's reply goes back to the caller unchanged.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use serde_json::Value;

use super::functions::{Function, Trigger};
use super::{InvocationRecord, Shared};

/// The largest request body the host accepts (its default `maxRequestBodySize`, 100 MB).
pub const MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// A fresh function key, shaped like the host's (random, URL-safe base64).
pub fn random_key() -> String {
    let mut bytes = [0u8; 40];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Serves `/api/{*route}`.
pub(super) async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let function = match admit(&shared, &parts) {
        Ok(function) => function,
        Err(status) => return status.into_response(),
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };

    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let (status, headers, reply) =
        match send(&shared, parts.method, path_and_query, &parts.headers, body).await {
            Ok(answer) => answer,
            // The host answers 500 when the handler does not.
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                HeaderMap::new(),
                Bytes::new(),
            ),
        };
    shared.record(InvocationRecord {
        function: function.name,
        status: status.as_u16(),
        body: serde_json::from_slice(&reply).unwrap_or(Value::Null),
        // The host passes an HTTP function's reply on as it is, without reading it.
        unreadable: None,
        elapsed: started.elapsed(),
    });
    let mut response = Response::new(Body::from(reply));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The function the request is for, or the status the host answers when it goes no further.
fn admit(shared: &Shared, parts: &Parts) -> Result<Function, StatusCode> {
    let route = parts.uri.path().trim_start_matches("/api/");
    let Some(function) = http_function(shared, route, &parts.method) else {
        // The host's route table only holds a function's own methods, so another method on its
        // route is as unknown as an unknown route.
        return Err(StatusCode::NOT_FOUND);
    };
    if needs_key(&function) && !carries_key(&parts.headers, parts.uri.query(), &shared.function_key)
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    if !shared.app.host.forward_http {
        tracing::warn!(
            function = %function.name,
            "this stand-in serves HTTP functions only with enableForwardingHttpRequest"
        );
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    Ok(function)
}

/// The HTTP function whose route (its folder name when it has none) is `route`, compared
/// without case as the host does, if it accepts `method`.
fn http_function(shared: &Shared, route: &str, method: &Method) -> Option<Function> {
    let route = route.trim_end_matches('/');
    shared
        .app
        .functions
        .iter()
        .find(|f| match &f.trigger {
            Trigger::Http {
                route: declared,
                methods,
                ..
            } => {
                declared
                    .as_deref()
                    .unwrap_or(&f.name)
                    .eq_ignore_ascii_case(route)
                    && (methods.is_empty()
                        || methods
                            .iter()
                            .any(|m| m.eq_ignore_ascii_case(method.as_str())))
            }
            _ => false,
        })
        .cloned()
}

fn needs_key(function: &Function) -> bool {
    !matches!(&function.trigger, Trigger::Http { auth_level, .. } if auth_level.eq_ignore_ascii_case("anonymous"))
}

/// The key in `x-functions-key`, or in the `code` query parameter.
fn carries_key(headers: &HeaderMap, query: Option<&str>, key: &str) -> bool {
    let in_header = headers
        .get_all("x-functions-key")
        .iter()
        .any(|v| v.as_bytes() == key.as_bytes());
    let in_query = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(name, value)| name == "code" && value == key)
    });
    in_header || in_query
}

async fn send(
    shared: &Shared,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
    let url = shared
        .handler_url
        .join(path_and_query.trim_start_matches('/'))?;
    let response = shared
        .client
        .request(method, url)
        .headers(end_to_end(headers))
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let headers = end_to_end(response.headers());
    Ok((status, headers, response.bytes().await?))
}

/// The headers a proxy passes on: all but the hop-by-hop ones (RFC 9110, 7.6.1), those the
/// `Connection` header names, and the ones the next hop sets itself (`Host`, `Content-Length`).
pub fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    const HOP_BY_HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let dropped = HOP_BY_HOP.contains(&name.as_str())
            || named.contains(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH;
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private-hop"),
            ("keep-alive", "timeout=5"),
            ("x-private-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "127.0.0.1:7071"),
            ("content-type", "application/json"),
            ("x-functions-key", "k"),
            ("x-ms-client-request-id", "a"),
            ("x-ms-client-request-id", "b"),
        ] {
            headers.append(HeaderName::from_static(name), value.parse().unwrap());
        }
        let kept = end_to_end(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["content-type", "x-functions-key", "x-ms-client-request-id"]
        );
        assert_eq!(kept.get_all("x-ms-client-request-id").iter().count(), 2);
    }

    #[test]
    fn the_key_is_read_from_the_header_or_the_code_parameter() {
        let mut headers = HeaderMap::new();
        assert!(!carries_key(&headers, None, "k+1"));
        assert!(carries_key(&headers, Some("a=1&code=k%2B1"), "k+1"));
        assert!(!carries_key(&headers, Some("code=wrong"), "k+1"));
        headers.insert("x-functions-key", "k+1".parse().unwrap());
        assert!(carries_key(&headers, None, "k+1"));
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(random_key(), random_key());
        assert!(random_key().len() >= 50);
    }
}
