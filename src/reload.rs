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
    result.map(|_| ())
}

/// Serves until SIGTERM or SIGINT, reloading `path` on every SIGHUP; then drains in-flight
/// requests for the `server.shutdown_grace` in force. Returns whether they all finished.
pub async fn serve(mut running: Running, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let stop = crate::app::shutdown_signal();
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        () = &mut stop => break,
                        Some(()) = hup.recv() => {
                            let _ = reload(&mut running, path).await;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; live reload is off");
                crate::app::shutdown_signal().await;
            }
        }
    }
    #[cfg(not(unix))]
    crate::app::shutdown_signal().await;
    let grace = running.config().server.shutdown_grace;
    running.drain(grace).await
}
