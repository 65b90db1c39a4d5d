//! The HTTP server: binds the listeners (plain HTTP, and HTTPS when asked for), assembles the
//! router, and serves each connection with hyper directly, because a `drop` fault has to close
//! a connection without answering, which `axum::serve` cannot do. Both listeners serve the same
//! router over the same state. Shutdown stops accepting, lets open connections finish their
//! current request, and stops event deliveries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use url::Url;

use super::data_plane::DataPlane;
use super::origin::ListenerBase;
use super::reply::DropConnection;
use super::state::State;
use super::tls::TlsIdentity;
use super::{control, random, routes};

/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client has to complete the TLS handshake before its connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler shares: the state (behind its one mutex) and fixed facts of the run.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// `http://127.0.0.1:PORT/`: the plain listener. Answers build their links on the listener
    /// each request came in on (see `origin`), not on this.
    pub base_url: Url,
    /// The value `X-IDENTITY-HEADER` must carry on `/msi/token`.
    pub identity_secret: String,
    /// The client that posts events.
    pub http: reqwest::Client,
    /// Turns true when the emulator stops.
    pub shutdown: watch::Receiver<bool>,
    /// Azurite, once attached: the storage data plane of the accounts flagged `azurite`.
    pub data_plane: tokio::sync::Mutex<Option<DataPlane>>,
    /// The emulator's own time spent on ARM requests, latency left out.
    pub overhead: Overhead,
}

/// Time spent serving ARM requests, besides the latency added on purpose: what the emulator
/// itself costs a benchmark.
#[derive(Debug, Default)]
pub(crate) struct Overhead {
    requests: AtomicU64,
    nanos: AtomicU64,
}

impl Overhead {
    pub(crate) fn add(&self, spent: Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The requests counted and the time they took in all.
    pub(crate) fn total(&self) -> (u64, Duration) {
        let requests = self.requests.load(Ordering::Relaxed);
        let nanos = self.nanos.load(Ordering::Relaxed);
        (requests, Duration::from_nanos(nanos))
    }
}

impl Shared {
    /// Locks the state. Hold the guard briefly and never across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as any single step
        // makes it; serving on beats poisoning every later request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The whole state as `/_emulator/state` shows it: secrets, issued tokens and the identity
    /// endpoint's own secret (`identityHeader`) included.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let mut snapshot = self.lock().snapshot();
        snapshot["identityHeader"] = self.identity_secret.clone().into();
        snapshot
    }
}

/// A started server.
pub(crate) struct Server {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// The HTTPS listener, when one was asked for.
    pub https: Option<HttpsEndpoint>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Where the HTTPS listener is, and what a client must trust to reach it.
pub(crate) struct HttpsEndpoint {
    /// `https://127.0.0.1:PORT/`.
    pub url: Url,
    /// The PEM of the authority that signed the server's certificate.
    pub ca_pem: String,
}

/// A bound listener: its socket, its base URL, and for HTTPS the acceptor.
struct Listener {
    tcp: TcpListener,
    addr: SocketAddr,
    base: Url,
    tls: Option<TlsAcceptor>,
}

impl Listener {
    async fn bind(listen: SocketAddr, tls: Option<TlsAcceptor>) -> anyhow::Result<Listener> {
        let tcp = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the emulator to {listen}"))?;
        let addr = tcp.local_addr().context("reading the bound address")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Listener {
            tcp,
            addr,
            base: base_url(scheme, addr)?,
            tls,
        })
    }
}

impl Server {
    /// Binds `listen` (and, with `https`, a second listener on a free loopback port) and starts
    /// serving `state`.
    pub(crate) async fn start(
        state: State,
        listen: SocketAddr,
        https: bool,
    ) -> anyhow::Result<Server> {
        let plain = Listener::bind(listen, None).await?;
        let secure = if https {
            Some(bind_https().await?)
        } else {
            None
        };
        let (stop, shutdown) = watch::channel(false);
        let shared = new_shared(state, plain.base.clone(), shutdown.clone())?;
        let app = router(Arc::clone(&shared));

        let addr = plain.addr;
        tracing::info!(%addr, "emulator listening");
        let mut tasks = vec![tokio::spawn(accept_loop(
            plain,
            app.clone(),
            shutdown.clone(),
        ))];
        let https = secure.map(|(listener, ca_pem)| {
            let url = listener.base.clone();
            tracing::info!(addr = %listener.addr, "emulator listening for HTTPS");
            tasks.push(tokio::spawn(accept_loop(listener, app, shutdown)));
            HttpsEndpoint { url, ca_pem }
        });
        Ok(Server {
            addr,
            shared,
            https,
            stop,
            tasks,
        })
    }

    /// Asks the server to stop without waiting for it.
    pub(crate) fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops the server and waits until its connections are closed.
    pub(crate) async fn stop(mut self) {
        self.signal_stop();
        for task in std::mem::take(&mut self.tasks) {
            // A join error means the accept loop panicked or was aborted: it is gone either way.
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn new_shared(
    state: State,
    base_url: Url,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Arc<Shared>> {
    Ok(Arc::new(Shared {
        state: Mutex::new(state),
        base_url,
        identity_secret: random::token(),
        // Events go to a local webhook: never through a proxy from the environment.
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the event client")?,
        shutdown,
        data_plane: tokio::sync::Mutex::new(None),
        overhead: Overhead::default(),
    }))
}

/// The HTTPS listener, on a free loopback port, with a certificate made for this run.
async fn bind_https() -> anyhow::Result<(Listener, String)> {
    let identity = TlsIdentity::generate()?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let listener = Listener::bind(listen, Some(identity.acceptor)).await?;
    Ok((listener, identity.ca_pem))
}

fn base_url(scheme: &str, addr: SocketAddr) -> anyhow::Result<Url> {
    // A wildcard bind is reached on loopback.
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let url = Url::parse(&format!("{scheme}://{}", SocketAddr::new(ip, addr.port())))?;
    Ok(url)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/msi/token", get(control::msi_token))
        .nest("/_emulator", control::routes())
        .fallback(routes::arm)
        .with_state(shared)
}

async fn accept_loop(listener: Listener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let context = Connection {
        app,
        base: listener.base,
        shutdown: shutdown.clone(),
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(open(stream, peer, listener.tls.clone(), context.clone()));
                }
                Err(error) => {
                    // Running out of descriptors is transient; back off instead of spinning.
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            () = stopped(&mut shutdown) => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener.tcp);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::debug!("connections still open at shutdown were aborted");
    }
}

/// Resolves once the emulator stops (or its stop signal is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = shutdown.wait_for(|stopped| *stopped).await;
}

/// A service error that makes hyper close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by a fault rule")]
struct Dropped;

/// What serving a connection needs besides its stream.
#[derive(Clone)]
struct Connection {
    app: Router,
    /// The listener's base URL, handed to every request on the connection.
    base: Url,
    shutdown: watch::Receiver<bool>,
}

/// Opens an accepted connection (with the TLS handshake, on the HTTPS listener) and serves it.
async fn open(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, context: Connection) {
    let Some(acceptor) = tls else {
        return serve_connection(stream, peer, context).await;
    };
    let mut shutdown = context.shutdown.clone();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
        () = stopped(&mut shutdown) => return,
    };
    serve_connection(stream, peer, context).await;
}

async fn serve_connection<S>(stream: S, peer: SocketAddr, context: Connection)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        app,
        base,
        mut shutdown,
    } = context;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(ListenerBase(base.clone()));
        let app = app.clone();
        async move {
            let response = match app.oneshot(request.map(axum::body::Body::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.extensions().get::<DropConnection>().is_some() {
                return Err(Dropped);
            }
            Ok(response)
        }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
