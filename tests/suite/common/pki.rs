//! A throwaway certificate authority for the TLS tests, TLS clients that trust only it, and
//! temporary directories for certificate files. Nothing here is committed key material:
//! every key is generated when the test runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A certificate with its key, PEM, and the certificate's DER (to compare with what a
/// server presented).
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
}

/// A CA that signs server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA cert");
        Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    fn leaf(&self, cn: &str, usage: ExtendedKeyUsagePurpose) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self, cn: &str) -> Pair {
        self.leaf(cn, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for mTLS).
    pub fn client(&self, cn: &str) -> Pair {
        self.leaf(cn, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A root store holding only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA PEM"))
            .expect("CA usable");
        roots
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS client that trusts only `ca` and offers `alpn`.
pub fn client_config(ca: &Ca, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens a TLS connection to `addr` for the name `localhost`.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

/// The DER of the certificate the server presented.
pub fn presented(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("server presented a certificate")
}

/// The protocol agreed by ALPN.
pub fn alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// A directory under the temp dir, removed with its contents when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "entragate-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write");
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Kubernetes Secret volume's layout, as the kubelet writes it: `tls.crt` and `tls.key` are
/// symlinks into `..data`, itself a symlink to a timestamped directory; an update writes a new
/// directory and swaps `..data` with one rename, so both files change at the same instant.
pub struct SecretVolume {
    pub dir: TempDir,
    generation: u32,
}

impl SecretVolume {
    pub fn new(pair: &Pair) -> Self {
        let dir = TempDir::new("secret-volume");
        std::os::unix::fs::symlink("..data/tls.crt", dir.path("tls.crt")).expect("symlink");
        std::os::unix::fs::symlink("..data/tls.key", dir.path("tls.key")).expect("symlink");
        let mut v = Self { dir, generation: 0 };
        v.update(&pair.cert, &pair.key);
        v
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path("tls.crt")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path("tls.key")
    }

    /// Publishes new contents atomically.
    pub fn update(&mut self, cert: &str, key: &str) {
        self.generation += 1;
        let version = format!("..v{}", self.generation);
        let version_dir = self.dir.path(&version);
        std::fs::create_dir(&version_dir).expect("version dir");
        std::fs::write(version_dir.join("tls.crt"), cert).expect("write cert");
        std::fs::write(version_dir.join("tls.key"), key).expect("write key");
        let tmp = self.dir.path("..data_tmp");
        std::os::unix::fs::symlink(Path::new(&version), &tmp).expect("symlink");
        std::fs::rename(&tmp, self.dir.path("..data")).expect("swap ..data");
    }
}
