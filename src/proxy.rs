//! The request's way through the gateway: authenticate, mutate, forward. What a refusal looks
//! like is decided in [`crate::auth::Refusal`].

pub mod forward;
pub mod headers;
pub mod request_id;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use http::{HeaderValue, Request, Response, StatusCode, header};

pub use forward::{Forwarder, UpstreamError};
pub use headers::IdentityHeaders;

use crate::access::{self, Via};
use crate::auth::Reason;
use crate::auth::decide::{Authorizer, Facts, Verdict};
use crate::auth::{Challenges, Refusal};
use crate::config::UpstreamAuthorization;
use crate::metrics::{Metrics, Outcome};

/// Everything a request needs, built once per config (at startup and on each reload) and
/// read by every front end (proxy, forward-auth, `ext_authz`) through [`SharedGateway`].
#[derive(Debug)]
pub struct Gateway {
    pub authorizer: Authorizer,
    pub challenges: Challenges,
    pub identity: IdentityHeaders,
    pub forwarder: Forwarder,
    pub upstream_authorization: UpstreamAuthorization,
    pub metrics: Arc<Metrics>,
    /// RFC 9728 document, when `challenge.resource_metadata` is on.
    pub resource_metadata: Option<ResourceMetadataDoc>,
    /// `server.max_body`; routes may override it.
    pub max_body: Option<u64>,
    /// True when any body limit is configured (global or on a route), so requests without
    /// one skip the lookup.
    pub any_body_limit: bool,
}

/// Inputs of the RFC 9728 protected-resource metadata document.
#[derive(Debug, Clone)]
pub struct ResourceMetadataDoc {
    /// `server.public_url`, else the request's own scheme and host.
    pub resource: Option<String>,
    pub authorization_server: String,
    pub scopes_supported: Vec<String>,
}

/// The gateway as the request path reads it: the current [`Gateway`], replaced whole by a
/// config reload. Each request loads it once, so a request started under one config ends
/// under it, and connections are never dropped by a reload.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

/// The proxy listener's only handler: decide, then mutate and forward, or refuse.
pub async fn handle(
    State(shared): State<SharedGateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    let gw = shared.load_full();
    gw.handle(peer, req).await
}

impl Gateway {
    async fn handle(&self, peer: SocketAddr, mut req: Request<Body>) -> Response<Body> {
        let started = Instant::now();
        if req.method() == http::Method::CONNECT {
            // Not a tunnel: CONNECT names a host to open a TCP connection to, which a gateway
            // in front of one API never does for a client.
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed"}"#,
            );
        }
        let in_flight = self.metrics.in_flight();
        // For the log, which records the path only: queries (AQL, search terms) may carry
        // personal data. A `Uri` shares its bytes, so keeping it copies nothing. The request
        // id was set (or kept from the client) by the request-id layer in front of this
        // handler; read from the request, since the response gets it only after this returns.
        let mut pending = Pending {
            metrics: &self.metrics,
            method: req.method().clone(),
            uri: req.uri().clone(),
            request_id: req.headers().get(access::REQUEST_ID).cloned(),
            peer,
            started,
            facts: Facts::default(),
            done: false,
        };
        let (verdict, facts) = if req.headers().contains_key(header::AUTHORIZATION)
            && crate::auth::bearer::token_in_query(req.uri().query())
        {
            // SPEC §4: a token in the header and elsewhere is `invalid_request`.
            (
                Verdict::Refused {
                    reason: Reason::DuplicateAuthorization,
                    scope: String::new(),
                },
                Facts::default(),
            )
        } else {
            self.authorizer
                .decide(req.method(), req.uri().path(), req.headers())
                .await
        };
        // The gateway is the hop the client's `Connection` header speaks to: the headers it
        // names were read (above) and end here, before anything is set for the upstream, so
        // they cannot name the verified identity or the upstream credentials away.
        headers::remove_hop_by_hop(req.headers_mut());
        self.metrics.auth_latency.observe(started.elapsed());
        pending.facts = facts;
        let (response, outcome, upstream) = match verdict {
            Verdict::Refused { reason, scope } => {
                let origin = request_origin(&req, self.forwarder.client_proto());
                (
                    Refusal::proxy(reason, &scope, &self.challenges, origin.as_deref())
                        .into_response(),
                    Outcome::Denied(reason),
                    None,
                )
            }
            _ if self.body_too_large(&mut req) => (
                json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    r#"{"error":"payload_too_large"}"#,
                ),
                Outcome::BodyTooLarge,
                None,
            ),
            Verdict::Preflight => {
                self.identity.strip(req.headers_mut());
                // An unauthenticated preflight never carries credentials: not the client's,
                // not the gateway's own (`basic`).
                req.headers_mut().remove(header::AUTHORIZATION);
                self.forward(req, peer, Outcome::Preflight).await
            }
            Verdict::Anonymous => {
                self.identity.strip(req.headers_mut());
                headers::set_upstream_authorization(
                    req.headers_mut(),
                    &self.upstream_authorization,
                );
                self.forward(req, peer, Outcome::Anonymous).await
            }
            Verdict::Allowed(principal) => {
                self.identity.set(req.headers_mut(), &principal);
                headers::set_upstream_authorization(
                    req.headers_mut(),
                    &self.upstream_authorization,
                );
                self.forward(req, peer, Outcome::Allowed).await
            }
        };
        drop(in_flight);
        // A request whose body broke off is logged as the client's doing (499), whatever a
        // client still listening is told.
        let status = if outcome == Outcome::ClientClosed {
            CLIENT_CLOSED
        } else {
            response.status().as_u16()
        };
        pending.finish(status, outcome, upstream);
        response
    }
}

/// A request being answered, for its one log line and count. Normally [`Pending::finish`]
/// writes them; when the client goes away first (hyper drops the handler's future when the
/// connection closes or the HTTP/2 stream is reset, which also aborts the upstream request),
/// dropping it writes them with outcome `client_closed` and nginx's status 499, so abandoned
/// requests (slow upstreams, impatient clients) show in the log and `/metrics` too.
struct Pending<'a> {
    metrics: &'a Metrics,
    method: http::Method,
    uri: http::Uri,
    request_id: Option<HeaderValue>,
    peer: SocketAddr,
    started: Instant,
    facts: Facts,
    done: bool,
}

/// The status logged for a request whose client went away before its answer (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

impl Pending<'_> {
    fn finish(&mut self, status: u16, outcome: Outcome, upstream: Option<Duration>) {
        self.done = true;
        self.metrics.record_request(outcome);
        access::log(&access::Entry {
            via: Via::Proxy,
            method: self.method.as_str(),
            path: self.uri.path(),
            status,
            outcome,
            facts: &self.facts,
            client_ip: Some(self.peer.ip()),
            request_id: self.request_id.as_ref().and_then(|v| v.to_str().ok()),
            started: self.started,
            upstream,
        });
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(CLIENT_CLOSED, Outcome::ClientClosed, None);
        }
    }
}

impl Gateway {
    /// Applies the body limit of the request's route (or `server.max_body`): true when the
    /// declared `Content-Length` is already over it; otherwise a streamed body is cut off at
    /// the limit (the upload then fails with 413, see [`Gateway::forward`]).
    fn body_too_large(&self, req: &mut Request<Body>) -> bool {
        if !self.any_body_limit {
            return false;
        }
        let route_limit = crate::auth::path::normalize(req.uri().path())
            .ok()
            .and_then(|p| {
                self.authorizer
                    .policy
                    .route(req.method(), &p)
                    .and_then(|r| r.max_body)
            });
        let Some(limit) = route_limit.unwrap_or(self.max_body) else {
            return false;
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return true;
        }
        let body = std::mem::replace(req.body_mut(), Body::empty());
        *req.body_mut() = Body::new(http_body_util::Limited::new(
            body,
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
        false
    }

    async fn forward(
        &self,
        req: Request<Body>,
        peer: SocketAddr,
        outcome: Outcome,
    ) -> (Response<Body>, Outcome, Option<Duration>) {
        let sent = Instant::now();
        let result = self.forwarder.forward(req, peer).await;
        let elapsed = sent.elapsed();
        self.metrics.upstream_latency.observe(elapsed);
        let (response, outcome) = match result {
            Ok(resp) => {
                self.metrics.record_upstream_status(resp.status());
                (resp, outcome)
            }
            Err(UpstreamError::Unreachable) => (
                json(StatusCode::BAD_GATEWAY, r#"{"error":"bad_gateway"}"#),
                Outcome::UpstreamUnreachable,
            ),
            Err(UpstreamError::BodyTooLarge) => (
                json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    r#"{"error":"payload_too_large"}"#,
                ),
                Outcome::BodyTooLarge,
            ),
            Err(UpstreamError::ClientBody) => (
                json(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"invalid_request","error_description":"request body"}"#,
                ),
                Outcome::ClientClosed,
            ),
            Err(UpstreamError::Timeout) => (
                json(
                    StatusCode::GATEWAY_TIMEOUT,
                    r#"{"error":"gateway_timeout"}"#,
                ),
                Outcome::UpstreamTimeout,
            ),
        };
        (response, outcome, Some(elapsed))
    }
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

/// `{scheme}://host[:port]` as the request arrived (h2 `:authority` or `Host`).
fn request_origin(req: &Request<Body>, scheme: &str) -> Option<String> {
    let host = req
        .uri()
        .authority()
        .map(http::uri::Authority::as_str)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })?;
    origin(scheme, host)
}

/// `scheme://host[:port]`, when `scheme` is http(s) and `host` a plain host[:port]: only those
/// may flow into a header value (the RFC 9728 metadata URL of a challenge).
#[must_use]
pub fn origin(scheme: &str, host: &str) -> Option<String> {
    if !matches!(scheme, "http" | "https")
        || host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return None;
    }
    Some(format!("{scheme}://{host}"))
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
        return gw.handle(peer, req).await;
    };
    // The path-inserted form names a resource with a path (RFC 9728 §3.1).
    let resource_path = req
        .uri()
        .path()
        .strip_prefix(crate::auth::challenge::RESOURCE_METADATA_PATH)
        .unwrap_or("");
    let origin =
        request_origin(&req, gw.forwarder.client_proto()).map(|o| format!("{o}{resource_path}"));
    doc.render(origin.as_deref())
}

impl ResourceMetadataDoc {
    /// The document; `resource` is `server.public_url`, else `origin` (the request's own).
    #[must_use]
    pub fn render(&self, origin: Option<&str>) -> Response<Body> {
        let resource = self.resource.as_deref().or(origin).unwrap_or_default();
        let doc = serde_json::json!({
            "resource": resource,
            "authorization_servers": [self.authorization_server],
            "bearer_methods_supported": ["header"],
            "scopes_supported": self.scopes_supported,
        });
        let mut r = Response::new(Body::from(doc.to_string()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}
