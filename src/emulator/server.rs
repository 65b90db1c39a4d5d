//! The HTTP server: binds the listener, assembles the router, and serves each connection with
//! hyper directly, because a `drop` fault has to close a connection without answering, which
//! `axum::serve` cannot do. Shutdown stops accepting, lets open connections finish their
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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;
use url::Url;

use super::data_plane::DataPlane;
use super::reply::DropConnection;
use super::state::State;
use super::{control, random, routes};

/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler shares: the state (behind its one mutex) and fixed facts of the run.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// `http://127.0.0.1:PORT/`.
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
}

/// A started server.
pub(crate) struct Server {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` and starts serving `state`.
    pub(crate) async fn start(state: State, listen: SocketAddr) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the emulator to {listen}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            base_url: base_url(addr)?,
            identity_secret: random::token(),
            // Events go to a local webhook: never through a proxy from the environment.
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .context("building the event client")?,
            shutdown: shutdown.clone(),
            data_plane: tokio::sync::Mutex::new(None),
            overhead: Overhead::default(),
        });
        let app = router(Arc::clone(&shared));
        let task = tokio::spawn(accept_loop(listener, app, shutdown));
        tracing::info!(%addr, "emulator listening");
        Ok(Server {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// Asks the server to stop without waiting for it.
    pub(crate) fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops the server and waits until its connections are closed.
    pub(crate) async fn stop(mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
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

fn base_url(addr: SocketAddr) -> anyhow::Result<Url> {
    // A wildcard bind is reached on loopback.
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let url = Url::parse(&format!("http://{}", SocketAddr::new(ip, addr.port())))?;
    Ok(url)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/msi/token", get(control::msi_token))
        .nest("/_emulator", control::routes())
        .fallback(routes::arm)
        .with_state(shared)
}

async fn accept_loop(listener: TcpListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, app.clone(), shutdown.clone()));
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
    drop(listener);
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

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
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
