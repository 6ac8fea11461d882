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
use axum::extract::{ConnectInfo, State};
use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::access::{self, Via};
use crate::gateway::{
    AccessRecord, Gateway, RequestView, SharedGateway, Verdict, grpc_response, grpc_status,
};
use crate::metrics::{Metrics, Outcome};
use crate::upstream::{Forwarder, UpstreamError, protocol};

/// The proxy listener's only handler: decide, then mutate and forward, or refuse.
pub async fn handle(
    State(shared): State<SharedGateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    let gw = shared.load_full();
    serve(&gw, peer, req).await
}

async fn serve(gw: &Gateway, peer: SocketAddr, mut req: Request<Body>) -> Response<Body> {
    // Kept for the log, which records the path only: queries (AQL, search terms) may carry
    // personal data. A `Uri` shares its bytes, so keeping it copies nothing. The request id
    // was set (or kept from the client) by the request-id layer in front of this handler.
    let method = req.method().clone();
    let uri = req.uri().clone();
    // A gRPC client reads a gRPC status, not the HTTP one: refusals and the upstream's
    // failures are rendered as one (`Refusal::into_grpc_response`).
    let grpc = protocol::is_grpc(req.headers());
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

/// Sends the request on; the upstream's failures as 502, 504 or 413, with what they change
/// in the outcome.
async fn forward(
    gw: &Gateway,
    forwarder: &Forwarder,
    req: Request<Body>,
    peer: SocketAddr,
) -> (Response<Body>, Option<Outcome>, Option<Duration>) {
    let sent = Instant::now();
    let result = forwarder.forward(req, peer).await;
    let elapsed = sent.elapsed();
    gw.metrics.upstream_latency.observe(elapsed);
    let (response, outcome) = match result {
        Ok(resp) => {
            gw.metrics.record_upstream_status(resp.status());
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
    (response, outcome, Some(elapsed))
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
    State(shared): State<SharedGateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    let gw = shared.load_full();
    let Some(doc) = &gw.resource_metadata else {
        return serve(&gw, peer, req).await;
    };
    // The path-inserted form names a resource with a path (RFC 9728 §3.1).
    let resource_path = req
        .uri()
        .path()
        .strip_prefix(crate::auth::challenge::RESOURCE_METADATA_PATH)
        .unwrap_or("");
    let origin = host(&req)
        .and_then(|h| crate::gateway::origin(gw.client_proto, h))
        .map(|o| format!("{o}{resource_path}"));
    doc.render(origin.as_deref())
}
