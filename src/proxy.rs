//! The proxy door (`server.mode = "proxy"`): the request is decided by
//! [`Gateway::check`](crate::gateway::Gateway::check), then either refused here or, with the
//! decision's header edits applied, streamed to the upstream ([`crate::upstream`]).
//!
//! What is the proxy's own: the request line and headers as the view, hop-by-hop headers
//! ending at this hop, the streamed body limit, and the upstream's failures as 502 / 504.

pub mod request_id;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::access::{self, Via};
use std::sync::Arc;

use hyper_util::rt::TokioIo;

use crate::gateway::{
    AccessRecord, Gateway, LiveApi, RequestView, Verdict, grpc_response, grpc_status,
};
use crate::metrics::{Metrics, Outcome};
use crate::upstream::{Forwarder, UpstreamError, UpstreamUpgrade, protocol, websocket};

/// The proxy listener's only handler: decide, then mutate and forward, or refuse.
pub async fn handle(gw: &Gateway, peer: SocketAddr, mut req: Request<Body>) -> Response<Body> {
    // Kept for the log, which records the path only: queries (AQL, search terms) may carry
    // personal data. A `Uri` shares its bytes, so keeping it copies nothing. The request id
    // was set (or kept from the client) by the front service (src/app/front.rs).
    let method = req.method().clone();
    let uri = req.uri().clone();
    // A gRPC client reads a gRPC status, not the HTTP one: refusals and the upstream's
    // failures are rendered as one (`Refusal::into_grpc_response`).
    let grpc = protocol::is_grpc(req.headers());
    let websocket = websocket::is_upgrade(&method, req.version(), req.headers());
    let request_id = req.headers().get(access::REQUEST_ID).cloned();
    let mut record = AccessRecord::start(
        &gw.metrics,
        Via::Proxy,
        (method.as_str(), uri.path()),
        Some(peer.ip()),
        request_id.as_ref().and_then(|v| v.to_str().ok()),
    );
    let decision = {
        let view = RequestView {
            via: Via::Proxy,
            method: method.as_str(),
            target: uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()),
            readable: true,
            headers: req.headers(),
            peer: Some(peer.ip()),
            scheme: gw.client_proto,
            host: host(&req),
        };
        record
            .check(gw, &view, Some(http_version(req.version())))
            .await
            .verdict
    };
    // The gateway is the hop the client's `Connection` header speaks to: the headers it
    // names were read (above) and end here, before the decision's edits, so they cannot name
    // the verified identity or the upstream credentials away.
    // `te: trailers` stays (gRPC needs it); the upstream's protocol decides whether it goes on.
    protocol::end_hop(req.headers_mut());
    let (response, outcome, upstream) = match decision {
        Verdict::Refuse(refusal) if grpc => (refusal.into_grpc_response(), None, None),
        Verdict::Refuse(refusal) => (refusal.into_response(), None, None),
        Verdict::Pass(pass) if websocket && pass.api.forwarder.websocket().is_some() => {
            // The API's upstream.websocket_idle_timeout (Some: the guard read it).
            let idle = pass.api.forwarder.websocket().unwrap_or_default();
            pass.edits.apply(req.headers_mut());
            // Boxed: the tunnel's state is not carried in every other request's future.
            let (response, outcome, upstream) =
                Box::pin(tunnel(gw, (pass.api, pass.token_exp, idle), req, peer)).await;
            record.finish(response.status().as_u16(), outcome, upstream);
            return response;
        }
        Verdict::Pass(pass) => {
            pass.edits.apply(req.headers_mut());
            if let Some(limit) = pass.body_limit {
                // The declared length was within the limit; a streamed body is cut off there
                // (the upload then fails with 413).
                let body = std::mem::replace(req.body_mut(), Body::empty());
                *req.body_mut() = Body::new(http_body_util::Limited::new(
                    body,
                    usize::try_from(limit).unwrap_or(usize::MAX),
                ));
            }
            let (response, outcome, upstream) = forward(gw, &pass.api.forwarder, req, peer).await;
            // The gateway's own answers (502, 504, 413, 400) as gRPC statuses; the upstream's
            // answers pass as they are.
            let response = match outcome {
                Some(_) if grpc => {
                    let (code, message) = grpc_status(response.status());
                    grpc_response(code, message)
                }
                _ => response,
            };
            (response, outcome, upstream)
        }
    };
    // A traced request's spans end when the body has been streamed.
    record.finish_streaming(response, outcome, upstream)
}

/// `network.protocol.version` of the HTTP semantic conventions.
fn http_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A WebSocket handshake that may go on: forwarded with its upgrade headers; on the
/// upstream's 101 the tunnel is relayed in its own task (the access line is written when
/// the 101 goes out, the tunnel's end is its own `websocket closed` event). Any other answer
/// goes back as usual.
async fn tunnel(
    gw: &Gateway,
    (api, token_exp, idle): (&LiveApi, Option<f64>, Duration),
    mut req: Request<Body>,
    peer: SocketAddr,
) -> (Response<Body>, Option<Outcome>, Option<Duration>) {
    let forwarder = &api.forwarder;
    let client = hyper::upgrade::on(&mut req);
    websocket::keep_upgrade(req.headers_mut());
    let opened = Opened {
        api: api.name.clone(),
        path: req.uri().path().to_owned(),
        request_id: req
            .headers()
            .get(access::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        limits: websocket::Limits {
            deadline: token_exp.map(deadline),
            idle,
            grace: CLOSE_GRACE,
        },
    };
    let (response, outcome, upstream, upgrade) = send(gw, forwarder, req, peer, true).await;
    if let Some(upgrade) = upgrade {
        let metrics = Arc::clone(&gw.metrics);
        tokio::spawn(opened.relay(client, upgrade, metrics));
    }
    (response, outcome, upstream)
}

/// How long the gateway waits, when it closes a tunnel, for each direction to reach a frame
/// boundary and then for the peers' Close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The tokio instant of the Unix time `exp` (now, when it has passed).
fn deadline(exp: f64) -> tokio::time::Instant {
    let left = Duration::try_from_secs_f64(exp - crate::auth::validate::unix_now())
        .unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + left.min(Duration::from_secs(100 * 365 * 86_400))
}

/// A tunnel whose handshake went through: what its end is logged with, and its limits.
struct Opened {
    api: String,
    path: String,
    request_id: Option<String>,
    limits: websocket::Limits,
}

impl Opened {
    /// Waits for both sides to switch protocols, relays, then logs and counts the end.
    async fn relay(
        self,
        client: hyper::upgrade::OnUpgrade,
        upstream: UpstreamUpgrade,
        metrics: Arc<Metrics>,
    ) {
        let started = Instant::now();
        let (client, server) = match tokio::join!(client, upstream.on) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                tracing::warn!(
                    target: "entragate::websocket",
                    api = %self.api,
                    path = %self.path,
                    request_id = self.request_id.as_deref(),
                    client = c.err().map(|e| e.to_string()),
                    upstream = u.err().map(|e| e.to_string()),
                    "websocket upgrade did not complete"
                );
                return;
            }
        };
        let mut open = metrics.websockets.opened();
        let closed =
            websocket::relay(TokioIo::new(client), TokioIo::new(server), self.limits).await;
        open.ends(closed.end.as_str());
        drop(upstream.slot);
        tracing::info!(
            target: "entragate::websocket",
            api = %self.api,
            path = %self.path,
            request_id = self.request_id.as_deref(),
            reason = closed.end.as_str(),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_from_client = closed.from_client,
            bytes_from_upstream = closed.from_upstream,
            close_sent_to_client = closed.close_sent.0,
            close_sent_to_upstream = closed.close_sent.1,
            "websocket closed"
        );
    }
}

/// Sends the request on; the upstream's failures as 502, 504 or 413, with what they change
/// in the outcome.
async fn forward(
    gw: &Gateway,
    forwarder: &Forwarder,
    req: Request<Body>,
    peer: SocketAddr,
) -> (Response<Body>, Option<Outcome>, Option<Duration>) {
    let (response, outcome, upstream, _) = send(gw, forwarder, req, peer, false).await;
    (response, outcome, upstream)
}

/// [`forward`], and the upstream's side of a tunnel when `upgrade` and it answered 101.
async fn send(
    gw: &Gateway,
    forwarder: &Forwarder,
    req: Request<Body>,
    peer: SocketAddr,
    upgrade: bool,
) -> (
    Response<Body>,
    Option<Outcome>,
    Option<Duration>,
    Option<UpstreamUpgrade>,
) {
    let sent = Instant::now();
    let result = forwarder.forward_upgrade(req, peer, upgrade).await;
    let elapsed = sent.elapsed();
    gw.metrics.upstream_latency.observe(elapsed);
    let mut tunnel = None;
    let (response, outcome) = match result {
        Ok((resp, upgraded)) => {
            gw.metrics.record_upstream_status(resp.status());
            tunnel = upgraded;
            (resp, None)
        }
        Err(UpstreamError::Unreachable) => (
            json(StatusCode::BAD_GATEWAY, r#"{"error":"bad_gateway"}"#),
            Some(Outcome::UpstreamUnreachable),
        ),
        Err(UpstreamError::BodyTooLarge) => (
            json(
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"payload_too_large"}"#,
            ),
            Some(Outcome::BodyTooLarge),
        ),
        Err(UpstreamError::ClientBody) => (
            json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_request","error_description":"request body"}"#,
            ),
            Some(Outcome::ClientClosed),
        ),
        Err(UpstreamError::Timeout) => (
            json(
                StatusCode::GATEWAY_TIMEOUT,
                r#"{"error":"gateway_timeout"}"#,
            ),
            Some(Outcome::UpstreamTimeout),
        ),
    };
    (response, outcome, Some(elapsed), tunnel)
}

/// 503 for a request shed under load; counted and logged like any other request.
#[must_use]
pub fn overloaded(metrics: &Metrics) -> Response<Body> {
    metrics.record_request(Outcome::Shed);
    tracing::warn!(
        target: "entragate::access",
        status = 503,
        auth.outcome = "shed",
        auth.reason = "overloaded",
        "request shed: server.max_in_flight requests already in progress"
    );
    let mut r = json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"error":"temporarily_unavailable","error_description":"overloaded"}"#,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The host the client named: the HTTP/2 `:authority` (or an absolute-form target), else
/// `Host`.
fn host(req: &Request<Body>) -> Option<&str> {
    req.uri()
        .authority()
        .map(http::uri::Authority::as_str)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
}

/// A JSON response that no cache keeps.
fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /.well-known/oauth-protected-resource` (RFC 9728), served without a token when
/// `challenge.resource_metadata` is on; otherwise an ordinary request like any other.
pub async fn resource_metadata(
    gw: &Gateway,
    peer: SocketAddr,
    req: Request<Body>,
) -> Response<Body> {
    let Some(doc) = &gw.resource_metadata else {
        return handle(gw, peer, req).await;
    };
    // The path-inserted form names a resource with a path (RFC 9728 §3.1).
    let resource_path =
        crate::auth::challenge::metadata_resource_path(req.uri().path()).unwrap_or("");
    let origin = host(&req)
        .and_then(|h| crate::gateway::origin(gw.client_proto, h))
        .map(|o| format!("{o}{resource_path}"));
    doc.render(origin.as_deref())
}
