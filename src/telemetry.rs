//! Logging as the Functions host reads it: one line per event, no colours, `info` and below on
//! stdout (logged as Information), `warn` and `error` on stderr (logged as Warning/Error).

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// Installs the global subscriber; `RUST_LOG` overrides `default_filter`. Safe to call twice.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let writer = std::io::stderr
        .with_max_level(Level::WARN)
        .or_else(std::io::stdout);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_writer(writer)
        .try_init();
}

/// Logging for every command but `serve`: every line on stderr, because stdout carries what the
/// command is for (a table, JSON, the emulator's settings). `RUST_LOG` overrides `default_filter`.
pub fn init_stderr(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
