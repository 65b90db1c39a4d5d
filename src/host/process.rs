//! Starting the custom handler as the Functions host does: a child process with the port in
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, ready once `GET /` answers; its output read line by line.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How long the host waits for `GET /` to answer, as the real host does.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running handler process.
pub struct HandlerProcess {
    child: Child,
    pub port: u16,
    /// From spawn to the first answer on `GET /`.
    pub startup: Duration,
    output: Arc<Mutex<Vec<String>>>,
}

/// What to start and how.
pub struct Launch<'a> {
    pub executable: &'a Path,
    pub arguments: &'a [String],
    pub working_dir: &'a Path,
    pub env: &'a [(String, String)],
    /// Inherited variables to drop before `env` is applied.
    pub env_remove: &'a [String],
    /// Echo the handler's lines to this process's stderr, prefixed.
    pub echo: bool,
}

impl HandlerProcess {
    /// Starts the handler on a free loopback port and waits until it is ready.
    pub async fn start(launch: Launch<'_>) -> anyhow::Result<HandlerProcess> {
        let port = free_port()?;
        let started = Instant::now();
        let mut command = Command::new(launch.executable);
        for name in launch.env_remove {
            command.env_remove(name);
        }
        let mut child = command
            .args(launch.arguments)
            .current_dir(launch.working_dir)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", launch.executable.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect(out, "stdout", output.clone(), launch.echo));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect(err, "stderr", output.clone(), launch.echo));
        }
        wait_ready(&mut child, port).await?;
        Ok(HandlerProcess {
            child,
            port,
            startup: started.elapsed(),
            output,
        })
    }

    /// The handler's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Every line the handler printed so far, as `stdout: ...` or `stderr: ...`.
    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends SIGTERM, as the host does on shutdown, and waits for the exit code.
    pub async fn stop(mut self) -> anyhow::Result<Option<i32>> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("the handler did not exit within 10 s of SIGTERM")??;
        Ok(status.code())
    }
}

fn free_port() -> anyhow::Result<u16> {
    // The host picks the port and passes it on; binding port 0 and releasing it is how to find
    // a free one. Another process could take it in between; start-up then fails loudly.
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

async fn wait_ready(child: &mut Child, port: u16) -> anyhow::Result<()> {
    // The handler is on loopback: a proxy from the environment would answer in its place.
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("the handler exited during start-up ({status})");
        }
        if client
            .get(&url)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("the handler did not answer GET / within {STARTUP_TIMEOUT:?}")
}

async fn collect(
    stream: impl AsyncRead + Unpin,
    name: &'static str,
    sink: Arc<Mutex<Vec<String>>>,
    echo: bool,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo {
            eprintln!("  handler | {line}");
        }
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{name}: {line}"));
    }
}
