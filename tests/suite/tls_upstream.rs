//! An `https` upstream: trusted through `upstream.ca_file`, refused (502) when its CA is not
//! trusted, reached anyway with `upstream.insecure_skip_verify`, and given the gateway's client
//! certificate when it requires mTLS.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::pki::{self, Ca, Pair, TempDir};
use common::{Extra, Harness, loopback};
use entragate::config::Config;
use entragate::keys::TokenVersion;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};

/// An HTTPS upstream on loopback answering `{"host", "uri", "client_cert"}`.
struct TlsUpstream {
    addr: SocketAddr,
    /// Serves until the owner is dropped.
    _task: common::Task,
}

impl TlsUpstream {
    /// Serves `pair`; with `client_ca`, only clients presenting a certificate it signed.
    async fn start(pair: &Pair, client_ca: Option<&Ca>) -> Self {
        let chain = vec![CertificateDer::from_pem_slice(pair.cert.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).expect("key");
        let builder = rustls::ServerConfig::builder_with_provider(pki::provider())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), pki::provider())
                    .build()
                    .expect("verifier"),
            ),
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(loopback())
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = common::Task(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client_cert = tls.get_ref().1.peer_certificates().is_some();
                    let service = hyper::service::service_fn(move |req: http::Request<_>| {
                        let body = json!({
                            "host": req.headers().get("host").and_then(|h| h.to_str().ok()),
                            "uri": req.uri().to_string(),
                            "client_cert": client_cert,
                        });
                        async move {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                body.to_string(),
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        }));
        Self { addr, _task: task }
    }

    /// `https://localhost:port/base`: the name the certificate is for.
    fn url(&self) -> String {
        format!("https://localhost:{}/base", self.addr.port())
    }
}

/// A gateway in front of `upstream` with extra `[upstream]` lines.
async fn gateway(upstream: &TlsUpstream, lines: String) -> Harness {
    Harness::start_with(Extra {
        upstream_url: Some(upstream.url()),
        upstream: lines,
        ..Extra::default()
    })
    .await
}

async fn call(h: &Harness) -> (u16, Value) {
    let resp = h
        .get_with_token("/ehr?x=1", &h.token(TokenVersion::V2))
        .await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn https_upstream_trusted_through_ca_file() {
    let ca = Ca::new("upstream CA");
    let upstream = TlsUpstream::start(&ca.server("ehrbase"), None).await;
    let dir = TempDir::new("upstream-ca");
    let ca_file = dir.file("ca.pem", &ca.pem);

    let h = gateway(&upstream, format!("ca_file = {ca_file:?}")).await;
    let (status, seen) = call(&h).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["uri"], "/base/ehr?x=1");
    assert_eq!(seen["host"], format!("localhost:{}", upstream.addr.port()));
    assert_eq!(seen["client_cert"], false);
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_a_502() {
    let ca = Ca::new("private CA nobody trusts");
    let upstream = TlsUpstream::start(&ca.server("ehrbase"), None).await;
    // Another CA in ca_file: the system roots plus this one do not cover the upstream.
    let dir = TempDir::new("upstream-ca");
    let ca_file = dir.file("ca.pem", &Ca::new("some other CA").pem);
    let h = gateway(&upstream, format!("ca_file = {ca_file:?}")).await;
    let (status, body) = call(&h).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "bad_gateway");
}

#[tokio::test]
async fn insecure_skip_verify_reaches_an_untrusted_upstream() {
    let ca = Ca::new("private CA nobody trusts");
    let upstream = TlsUpstream::start(&ca.server("ehrbase"), None).await;
    let h = gateway(&upstream, "insecure_skip_verify = true".to_owned()).await;
    let (status, seen) = call(&h).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["uri"], "/base/ehr?x=1");
}

#[tokio::test]
async fn mtls_upstream_gets_the_client_certificate() {
    let ca = Ca::new("upstream CA");
    let upstream = TlsUpstream::start(&ca.server("ehrbase"), Some(&ca)).await;
    let client = ca.client("entragate");
    let dir = TempDir::new("upstream-mtls");
    let ca_file = dir.file("ca.pem", &ca.pem);
    let cert = dir.file("client.crt", &client.cert);
    let key = dir.file("client.key", &client.key);

    let with_cert = gateway(
        &upstream,
        format!("ca_file = {ca_file:?}\nclient_cert = {cert:?}\nclient_key = {key:?}"),
    )
    .await;
    let (status, seen) = call(&with_cert).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["client_cert"], true);

    // Without it the upstream refuses the handshake: 502.
    let without = gateway(&upstream, format!("ca_file = {ca_file:?}")).await;
    assert_eq!(call(&without).await.0, 502);
}

fn load(upstream: &str) -> Result<Config, entragate::config::ConfigError> {
    let text = format!(
        "[upstream]\n{upstream}\n[entra]\ntenant_id = \"{}\"\naudiences = [\"{}\"]\n",
        common::TENANT,
        common::AUDIENCE
    );
    Config::load(&text, &[], &|p| std::fs::read_to_string(p))
}

#[test]
fn upstream_tls_config_errors_name_the_key() {
    let ca = Ca::new("upstream CA");
    let client = ca.client("entragate");
    let other = ca.client("other");
    let dir = TempDir::new("upstream-config");
    let ca_file = dir.file("ca.pem", &ca.pem);
    let cert = dir.file("client.crt", &client.cert);
    let key = dir.file("client.key", &client.key);
    let other_key = dir.file("other.key", &other.key);
    let missing = dir.path("missing.pem");
    let https = "url = \"https://ehrbase.internal:8443\"";

    let ok = load(&format!(
        "{https}\nca_file = {ca_file:?}\nclient_cert = {cert:?}\nclient_key = {key:?}"
    ))
    .expect("valid");
    assert_eq!(ok.upstream.scheme, http::uri::Scheme::HTTPS);
    assert_eq!(ok.upstream.tls.extra_roots.len(), 1);
    assert!(ok.upstream.tls.client_identity.is_some());
    assert!(!format!("{:?}", ok.upstream).contains("PRIVATE"));

    let cases = [
        (
            format!("{https}\nca_file = {missing:?}"),
            "upstream.ca_file",
            "cannot read",
        ),
        (
            format!("{https}\nca_file = {key:?}"),
            "upstream.ca_file",
            "CERTIFICATE",
        ),
        (
            format!("{https}\nclient_cert = {cert:?}\nclient_key = {other_key:?}"),
            "upstream.client_key",
            "is not the private key",
        ),
        (
            format!("{https}\nclient_cert = {cert:?}"),
            "upstream.client_key",
            "required",
        ),
        (
            format!("{https}\nclient_key = {key:?}"),
            "upstream.client_cert",
            "required",
        ),
        (
            format!("{https}\nca_file = {ca_file:?}\ninsecure_skip_verify = true"),
            "upstream.insecure_skip_verify",
            "contradicts",
        ),
        (
            format!("url = \"http://127.0.0.1:8080\"\nca_file = {ca_file:?}"),
            "upstream.ca_file",
            "only used with an https",
        ),
        (
            "url = \"http://127.0.0.1:8080\"\ninsecure_skip_verify = true".to_owned(),
            "upstream.insecure_skip_verify",
            "only used with an https",
        ),
        (
            "url = \"ftp://x\"".to_owned(),
            "upstream.url",
            "http or https",
        ),
    ];
    for (upstream, key_name, message) in cases {
        let e = load(&upstream).expect_err(&upstream);
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, [key_name], "{upstream}: {e}");
        assert!(e.problems[0].message.contains(message), "{upstream}: {e}");
    }
}

#[tokio::test]
async fn insecure_skip_verify_is_announced_at_every_start() {
    let dir = TempDir::new("upstream-insecure");
    let config = dir.file(
        "entragate.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[upstream]\nurl = \"https://ehrbase.internal:8443\"\ninsecure_skip_verify = true\n[entra]\ntenant_id = \"{}\"\naudiences = [\"{}\"]\nauthority = \"http://127.0.0.1:9\"\n",
            common::TENANT,
            common::AUDIENCE
        ),
    );
    // Nothing inherited from the environment (CI sets ENTRAGATE_TEST_* for other tests).
    let proc = common::process::Proc::spawn(
        &["serve", "--config", config.to_str().expect("utf-8 path")],
        &[],
    );
    let text = proc.wait_for_stderr("entragate listening").await;
    assert!(text.contains("entragate listening"), "{text}");
    assert!(text.contains("WARN"), "{text}");
    assert!(
        text.contains(
            "upstream.insecure_skip_verify = true: the upstream's TLS certificate is NOT verified"
        ),
        "{text}"
    );
}
