//! The answers the emulator builds before they become HTTP responses: a status, headers, a JSON,
//! HTML or empty body, or the instruction to drop the connection without answering. Handlers
//! return these so they can be tested without a server.

use axum::body::Body as HttpBody;
use axum::http::header::{CONTENT_TYPE, HeaderName};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

/// Marks a response whose connection the server must close instead of answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// What a reply carries.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Empty,
    Json(Value),
    Html(String),
}

/// One answer of the emulator. Boxed, because handlers pass it around as their error value.
#[derive(Debug, Clone)]
pub(crate) struct Reply(Box<Parts>);

#[derive(Debug, Clone)]
struct Parts {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
    dropped: bool,
}

impl Reply {
    /// A JSON answer.
    pub(crate) fn json(status: StatusCode, value: Value) -> Self {
        Reply(Box::new(Parts {
            status,
            headers: HeaderMap::new(),
            body: Body::Json(value),
            dropped: false,
        }))
    }

    fn with_body(status: StatusCode, body: Body) -> Self {
        let mut reply = Reply::json(status, Value::Null);
        reply.0.body = body;
        reply
    }

    /// `200 OK` with a JSON body.
    pub(crate) fn ok(value: Value) -> Self {
        Reply::json(StatusCode::OK, value)
    }

    /// An answer without a body.
    pub(crate) fn empty(status: StatusCode) -> Self {
        Reply::with_body(status, Body::Empty)
    }

    /// An HTML answer, as gateways send in front of ARM.
    pub(crate) fn html(status: StatusCode, html: String) -> Self {
        Reply::with_body(status, Body::Html(html))
    }

    /// ARM's error shape: `{"error": {"code": ..., "message": ...}}`.
    pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Reply::json(
            status,
            json!({ "error": { "code": code, "message": message } }),
        )
    }

    /// Azure Machine Learning's error for a request it refuses: code `UserError`.
    pub(crate) fn user_error(status: StatusCode, message: impl Into<String>) -> Self {
        Reply::error(status, "UserError", message)
    }

    /// No answer at all: the server closes the connection.
    pub(crate) fn dropped() -> Self {
        let mut reply = Reply::empty(StatusCode::OK);
        reply.0.dropped = true;
        reply
    }

    /// Adds a header. A value that is not a valid header value is left out; the emulator only
    /// builds ASCII values (URLs, GUIDs, numbers), so that never happens in practice.
    pub(crate) fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(value) = HeaderValue::from_str(value.as_ref()) {
            self.0.headers.insert(name, value);
        }
        self
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The status the request log records: 0 for a dropped connection.
    pub(crate) fn logged_status(&self) -> u16 {
        if self.0.dropped {
            0
        } else {
            self.0.status.as_u16()
        }
    }

    #[cfg(test)]
    pub(crate) fn json_body(&self) -> Option<&Value> {
        match &self.0.body {
            Body::Json(value) => Some(value),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn header_value(&self, name: &str) -> Option<&str> {
        self.0.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The HTTP response; a dropped reply becomes an empty response marked [`DropConnection`].
    pub(crate) fn into_response(self) -> Response {
        let Parts {
            status,
            headers,
            body,
            dropped,
        } = *self.0;
        let (content_type, body) = match body {
            Body::Empty => (None, HttpBody::empty()),
            Body::Json(value) => (
                Some("application/json; charset=utf-8"),
                HttpBody::from(value.to_string()),
            ),
            Body::Html(html) => (Some("text/html; charset=utf-8"), HttpBody::from(html)),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        if let Some(content_type) = content_type {
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        if dropped {
            response.extensions_mut().insert(DropConnection);
        }
        response
    }
}
