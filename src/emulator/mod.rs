//! The local Azure emulator: a stand-in for the ARM REST APIs keysync uses (storage accounts,
//! Machine Learning workspaces and datastores), an App Service-style managed identity
//! endpoint, Event Grid deliveries of key-regeneration events, and fault injection. It is
//! loaded from a scenario (`SCENARIO.md`) and exposes its whole state, secrets included, to
//! tests under `/_emulator/`.
//!
//! One axum server on loopback serves everything: `/msi/token`, `/_emulator/*`, and a fallback
//! that parses ARM paths itself so that names match case-insensitively, as in Azure. On request
//! it also serves the same router over HTTPS, with a certificate made at start, for clients
//! (such as the Azure ML Python SDK) that refuse bearer tokens over plain HTTP.

pub mod azurite;
mod clock;
mod control;
mod data_plane;
mod demo;
mod events;
mod faults;
mod identity;
mod origin;
mod paging;
mod query;
mod random;
mod reply;
mod resources;
mod routes;
mod scenario;
mod server;
mod state;
mod tls;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use url::Url;

pub use faults::{FaultKind, FaultRule, RetryAfterFormat};
pub use scenario::Scenario;

use server::Server;
use state::State;

/// Where the emulator listens and where it posts events.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The webhook that receives Event Grid events; none are posted when unset.
    pub event_webhook: Option<Url>,
    /// Also serve HTTPS, on a free loopback port, with a certificate made at start (see
    /// [`RunningEmulator::https_url`] and [`RunningEmulator::certificate_pem`]).
    pub https: bool,
}

impl Default for EmulatorOptions {
    /// Loopback, a free port, no webhook, plain HTTP only.
    fn default() -> Self {
        EmulatorOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            event_webhook: None,
            https: false,
        }
    }
}

/// One ARM request the emulator served: never its headers or body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path as requested, without the query.
    pub path: String,
    /// The Azure operationId, such as `StorageAccounts_ListKeys` (`Unknown` for other paths).
    pub operation: String,
    /// The status answered; 0 when a fault dropped the connection.
    pub status: u16,
}

/// A running emulator; it shuts down on drop or on [`RunningEmulator::shutdown`].
pub struct RunningEmulator {
    server: Server,
    subscriptions: Vec<String>,
}

impl RunningEmulator {
    /// Loads the scenario and starts serving it.
    pub async fn start(scenario: Scenario, options: EmulatorOptions) -> anyhow::Result<Self> {
        let mut state = State::from_scenario(&scenario).context("loading the scenario")?;
        state.webhook = options.event_webhook;
        let server = Server::start(state, options.listen, options.https).await?;
        Ok(RunningEmulator {
            server,
            subscriptions: scenario.subscriptions(),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `http://127.0.0.1:PORT/`: the ARM endpoint.
    pub fn base_url(&self) -> Url {
        self.server.shared.base_url.clone()
    }

    /// `https://127.0.0.1:PORT/`: the same endpoint over HTTPS, when started with
    /// [`EmulatorOptions::https`].
    pub fn https_url(&self) -> Option<Url> {
        self.server.https.as_ref().map(|https| https.url.clone())
    }

    /// The PEM certificate a client must trust to reach [`RunningEmulator::https_url`] (the
    /// authority that signed the server's certificate for `127.0.0.1` and `localhost`).
    pub fn certificate_pem(&self) -> Option<&str> {
        self.server
            .https
            .as_ref()
            .map(|https| https.ca_pem.as_str())
    }

    /// The `NAME=value` settings a handler needs to use this emulator: `KEYSYNC_ARM_ENDPOINT`,
    /// `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` and `KEYSYNC_SUBSCRIPTIONS`.
    pub fn env(&self) -> Vec<(String, String)> {
        let shared = &self.server.shared;
        let endpoint = shared.base_url.as_str().trim_end_matches('/').to_string();
        let subscriptions = self.subscriptions.join(",");
        vec![
            ("KEYSYNC_ARM_ENDPOINT".into(), endpoint.clone()),
            ("IDENTITY_ENDPOINT".into(), format!("{endpoint}/msi/token")),
            ("IDENTITY_HEADER".into(), shared.identity_secret.clone()),
            ("KEYSYNC_SUBSCRIPTIONS".into(), subscriptions),
        ]
    }

    /// The whole state, as `GET /_emulator/state` shows it.
    pub fn state(&self) -> serde_json::Value {
        self.server.shared.snapshot()
    }

    /// The ARM requests served so far, in order, as `GET /_emulator/requests` shows them.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.server.shared.lock().requests.clone()
    }

    /// Replaces the fault rules (counters and generators start over). A rule with impossible
    /// values (a rate above 1, a non-error status) is left out with a warning.
    pub fn set_faults(&self, faults: Vec<FaultRule>) {
        let valid = faults
            .into_iter()
            .filter(|rule| match rule.validate() {
                Ok(()) => true,
                Err(problem) => {
                    tracing::warn!(%problem, operation = %rule.operation, "fault rule ignored");
                    false
                }
            })
            .collect();
        self.server.shared.lock().faults = faults::FaultEngine::new(valid);
    }

    /// Regenerates `key` (`key1` or `key2`) of the account with this ARM id as a portal user
    /// would: with the user's token, through the ARM API, so that the request is logged and the
    /// event is posted like any other.
    pub async fn regenerate_as_user(&self, account: &str, key: &str) -> anyhow::Result<()> {
        let base = self.base_url();
        let client = reqwest::Client::builder().no_proxy().build()?;
        let token: serde_json::Value = client
            .post(base.join("/_emulator/user-token")?)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = token["access_token"]
            .as_str()
            .context("the emulator gave no user token")?;
        let url = base.join(&format!(
            "{account}/regenerateKey?api-version={}",
            crate::arm::operation::STORAGE_API_VERSION
        ))?;
        client
            .post(url)
            .bearer_auth(token)
            .json(&serde_json::json!({ "keyName": key }))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("regenerating {key} of {account}"))?;
        Ok(())
    }

    /// The ARM requests served so far and the time the emulator spent on them, the latency
    /// it adds on purpose left out: its own cost per request.
    pub fn overhead(&self) -> (u64, Duration) {
        self.server.shared.overhead.total()
    }

    /// Sets the latency added to every ARM and identity answer.
    pub fn set_latency(&self, latency: Duration) {
        self.server.shared.lock().latency = latency;
    }

    /// Sets or clears the webhook that receives events.
    pub fn set_event_webhook(&self, url: Option<Url>) {
        self.server.shared.lock().webhook = url;
    }

    /// Starts Azurite (`binary`, see [`azurite::find`]) as the storage data plane of every
    /// account flagged `azurite`: their blob endpoints become Azurite's, the containers their
    /// datastores name are created, and each key regeneration restarts Azurite with the new keys.
    /// Returns Azurite's base URL.
    pub async fn attach_azurite(&self, binary: &std::path::Path) -> anyhow::Result<Url> {
        data_plane::attach(&self.server.shared, binary).await
    }

    /// Azurite's base URL, when attached.
    pub async fn azurite_url(&self) -> Option<Url> {
        let plane = self.server.shared.data_plane.lock().await;
        plane.as_ref().map(data_plane::DataPlane::url)
    }

    /// Stops serving (and Azurite) and waits for open connections to close.
    pub async fn shutdown(self) {
        data_plane::stop(&self.server.shared).await;
        self.server.stop().await;
    }
}

/// `keysync emulator`: starts the emulator, prints its settings (one `NAME=value` per line) to
/// stdout once it is ready, and serves until SIGINT or SIGTERM. With HTTPS, two more lines follow
/// the usual four: `KEYSYNC_EMULATOR_HTTPS` and `KEYSYNC_EMULATOR_CA_FILE`, a PEM file of the
/// certificate to trust, removed when the emulator stops.
pub async fn run_cli(scenario: Scenario, options: EmulatorOptions) -> anyhow::Result<()> {
    let wants_azurite = scenario.storage_accounts.iter().any(|a| a.azurite);
    let emulator = RunningEmulator::start(scenario, options).await?;
    if wants_azurite {
        attach_azurite_if_installed(&emulator).await?;
    }
    let mut settings = emulator.env();
    let ca_file = match (emulator.https_url(), emulator.certificate_pem()) {
        (Some(url), Some(pem)) => {
            let file = CaFile::write(pem)?;
            let url = url.as_str().trim_end_matches('/').to_string();
            settings.push(("KEYSYNC_EMULATOR_HTTPS".into(), url));
            settings.push(("KEYSYNC_EMULATOR_CA_FILE".into(), file.display()));
            Some(file)
        }
        _ => None,
    };
    print_settings(&settings)?;

    wait_for_stop_signal().await?;
    tracing::info!("stopping the emulator");
    emulator.shutdown().await;
    drop(ca_file);
    Ok(())
}

async fn attach_azurite_if_installed(emulator: &RunningEmulator) -> anyhow::Result<()> {
    match azurite::find_default() {
        Some(binary) => {
            let url = emulator.attach_azurite(&binary).await?;
            tracing::info!(%url, "Azurite attached");
        }
        None => eprintln!(
            "warning: Azurite not found (run `npm ci` in the repository root, or set {}): accounts flagged azurite keep their default endpoints",
            azurite::AZURITE_ENV
        ),
    }
    Ok(())
}

fn print_settings(settings: &[(String, String)]) -> anyhow::Result<()> {
    let lines: String = settings
        .iter()
        .map(|(name, value)| format!("{name}={value}\n"))
        .collect();
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(lines.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the emulator settings to stdout")
}

/// The emulator's CA certificate written to a file for clients that read trust from one
/// (`REQUESTS_CA_BUNDLE`); removed on drop. A certificate is public, so the file needs no
/// protection; the authority's key is never written.
pub struct CaFile(std::path::PathBuf);

impl CaFile {
    /// Writes `pem` (from [`RunningEmulator::certificate_pem`]) to a file of this process's in
    /// the temporary folder.
    pub fn write(pem: &str) -> anyhow::Result<CaFile> {
        let name = format!("keysync-emulator-{}-ca.pem", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, pem)
            .with_context(|| format!("writing the emulator's certificate to {}", path.display()))?;
        Ok(CaFile(path))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn display(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for CaFile {
    fn drop(&mut self) {
        // Best effort: a file left in the temp folder holds only a public certificate.
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("listening for SIGINT")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("listening for Ctrl-C")?;
    Ok(())
}
