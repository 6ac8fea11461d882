//! HTTPS for the dev issuer: MSAL accepts only an `https` authority. A certificate
//! authority is generated at startup (never stored beyond the process's run), its
//! certificate written to a file that clients trust (`verify=` in MSAL Python,
//! `NODE_EXTRA_CA_CERTS` in Node, `curl --cacert`), and a server certificate it signs for
//! `localhost` and `127.0.0.1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::pem;

/// A generated CA and the issuer's server certificate.
pub struct DevTls {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server's rustls configuration (HTTP/2 and HTTP/1.1 by ALPN).
    pub server: Arc<rustls::ServerConfig>,
}

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DevTlsError {
    #[error("generating the dev CA: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the dev certificate: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the dev certificate: {0}")]
    Pem(String),
    #[error("writing the dev CA certificate to {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl DevTls {
    /// Generates a CA and a server certificate for `localhost` and `127.0.0.1`.
    ///
    /// # Errors
    /// When generation fails (a broken crypto library, not input).
    pub fn generate() -> Result<Self, DevTlsError> {
        let mut ca = CertificateParams::new(Vec::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, "entragate dev issuer CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "entragate dev issuer");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

        let certs = pem::parse_certs(&leaf_cert.pem()).map_err(DevTlsError::Pem)?;
        let key = pem::parse_key(&leaf_key.serialize_pem()).map_err(DevTlsError::Pem)?;
        let mut server = rustls::ServerConfig::builder_with_provider(pem::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem,
            server: Arc::new(server),
        })
    }

    /// Writes the CA certificate to `path`, or to a file of its own in the temp directory.
    /// Returns the path written.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_ca(&self, path: Option<&str>) -> Result<PathBuf, DevTlsError> {
        let path = path.map_or_else(
            || {
                std::env::temp_dir().join(format!(
                    "entragate-dev-ca-{}-{}.pem",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ))
            },
            PathBuf::from,
        );
        write(&path, &self.ca_pem).map_err(|source| DevTlsError::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok(path)
    }
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_file_holds_the_ca_and_a_temp_one_is_new_each_time() {
        let t = DevTls::generate().expect("generate");
        let a = t.write_ca(None).expect("write");
        let b = t.write_ca(None).expect("write");
        assert_ne!(a, b, "two issuers never share a file");
        let text = std::fs::read_to_string(&a).expect("read");
        assert_eq!(text, t.ca_pem);
        assert_eq!(pem::parse_certs(&text).expect("PEM").len(), 1);
        assert_eq!(
            t.server.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let _ = std::fs::remove_file(a);
        let _ = std::fs::remove_file(b);
    }
}
