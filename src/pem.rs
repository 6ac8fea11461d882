//! PEM files into rustls types: certificates, private keys, a checked pair. The config loader
//! reads the files with these (so a bad file is a config error naming its key) and the TLS
//! listener and upstream client use what was loaded. Once at startup or on a reload, never
//! per request. A leaf: it knows nothing of the gateway.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The process's one crypto provider: aws-lc-rs, as token verification and `reqwest` use.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What is wrong with a certificate/key pair; the caller knows which key or file it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairError {
    /// The certificate file: no certificate, or not PEM.
    Cert(String),
    /// The key file: no key, not PEM, an unsupported key type.
    Key(String),
    /// Both parse, but the key is not the certificate's.
    Mismatch,
}

impl fmt::Display for PairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cert(m) | Self::Key(m) => f.write_str(m),
            Self::Mismatch => f.write_str("the private key does not belong to the certificate"),
        }
    }
}

/// Every certificate in a PEM text, in order (leaf first for a chain).
///
/// # Errors
/// No `CERTIFICATE` block, or a block that is not valid PEM.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM \"CERTIFICATE\" block".into());
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in a PEM text.
///
/// # Errors
/// No key block, or not valid PEM. The key's bytes never appear in the message.
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "holds no PEM private key (\"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")"
                .to_owned()
        }
        other => format!("not a PEM private key file: {other}"),
    })
}

/// A certificate chain with its private key, checked to belong together.
///
/// # Errors
/// [`PairError`], naming which half is at fault.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, PairError> {
    let certs = parse_certs(cert_pem).map_err(PairError::Cert)?;
    let key = parse_key(key_pem).map_err(PairError::Key)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => PairError::Mismatch,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            PairError::Cert(format!("not a usable certificate: {e}"))
        }
        other => PairError::Key(format!("not a usable private key: {other}")),
    })
}

/// A loaded listener certificate and the digest of the files it came from (to notice a
/// change without parsing again).
#[derive(Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub digest: [u8; 32],
}

impl Loaded {
    /// Parses a certificate file's and a key file's contents.
    ///
    /// # Errors
    /// [`PairError`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PairError> {
        let key = certified_key(cert_pem, key_pem)?;
        Ok(Self {
            key: Arc::new(key),
            digest: digest(cert_pem, key_pem),
        })
    }
}

impl fmt::Debug for Loaded {
    // Never the key; the digest prefix is enough to tell two loads apart in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Loaded {{ certs: {}, digest: {:02x}{:02x}{:02x}{:02x}… }}",
            self.key.cert.len(),
            self.digest[0],
            self.digest[1],
            self.digest[2],
            self.digest[3]
        )
    }
}

/// SHA-256 over both files' contents (length-prefixed, so no two pairs collide by shifting).
#[must_use]
pub fn digest(cert_pem: &str, key_pem: &str) -> [u8; 32] {
    digest_bytes(&[cert_pem.as_bytes(), key_pem.as_bytes()])
}

/// SHA-256 of `parts`, each length-prefixed: what a file watcher compares to tell whether a
/// file (or the failure reading it) changed since it last looked.
#[must_use]
pub fn digest_bytes(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads() {
        let (cert, key) = pair("localhost");
        let loaded = Loaded::from_pem(&cert, &key).expect("loads");
        assert_eq!(loaded.key.cert.len(), 1);
        assert_eq!(loaded.digest, digest(&cert, &key));
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    #[test]
    fn each_half_is_blamed_for_its_own_fault() {
        let (cert, key) = pair("localhost");
        let (_, other_key) = pair("other");
        assert!(matches!(certified_key("", &key), Err(PairError::Cert(_))));
        assert!(matches!(
            certified_key(
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
                &key
            ),
            Err(PairError::Cert(_))
        ));
        assert!(matches!(certified_key(&cert, ""), Err(PairError::Key(_))));
        assert!(matches!(
            certified_key(&cert, &cert),
            Err(PairError::Key(_))
        ));
        assert_eq!(
            certified_key(&cert, &other_key).err(),
            Some(PairError::Mismatch)
        );
    }

    #[test]
    fn the_digest_sees_any_change() {
        assert_ne!(digest("ab", "c"), digest("a", "bc"));
        assert_ne!(digest("a", "b"), digest("a", "b\n"));
    }
}
