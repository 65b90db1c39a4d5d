//! The handler's footprint: how fast `keysync serve` answers its first `GET /` (which the
//! Functions host waits for), and how much memory it holds, idle and at its peak.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long one start may take before the measurement gives up (the host allows 30 s).
const START_LIMIT: Duration = Duration::from_secs(30);
/// The pause between two tries of `GET /`: short next to the start-up being measured.
const POLL: Duration = Duration::from_micros(250);

/// Starts `executable serve` `runs` times with `env` and returns each time from spawning the
/// process to the first answer on `GET /`.
pub fn startups(
    executable: &Path,
    env: &[(String, String)],
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    (0..runs).map(|_| startup(executable, env)).collect()
}

fn startup(executable: &Path, env: &[(String, String)]) -> anyhow::Result<Duration> {
    let port = free_port()?;
    let started = Instant::now();
    let mut child = Command::new(executable)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", executable.display()))?;
    let answered = wait_for_answer(&mut child, port, started);
    stop(&mut child);
    answered
}

fn wait_for_answer(child: &mut Child, port: u16, started: Instant) -> anyhow::Result<Duration> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while started.elapsed() < START_LIMIT {
        if answers(addr) {
            return Ok(started.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the handler exited during start-up ({status})");
        }
        std::thread::sleep(POLL);
    }
    bail!("the handler did not answer GET / within {START_LIMIT:?}")
}

/// True when `GET /` gets the start of an HTTP answer.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut head = [0u8; 12];
    stream.set_read_timeout(Some(START_LIMIT)).is_ok()
        && stream.write_all(request).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 ")
}

fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The median of `samples` (the mean of the middle two for an even count).
pub fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// A process's memory, from `/proc/<pid>/status` (Linux only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident now (`VmRSS`), in bytes.
    pub resident: u64,
    /// The most it was ever resident (`VmHWM`), in bytes.
    pub peak: u64,
}

/// The memory of process `pid`, or `None` where `/proc` does not tell.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some(Memory {
        resident: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median(&ms(&[9, 1, 5])), Some(Duration::from_millis(5)));
        assert_eq!(
            median(&ms(&[4, 1, 2, 3])),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn proc_status_is_read_in_bytes() {
        let status = "Name:\tkeysync\nVmHWM:\t   20480 kB\nVmRSS:\t    8192 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                resident: 8 * 1024 * 1024,
                peak: 20 * 1024 * 1024
            })
        );
        assert_eq!(parse_status("Name:\tkeysync\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_memory_reading() {
        let memory = memory(std::process::id()).expect("/proc/self/status");
        assert!(memory.resident > 0 && memory.peak >= memory.resident);
    }
}
