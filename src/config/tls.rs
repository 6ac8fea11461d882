//! The TLS keys: `server.tls_cert`/`tls_key`/`tls_reload` and `upstream.ca_file`,
//! `client_cert`, `client_key`, `insecure_skip_verify`.
//!
//! The files are read and parsed here, while the config loads, so a missing, unreadable or
//! mismatched file is a config error naming its key (exit 2) rather than a failure at the
//! first handshake. What is loaded is kept: the listener starts with exactly the certificate
//! that was checked.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::read::Reader;
use crate::pem::{self, Loaded, PairError};

/// `server.tls_cert` + `server.tls_key`: HTTPS on the proxy listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// How often the files are checked for a new certificate; zero = never.
    pub reload: Duration,
    /// The pair as read at load time.
    pub loaded: Loaded,
}

/// TLS towards an `https` upstream.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// `upstream.ca_file`: trusted in addition to the system's roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// `upstream.client_cert` + `upstream.client_key`, for an upstream that requires mTLS.
    pub client_identity: Option<ClientIdentity>,
    /// `upstream.insecure_skip_verify`.
    pub insecure_skip_verify: bool,
}

/// A client certificate chain and its key.
#[derive(Clone)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for ClientIdentity {
    // Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientIdentity {{ certs: {} }}", self.chain.len())
    }
}

type ReadFile<'a> = &'a dyn Fn(&str) -> std::io::Result<String>;

/// A path key; an empty value (e.g. from the environment) counts as unset.
fn path(r: &mut Reader, key: &str) -> Option<String> {
    r.opt_string(key).filter(|p| !p.trim().is_empty())
}

fn read(r: &mut Reader, key: &str, path: &str, read_file: ReadFile<'_>) -> Option<String> {
    match read_file(path) {
        Ok(text) => Some(text),
        Err(e) => {
            r.problem(key, format!("cannot read {path:?}: {e}"));
            None
        }
    }
}

/// Reads a certificate/key pair, blaming each problem on the key it comes from.
fn pair(
    r: &mut Reader,
    (cert_key, cert_path): (&str, &str),
    (key_key, key_path): (&str, &str),
    read_file: ReadFile<'_>,
) -> Option<(Loaded, String)> {
    let cert = read(r, cert_key, cert_path, read_file);
    let key = read(r, key_key, key_path, read_file);
    let (cert, key) = (cert?, key?);
    match Loaded::from_pem(&cert, &key) {
        Ok(loaded) => Some((loaded, key)),
        Err(PairError::Cert(m)) => {
            r.problem(cert_key, format!("{cert_path:?} {m}"));
            None
        }
        Err(PairError::Key(m)) => {
            r.problem(key_key, format!("{key_path:?} {m}"));
            None
        }
        Err(PairError::Mismatch) => {
            r.problem(
                key_key,
                format!("{key_path:?} is not the private key of the certificate in {cert_key}"),
            );
            None
        }
    }
}

/// `[server]` TLS; `None` = plain HTTP.
pub(super) fn read_server_tls(r: &mut Reader, read_file: ReadFile<'_>) -> Option<ServerTls> {
    let cert = path(r, "server.tls_cert");
    let key = path(r, "server.tls_key");
    let reload = r.duration("server.tls_reload", "10s");
    match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            r.problem("server.tls_key", "required when server.tls_cert is set");
            None
        }
        (None, Some(_)) => {
            r.problem("server.tls_cert", "required when server.tls_key is set");
            None
        }
        (Some(cert), Some(key)) => {
            let (loaded, _) = pair(
                r,
                ("server.tls_cert", &cert),
                ("server.tls_key", &key),
                read_file,
            )?;
            Some(ServerTls {
                cert_path: PathBuf::from(cert),
                key_path: PathBuf::from(key),
                reload,
                loaded,
            })
        }
    }
}

/// `[upstream]` TLS. Every key is refused with an `http` upstream, where it would do nothing.
pub(super) fn read_upstream_tls(
    r: &mut Reader,
    read_file: ReadFile<'_>,
    https: bool,
) -> UpstreamTls {
    let ca_file = path(r, "upstream.ca_file");
    let client_cert = path(r, "upstream.client_cert");
    let client_key = path(r, "upstream.client_key");
    let insecure_skip_verify = r.bool("upstream.insecure_skip_verify", false);
    if !https {
        for (key, set) in [
            ("upstream.ca_file", ca_file.is_some()),
            ("upstream.client_cert", client_cert.is_some()),
            ("upstream.client_key", client_key.is_some()),
            ("upstream.insecure_skip_verify", insecure_skip_verify),
        ] {
            if set {
                r.problem(key, "only used with an https upstream.url");
            }
        }
        return UpstreamTls::default();
    }
    if insecure_skip_verify && ca_file.is_some() {
        r.problem(
            "upstream.insecure_skip_verify",
            "contradicts upstream.ca_file (with verification off no CA is used); remove one",
        );
    }
    let extra_roots = ca_file
        .and_then(|p| ca_roots(r, &p, read_file))
        .unwrap_or_default();
    let client_identity = match (client_cert, client_key) {
        (None, None) => None,
        (Some(_), None) => {
            r.problem(
                "upstream.client_key",
                "required when upstream.client_cert is set",
            );
            None
        }
        (None, Some(_)) => {
            r.problem(
                "upstream.client_cert",
                "required when upstream.client_key is set",
            );
            None
        }
        (Some(cert), Some(key)) => pair(
            r,
            ("upstream.client_cert", &cert),
            ("upstream.client_key", &key),
            read_file,
        )
        .and_then(|(loaded, key_pem)| {
            Some(ClientIdentity {
                chain: loaded.key.cert.clone(),
                key: Arc::new(pem::parse_key(&key_pem).ok()?),
            })
        }),
    };
    UpstreamTls {
        extra_roots,
        client_identity,
        insecure_skip_verify,
    }
}

/// The CAs of `upstream.ca_file`, each checked to be usable as a trust anchor.
fn ca_roots(
    r: &mut Reader,
    path: &str,
    read_file: ReadFile<'_>,
) -> Option<Vec<CertificateDer<'static>>> {
    let text = read(r, "upstream.ca_file", path, read_file)?;
    let certs = match pem::parse_certs(&text) {
        Ok(c) => c,
        Err(m) => {
            r.problem("upstream.ca_file", format!("{path:?} {m}"));
            return None;
        }
    };
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        if let Err(e) = store.add(cert.clone()) {
            r.problem(
                "upstream.ca_file",
                format!(
                    "{path:?}: certificate #{} is not usable as a CA: {e}",
                    i + 1
                ),
            );
            return None;
        }
    }
    Some(certs)
}
