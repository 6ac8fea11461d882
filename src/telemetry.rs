//! Logging: human-readable text or one JSON object per line, filtered by `RUST_LOG`
//! (default `info`). Logs go to stderr; stdout is left to commands' own output.
//!
//! Lines are formatted on the thread that logs them and written by a thread of their own
//! (`entragate-log`), in batches: whatever queued up while it was writing goes out in one
//! `write(2)`. A request never waits for stderr unless 128k lines are already queued (then
//! it waits rather than the line being lost). [`LogGuard`] writes out the queue when dropped,
//! at the end of `main`.

use std::io::IsTerminal as _;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// An error and its sources, `: `-separated (`a: b: c`), for logs and reports: the top-level
/// message of a client library's error alone usually hides the cause.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Bytes gathered before one `write(2)` to stderr (a batch is written out when the queue is
/// empty, whatever its size).
const BATCH_BYTES: usize = 64 * 1024;

/// Keeps the log writer thread running; dropping it writes out every queued line.
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

/// Installs the global subscriber, JSON lines when `json` (`server.log_format = "json"`),
/// else text. Calling it twice is harmless (the second call is ignored
/// and its guard holds nothing).
pub fn init(json: bool) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("entragate-log")
        .finish(std::io::BufWriter::with_capacity(
            BATCH_BYTES,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    LogGuard {
        _worker: installed.is_ok().then_some(worker),
    }
}
