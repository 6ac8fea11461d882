//! The request's way through the gateway: authenticate, mutate, forward; and the one place
//! where a refusal becomes a response.

pub mod forward;
pub mod headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

pub use forward::{Forwarder, UpstreamError};

use crate::auth::challenge::Kind;
use crate::auth::{Bearer, Challenges, Principal, Reason, Rejected, Validator, bearer};
use crate::config::UpstreamAuthorization;
use crate::metrics::{Metrics, Outcome};

/// Everything a request needs, built once at startup.
#[derive(Debug)]
pub struct Gateway {
    pub validator: Validator,
    pub challenges: Challenges,
    pub forwarder: Forwarder,
    pub upstream_authorization: UpstreamAuthorization,
    pub metrics: Arc<Metrics>,
    /// RFC 9728 document, when `challenge.resource_metadata` is on.
    pub resource_metadata: Option<ResourceMetadataDoc>,
}

/// Inputs of the RFC 9728 protected-resource metadata document.
#[derive(Debug, Clone)]
pub struct ResourceMetadataDoc {
    /// `server.public_url`, else the request's own scheme and host.
    pub resource: Option<String>,
    pub authorization_server: String,
}

/// What the decision log records about a request; never the token.
#[derive(Default)]
struct Decision {
    kid: Option<String>,
    tid: Option<String>,
    ver: Option<String>,
    client: Option<String>,
}

impl Decision {
    fn from_principal(p: &Principal) -> Self {
        Self {
            kid: Some(p.kid.clone()),
            tid: p.claims.tid.clone(),
            ver: p.claims.ver.clone(),
            client: p.claims.client_id().map(str::to_owned),
        }
    }

    fn from_rejected(r: Rejected) -> Self {
        Self {
            kid: r.kid,
            tid: r.tid,
            ver: r.ver,
            client: r.client,
        }
    }
}

/// The proxy listener's only handler.
pub async fn handle(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    let started = Instant::now();
    gw.metrics.in_flight.fetch_add(1, Relaxed);
    let method = req.method().clone();
    // The path only: queries (AQL, search terms) may carry personal data.
    let path = req.uri().path().to_owned();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (response, outcome, decision) = gw.decide_and_forward(req, peer, started).await;
    gw.metrics.in_flight.fetch_sub(1, Relaxed);
    gw.metrics.record_request(outcome);
    let (outcome_label, reason) = outcome.labels();
    tracing::info!(
        target: "entragate::access",
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        auth.outcome = outcome_label,
        auth.reason = reason,
        jwt.kid = decision.kid.as_deref(),
        jwt.tid = decision.tid.as_deref(),
        jwt.ver = decision.ver.as_deref(),
        jwt.client = decision.client.as_deref(),
        client.ip = %peer.ip(),
        request_id = request_id.as_deref(),
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

impl Gateway {
    async fn decide_and_forward(
        &self,
        mut req: Request<Body>,
        peer: SocketAddr,
        started: Instant,
    ) -> (Response<Body>, Outcome, Decision) {
        if is_cors_preflight(&req) {
            headers::strip_identity(req.headers_mut());
            headers::set_upstream_authorization(req.headers_mut(), &self.upstream_authorization);
            return self
                .forward(req, peer, Outcome::Preflight, Decision::default())
                .await;
        }
        let result = match bearer::extract(req.headers()) {
            Bearer::Missing => Err(Rejected::bare(Reason::MissingToken)),
            Bearer::Empty => Err(Rejected::bare(Reason::EmptyBearer)),
            Bearer::Duplicate => Err(Rejected::bare(Reason::DuplicateAuthorization)),
            Bearer::Malformed => Err(Rejected::bare(Reason::Malformed)),
            Bearer::Token(token) => self.validator.validate(token).await,
        };
        self.metrics.auth_latency.observe(started.elapsed());
        match result {
            Ok(principal) => {
                let decision = Decision::from_principal(&principal);
                headers::set_identity(req.headers_mut(), &principal);
                headers::set_upstream_authorization(
                    req.headers_mut(),
                    &self.upstream_authorization,
                );
                self.forward(req, peer, Outcome::Allowed, decision).await
            }
            Err(rejected) => {
                let reason = rejected.reason;
                let origin = request_origin(&req);
                (
                    reject(reason, &self.challenges, origin.as_deref()),
                    Outcome::Denied(reason),
                    Decision::from_rejected(rejected),
                )
            }
        }
    }

    async fn forward(
        &self,
        req: Request<Body>,
        peer: SocketAddr,
        outcome: Outcome,
        decision: Decision,
    ) -> (Response<Body>, Outcome, Decision) {
        let sent = Instant::now();
        let result = self.forwarder.forward(req, peer).await;
        self.metrics.upstream_latency.observe(sent.elapsed());
        match result {
            Ok(resp) => {
                self.metrics.record_upstream_status(resp.status());
                (resp, outcome, decision)
            }
            Err(UpstreamError::Unreachable) => (
                json(StatusCode::BAD_GATEWAY, r#"{"error":"bad_gateway"}"#),
                Outcome::UpstreamUnreachable,
                decision,
            ),
            Err(UpstreamError::Timeout) => (
                json(
                    StatusCode::GATEWAY_TIMEOUT,
                    r#"{"error":"gateway_timeout"}"#,
                ),
                Outcome::UpstreamTimeout,
                decision,
            ),
        }
    }
}

/// The response for a refusal (SPEC §4). The reason itself is never sent to the client.
#[must_use]
pub fn reject(reason: Reason, challenges: &Challenges, origin: Option<&str>) -> Response<Body> {
    let (status, kind, body) = match reason {
        Reason::MissingToken => (
            StatusCode::UNAUTHORIZED,
            Kind::Missing,
            r#"{"error":"unauthorized","error_description":"a Microsoft Entra ID bearer token is required"}"#,
        ),
        Reason::EmptyBearer => (
            StatusCode::UNAUTHORIZED,
            Kind::EmptyBearer,
            r#"{"error":"unauthorized","error_description":"a Microsoft Entra ID bearer token is required"}"#,
        ),
        Reason::DuplicateAuthorization => (
            StatusCode::BAD_REQUEST,
            Kind::InvalidRequest,
            r#"{"error":"invalid_request"}"#,
        ),
        Reason::KeysUnavailable => {
            let mut r = json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"temporarily_unavailable"}"#,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            Kind::InvalidToken,
            r#"{"error":"invalid_token"}"#,
        ),
    };
    let mut r = json(status, body);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenges.get(kind, origin));
    r
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

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: browsers send these without
/// credentials, so they go to the upstream (which owns its CORS policy) unauthenticated.
fn is_cors_preflight(req: &Request<Body>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// `http://host[:port]` as the request arrived (h2 `:authority` or `Host`).
fn request_origin(req: &Request<Body>) -> Option<String> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })?;
    // Only a plain host[:port] may flow into a header value.
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return None;
    }
    Some(format!("http://{host}"))
}

/// `GET /.well-known/oauth-protected-resource` (RFC 9728), served without a token.
pub async fn resource_metadata(
    State(gw): State<Arc<Gateway>>,
    req: Request<Body>,
) -> Response<Body> {
    match &gw.resource_metadata {
        Some(doc) => doc.render(request_origin(&req).as_deref()),
        None => json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
    }
}

impl ResourceMetadataDoc {
    fn render(&self, origin: Option<&str>) -> Response<Body> {
        let resource = self.resource.as_deref().or(origin).unwrap_or_default();
        let doc = serde_json::json!({
            "resource": resource,
            "authorization_servers": [self.authorization_server],
            "bearer_methods_supported": ["header"],
        });
        let mut r = Response::new(Body::from(doc.to_string()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}
