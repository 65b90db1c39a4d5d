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
    /// Environment for the handler (app settings).
    pub env: Vec<(String, String)>,
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
    pub elapsed: Duration,
}

impl InvocationRecord {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
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
            echo: options.echo_output,
        })
        .await?;
        let handler_url = Url::parse(&format!("http://127.0.0.1:{}/", handler.port))?;
        let (finished, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            app,
            handler_url,
            encoding: options.encoding,
            // A fresh connection per invocation: after the handler refuses an oversized body it
            // closes that connection, and a pooled one could be picked up just as it closes.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .pool_max_idle_per_host(0)
                .build()?,
            function_key: options.function_key.unwrap_or_else(http::random_key),
            records: Mutex::new(Vec::new()),
            finished,
        });
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
        let (status, body) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
            Err(e) => (0, Value::String(format!("the handler did not answer: {e}"))),
        };
        let record = InvocationRecord {
            function: function.to_string(),
            status,
            body,
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
