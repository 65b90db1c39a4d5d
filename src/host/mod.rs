//! A local stand-in for the Azure Functions host, for tests and the demo. It starts the handler
//! exactly as the host would (from `host.json`, port in the environment, readiness on `GET /`),
//! takes binding names from `function.json`, and serves the host's Event Grid webhook
//! (`/runtime/webhooks/eventgrid?functionName=...`), turning each event into an invocation, and
//! HTTP functions at `/api/<route>`, forwarded to the handler as `enableForwardingHttpRequest`
//! does, behind a function key.

pub mod functions;
mod http;
pub mod invoke;
pub mod process;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use url::Url;

pub use functions::{Function, FunctionApp, Trigger};
pub use invoke::BindingEncoding;
use process::{HandlerProcess, Launch};

/// How to run the stand-in.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The folder with `host.json` and the function folders.
    pub app_root: PathBuf,
    /// The handler binary; by default `host.json`'s executable, resolved in the app root.
    pub executable: Option<PathBuf>,
    /// Environment for the handler (app settings), on top of this process's own.
    pub env: Vec<(String, String)>,
    /// Variables of this process's environment that the handler does not inherit (`env` still
    /// sets them): a test keeps its runner's settings away from the handler this way.
    pub env_remove: Vec<String>,
    /// Echo the handler's output to stderr.
    pub echo_output: bool,
    /// How binding values are put into `Data`.
    pub encoding: BindingEncoding,
    /// Where the host listens (port 0 for any).
    pub listen: SocketAddr,
    /// The key HTTP functions of auth level `function` require; a random one when `None` (see
    /// [`LocalHost::function_key`]).
    pub function_key: Option<String>,
}

/// One finished invocation.
#[derive(Debug, Clone)]
pub struct InvocationRecord {
    pub function: String,
    /// The handler's HTTP status (0 when it did not answer).
    pub status: u16,
    /// The handler's JSON reply (`Null` when it was not JSON).
    pub body: Value,
    /// Why the host failed the invocation although the handler answered 2xx: it could not read
    /// the reply as an invocation result.
    pub unreadable: Option<String>,
    pub elapsed: Duration,
}

impl InvocationRecord {
    /// As the host decides: a 2xx reply that it could read.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status) && self.unreadable.is_none()
    }
}

/// A running stand-in host with its handler.
pub struct LocalHost {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handler: Option<HandlerProcess>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    app: FunctionApp,
    handler_url: Url,
    encoding: BindingEncoding,
    client: reqwest::Client,
    function_key: String,
    records: Mutex<Vec<InvocationRecord>>,
    finished: broadcast::Sender<InvocationRecord>,
}

impl LocalHost {
    /// Loads the app, starts the handler, waits for it, and starts serving the host's endpoints.
    pub async fn start(options: HostOptions) -> anyhow::Result<LocalHost> {
        let app = FunctionApp::load(&options.app_root)?;
        let executable = options
            .executable
            .clone()
            .unwrap_or_else(|| options.app_root.join(&app.host.executable));
        let handler = HandlerProcess::start(Launch {
            executable: &executable,
            arguments: &app.host.arguments,
            working_dir: &options.app_root,
            env: &options.env,
            env_remove: &options.env_remove,
            echo: options.echo_output,
        })
        .await?;
        let handler_url = Url::parse(&format!("http://127.0.0.1:{}/", handler.port))?;
        let function_key = options.function_key.unwrap_or_else(http::random_key);
        let shared = Arc::new(Shared::new(
            app,
            handler_url,
            options.encoding,
            function_key,
        )?);
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .context("binding the host's listener")?;
        let addr = listener.local_addr()?;
        let router = webhooks::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(LocalHost {
            shared,
            addr,
            handler: Some(handler),
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Event Grid webhook URL for `function`, as an event subscription would use it.
    pub fn event_grid_webhook(&self, function: &str) -> Url {
        let mut url = Url::parse(&format!("http://{}/runtime/webhooks/eventgrid", self.addr))
            .expect("valid URL");
        url.query_pairs_mut().append_pair("functionName", function);
        url
    }

    /// The URL of the HTTP function with this route: `http://<addr>/api/<route>`.
    pub fn http_url(&self, route: &str) -> Url {
        Url::parse(&format!("http://{}/api/{route}", self.addr)).expect("valid URL")
    }

    /// The key that HTTP functions of auth level `function` require, in the `x-functions-key`
    /// header or the `code` query parameter.
    pub fn function_key(&self) -> &str {
        &self.shared.function_key
    }

    /// The time from starting the handler to its first answer on `GET /`.
    pub fn handler_startup(&self) -> Option<Duration> {
        self.handler.as_ref().map(|h| h.startup)
    }

    /// The handler's process id, while it runs.
    pub fn handler_pid(&self) -> Option<u32> {
        self.handler.as_ref().and_then(HandlerProcess::pid)
    }

    /// Invokes `function` with `value` as its trigger binding, as the host would.
    pub async fn invoke(
        &self,
        function: &str,
        value: &Value,
        metadata: Map<String, Value>,
    ) -> anyhow::Result<InvocationRecord> {
        self.shared.invoke(function, value, metadata).await
    }

    /// Fires a timer function once, as the host does on schedule.
    pub async fn tick(&self, function: &str, past_due: bool) -> anyhow::Result<InvocationRecord> {
        self.invoke(function, &invoke::timer_value(past_due), Map::new())
            .await
    }

    /// Posts `body` as is to the handler's `POST /<function>`, as a broken host might.
    pub async fn post_raw(&self, function: &str, body: &[u8]) -> anyhow::Result<InvocationRecord> {
        self.shared.post_invocation(function, body.to_vec()).await
    }

    /// Every invocation so far, in order.
    pub fn invocations(&self) -> Vec<InvocationRecord> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Receives each invocation as it finishes.
    pub fn subscribe(&self) -> broadcast::Receiver<InvocationRecord> {
        self.shared.finished.subscribe()
    }

    /// Every line the handler printed so far.
    pub fn handler_output(&self) -> Vec<String> {
        self.handler
            .as_ref()
            .map(HandlerProcess::output)
            .unwrap_or_default()
    }

    /// Stops the server and the handler (SIGTERM); returns the handler's exit code.
    pub async fn shutdown(mut self) -> anyhow::Result<Option<i32>> {
        self.server.abort();
        match self.handler.take() {
            Some(handler) => handler.stop().await,
            None => Ok(None),
        }
    }
}

/// The handler's status, its body as JSON (`Null` when it is not), and, for a 2xx, why the host
/// could not read it as an invocation result.
async fn read_reply(response: reqwest::Response) -> (u16, Value, Option<String>) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(e) => {
            let why = status
                .is_success()
                .then(|| format!("its body could not be read: {e}"));
            return (status.as_u16(), Value::Null, why);
        }
    };
    let unreadable = match status.is_success() {
        true => invoke::unreadable_reply(content_type.as_deref(), &bytes),
        false => None,
    };
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status.as_u16(), body, unreadable)
}

/// Waits up to `limit` for the next invocation of `function` that `finished` (from
/// [`LocalHost::subscribe`]) tells of.
pub async fn next_invocation(
    finished: &mut broadcast::Receiver<InvocationRecord>,
    function: &str,
    limit: Duration,
) -> anyhow::Result<InvocationRecord> {
    let wait = async {
        loop {
            match finished.recv().await {
                Ok(record) if record.function == function => return Ok(record),
                // Missed records were older invocations: the one awaited is still to come.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => anyhow::bail!("the local host stopped: {e}"),
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .with_context(|| format!("no {function} invocation within {limit:?}"))?
}

impl Shared {
    fn new(
        app: FunctionApp,
        handler_url: Url,
        encoding: BindingEncoding,
        function_key: String,
    ) -> anyhow::Result<Shared> {
        let (finished, _) = broadcast::channel(1024);
        Ok(Shared {
            app,
            handler_url,
            encoding,
            // A fresh connection per invocation: after the handler refuses an oversized body it
            // closes that connection, and a pooled one could be picked up just as it closes. No
            // proxy: the handler is on loopback, whatever HTTP_PROXY says.
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(600))
                .pool_max_idle_per_host(0)
                .build()?,
            function_key,
            records: Mutex::new(Vec::new()),
            finished,
        })
    }

    async fn invoke(
        &self,
        function: &str,
        value: &Value,
        metadata: Map<String, Value>,
    ) -> anyhow::Result<InvocationRecord> {
        let spec = self
            .app
            .function(function)
            .with_context(|| format!("no function named {function}"))?;
        let body = invoke::envelope(function, &spec.binding, value, self.encoding, metadata);
        self.post_invocation(function, serde_json::to_vec(&body)?)
            .await
    }

    /// Posts an envelope to `POST /<function>` and records the outcome.
    async fn post_invocation(
        &self,
        function: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<InvocationRecord> {
        let started = Instant::now();
        let url = self.handler_url.join(function)?;
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        let (status, body, unreadable) = match request.send().await {
            Ok(response) => read_reply(response).await,
            Err(e) => (
                0,
                Value::String(format!("the handler did not answer: {e}")),
                None,
            ),
        };
        if let Some(why) = &unreadable {
            tracing::error!(
                function,
                status,
                error = %why,
                "invocation failed: the handler's reply is not an invocation result"
            );
        }
        let record = InvocationRecord {
            function: function.to_string(),
            status,
            body,
            unreadable,
            elapsed: started.elapsed(),
        };
        self.record(record.clone());
        Ok(record)
    }

    /// Keeps a finished invocation and tells subscribers.
    fn record(&self, record: InvocationRecord) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record.clone());
        let _ = self.finished.send(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::extract::Path;
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};

    /// Replies a handler could give, by route: `(status, Content-Type, body, the host accepts it)`.
    const REPLIES: [(u16, Option<&str>, &str, bool); 10] = [
        (200, Some("application/json"), "{}", true),
        (
            200,
            Some("application/json; charset=utf-8"),
            r#"{"Outputs": {}, "Logs": ["l"], "ReturnValue": [1]}"#,
            true,
        ),
        (200, Some("application/json"), "[]", false),
        (200, Some("application/json"), "null", false),
        (200, Some("application/json"), r#""{}""#, false),
        (200, Some("application/json"), "ok", false),
        (204, Some("application/json"), "", false),
        (200, Some("text/plain"), "{}", false),
        (200, None, "{}", false),
        (500, Some("application/json"), "{}", false),
    ];

    async fn reply(Path(case): Path<usize>) -> Response {
        let (status, content_type, body, _) = REPLIES[case];
        let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
        response.headers_mut().remove(header::CONTENT_TYPE);
        if let Some(content_type) = content_type {
            let value = content_type.parse().unwrap();
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    }

    /// A stand-in for the handler that answers `POST /<case>` with `REPLIES[case]`.
    async fn fake_handler() -> Url {
        let router = axum::Router::new().route("/{case}", axum::routing::post(reply));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    #[tokio::test]
    async fn only_a_2xx_json_object_reply_succeeds_as_the_real_host_reads_it() {
        let app = FunctionApp::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let shared = Shared::new(
            app,
            fake_handler().await,
            BindingEncoding::Object,
            "key".into(),
        )
        .unwrap();
        for (case, (status, content_type, body, accepted)) in REPLIES.iter().enumerate() {
            let record = shared
                .post_invocation(&case.to_string(), b"{}".to_vec())
                .await;
            let record = record.unwrap();
            assert_eq!(record.status, *status);
            assert_eq!(
                record.succeeded(),
                *accepted,
                "{status} {content_type:?} {body}: {record:?}"
            );
        }
    }
}
