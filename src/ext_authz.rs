//! Envoy external authorization over gRPC (`envoy.service.auth.v3.Authorization/Check`) on
//! `server.ext_authz_listen`, in any mode. This is what Envoy's `ext_authz` HTTP filter with a
//! `grpc_service`, Envoy Gateway's `SecurityPolicy` `extAuth.grpc` and Istio's `CUSTOM`
//! authorization (`envoyExtAuthzGrpc`) call. Message types come from the `envoy-types` crate.
//!
//! Envoy sends the original request's method, path and headers as data, so no header needs to
//! be trusted here; the listener itself must be reachable only by Envoy (a NetworkPolicy).
//! The decision is the proxy's ([`Authorizer::decide`](crate::auth::decide::Authorizer::decide));
//! only the last step differs:
//! - allowed: an OK response whose `headers` set the verified identity upstream (overwriting),
//!   whose `headers_to_remove` drop every other client-sent identity header, and which applies
//!   `upstream.authorization` (`strip` removes `Authorization`, `basic` replaces it);
//! - refused: a denied response with the proxy mode's status (400, 401, 403 or 503, since Envoy
//!   passes any status on), its `WWW-Authenticate`, `Retry-After` and JSON body
//!   ([`Refusal::proxy`]).

use std::net::IpAddr;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatus,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt as _, CheckResponseExt as _, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::{self, Via};
use crate::auth::decide::{Facts, Verdict};
use crate::auth::{Principal, Reason, Refusal};
use crate::config::UpstreamAuthorization;
use crate::metrics::Outcome;
use crate::proxy::{self, Gateway, SharedGateway};

/// The `Authorization` gRPC service. It reads the gateway in force once per `Check`, so a
/// reload's routes, audiences and issuers apply here as on the main listener.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    gw: SharedGateway,
}

impl ExtAuthz {
    #[must_use]
    pub fn new(gw: SharedGateway) -> Self {
        Self { gw }
    }
}

/// Serves the `Authorization` service on `listener` (HTTP/2, plaintext) until `signal` turns
/// true.
pub fn serve(
    listener: TcpListener,
    service: ExtAuthz,
    mut signal: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(service))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "ext_authz listener failed");
        }
    })
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let check = request.into_inner();
        Ok(tonic::Response::new(self.decide(&check).await))
    }
}

impl ExtAuthz {
    /// The answer to one `Check`.
    pub async fn decide(&self, check: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        let gw = self.gw.load_full();
        let Some(http) = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            // The network (L4) ext_authz filter: nothing to decide on.
            return CheckResponse::with_status(tonic::Status::permission_denied(
                "entragate decides on HTTP requests only",
            ));
        };
        let headers = header_map(http);
        // `path` is the request target as sent: path and query.
        let path = &http.path[..http.path.find(['?', '#']).unwrap_or(http.path.len())];
        let method = Method::from_bytes(http.method.as_bytes()).ok();
        let client_ip = check
            .get_client_address()
            .and_then(|a| a.parse::<IpAddr>().ok());

        let in_flight = gw.metrics.in_flight();
        let (verdict, facts) = match &method {
            Some(m) if path.starts_with('/') => gw.authorizer.decide(m, path, &headers).await,
            _ => (
                Verdict::Refused {
                    reason: Reason::BadForwardedRequest,
                    scope: String::new(),
                },
                Facts::default(),
            ),
        };
        gw.metrics.auth_latency.observe(started.elapsed());
        let (response, status, outcome) = match verdict {
            Verdict::Refused { reason, scope } => {
                let origin = proxy::origin(&http.scheme, &http.host);
                let refusal = Refusal::proxy(reason, &scope, &gw.challenges, origin.as_deref());
                let status = refusal.status;
                (denied(&refusal), status, Outcome::Denied(reason))
            }
            Verdict::Preflight => (ok(&gw, &headers, None), StatusCode::OK, Outcome::Preflight),
            Verdict::Anonymous => (ok(&gw, &headers, None), StatusCode::OK, Outcome::Anonymous),
            Verdict::Allowed(principal) => (
                ok(&gw, &headers, Some(&principal)),
                StatusCode::OK,
                Outcome::Allowed,
            ),
        };
        drop(in_flight);
        gw.metrics.record_request(outcome);
        let request_id = headers
            .get(access::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .or_else(|| (!http.id.is_empty()).then_some(http.id.as_str()));
        access::log(&access::Entry {
            via: Via::ExtAuthz,
            method: &http.method,
            path,
            status: status.as_u16(),
            outcome,
            facts: &facts,
            client_ip,
            request_id,
            started,
            upstream: None,
        });
        response
    }
}

/// Allowed: set the identity (and `upstream.authorization`), remove the client's other
/// identity headers.
fn ok(gw: &Gateway, request: &HeaderMap, principal: Option<&Principal>) -> CheckResponse {
    let mut set = HeaderMap::new();
    if let Some(p) = principal {
        gw.identity.set(&mut set, p);
    }
    let mut remove = gw.identity.client_sent(request);
    match &gw.upstream_authorization {
        UpstreamAuthorization::Forward => {}
        UpstreamAuthorization::Strip => remove.push(header::AUTHORIZATION),
        UpstreamAuthorization::Basic(v) => {
            set.insert(header::AUTHORIZATION, v.clone());
        }
    }
    let mut ok = OkHttpResponseBuilder::new();
    for (name, value) in &set {
        // Identity values are visible ASCII (checked when set), the Basic header too.
        if let Ok(v) = value.to_str() {
            ok.add_header(
                name.as_str(),
                v,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
    }
    // A header both set and removed would depend on Envoy's order of applying them.
    for name in remove.iter().filter(|n| !set.contains_key(*n)) {
        ok.remove_header(name.as_str());
    }
    let mut response = CheckResponse::with_status(tonic::Status::ok("allowed"));
    response.set_http_response(ok);
    response
}

/// Denied: the proxy mode's refusal, for Envoy to send to the client as is.
fn denied(refusal: &Refusal) -> CheckResponse {
    let mut d = DeniedHttpResponseBuilder::new();
    for (name, value) in refusal.headers() {
        if let Ok(v) = value.to_str() {
            d.add_header(
                name.as_str(),
                v,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
    }
    d.set_body(refusal.body);
    let mut denied = d.build();
    denied.status = Some(HttpStatus {
        code: i32::from(refusal.status.as_u16()),
    });
    let status = match refusal.status {
        StatusCode::UNAUTHORIZED => tonic::Status::unauthenticated("unauthenticated"),
        StatusCode::BAD_REQUEST => tonic::Status::invalid_argument("invalid request"),
        StatusCode::SERVICE_UNAVAILABLE => tonic::Status::unavailable("keys unavailable"),
        _ => tonic::Status::permission_denied("forbidden"),
    };
    let mut response = CheckResponse::with_status(status);
    response.set_http_response(denied);
    response
}

/// The original request's headers. Envoy sends either a map (repeated headers merged with
/// `,`) or, with `encode_raw_headers`, a list that keeps repeats apart (so two
/// `Authorization` headers are seen as two). Pseudo-headers and unreadable entries are left out.
fn header_map(http: &HttpRequest) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut add = |key: &str, value: &[u8]| {
        if key.starts_with(':') {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            out.append(name, value);
        }
    };
    match &http.header_map {
        Some(raw) if !raw.headers.is_empty() => {
            for h in &raw.headers {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value
                };
                add(&h.key, value);
            }
        }
        _ => {
            for (k, v) in &http.headers {
                add(k, v.as_bytes());
            }
        }
    }
    out
}
