//! Azurite, the Azure Storage emulator from npm, run as a child process: one `azurite-blob` on
//! loopback, in memory, without telemetry. Azurite reads its accounts and keys
//! (`AZURITE_ACCOUNTS=name:key1:key2;...`) only when it starts, so a key change means a restart,
//! on the same port so that the accounts' endpoints stay valid.
//!
//! Its output is never forwarded: Azurite would print the accounts variable, keys included, if
//! it could not parse it. Only the line that names the port is read, and an error report keeps
//! at most the last lines of its error output, with every key blanked out.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use url::Url;

/// The setting that names the Azurite executable, when it is not in `node_modules/.bin`.
pub const AZURITE_ENV: &str = "KEYSYNC_AZURITE";

/// Where `npm ci` at the repository root puts the executable.
const INSTALLED: &str = "node_modules/.bin/azurite-blob";

/// The longest wait for Azurite to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of Azurite's error output kept for an error report.
const STDERR_LIMIT: usize = 4096;

/// Finds Azurite: `KEYSYNC_AZURITE` when set, else `node_modules/.bin/azurite-blob` under the
/// first of `roots` that has it.
pub fn find(roots: &[PathBuf]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(AZURITE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    roots
        .iter()
        .map(|root| root.join(INSTALLED))
        .find(|path| path.is_file())
}

/// [`find`] from the current directory, the executable's folder and its parents, and the
/// crate's own folder.
pub fn find_default() -> Option<PathBuf> {
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    find(&roots)
}

/// A running Azurite blob service.
pub struct Azurite {
    binary: PathBuf,
    port: u16,
    child: Child,
}

impl std::fmt::Debug for Azurite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Azurite(127.0.0.1:{})", self.port)
    }
}

impl Azurite {
    /// Starts `binary` serving `accounts` (`name:key1:key2;...`) on a port Azurite picks.
    pub async fn start(binary: &Path, accounts: &SecretString) -> anyhow::Result<Azurite> {
        let (child, port) = spawn(binary, 0, accounts).await?;
        Ok(Azurite {
            binary: binary.to_path_buf(),
            port,
            child,
        })
    }

    /// `http://127.0.0.1:PORT/`; an account's blob endpoint is this plus `<name>/`.
    pub fn url(&self) -> Url {
        let url = format!("http://127.0.0.1:{}/", self.port);
        Url::parse(&url).unwrap_or_else(|_| unreachable!("a loopback URL with a port parses"))
    }

    /// Stops Azurite and starts it again on the same port with `accounts`. Data kept in memory
    /// is lost, as after any restart.
    pub async fn restart(&mut self, accounts: &SecretString) -> anyhow::Result<()> {
        self.stop().await;
        let (child, _) = spawn(&self.binary, self.port, accounts).await?;
        self.child = child;
        Ok(())
    }

    /// Stops Azurite and waits for it to exit.
    pub async fn stop(&mut self) {
        // In memory there is nothing to flush, so a plain kill loses nothing.
        let _ = self.child.kill().await;
    }
}

/// Starts Azurite and waits until it says which port it listens on.
async fn spawn(binary: &Path, port: u16, accounts: &SecretString) -> anyhow::Result<(Child, u16)> {
    let mut command = Command::new(binary);
    command
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args(["--inMemoryPersistence", "--silent", "--disableTelemetry"])
        .arg("--disableProductStyleUrl")
        .env("AZURITE_ACCOUNTS", accounts.expose_secret())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if binary.file_name().is_some_and(|n| n == "azurite") {
        // The all-services executable also starts Queue and Table; keep them off fixed ports.
        command.args(["--queuePort", "0", "--tablePort", "0"]);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting Azurite ({})", binary.display()))?;
    let stderr = Arc::new(Mutex::new(String::new()));
    if let Some(err) = child.stderr.take() {
        tokio::spawn(keep_tail(err, Arc::clone(&stderr)));
    }
    let (tx, rx) = oneshot::channel();
    match child.stdout.take() {
        Some(out) => tokio::spawn(watch_for_port(out, tx)),
        None => bail!("Azurite's output could not be read"),
    };
    let failure = |what: &str| {
        let tail = redact(&stderr.lock().unwrap_or_else(|p| p.into_inner()), accounts);
        anyhow::anyhow!("Azurite {what}: {}", tail.trim())
    };
    tokio::select! {
        port = rx => match port {
            Ok(port) => Ok((child, port)),
            Err(_) => Err(failure("stopped before it listened")),
        },
        status = child.wait() => Err(failure(&format!("exited before it listened ({})", describe(status)))),
        () = tokio::time::sleep(START_TIMEOUT) => Err(failure("did not listen within 30 s")),
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    }
}

/// Reads Azurite's output until the line `... successfully listens on http://127.0.0.1:PORT`,
/// sends the port, then drains the rest unread.
async fn watch_for_port(out: impl AsyncRead + Unpin, tx: oneshot::Sender<u16>) {
    let mut lines = BufReader::new(out).lines();
    let mut tx = Some(tx);
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(port) = listening_port(&line)
            && let Some(sender) = tx.take()
        {
            let _ = sender.send(port);
        }
    }
}

fn listening_port(line: &str) -> Option<u16> {
    let (_, url) = line.split_once("listens on ")?;
    Url::parse(url.trim()).ok()?.port()
}

/// Keeps the last few KB of Azurite's error output.
async fn keep_tail(err: impl AsyncRead + Unpin, tail: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(err).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.push_str(&line);
        tail.push('\n');
        if tail.len() > STDERR_LIMIT {
            let cut = tail.len() - STDERR_LIMIT;
            let cut = (cut..tail.len())
                .find(|i| tail.is_char_boundary(*i))
                .unwrap_or(0);
            tail.replace_range(..cut, "");
        }
    }
}

/// `text` with every key of `accounts` blanked out.
fn redact(text: &str, accounts: &SecretString) -> String {
    let mut out = text.to_string();
    for account in accounts.expose_secret().split(';') {
        for key in account.split(':').skip(1).filter(|k| !k.is_empty()) {
            out = out.replace(key, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_output_never_shows_a_key() {
        let accounts = SecretString::from("st1:a2V5MQ==:a2V5Mg==;st2:b3RoZXI=");
        let text = "Invalid environment string format for st1:a2V5MQ==:a2V5Mg==;st2:b3RoZXI=";
        let shown = redact(text, &accounts);
        assert_eq!(
            shown,
            "Invalid environment string format for st1:***:***;st2:***"
        );
    }

    #[tokio::test]
    async fn the_port_is_read_from_the_listening_line() {
        let output: &[u8] = b"Azurite Blob service is starting on 127.0.0.1:0\nAzurite Blob service successfully listens on http://127.0.0.1:42793\n";
        let (tx, rx) = oneshot::channel();
        watch_for_port(output, tx).await;
        assert_eq!(rx.await.unwrap(), 42793);
    }
}
