//! Live reload: on SIGHUP the config file (and the environment the process started with) is
//! read and checked again. A valid config replaces the running one in place (see
//! [`Running::apply`]); an invalid one is refused with a log line naming every problem, and
//! the config in force keeps serving. The proxy, forward-auth and Envoy `ext_authz` front ends
//! all read the replaced gateway. Listener addresses, `server.mode` and the log format need a
//! restart, and the log says so.

use std::path::Path;

use crate::app::{Running, StartupError};
use crate::config::{Config, ConfigError};

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Start(#[from] StartupError),
}

/// Reads `path` again and applies it, logging the result either way.
///
/// # Errors
/// The config's problems, or what kept it from being put in place; the running config is
/// then unchanged.
pub async fn reload(running: &mut Running, path: &Path) -> Result<(), ReloadError> {
    tracing::info!(path = %path.display(), "reloading the configuration");
    let result = match Config::load_file(path) {
        Ok(config) => running.apply(&config).await.map_err(ReloadError::from),
        Err(e) => Err(ReloadError::from(e)),
    };
    match &result {
        Ok(applied) => {
            for (key, in_force) in &applied.restart_needed {
                tracing::warn!(
                    key,
                    in_force = %in_force,
                    "{key} changed: it takes effect only after a restart; still using {in_force}"
                );
            }
            tracing::info!(
                new_key_sources = ?applied.new_key_sources,
                "configuration reloaded: routes, audiences, issuers and upstream replaced"
            );
        }
        Err(ReloadError::Config(e)) => {
            let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
            tracing::error!(
                path = %path.display(),
                problems = %problems.join("; "),
                "configuration reload refused, the running configuration stays in force: {}; fix the file and send SIGHUP again",
                problems.join("; ")
            );
        }
        Err(ReloadError::Start(e)) => {
            tracing::error!(
                error = %e,
                "configuration reload refused, the running configuration stays in force: {e}"
            );
        }
    }
    // Lines logged under the old config go out now rather than within the next 100 ms.
    crate::telemetry::flush();
    result.map(|_| ())
}

/// Serves until SIGTERM or SIGINT, reloading `path` on every SIGHUP and, with
/// `server.reload_poll`, whenever the file's modification time or size changes; then drains
/// in-flight requests for the `server.shutdown_grace` in force. Returns whether they all
/// finished.
pub async fn serve(mut running: Running, path: &Path) -> bool {
    let mut hangup = Hangup::listen();
    let stop = crate::app::shutdown_signal();
    tokio::pin!(stop);
    let mut seen = stamp(path);
    loop {
        let poll = running.config().server.reload_poll;
        let tick = async {
            if poll.is_zero() {
                std::future::pending::<()>().await;
            } else {
                tokio::time::sleep(poll).await;
            }
        };
        tokio::select! {
            () = &mut stop => break,
            () = hangup.recv() => {
                let _ = reload(&mut running, path).await;
                seen = stamp(path);
            }
            () = tick => {
                let now = stamp(path);
                if now != seen {
                    // Remembered before reloading: a half-written file is refused once, and
                    // the next change (the write completing) is seen again.
                    seen = now;
                    tracing::info!(path = %path.display(), "config file changed");
                    let _ = reload(&mut running, path).await;
                }
            }
        }
    }
    let grace = running.config().server.shutdown_grace;
    running.drain(grace).await
}

/// The file's modification time and size (a ConfigMap update swaps a symlink; metadata
/// follows it).
fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// SIGHUP, where there is one.
struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangup {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(s) => Self(Some(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; reload on SIGHUP is off");
                    Self(None)
                }
            }
        }
        #[cfg(not(unix))]
        Self()
    }

    /// The next SIGHUP (never, without one).
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.0
            && s.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}
