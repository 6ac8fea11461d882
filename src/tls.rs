//! TLS, with one crypto stack (rustls on aws-lc-rs, the same as token validation uses).
//!
//! - [`reload`]: the listener's certificate, held in an `ArcSwap` and swapped when the files
//!   change on disk (cert-manager rotates them in place), so established connections keep
//!   the certificate they were opened with and new ones see the new one;
//! - [`listener`]: the server configuration (TLS 1.2+, HTTP/2 and HTTP/1.1 by ALPN), used by
//!   the one accept loop in [`crate::server`];
//! - [`upstream`]: the client side towards an `https` upstream (system roots plus
//!   `upstream.ca_file`, optional client certificate).
//!
//! Reading PEM files into rustls types, which the config loader also does, is [`crate::pem`].

pub mod listener;
pub mod reload;
pub mod upstream;

use std::sync::Arc;

pub use crate::pem::provider;
pub use reload::CertResolver;

/// Sets up HTTPS for the proxy listener: the resolver with the certificate loaded with the
/// config, the server configuration, and the reload task (none when `server.tls_reload` is
/// zero).
///
/// # Errors
/// Only if the crypto provider lacks the protocol versions (it does not).
pub fn start(
    cfg: &crate::config::ServerTls,
    counters: Arc<reload::ReloadCounters>,
) -> Result<
    (
        Arc<rustls::ServerConfig>,
        Option<tokio::task::JoinHandle<()>>,
    ),
    rustls::Error,
> {
    let resolver = Arc::new(CertResolver::new(Arc::clone(&cfg.loaded.key)));
    let server_config = listener::server_config(Arc::clone(&resolver))?;
    let task = reload::spawn(
        resolver,
        reload::Watch {
            cert_path: cfg.cert_path.clone(),
            key_path: cfg.key_path.clone(),
            every: cfg.reload,
            loaded_digest: cfg.loaded.digest,
        },
        counters,
    );
    Ok((Arc::new(server_config), task))
}
