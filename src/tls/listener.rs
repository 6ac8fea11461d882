//! The listener side of TLS: TLS 1.3 and 1.2, HTTP/2 and HTTP/1.1 offered by ALPN, and the
//! certificate taken from the reloading resolver at every handshake.
//!
//! The accept loop itself is the plain listener's ([`crate::server::serve`]): the same
//! connection cap, the same limits and the same graceful shutdown, with the handshake added
//! in each connection's task and bounded by `server.header_read_timeout`. hyper-util's auto
//! builder then speaks whichever protocol the client chose.

use std::sync::Arc;

use rustls::ServerConfig;

use super::CertResolver;

/// ALPN, in the server's order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The server side TLS configuration, built once: TLS 1.3 and 1.2 only, no client
/// certificates, the certificate from `resolver` at every handshake.
///
/// # Errors
/// Only if the crypto provider lacks the protocol versions (it does not).
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
