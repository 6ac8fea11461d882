//! The identity provider over HTTPS, trusted the way the container image trusts Microsoft
//! Entra ID: through the CA bundle that `SSL_CERT_FILE` names. The real binary fetches the
//! tenant's metadata from an HTTPS front of the embedded issuer; with the right bundle it
//! becomes ready, with a bundle that lacks the issuer's CA it does not.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{self, Ca, TempDir};
use common::{AUDIENCE, TENANT, free_port, loopback};
use entragate::dev::DevIssuer;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Terminates TLS with `pair` and relays the bytes to `target` (the plain-HTTP issuer).
async fn tls_front(pair: &pki::Pair, target: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let config = rustls::ServerConfig::builder_with_provider(pki::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pair.cert.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).expect("key"),
        )
        .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (addr, task)
}

/// `entragate serve` with the authority at `authority` and `SSL_CERT_FILE=bundle`; returns
/// whether `/readyz` answered 200 within `within`.
async fn ready_with_bundle(
    dir: &TempDir,
    authority: &str,
    bundle: &Path,
    within: Duration,
) -> bool {
    let admin = free_port();
    let config = dir.file(
        &format!("entragate-{admin}.toml"),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[entra]\ntenant_id = \"{TENANT}\"\naudiences = [\"{AUDIENCE}\"]\nauthority = \"{authority}\"\n",
            free_port()
        ),
    );
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_entragate"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env("SSL_CERT_FILE", bundle)
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("ENTRAGATE_") {
            cmd.env_remove(name);
        }
    }
    let _child = cmd.spawn().expect("spawn entragate");
    let client = common::client();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn the_identity_provider_is_trusted_through_ssl_cert_file() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let ca = Ca::new("identity provider CA");
    let (front, _task) = tls_front(&ca.server("login"), issuer.addr).await;
    let authority = format!("https://localhost:{}", front.port());
    let dir = TempDir::new("idp-bundle");
    let right = dir.file("right.pem", &ca.pem);
    let wrong = dir.file("wrong.pem", &Ca::new("another CA").pem);

    let (trusted, untrusted) = tokio::join!(
        ready_with_bundle(&dir, &authority, &right, Duration::from_secs(20)),
        ready_with_bundle(&dir, &authority, &wrong, Duration::from_secs(3)),
    );
    assert!(trusted, "not ready with the issuer's CA in SSL_CERT_FILE");
    assert!(
        !untrusted,
        "ready although SSL_CERT_FILE lacks the issuer's CA"
    );
    // The trusted gateway fetched the metadata through the TLS front (v1 and v2).
    assert!(issuer.metadata_fetches() >= 2);
}
