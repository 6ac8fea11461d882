//! The client side of TLS towards an `https` upstream, built once at startup.
//!
//! Trust: the system's root certificates (the Debian/Alpine/RHEL bundle, or `SSL_CERT_FILE`
//! / `SSL_CERT_DIR`, read by rustls-native-certs the way the identity-provider client reads
//! them) plus the CAs in `upstream.ca_file`, so a private CA is added, not swapped in.
//! An upstream that asks for a client certificate (mTLS) gets `upstream.client_cert` with
//! `upstream.client_key`. `upstream.insecure_skip_verify` turns verification off, with a
//! warning at every start. ALPN offers `http/1.1` only, unless `upstream.protocol = "auto"`:
//! then `h2, http/1.1`, and the upstream's choice decides the connection's HTTP version.

use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{Upstream, UpstreamProtocol};

/// The upstream connector: plain TCP for `http`, TLS on top for `https`.
pub type Connector = HttpsConnector<HttpConnector>;

/// Why the upstream's TLS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error(
        "no trusted root certificates for the https upstream: the system store is empty or unreadable and upstream.ca_file is not set (set upstream.ca_file, or SSL_CERT_FILE to a CA bundle)"
    )]
    NoRoots,
    #[error("upstream.client_cert / upstream.client_key: {0}")]
    ClientAuth(rustls::Error),
    #[error("upstream TLS: {0}")]
    Config(rustls::Error),
}

/// Builds the connector for `upstream`.
///
/// # Errors
/// [`UpstreamTlsError`]; only for an `https` upstream.
pub fn connector(upstream: &Upstream) -> Result<Connector, UpstreamTlsError> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(upstream.connect_timeout));
    http.set_nodelay(true);
    // The TLS layer decides; the URL's scheme always comes from upstream.url.
    http.enforce_http(false);
    let tls = if upstream.scheme == http::uri::Scheme::HTTPS {
        client_config(upstream)?
    } else {
        // Never used for an http upstream; no need to read the system store.
        ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(UpstreamTlsError::Config)?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    };
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    Ok(if upstream.protocol == UpstreamProtocol::Auto {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.wrap_connector(http)
    })
}

fn client_config(upstream: &Upstream) -> Result<ClientConfig, UpstreamTlsError> {
    let provider = super::provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(UpstreamTlsError::Config)?;
    let tls = &upstream.tls;
    let builder = if tls.insecure_skip_verify {
        tracing::warn!(
            upstream = %upstream.origin,
            "upstream.insecure_skip_verify = true: the upstream's TLS certificate is NOT verified. \
             Anyone on the network path can impersonate the upstream and read every request, \
             bearer tokens included. Use upstream.ca_file instead."
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "some system root certificates could not be read");
        }
        let (system, _unparsable) = roots.add_parsable_certificates(native.certs);
        for ca in &tls.extra_roots {
            roots.add(ca.clone()).map_err(UpstreamTlsError::Config)?;
        }
        if roots.is_empty() {
            return Err(UpstreamTlsError::NoRoots);
        }
        tracing::info!(
            upstream = %upstream.origin,
            system_roots = system,
            ca_file_roots = tls.extra_roots.len(),
            client_certificate = tls.client_identity.is_some(),
            "upstream TLS"
        );
        builder.with_root_certificates(roots)
    };
    match &tls.client_identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(UpstreamTlsError::ClientAuth),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// `upstream.insecure_skip_verify`: any certificate, any name. The handshake's signatures are
/// still checked, so the connection is at least encrypted to whoever answered.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
