//! Assembling the gateway: the one request stack, the listeners (main, admin, and Envoy
//! `ext_authz` when configured), and graceful shutdown.
//!
//! This is the only place that decides the order of layers; each says why it sits where it
//! does. Tests start the same thing on port 0 through [`start`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, Mode};
use crate::ext_authz::{self, ExtAuthz};
use crate::gateway::{Gateway, SharedGateway};
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::server::{self, Handler, Limits};
use crate::trace::Tracing;

mod front;

pub use front::Front;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the identity-provider HTTP client: {0}")]
    HttpClient(String),
    #[error(transparent)]
    Gateway(#[from] crate::gateway::BuildError),
    #[error("TLS listener: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Tracing(#[from] crate::trace::StartError),
    /// `entra.jwks_file` gives no usable keys: a config error.
    #[error("entra.jwks_file: {path}: {error}")]
    KeyFile {
        path: String,
        error: crate::keys::FetchError,
    },
}

impl StartupError {
    /// True when the config is at fault (exit code 2, as for a config that does not load).
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(self, Self::KeyFile { .. })
    }
}

/// A started gateway.
pub struct Running {
    /// The proxy listener's bound address.
    pub addr: SocketAddr,
    /// The admin listener's bound address.
    pub admin_addr: SocketAddr,
    /// The Envoy `ext_authz` gRPC listener's bound address, when configured.
    pub ext_authz_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    /// What every request reads; [`Running::apply`] swaps it.
    gateway: SharedGateway,
    /// The config last applied.
    config: Config,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    refreshers: Vec<JoinHandle<()>>,
    /// The trace exporter (`[telemetry]`), flushed on shutdown.
    tracing: Option<Arc<Tracing>>,
}

/// How long shutdown waits for the last spans to reach the collector.
const TRACE_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// What [`Running::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Keys whose new value takes effect only after a restart (listener addresses,
    /// `server.mode`, log format, `max_in_flight`, connection limits, the listener's TLS
    /// files), with the value still in force.
    pub restart_needed: Vec<(&'static str, String)>,
    /// Key sources that are new with this config (their keys were fetched before the swap).
    pub new_key_sources: Vec<String>,
}

/// Builds the HTTP client used for the identity provider's metadata and keys.
///
/// # Errors
/// When the TLS stack cannot be initialised.
pub fn idp_client(timeout: Duration) -> Result<reqwest::Client, StartupError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("entragate/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| StartupError::HttpClient(e.to_string()))
}

/// Binds the listeners and starts serving; keys load in the background (`/readyz` says when).
///
/// # Errors
/// A listener that cannot bind, or a client that cannot be built.
pub async fn start(config: &Config) -> Result<Running, StartupError> {
    let backlog = config.server.limits.listen_backlog;
    let listener = bind("server.listen", config.server.listen, backlog)?;
    let admin_listener = bind("server.admin_listen", config.server.admin_listen, backlog)?;
    let addr = local_addr("server.listen", &listener)?;
    let admin_addr = local_addr("server.admin_listen", &admin_listener)?;
    let ext_authz_listener = match config.server.ext_authz_listen {
        Some(a) => Some(bind("server.ext_authz_listen", a, backlog)?),
        None => None,
    };
    let ext_authz_addr = ext_authz_listener
        .as_ref()
        .map(|l| local_addr("server.ext_authz_listen", l))
        .transpose()?;

    let metrics = Arc::new(Metrics::new());
    let client = idp_client(config.entra.metadata_timeout)?;
    let keys = Arc::new(KeyStore::new(
        &config.key_entra(),
        &config.oidc,
        &client,
        &metrics,
    ));
    keys.load_files()
        .await
        .map_err(|(path, error)| StartupError::KeyFile { path, error })?;
    let mut refreshers = keys.spawn_refresh();
    // glibc keeps a burst's freed memory: given back once it is worth it (src/server/trim.rs).
    refreshers.push(tokio::spawn(server::trim_allocator_after_bursts()));
    let mut built = Gateway::build(config, keys, &metrics, config.server.tls.is_some())?;
    // Traces: one exporter for the life of the process (a change needs a restart).
    let tracing = match &config.telemetry.otlp {
        Some(otlp) => Some(Tracing::start(otlp, metrics.traces.clone())?),
        None => None,
    };
    built.tracing.clone_from(&tracing);
    // The shared revocation list is in force from the first request (bounded by
    // limits_store.timeout; the file was read by build).
    built.revocations.refresh().await;
    let gateway: SharedGateway = Arc::new(ArcSwap::from_pointee(built));

    let (shutdown, signal) = watch::channel(false);
    let mode = config.server.mode;
    warn_untrusted_forward_auth(config);
    let mut servers = Vec::with_capacity(3);
    // Envoy's ext_authz is a second front end on its own listener, in any mode: it shares the
    // gateway (decision, challenges, identity headers, metrics, and a reload's swap) and
    // replaces only the last step. It has none of the HTTP layers above: the client's request
    // (and its token) arrives as message data, never as headers of this connection, and its
    // request id is read from that data for the decision log.
    if let Some(l) = ext_authz_listener {
        servers.push(ext_authz::serve(
            l,
            ExtAuthz::new(Arc::clone(&gateway)),
            signal.clone(),
        ));
    }
    let main = Front::new(
        mode,
        Arc::clone(&gateway),
        config.server.max_in_flight,
        Arc::clone(&metrics),
    );
    let admin = crate::admin::router(Arc::clone(&gateway), Arc::clone(&metrics));
    // HTTPS when server.tls_cert/tls_key are set; the certificate reloader stops with the
    // key refreshers. The admin listener stays plain HTTP: probes and scrapers are local.
    let tls = match &config.server.tls {
        None => None,
        Some(tls) => {
            let (tls_config, reloader) = crate::tls::start(tls, Arc::clone(&metrics.tls_reloads))?;
            refreshers.extend(reloader);
            Some(tls_config)
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let workers = crate::worker::count(config.server.limits.workers);
    servers.push(tokio::spawn({
        let (limits, signal) = (config.server.limits, signal.clone());
        async move {
            if let Err(e) =
                server::serve_on_workers(listener, main, limits, tls, signal, workers).await
            {
                tracing::error!(error = %e, "the main listener's workers could not start");
            }
        }
    }));
    servers.push(serve(
        admin_listener,
        admin,
        Limits::default(),
        None,
        signal,
    ));
    tracing::info!(
        %addr,
        %admin_addr,
        scheme,
        ext_authz_addr = ext_authz_addr.map(tracing::field::display),
        mode = mode.as_str(),
        "entragate listening"
    );
    Ok(Running {
        addr,
        admin_addr,
        ext_authz_addr,
        metrics,
        gateway,
        config: config.clone(),
        shutdown,
        servers,
        refreshers,
        tracing,
    })
}

/// In forward-auth mode the ingress's headers name the request decided on; without
/// `server.trusted_proxies` none are believed. Said at startup and on each reload.
fn warn_untrusted_forward_auth(config: &Config) {
    if config.server.mode == Mode::ForwardAuth && config.server.trusted_proxies.is_empty() {
        tracing::warn!(
            "server.mode is \"forward-auth\" but server.trusted_proxies is empty: the ingress's X-Forwarded-Uri / X-Original-URL headers are ignored and route rules see the auth request's own path"
        );
    }
}

impl Running {
    /// The key store requests are validated against now.
    #[must_use]
    pub fn keys(&self) -> Arc<KeyStore> {
        Arc::clone(self.gateway.load().validator.keys())
    }

    /// The config last applied.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces routes, audiences, issuers, challenges, identity headers and upstream with
    /// those of `config`, atomically: requests already under way finish with the old ones,
    /// and no connection is dropped. Key sources that fetch the same documents as before
    /// are kept with their keys; new ones are fetched (for at most
    /// `entra.metadata_timeout`) before the swap, so tokens of a new tenant are not met with
    /// 503 while its keys load. Every front end (proxy, forward-auth, `ext_authz`) reads the
    /// swapped gateway. Listener addresses, `server.mode`, the log format, `max_in_flight`,
    /// the connection limits and the listener's TLS files cannot change in a running process:
    /// they are reported in [`Applied::restart_needed`].
    ///
    /// # Errors
    /// When the new config's HTTP client or challenge headers cannot be built; the old
    /// config then keeps serving.
    pub async fn apply(&mut self, config: &Config) -> Result<Applied, StartupError> {
        let current = self.gateway.load_full();
        let old_keys = current.validator.keys();
        let client = idp_client(config.entra.metadata_timeout)?;
        let keys = Arc::new(KeyStore::reusing(
            &config.key_entra(),
            &config.oidc,
            &client,
            &self.metrics,
            Some(old_keys),
        ));
        let fresh = keys.unstarted(Some(old_keys));
        let mut gateway = Gateway::build(
            config,
            Arc::clone(&keys),
            &self.metrics,
            self.config.server.tls.is_some(),
        )?;
        if let (Some(new), Some(old)) = (gateway.limiter.as_mut(), current.limiter.as_ref()) {
            new.keep_counters_of(old);
        }
        gateway.tracing.clone_from(&self.tracing);
        // A new key file that gives no keys keeps the old config serving.
        for source in &fresh {
            if let Some(path) = source.file_path() {
                source
                    .refresh()
                    .await
                    .map_err(|error| StartupError::KeyFile {
                        path: path.display().to_string(),
                        error,
                    })?;
            }
        }
        let first_fetches = fresh.iter().map(|s| s.refresh());
        let _ = tokio::time::timeout(
            config.entra.metadata_timeout,
            futures_util::future::join_all(first_fetches),
        )
        .await;
        gateway.revocations.refresh().await;
        self.refreshers.retain(|r| !r.is_finished());
        self.refreshers
            .extend(fresh.iter().map(|s| tokio::spawn(Arc::clone(s).run())));
        self.gateway.store(Arc::new(gateway));

        let mut restart_needed = Vec::new();
        let bound_telemetry = self.config.telemetry.clone();
        let bound = &self.config.server;
        if config.server.listen != bound.listen {
            restart_needed.push(("server.listen", bound.listen.to_string()));
        }
        if config.server.admin_listen != bound.admin_listen {
            restart_needed.push(("server.admin_listen", bound.admin_listen.to_string()));
        }
        if config.server.log_format != bound.log_format {
            restart_needed.push(("server.log_format", format!("{:?}", bound.log_format)));
        }
        if config.server.mode != bound.mode {
            restart_needed.push(("server.mode", bound.mode.as_str().to_owned()));
        }
        if config.server.ext_authz_listen != bound.ext_authz_listen {
            restart_needed.push((
                "server.ext_authz_listen",
                bound
                    .ext_authz_listen
                    .map_or_else(|| "off".to_owned(), |a| a.to_string()),
            ));
        }
        if config.server.max_in_flight != bound.max_in_flight {
            restart_needed.push(("server.max_in_flight", bound.max_in_flight.to_string()));
        }
        if !same_listener_tls(config.server.tls.as_ref(), bound.tls.as_ref()) {
            restart_needed.push((
                "server.tls_cert, tls_key, tls_reload",
                bound.tls.as_ref().map_or_else(
                    || "off".to_owned(),
                    |t| format!("{} every {:?}", t.cert_path.display(), t.reload),
                ),
            ));
        }
        if config.server.limits != bound.limits {
            restart_needed.push((
                "server.max_connections, header_read_timeout, max_header_bytes, listen_backlog, workers",
                format!("{:?}", bound.limits),
            ));
        }
        if config.telemetry != bound_telemetry {
            restart_needed.push((
                "telemetry.*",
                bound_telemetry.otlp.as_ref().map_or_else(
                    || "off".to_owned(),
                    |o| format!("{} ({})", o.endpoint, o.protocol.as_str()),
                ),
            ));
        }
        // What cannot change stays as it is in force, so the next comparison is against it.
        let mut applied = config.clone();
        applied.telemetry = bound_telemetry;
        applied.server.listen = bound.listen;
        applied.server.admin_listen = bound.admin_listen;
        applied.server.log_format = bound.log_format;
        applied.server.mode = bound.mode;
        applied.server.ext_authz_listen = bound.ext_authz_listen;
        applied.server.max_in_flight = bound.max_in_flight;
        applied.server.limits = bound.limits;
        applied.server.tls.clone_from(&bound.tls);
        warn_untrusted_forward_auth(&applied);
        self.config = applied;
        Ok(Applied {
            restart_needed,
            new_key_sources: fresh.iter().map(|s| s.name.clone()).collect(),
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then stops.
    /// Returns false when the grace period ran out with requests still open.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        for r in &self.refreshers {
            r.abort();
        }
        let all = futures_util::future::join_all(self.servers);
        let drained = tokio::time::timeout(grace, all).await.is_ok();
        if let Some(tracing) = &self.tracing {
            tracing.shutdown(TRACE_FLUSH_WAIT).await;
        }
        drained
    }

    /// The trace exporter, when `[telemetry]` is on.
    #[must_use]
    pub fn tracing(&self) -> Option<&Arc<Tracing>> {
        self.tracing.as_ref()
    }

    /// Waits until a shutdown signal (SIGTERM or SIGINT), then [`Running::drain`].
    pub async fn run_until_signal(self, grace: Duration) -> bool {
        shutdown_signal().await;
        self.drain(grace).await
    }

    /// [`Running::shutdown`], saying so in the log.
    pub async fn drain(self, grace: Duration) -> bool {
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "shutting down: draining in-flight requests"
        );
        let drained = self.shutdown(grace).await;
        if drained {
            tracing::info!("all requests finished; bye");
        } else {
            tracing::warn!("grace period over with requests still open; closing them");
        }
        drained
    }
}

/// Whether two `server.tls_*` settings describe the same listener: TLS on or off, the same
/// files, the same reload interval. (New contents of the same files need no restart: the
/// reloader picks them up.)
fn same_listener_tls(
    a: Option<&crate::config::ServerTls>,
    b: Option<&crate::config::ServerTls>,
) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.cert_path == b.cert_path && a.key_path == b.key_path && a.reload == b.reload
        }
        _ => false,
    }
}

/// Raises the soft limit of open files to the hard limit (as Go's runtime and nginx's
/// `worker_rlimit_nofile` do): a shell or unit default of 1,024 would otherwise refuse
/// connections long before `server.max_connections`. Warns when even the hard limit is below
/// what the configured connection caps may use.
pub fn raise_open_files_limit(config: &Config) {
    let needed = config.server.limits.max_connections
        + config
            .apis
            .iter()
            .map(|a| config.upstream_of(a))
            .map(|u| u.max_connections + u.max_idle_connections)
            .sum::<usize>()
        + 64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed as u64 => tracing::warn!(
            limit,
            needed,
            "the open files limit is below what server.max_connections and \
             upstream.max_connections may use; raise the hard limit (ulimit -Hn, systemd \
             LimitNOFILE=, the container runtime's --ulimit nofile=) or lower them"
        ),
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open files limit"),
    }
}

/// Binds `addr` with `SO_REUSEADDR` (as `TcpListener::bind` does) and a `listen(2)` backlog
/// of `backlog` (`TcpListener::bind` uses 128, which a burst of new connections overflows).
fn bind(key: &'static str, addr: SocketAddr, backlog: u32) -> Result<TcpListener, StartupError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    socket
        .and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(backlog)
        })
        .map_err(|source| StartupError::Bind { key, addr, source })
}

fn local_addr(key: &'static str, l: &TcpListener) -> Result<SocketAddr, StartupError> {
    l.local_addr().map_err(|source| StartupError::Bind {
        key,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

/// Runs [`server::serve`] in its own task.
fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    signal: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(server::serve(listener, handler, limits, tls, signal))
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
