//! Logging: human-readable text or one JSON object per line, filtered by `RUST_LOG`
//! (default `info`). Logs go to stderr; stdout is left to commands' own output.
//!
//! Lines are formatted on the thread that logs them into a buffer of that thread's and written
//! by a thread of their own (`entragate-log`) in large writes: one per 64 KiB, or every
//! 100 ms, whichever comes first (see [`sink`]). A request never waits for stderr: when it
//! blocks, lines queue up to 16 MiB and past that are dropped and counted
//! (`entragate_log_lines_dropped_total`). [`LogGuard`] writes out every buffered line when
//! dropped, at the end of `main`; a reload writes them out too ([`flush`]).
//!
//! The access line (`entragate::access`) has its own formatter ([`crate::access`]) that writes
//! the bytes `tracing-subscriber` would, without going through it, as long as the lines carry
//! no colours and no span (a terminal, or `RUST_LOG` at `debug` and above, sends it through
//! `tracing` as before): [`access_format`] says which.

pub mod sink;

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::level_filters::LevelFilter;
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

/// How the access line is written when it bypasses `tracing` ([`access_format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Text,
    Json,
}

/// 0: lines go through `tracing`; 1: text; 2: JSON.
static ACCESS_FORMAT: AtomicU8 = AtomicU8::new(0);

/// Keeps the log writer thread running; dropping it writes out every buffered line.
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct LogGuard {
    sink: Option<Arc<sink::Sink>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            ACCESS_FORMAT.store(0, Ordering::Relaxed);
            let _ = sink.close(sink::CLOSE_WAIT);
        }
    }
}

/// Installs the global subscriber, JSON lines when `json` (`server.log_format = "json"`),
/// else text. Calling it twice is harmless (the second call is ignored
/// and its guard holds nothing).
pub fn init(json: bool) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let Some(sink) = sink::install(Box::new(std::io::stderr())) else {
        return LogGuard { sink: None };
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink::MakeSinkWriter)
        .with_ansi(ansi);
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    if installed.is_err() {
        let _ = sink.close(sink::CLOSE_WAIT);
        return LogGuard { sink: None };
    }
    if !ansi {
        ACCESS_FORMAT.store(if json { 2 } else { 1 }, Ordering::Relaxed);
    }
    LogGuard { sink: Some(sink) }
}

/// How to write the access line without `tracing`, or `None` to log it through `tracing`:
/// when no subscriber of [`init`]'s is installed, when lines are coloured, and when `debug`
/// is enabled anywhere (the line would then carry the request's span).
#[must_use]
pub fn access_format() -> Option<LineFormat> {
    let format = match ACCESS_FORMAT.load(Ordering::Relaxed) {
        1 => LineFormat::Text,
        2 => LineFormat::Json,
        _ => return None,
    };
    (LevelFilter::current() < LevelFilter::DEBUG).then_some(format)
}

/// Writes out every buffered line soon, without waiting (a reload does: lines logged under
/// the old config are out before the new one's).
pub fn flush() {
    sink::flush();
}

/// Log lines lost so far (stderr blocked past the queue's limit, or not writable).
#[must_use]
pub fn dropped_lines() -> u64 {
    sink::dropped_lines()
}
