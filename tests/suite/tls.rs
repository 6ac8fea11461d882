//! HTTPS on the proxy listener: HTTP/2 and HTTP/1.1 chosen by ALPN, TLS 1.2 and 1.3, the
//! certificate swapped on disk and picked up without a restart (new connections see the new
//! one, an established connection keeps working), a bad file at reload keeping the old
//! certificate, and bad files at startup refused naming their key.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pki::{self, Ca, Pair, SecretVolume, TempDir};
use common::{Extra, Harness};
use entragate::config::Config;
use entragate::keys::TokenVersion;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A gateway serving HTTPS with the certificate in `volume`, checked every 100 ms.
async fn https_gateway(volume: &SecretVolume, challenge: &str) -> Harness {
    Harness::start_with(Extra {
        server: format!(
            "tls_cert = {:?}\ntls_key = {:?}\ntls_reload = \"100ms\"\n",
            volume.cert_path(),
            volume.key_path()
        ),
        challenge: challenge.to_owned(),
        ..Extra::default()
    })
    .await
}

/// An HTTP/2 connection over `tls`.
async fn h2(tls: TlsStream<TcpStream>) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

/// An HTTP/1.1 connection over `tls`.
async fn h1(tls: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    send
}

fn get(
    h: &Harness,
    path: &str,
    token: Option<&str>,
    absolute: bool,
) -> http::Request<Empty<Bytes>> {
    let uri = if absolute {
        format!("https://localhost:{}{path}", h.gw.addr.port())
    } else {
        path.to_owned()
    };
    let mut b = http::Request::get(uri).header("host", format!("localhost:{}", h.gw.addr.port()));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Empty::new()).expect("request")
}

async fn json(resp: http::Response<hyper::body::Incoming>) -> Value {
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("JSON body")
}

/// Waits until a new connection is presented `want`.
async fn wait_for_presented(h: &Harness, ca: &Ca, want: &Pair) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tls = pki::connect(h.gw.addr, pki::client_config(ca, &[b"h2"]))
            .await
            .expect("connect");
        if pki::presented(&tls) == want.der {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate not served after 10s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn https_speaks_http2_and_http1_by_alpn() {
    let ca = Ca::new("test CA");
    let leaf = ca.server("gateway");
    let volume = SecretVolume::new(&leaf);
    let h = https_gateway(&volume, "resource_metadata = true").await;
    let token = h.token(TokenVersion::V2);

    // HTTP/2, chosen by ALPN.
    let tls = pki::connect(h.gw.addr, pki::client_config(&ca, &[b"h2", b"http/1.1"]))
        .await
        .expect("TLS handshake");
    assert_eq!(pki::alpn(&tls).as_deref(), Some(&b"h2"[..]));
    assert_eq!(pki::presented(&tls), leaf.der);
    let mut send = h2(tls).await;
    let resp = send
        .send_request(get(&h, "/ehrbase/rest/status", Some(&token), true))
        .await
        .expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let seen = json(resp).await;
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");
    assert_eq!(seen["uri"], "/ehrbase/rest/status");
    // The upstream still gets HTTP/1.1.
    assert_eq!(seen["version"], "HTTP/1.1");

    // A refusal over HTTPS names https:// in the RFC 9728 metadata URL.
    let resp = send
        .send_request(get(&h, "/x", None, true))
        .await
        .expect("h2 response");
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"https://localhost:{}/.well-known/oauth-protected-resource\"",
            h.gw.addr.port()
        )),
        "{challenge}"
    );

    // HTTP/1.1, chosen by ALPN.
    let tls = pki::connect(h.gw.addr, pki::client_config(&ca, &[b"http/1.1"]))
        .await
        .expect("TLS handshake");
    assert_eq!(pki::alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let mut send = h1(tls).await;
    let resp = send
        .send_request(get(&h, "/a?b=c", Some(&token), false))
        .await
        .expect("h1 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let seen = json(resp).await;
    assert_eq!(seen["uri"], "/a?b=c");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");

    // TLS 1.2 only, and no ALPN at all (curl --http1.1 --tlsv1.2 --tls-max 1.2).
    let tls12 = rustls::ClientConfig::builder_with_provider(pki::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    let tls = pki::connect(h.gw.addr, std::sync::Arc::new(tls12))
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(pki::alpn(&tls), None);
    let resp = h1(tls)
        .await
        .send_request(get(&h, "/", Some(&token), false))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);

    // Plain HTTP on the TLS port gets no answer a client could mistake for a response.
    let plain = common::client().get(h.url("/")).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_served_without_a_restart() {
    let ca = Ca::new("test CA");
    let first = ca.server("first");
    let second = ca.server("second");
    let mut volume = SecretVolume::new(&first);
    let h = https_gateway(&volume, "").await;
    let token = h.token(TokenVersion::V1);

    // A connection opened before the swap...
    let tls = pki::connect(h.gw.addr, pki::client_config(&ca, &[b"h2"]))
        .await
        .expect("connect");
    assert_eq!(pki::presented(&tls), first.der);
    let mut before = h2(tls).await;
    let resp = before
        .send_request(get(&h, "/1", Some(&token), true))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);

    // ...the files change as cert-manager and the kubelet change them...
    volume.update(&second.cert, &second.key);
    wait_for_presented(&h, &ca, &second).await;
    assert_eq!(h.gw.metrics.tls_reloads.ok.get(), 1);
    assert_eq!(h.gw.metrics.tls_reloads.error.get(), 0);

    // ...and the old connection is still served, with the certificate it was opened with.
    let resp = before
        .send_request(get(&h, "/2", Some(&token), true))
        .await
        .expect("the established connection survives the swap");
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["uri"], "/2");

    // New connections get the new certificate, and requests on them work.
    let tls = pki::connect(h.gw.addr, pki::client_config(&ca, &[b"h2"]))
        .await
        .expect("connect");
    assert_eq!(pki::presented(&tls), second.der);
    let resp = h2(tls)
        .await
        .send_request(get(&h, "/3", Some(&token), true))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);

    // The reload is visible to operators.
    let metrics = h.metrics_text().await;
    assert!(
        metrics.contains("entragate_tls_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bad_certificate_at_reload_keeps_the_old_one() {
    let ca = Ca::new("test CA");
    let good = ca.server("good");
    let next = ca.server("next");
    let mut volume = SecretVolume::new(&good);
    let h = https_gateway(&volume, "").await;
    let token = h.token(TokenVersion::V2);
    let errors = || h.gw.metrics.tls_reloads.error.get();

    let cases: [(&str, String, String); 3] = [
        ("not PEM", "garbage".to_owned(), good.key.clone()),
        (
            "key of another certificate",
            good.cert.clone(),
            next.key.clone(),
        ),
        ("empty files", String::new(), String::new()),
    ];
    for (n, (what, cert, key)) in cases.iter().enumerate() {
        volume.update(cert, key);
        let deadline = Instant::now() + Duration::from_secs(10);
        while errors() < n as u64 + 1 {
            assert!(Instant::now() < deadline, "{what}: reload never attempted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Still the good certificate, still serving.
        let tls = pki::connect(h.gw.addr, pki::client_config(&ca, &[b"http/1.1"]))
            .await
            .expect("connect");
        assert_eq!(pki::presented(&tls), good.der, "{what}");
        let resp = h1(tls)
            .await
            .send_request(get(&h, "/", Some(&token), false))
            .await
            .expect("response");
        assert_eq!(resp.status(), 200, "{what}");
    }
    // A failure is reported once, not at every look.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(errors(), 3);
    assert_eq!(h.gw.metrics.tls_reloads.ok.get(), 0);

    // Fixed files are picked up: the watcher survived the failures.
    volume.update(&next.cert, &next.key);
    wait_for_presented(&h, &ca, &next).await;
    assert_eq!(h.gw.metrics.tls_reloads.ok.get(), 1);
}

/// The config with TLS files, read through the real file system.
fn load(server: &str) -> Result<Config, entragate::config::ConfigError> {
    let text = format!(
        "[server]\n{server}\n[entra]\ntenant_id = \"{}\"\naudiences = [\"{}\"]\n",
        common::TENANT,
        common::AUDIENCE
    );
    Config::load(&text, &[], &|p| std::fs::read_to_string(p))
}

fn keys(e: &entragate::config::ConfigError) -> Vec<&str> {
    e.problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn bad_files_at_startup_are_config_errors_naming_the_key() {
    let ca = Ca::new("test CA");
    let a = ca.server("a");
    let b = ca.server("b");
    let dir = TempDir::new("tls-config");
    let cert = dir.file("a.crt", &a.cert);
    let key = dir.file("a.key", &a.key);
    let other_key = dir.file("b.key", &b.key);
    let missing = dir.path("missing.pem");

    let ok = load(&format!("tls_cert = {cert:?}\ntls_key = {key:?}")).expect("valid pair");
    let tls = ok.server.tls.expect("TLS on");
    assert_eq!(tls.reload, Duration::from_secs(10));
    assert_eq!(tls.loaded.key.cert[0].as_ref(), a.der.as_slice());

    let cases = [
        (
            format!("tls_cert = {missing:?}\ntls_key = {key:?}"),
            "server.tls_cert",
            "cannot read",
        ),
        (
            format!("tls_cert = {cert:?}\ntls_key = {missing:?}"),
            "server.tls_key",
            "cannot read",
        ),
        (
            format!("tls_cert = {key:?}\ntls_key = {key:?}"),
            "server.tls_cert",
            "CERTIFICATE",
        ),
        (
            format!("tls_cert = {cert:?}\ntls_key = {cert:?}"),
            "server.tls_key",
            "private key",
        ),
        (
            format!("tls_cert = {cert:?}\ntls_key = {other_key:?}"),
            "server.tls_key",
            "is not the private key of the certificate in server.tls_cert",
        ),
        (format!("tls_cert = {cert:?}"), "server.tls_key", "required"),
        (format!("tls_key = {key:?}"), "server.tls_cert", "required"),
        (
            format!("tls_cert = {cert:?}\ntls_key = {key:?}\ntls_reload = \"often\""),
            "server.tls_reload",
            "duration",
        ),
    ];
    for (server, key_name, message) in cases {
        let e = load(&server).expect_err(&server);
        assert_eq!(keys(&e), [key_name], "{server}: {e}");
        assert!(e.problems[0].message.contains(message), "{server}: {e}");
        // Never key material in an error.
        assert!(!e.to_string().contains("BEGIN"), "{e}");
    }
}

#[tokio::test]
async fn the_binary_exits_2_naming_the_key_of_a_missing_certificate() {
    let dir = TempDir::new("tls-exit");
    let config = dir.file(
        "entragate.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n[entra]\ntenant_id = \"{}\"\naudiences = [\"{}\"]\n",
            dir.path("tls.crt"),
            dir.path("tls.key"),
            common::TENANT,
            common::AUDIENCE
        ),
    );
    // Nothing inherited from the environment (CI sets ENTRAGATE_TEST_* for other tests).
    let out = common::process::Proc::run(
        &["serve", "--config", config.to_str().expect("utf-8 path")],
        &[],
        None,
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let stderr = out.stderr;
    assert!(stderr.contains("server.tls_cert: cannot read"), "{stderr}");
    assert!(stderr.contains("server.tls_key: cannot read"), "{stderr}");
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_loses_its_connection() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca = Ca::new("test CA");
    let volume = SecretVolume::new(&ca.server("gateway"));
    let h = Harness::start_with(Extra {
        server: format!(
            "tls_cert = {:?}\ntls_key = {:?}\nheader_read_timeout = \"500ms\"\n",
            volume.cert_path(),
            volume.key_path()
        ),
        ..Extra::default()
    })
    .await;
    // One client says nothing; the other starts a ClientHello (a TLS record header) and stalls.
    let silent = TcpStream::connect(h.gw.addr).await.expect("connect");
    let mut stalled = TcpStream::connect(h.gw.addr).await.expect("connect");
    stalled.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    for (what, mut conn) in [("silent", silent), ("stalled", stalled)] {
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "{what}: connection still open after 5s: {closed:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{what}");
    }
    // Meanwhile the listener still serves others.
    let tls = pki::connect(h.gw.addr, pki::client_config(&ca, &[b"h2"]))
        .await
        .expect("a prompt client still gets its handshake");
    assert_eq!(pki::alpn(&tls).as_deref(), Some(&b"h2"[..]));
}
