//! The listener's certificate, reloaded from disk without a restart.
//!
//! cert-manager (and a Kubernetes Secret volume generally) replaces `tls.crt` and `tls.key` in
//! place. A background task reads both files every `server.tls_reload`; when their contents
//! differ from what it saw last, it parses them and, if they form a valid pair, swaps the new
//! certificate into the resolver. rustls asks the resolver once per handshake, so connections
//! already established keep the certificate they were opened with and every new one gets the
//! new certificate. A pair that does not load (unreadable, not PEM, key not matching, files
//! copied one after the other and caught in between) is logged once and counted, and the
//! current certificate stays. A certificate that changes while the pair is being read is
//! simply read again at the next look.
//!
//! Contents are compared, not modification times: a swap within the same second, or a
//! symlink flip that keeps the old time, is still seen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;

use crate::pem::{Loaded, PairError, digest};

/// Hands every TLS handshake the current certificate; lock-free.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    #[must_use]
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: ArcSwap::new(initial),
        }
    }

    /// The certificate new connections get.
    #[must_use]
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    fn replace(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

pub use crate::metrics::ReloadCounters;

/// Where the files are and how often to look.
#[derive(Debug, Clone)]
pub struct Watch {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Zero: never reload.
    pub every: Duration,
    /// Digest of the contents the resolver's certificate was loaded from.
    pub loaded_digest: [u8; 32],
}

/// Starts the reload task (none when `watch.every` is zero).
#[must_use]
pub fn spawn(
    resolver: Arc<CertResolver>,
    watch: Watch,
    counters: Arc<ReloadCounters>,
) -> Option<JoinHandle<()>> {
    if watch.every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut last_seen = watch.loaded_digest;
        let mut tick = tokio::time::interval(watch.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the files were just loaded
        loop {
            tick.tick().await;
            check_once(&resolver, &watch, &counters, &mut last_seen).await;
        }
    }))
}

/// One look at the files; acts only when their contents changed since the last look.
async fn check_once(
    resolver: &CertResolver,
    watch: &Watch,
    counters: &ReloadCounters,
    last_seen: &mut [u8; 32],
) {
    let (cert, key) = match read_pair(&watch.cert_path, &watch.key_path).await {
        Ok(Some(pair)) => pair,
        // The files changed while being read: look again at the next tick.
        Ok(None) => return,
        Err((key_name, message)) => {
            // The same failure is reported once, not every few seconds.
            let seen = digest(key_name, &message);
            if seen != *last_seen {
                *last_seen = seen;
                counters.error.inc();
                tracing::warn!(
                    key = key_name,
                    error = %message,
                    "TLS certificate not reloaded; keeping the current one"
                );
            }
            return;
        }
    };
    let seen = digest(&cert, &key);
    if seen == *last_seen {
        return;
    }
    *last_seen = seen;
    match Loaded::from_pem(&cert, &key) {
        Ok(loaded) => {
            resolver.replace(loaded.key);
            counters.ok.inc();
            tracing::info!(
                cert = %watch.cert_path.display(),
                "TLS certificate reloaded; new connections use it"
            );
        }
        Err(e) => {
            counters.error.inc();
            let key_name = match e {
                PairError::Cert(_) => "server.tls_cert",
                PairError::Key(_) | PairError::Mismatch => "server.tls_key",
            };
            tracing::warn!(
                key = key_name,
                error = %e,
                "TLS certificate not reloaded; keeping the current one"
            );
        }
    }
}

/// Both files; `None` when the certificate changed while the key was being read (a swap
/// between the two reads would otherwise pair the old certificate with the new key).
async fn read_pair(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Option<(String, String)>, (&'static str, String)> {
    let read = |key_name: &'static str, path: &Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| (key_name, format!("cannot read {}: {e}", path.display())))
        }
    };
    let cert = read("server.tls_cert", cert_path).await?;
    let key = read("server.tls_key", key_path).await?;
    let again = read("server.tls_cert", cert_path).await?;
    Ok((again == cert).then_some((cert, key)))
}
