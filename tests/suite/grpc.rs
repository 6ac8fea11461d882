//! HTTP/2 and gRPC to the upstream (`upstream.protocol`): a real tonic server behind the
//! gateway over h2c, called by a real tonic client (unary and bidirectional streaming, with
//! trailers); refusals as gRPC statuses with the HTTP challenge; route rules on
//! `/package.Service/Method`; trailers both ways through a raw hyper HTTP/2 upstream (h2c and
//! TLS with ALPN, `auto`); one multiplexed upstream connection for many streams.
//!
//! The services are Envoy's (`envoy-types`, already compiled for the `ext_authz` door), so the
//! test builds no protos: `envoy.service.auth.v3.Authorization/Check` is the unary call,
//! `envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources` the
//! bidirectional one.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::pki::{self, Ca, TempDir};
use common::{Extra, Harness, loopback};
use entragate::keys::TokenVersion;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures_util::{Stream, StreamExt as _};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tonic::{Code, Request, Response, Status};

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
const ADS: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService";

/// The unary service: answers with what it received, as JSON in the status message.
struct Seen;

#[tonic::async_trait]
impl Authorization for Seen {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let md = request.metadata();
        let text = |name: &str| {
            md.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(ms) = text("x-sleep-ms").and_then(|v| v.parse().ok()) {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let seen = json!({
            "x-auth-subject": text("x-auth-subject"),
            "x-auth-scopes": text("x-auth-scopes"),
            "te": text("te"),
            "host": text("host"),
            "authorization": text("authorization").is_some(),
        });
        Ok(Response::new(CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status {
                code: 0,
                message: seen.to_string(),
                details: Vec::new(),
            }),
            ..CheckResponse::default()
        }))
    }
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// The streaming service: one answer per request (its `type_url` and `version_info` back),
/// then, when the client's stream ends, a non-OK status with trailing metadata, so the
/// client sees it only if trailers passed.
struct Echo;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Echo {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = DeltaResponses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut inbound = request.into_inner();
        let stream = async_stream(move |tx| async move {
            let mut count = 0u32;
            while let Some(Ok(req)) = inbound.next().await {
                count += 1;
                let answer = DiscoveryResponse {
                    version_info: req.version_info,
                    type_url: req.type_url,
                    nonce: count.to_string(),
                    ..DiscoveryResponse::default()
                };
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
            let mut status = Status::aborted(format!("echoed {count}"));
            status
                .metadata_mut()
                .insert("x-echoed", count.to_string().parse().expect("ascii"));
            let _ = tx.send(Err(status)).await;
        });
        Ok(Response::new(stream))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponses>, Status> {
        Err(Status::unimplemented("delta"))
    }
}

/// A stream fed by `f` through a channel.
fn async_stream<F, Fut>(f: F) -> Responses
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<DiscoveryResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// A tonic server on loopback with both services.
async fn tonic_upstream() -> (SocketAddr, common::Task) {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = common::Task(tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Seen))
            .add_service(AggregatedDiscoveryServiceServer::new(Echo))
            .serve_with_incoming(incoming)
            .await;
    }));
    (addr, task)
}

/// A gateway whose upstream is `url` over `protocol`, with route rules on the gRPC methods:
/// `Check` needs the scope `grpc.check`, the discovery service `grpc.stream`.
async fn gateway(url: String, upstream_lines: &str) -> Harness {
    Harness::start_with(Extra {
        upstream_url: Some(url),
        upstream: upstream_lines.to_owned(),
        tail: format!(
            "[[routes]]\npath = \"{CHECK}\"\nscopes = [\"grpc.check\"]\n\
             [[routes]]\npath = \"{ADS}\"\nscopes = [\"grpc.stream\"]\n"
        ),
        ..Extra::default()
    })
    .await
}

fn token(h: &Harness, scp: &str) -> String {
    let mut c = h.claims(TokenVersion::V2);
    c.insert("scp".into(), json!(scp));
    c.insert("oid".into(), json!("00000000-0000-0000-0000-00000000beef"));
    h.issuer.mint(&c)
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the gateway")
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    req
}

fn challenge(status: &Status) -> String {
    status
        .metadata()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_unary_grpc_call_passes_over_h2c_with_the_verified_identity() {
    let (up, _task) = tonic_upstream().await;
    let h = gateway(format!("http://{up}"), "protocol = \"h2c\"").await;
    let mut client = AuthorizationClient::new(channel(h.gw.addr).await);
    let t = token(&h, "grpc.check");
    let answer = client
        .check(with_token(CheckRequest::default(), Some(&t)))
        .await
        .expect("the call passes")
        .into_inner();
    let seen: Value = serde_json::from_str(&answer.status.expect("status").message).expect("json");
    assert_eq!(
        seen["x-auth-subject"],
        "00000000-0000-0000-0000-00000000beef"
    );
    assert_eq!(seen["x-auth-scopes"], "grpc.check");
    // gRPC's `te: trailers` reaches the upstream; `Host` gave way to `:authority`.
    assert_eq!(seen["te"], "trailers");
    assert_eq!(seen["host"], Value::Null);
    assert_eq!(seen["authorization"], true);
}

#[tokio::test]
async fn a_bidirectional_stream_passes_with_its_trailers() {
    let (up, _task) = tonic_upstream().await;
    let h = gateway(format!("http://{up}"), "protocol = \"h2c\"").await;
    let mut client = AggregatedDiscoveryServiceClient::new(channel(h.gw.addr).await);
    let t = token(&h, "grpc.stream");
    let requests = futures_util::stream::iter((1..=3).map(|i| DiscoveryRequest {
        version_info: format!("v{i}"),
        type_url: "type.googleapis.com/test".into(),
        ..DiscoveryRequest::default()
    }));
    let mut answers = client
        .stream_aggregated_resources(with_token(requests, Some(&t)))
        .await
        .expect("the stream opens")
        .into_inner();
    let mut versions = Vec::new();
    let end = loop {
        match answers.message().await {
            Ok(Some(m)) => versions.push((m.version_info, m.nonce)),
            Ok(None) => panic!("the stream ended without the upstream's status"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        versions,
        [("v1", "1"), ("v2", "2"), ("v3", "3")].map(|(v, n)| (v.to_owned(), n.to_owned()))
    );
    // The upstream's grpc-status, grpc-message and trailing metadata came through in trailers.
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert_eq!(end.message(), "echoed 3");
    assert_eq!(
        end.metadata().get("x-echoed").and_then(|v| v.to_str().ok()),
        Some("3")
    );
}

#[tokio::test]
async fn grpc_refusals_are_grpc_statuses_with_the_http_challenge() {
    let (up, _task) = tonic_upstream().await;
    let h = gateway(format!("http://{up}"), "protocol = \"h2c\"").await;
    let mut client = AuthorizationClient::new(channel(h.gw.addr).await);

    // No token: UNAUTHENTICATED, with the same challenge as the HTTP 401.
    let status = client
        .check(with_token(CheckRequest::default(), None))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        challenge(&status).starts_with("Bearer realm="),
        "{status:?}"
    );
    let http = h.client.get(h.url(CHECK)).send().await.expect("GET");
    assert_eq!(http.status(), 401);
    assert_eq!(
        http.headers()["www-authenticate"].to_str().expect("ascii"),
        challenge(&status)
    );

    // An invalid token: UNAUTHENTICATED with error="invalid_token".
    let status = client
        .check(with_token(CheckRequest::default(), Some("not.a.token")))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        challenge(&status).contains("error=\"invalid_token\""),
        "{status:?}"
    );

    // A valid token without the route's scope: PERMISSION_DENIED naming what it needs. The
    // rule is on `/package.Service/Method`: the other service's scope does not do.
    let t = token(&h, "grpc.stream");
    let status = client
        .check(with_token(CheckRequest::default(), Some(&t)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        challenge(&status).contains("error=\"insufficient_scope\", scope=\"grpc.check\""),
        "{status:?}"
    );
    // And the streaming service refuses the unary method's scope.
    let mut ads = AggregatedDiscoveryServiceClient::new(channel(h.gw.addr).await);
    let t = token(&h, "grpc.check");
    let status = ads
        .stream_aggregated_resources(with_token(
            futures_util::stream::iter(vec![DiscoveryRequest::default()]),
            Some(&t),
        ))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Counted by their reasons, like the HTTP refusals (the count is written as the
    // response goes out, so it may trail the client by a moment).
    common::eventually(
        std::time::Duration::from_secs(5),
        "refusals counted",
        || async {
            let text = h.metrics_text().await;
            [
                "entragate_requests_total{outcome=\"denied\",reason=\"missing_token\"} 2",
                "entragate_requests_total{outcome=\"denied\",reason=\"scope_missing\"} 2",
            ]
            .iter()
            .all(|series| text.contains(series))
        },
    )
    .await;
}

#[tokio::test]
async fn a_raw_grpc_refusal_is_http_200_trailers_only() {
    let (up, _task) = tonic_upstream().await;
    let h = gateway(format!("http://{up}"), "protocol = \"h2c\"").await;
    let (parts, body, trailers) = h2_call(
        h.gw.addr,
        CHECK,
        &[
            ("content-type", "application/grpc+proto"),
            ("te", "trailers"),
        ],
        None,
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/grpc");
    assert_eq!(parts.headers["grpc-status"], "16");
    assert!(parts.headers.contains_key("grpc-message"));
    assert!(parts.headers.contains_key("www-authenticate"));
    assert!(body.is_empty());
    assert!(trailers.is_none());
    // The same request without a gRPC content type gets the HTTP answer.
    let (parts, _, _) = h2_call(h.gw.addr, CHECK, &[], None).await;
    assert_eq!(parts.status, 401);
}

#[tokio::test]
async fn an_unreachable_grpc_upstream_is_unavailable() {
    let port = common::free_port();
    let h = gateway(format!("http://127.0.0.1:{port}"), "protocol = \"h2c\"").await;
    let mut client = AuthorizationClient::new(channel(h.gw.addr).await);
    let t = token(&h, "grpc.check");
    let status = client
        .check(with_token(CheckRequest::default(), Some(&t)))
        .await
        .expect_err("no upstream");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // An HTTP client of the same gateway still gets 502.
    let http = h.get_with_token(CHECK, &t).await;
    assert_eq!(http.status(), 502);
}

#[tokio::test]
async fn an_upstream_past_its_timeout_is_deadline_exceeded() {
    let (up, _task) = tonic_upstream().await;
    let h = gateway(
        format!("http://{up}"),
        "protocol = \"h2c\"\ntimeout = \"1s\"",
    )
    .await;
    let mut client = AuthorizationClient::new(channel(h.gw.addr).await);
    let t = token(&h, "grpc.check");
    let mut req = with_token(CheckRequest::default(), Some(&t));
    req.metadata_mut()
        .insert("x-sleep-ms", "5000".parse().expect("ascii"));
    let status = client.check(req).await.expect_err("too slow");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The connection stays usable for the next call.
    let answer = client
        .check(with_token(CheckRequest::default(), Some(&t)))
        .await;
    assert!(answer.is_ok(), "{answer:?}");
}

/// An HTTP/2 upstream answering every request with JSON (its version, `te`, `host` and
/// `:authority`, and the request's trailers) followed by trailers of its own
/// (`x-upstream-trailer`, and `x-echo` = the request trailer `x-client-trailer`). Counts its
/// connections. Plain h2c, or TLS with ALPN `h2, http/1.1` when given a certificate.
struct H2Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    _task: common::Task,
}

impl H2Upstream {
    async fn start(tls: Option<&pki::Pair>) -> Self {
        Self::start_with(tls, false).await
    }

    /// With `goaway`, a plain h2c upstream that ends every connection after its first answer
    /// (a graceful `GOAWAY`), as a server does at its keep-alive or max-requests limit.
    async fn start_with(tls: Option<&pki::Pair>, goaway: bool) -> Self {
        let acceptor = tls.map(|pair| {
            use rustls::pki_types::pem::PemObject as _;
            let chain = vec![
                rustls::pki_types::CertificateDer::from_pem_slice(pair.cert.as_bytes())
                    .expect("cert"),
            ];
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).expect("key");
            let mut config = rustls::ServerConfig::builder_with_provider(pki::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server config");
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = tokio::net::TcpListener::bind(loopback())
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        let task = common::Task(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let service = hyper::service::service_fn(answer);
                    match acceptor {
                        Some(a) => {
                            let Ok(tls) = a.accept(tcp).await else { return };
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                        None if goaway => {
                            let (tx, mut answered) = tokio::sync::mpsc::channel::<()>(1);
                            let service = hyper::service::service_fn(move |req| {
                                let tx = tx.clone();
                                async move {
                                    let r = answer(req).await;
                                    let _ = tx.try_send(());
                                    r
                                }
                            });
                            let builder = builder.http2_only();
                            let conn = builder.serve_connection(TokioIo::new(tcp), service);
                            tokio::pin!(conn);
                            tokio::select! {
                                _ = conn.as_mut() => {}
                                _ = answered.recv() => {
                                    conn.as_mut().graceful_shutdown();
                                    let _ = conn.await;
                                }
                            }
                        }
                        None => {
                            let _ = builder
                                .http2_only()
                                .serve_connection(TokioIo::new(tcp), service)
                                .await;
                        }
                    }
                });
            }
        }));
        Self {
            addr,
            connections,
            _task: task,
        }
    }
}

type Frames =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn answer(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Frames>, Infallible> {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.ok();
    let request_trailers = collected.as_ref().and_then(|c| c.trailers()).cloned();
    let body_len = collected.map_or(0, |c| c.to_bytes().len());
    let text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seen = json!({
        "version": format!("{:?}", parts.version),
        "te": text("te"),
        "host": text("host"),
        "authority": parts.uri.authority().map(ToString::to_string),
        "body_len": body_len,
    });
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-upstream-trailer", http::HeaderValue::from_static("done"));
    if let Some(v) = request_trailers
        .as_ref()
        .and_then(|t| t.get("x-client-trailer"))
    {
        trailers.insert("x-echo", v.clone());
    }
    let frames = vec![
        Ok(Frame::data(Bytes::from(seen.to_string()))),
        Ok(Frame::trailers(trailers)),
    ];
    Ok(http::Response::new(StreamBody::new(
        futures_util::stream::iter(frames),
    )))
}

/// One HTTP/2 (prior knowledge) POST to the gateway at `addr`, with a body and, when given,
/// request trailers: `(response head, body, response trailers)`.
async fn h2_call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    trailers: Option<http::HeaderMap>,
) -> (http::response::Parts, Bytes, Option<http::HeaderMap>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> =
        vec![Ok(Frame::data(Bytes::from_static(b"hello")))];
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    let mut req = http::Request::post(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

fn client_trailer() -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("x-client-trailer", http::HeaderValue::from_static("sent"));
    t
}

#[tokio::test]
async fn trailers_pass_both_ways_over_h2c_and_one_connection_carries_many_streams() {
    let up = H2Upstream::start(None).await;
    // One worker: its pool holds the one HTTP/2 connection (each worker keeps its own).
    let h = Harness::start_with(Extra {
        server: "workers = 1".into(),
        upstream_url: Some(format!("http://{}", up.addr)),
        upstream: "protocol = \"h2c\"".into(),
        ..Extra::default()
    })
    .await;
    let t = h.token(TokenVersion::V2);
    let auth = format!("Bearer {t}");
    let (parts, body, trailers) = h2_call(
        h.gw.addr,
        "/echo",
        &[("authorization", &auth), ("te", "trailers")],
        Some(client_trailer()),
    )
    .await;
    assert_eq!(parts.status, 200);
    let seen: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["authority"], up.addr.to_string());
    assert_eq!(seen["host"], Value::Null);
    assert_eq!(seen["te"], "trailers");
    assert_eq!(seen["body_len"], 5);
    let trailers = trailers.expect("response trailers");
    assert_eq!(trailers["x-upstream-trailer"], "done");
    assert_eq!(
        trailers["x-echo"], "sent",
        "the request trailer reached the upstream"
    );

    // Twenty concurrent requests after the first: all on the one pooled HTTP/2 connection.
    let headers = [("authorization", auth.as_str())];
    let calls = (0..20).map(|_| h2_call(h.gw.addr, "/echo", &headers, None));
    for (parts, _, _) in futures_util::future::join_all(calls).await {
        assert_eq!(parts.status, 200);
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_that_ends_each_h2_connection_costs_no_request() {
    let up = H2Upstream::start_with(None, true).await;
    let h = Harness::to_upstream(format!("http://{}", up.addr), "protocol = \"h2c\"").await;
    let auth = format!("Bearer {}", h.token(TokenVersion::V2));
    for i in 0..5 {
        // A GET, then a POST with a body: neither is lost to the closed connection.
        let r = h
            .client
            .get(h.url("/echo"))
            .header("authorization", &auth)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200, "GET {i}");
        let (parts, _, _) = h2_call(h.gw.addr, "/echo", &[("authorization", &auth)], None).await;
        assert_eq!(parts.status, 200, "POST {i}");
    }
    // Connections were ended under the gateway (a request can still ride one whose GOAWAY
    // was not sent yet, so not necessarily ten).
    let opened = up.connections.load(Ordering::SeqCst);
    assert!((2..=10).contains(&opened), "{opened} upstream connections");
}

#[tokio::test]
async fn auto_speaks_http2_to_a_tls_upstream_that_offers_it_by_alpn() {
    let ca = Ca::new("upstream CA");
    let up = H2Upstream::start(Some(&ca.server("grpc"))).await;
    let dir = TempDir::new("upstream-h2");
    let ca_file = dir.file("ca.pem", &ca.pem);
    let url = format!("https://localhost:{}", up.addr.port());
    {
        let lines = format!("ca_file = {ca_file:?}\nprotocol = \"auto\"");
        let h = Harness::to_upstream(url.clone(), &lines).await;
        let auth = format!("Bearer {}", h.token(TokenVersion::V2));
        let (parts, body, trailers) = h2_call(
            h.gw.addr,
            "/echo",
            &[("authorization", &auth), ("te", "trailers")],
            Some(client_trailer()),
        )
        .await;
        assert_eq!(parts.status, 200);
        let seen: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
        assert_eq!(seen["authority"], format!("localhost:{}", up.addr.port()));
        let trailers = trailers.expect("response trailers");
        assert_eq!(trailers["x-echo"], "sent");
    }
    // The default (http1) on the same upstream: ALPN offers only http/1.1.
    let h = Harness::to_upstream(url, &format!("ca_file = {ca_file:?}")).await;
    let auth = format!("Bearer {}", h.token(TokenVersion::V2));
    let (parts, body, _) = h2_call(h.gw.addr, "/echo", &[("authorization", &auth)], None).await;
    assert_eq!(parts.status, 200);
    let seen: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
    assert_eq!(seen["host"], format!("localhost:{}", up.addr.port()));
    assert_eq!(seen["te"], Value::Null);
}

#[test]
fn h2c_to_an_https_upstream_is_a_config_error_naming_the_key() {
    let text = format!(
        "[upstream]\nurl = \"https://grpc.internal:8443\"\nprotocol = \"h2c\"\n[entra]\ntenant_id = \"{}\"\naudiences = [\"{}\"]\n\
         [[apis]]\nname = \"g\"\nprefix = \"/g\"\nupstream = {{ url = \"http://g:1\", protocol = \"h3\" }}\n",
        common::TENANT,
        common::AUDIENCE
    );
    let e = entragate::config::Config::load(&text, &[], &|p| std::fs::read_to_string(p))
        .expect_err("refused");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"upstream.protocol"), "{e}");
    assert!(keys.contains(&"apis[0].upstream.protocol"), "{e}");
    assert!(e.to_string().contains("\"auto\""), "{e}");
}
