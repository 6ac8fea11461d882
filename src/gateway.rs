//! The one decision: [`Gateway::check`] decides every request, whichever door it came in by,
//! and the doors only translate.
//!
//! ```text
//! door (proxy | forward-auth | ext_authz gRPC)
//!   -> RequestView { method, target, headers, peer, scheme, host }   as that door saw it
//!   -> Gateway::check(view) -> Decision { outcome, verdict, api, route, facts }
//!        verdict: Pass { api, edits { remove, set }, body_limit, token_exp } | Refuse(Refusal)
//!   -> the door renders: the proxy applies the edits and streams the request on;
//!      forward-auth answers with them as response headers; ext_authz as an OkHttpResponse
//!      or DeniedHttpResponse
//!   -> one AccessRecord (a drop guard) writes the log line and the counts
//! ```
//!
//! [`Gateway`] is everything a request needs, built once per config by [`crate::app`] and
//! swapped whole on reload ([`SharedGateway`]).

mod apis;
mod build;
mod decision;
mod identity;
mod metadata;
mod record;
mod refusal;
mod traced;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderMap, Method, header};

pub use apis::{Apis, LiveApi};
pub use build::BuildError;
pub use decision::{Decision, Edits, Pass, Verdict};
pub use identity::IdentityHeaders;
pub use metadata::ResourceMetadataDoc;
pub use record::{AccessRecord, CLIENT_CLOSED};
pub use refusal::{Limit, Refusal, grpc_response, grpc_status};
pub use view::{RequestView, origin, split_target};

use crate::access::Via;
use ipnet::IpNet;

use crate::auth::{Bearer, Challenges, Facts, Principal, Reason, Validator, bearer, policy};
use crate::config::{Route, UpstreamAuthorization};
use crate::limits::Limiter;
use crate::metrics::{Metrics, Outcome};
use crate::path;
use crate::revocation::Revocations;
use crate::trace::Tracing;
use crate::upstream::headers;

/// Everything a request needs, built once per config (at startup and on each reload) and
/// read by every door through [`SharedGateway`].
#[derive(Debug)]
pub struct Gateway {
    pub validator: Validator,
    /// The APIs (`[[apis]]`, or the one default API): each with its routes, upstream,
    /// audiences and IP filter.
    pub apis: Apis,
    /// Pass CORS preflights without a token (`server.cors_preflight`).
    pub cors_preflight: bool,
    pub challenges: Challenges,
    pub identity: IdentityHeaders,
    pub metrics: Arc<Metrics>,
    /// RFC 9728 document, when `challenge.resource_metadata` is on.
    pub resource_metadata: Option<ResourceMetadataDoc>,
    /// `server.max_body`; routes may override it.
    pub max_body: Option<u64>,
    /// `server.trusted_proxies`: peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `http` or `https`: how clients reach the main listener.
    pub client_proto: &'static str,
    /// `[[limits]]`, with their store; `None` without limits.
    pub limiter: Option<Limiter>,
    /// The kill switch: this replica's copy of the revocation list.
    pub revocations: Arc<Revocations>,
    /// OpenTelemetry traces (`[telemetry]`), started once per process and kept across
    /// reloads; `None`: tracing is off and costs the request path nothing.
    pub tracing: Option<Arc<Tracing>>,
}

/// The gateway as the request path reads it: the current [`Gateway`], replaced whole by a
/// config reload. Each request loads it once, so a request started under one config ends
/// under it, and connections are never dropped by a reload.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

impl Gateway {
    /// True when `peer` may set forwarding headers (`server.trusted_proxies`).
    #[must_use]
    pub fn trusts(&self, peer: SocketAddr) -> bool {
        headers::is_trusted(&self.trusted_proxies, peer.ip())
    }

    /// The client's address, as the IP filter and the access log see it: for the proxy and
    /// forward-auth, the TCP peer, or, when the peer is in `server.trusted_proxies`, the
    /// nearest address in `X-Forwarded-For` (from the right) that is not itself a trusted
    /// proxy; for `ext_authz`, the downstream address Envoy reports (Envoy applies its own
    /// `xff_num_trusted_hops`).
    #[must_use]
    pub fn client_address(&self, view: &RequestView<'_, '_>) -> Option<std::net::IpAddr> {
        let peer = view.peer?;
        if view.via == Via::ExtAuthz || !headers::is_trusted(&self.trusted_proxies, peer) {
            return Some(peer);
        }
        headers::forwarded_client(view.headers, &self.trusted_proxies).unwrap_or(Some(peer))
    }

    /// Decides on `view`. Every rule of the product is applied here, once, in this order;
    /// the first that refuses decides. Time spent is the auth latency in `/metrics`.
    pub async fn check<'g>(&'g self, view: &RequestView<'_, '_>) -> Decision<'g> {
        let started = Instant::now();
        let mut token_cache = None;
        let mut decision = self.decide(view, &mut token_cache).await;
        decision.token_cache = token_cache;
        self.metrics.auth_latency.observe(started.elapsed());
        decision
    }

    async fn decide<'g>(
        &'g self,
        view: &RequestView<'_, '_>,
        token_cache: &mut Option<bool>,
    ) -> Decision<'g> {
        let headers = view.headers;
        // 1. What the door could read: forward-auth headers that disagree name no request.
        if !view.readable {
            if view.via == Via::ForwardAuth {
                tracing::debug!("forward-auth headers disagree or cannot be read");
            }
            return self.refuse(view, Reason::BadForwardedRequest, None, Facts::default());
        }
        let Ok(method) = Method::from_bytes(view.method.as_bytes()) else {
            return self.refuse(view, Reason::BadForwardedRequest, None, Facts::default());
        };
        // 2. Door limits: CONNECT names a host to open a TCP connection to, which a gateway in
        //    front of one API never does for a client.
        if method == Method::CONNECT {
            return self.refuse_limit(view, Limit::MethodNotAllowed, None, Facts::default());
        }
        let (raw_path, query) = split_target(view.target);
        // 3. RFC 6750 §2: one way to send the token. In the header and in the query is
        //    `invalid_request` (SPEC §4), whatever the route.
        if headers.contains_key(header::AUTHORIZATION) && bearer::token_in_query(query) {
            return self.refuse(view, Reason::DuplicateAuthorization, None, Facts::default());
        }
        // 4. The path APIs and routes are matched on: percent-decoded, dot segments
        //    resolved; one that cannot be is a 400 whatever the rules. Borrowed when already
        //    normal.
        let Ok(normalized) = path::normalize(raw_path) else {
            return self.refuse(view, Reason::BadPath, None, Facts::default());
        };
        // 5. The API: the longest prefix the path is under. None: authenticated below like
        //    any request (no token gets the challenge, never a list of prefixes), then 404.
        let api = self.apis.find(&normalized);
        // 6. The IP filter, before authentication (as APIM's ip-filter before validate-jwt):
        //    a refused address learns nothing about its token. The API's, then the route's.
        let route = api.and_then(|a| a.policy.route(&method, &normalized));
        if api.is_some_and(|a| !a.ip.is_empty()) || route.is_some_and(|r| !r.ip.is_empty()) {
            let client = self.client_address(view);
            if api.is_some_and(|a| !a.permits(client))
                || route.is_some_and(|r| !r.ip.permits(client))
            {
                return self
                    .refuse(view, Reason::IpDenied, route, Facts::default())
                    .in_api(api);
            }
        }
        // 7. CORS preflight: browsers send it without credentials; the upstream owns CORS.
        if let Some(api) = api
            && self.cors_preflight
            && is_cors_preflight(&method, headers)
        {
            return self.pass(view, Outcome::Preflight, api, route, None);
        }
        // 8. Authenticate: the bearer credential, then the token. An anonymous route (there
        //    is one only under an API) passes without one.
        let bearer = bearer::extract(headers);
        if let (Some(api), Some(r), Bearer::Missing | Bearer::Empty) = (api, route, &bearer)
            && r.anonymous
        {
            return self.pass(view, Outcome::Anonymous, api, route, None);
        }
        let token = match bearer {
            Bearer::Token(t) => t,
            Bearer::Missing => {
                return self
                    .refuse(view, Reason::MissingToken, route, Facts::default())
                    .in_api(api);
            }
            Bearer::Empty => {
                return self
                    .refuse(view, Reason::EmptyBearer, route, Facts::default())
                    .in_api(api);
            }
            Bearer::Duplicate => {
                return self
                    .refuse(
                        view,
                        Reason::DuplicateAuthorization,
                        route,
                        Facts::default(),
                    )
                    .in_api(api);
            }
            // Present but unusable: refused even on an anonymous route.
            Bearer::Malformed => {
                return self
                    .refuse(view, Reason::Malformed, route, Facts::default())
                    .in_api(api);
            }
        };
        let principal = match self.validator.validate_noting(token, token_cache).await {
            Ok(p) => p,
            Err(rejected) => {
                let reason = rejected.reason;
                return self
                    .refuse(view, reason, route, Facts::from(rejected))
                    .in_api(api);
            }
        };
        //    The kill switch (src/revocation.rs), after the cache too: a revoked identity's
        //    cached token is refused from the next request on. A local copy, no waiting.
        if let Some(kind) = self.revocations.check(&principal.claims) {
            tracing::debug!(kind = kind.as_str(), "token revoked");
            return self
                .refuse(view, Reason::Revoked, route, Facts::of(&principal))
                .in_api(api);
        }
        // 9. Authenticated, under no API: 404, naming nothing that exists.
        let Some(api) = api else {
            return self.refuse(view, Reason::NoApi, None, Facts::of(&principal));
        };
        // 10. The API's audiences, when APIs name their own: an Entra token for another
        //     API of this gateway is not for this one (401 invalid_token, as any audience).
        if principal.version.is_some()
            && !api.accepts_audience(principal.claims.aud.iter().flat_map(|a| a.iter()))
        {
            return self
                .refuse(view, Reason::AudienceMismatch, route, Facts::of(&principal))
                .in_api(Some(api));
        }
        // 11. Authorize: the route's clients, scopes / roles and claims.
        if let Some(r) = route.filter(|r| !r.anonymous)
            && let Err(f) = policy::authorize(r, &principal)
        {
            return self
                .refuse_scoped(view, f.reason, &f.scope, route, Facts::of(&principal))
                .in_api(Some(api));
        }
        // 12. Step-up: the route's authentication context must be in `acrs`; otherwise
        //     Entra's claims challenge, which sends the user through that context's
        //     Conditional Access policies (MFA, a compliant device).
        if let Some(r) = route
            && let Some(context) = &r.auth_context
            && !has_auth_context(&principal, context)
        {
            let reason = Reason::AuthContextRequired;
            return self
                .refuse_scoped(view, reason, context, route, Facts::of(&principal))
                .in_api(Some(api));
        }
        // 13. Rate limits and quotas (src/limits.rs): only for requests that would pass,
        //     counted on verified claims or the client address.
        if let Some(limiter) = &self.limiter
            && let Some(over) = limiter
                .check(
                    &normalized,
                    &api.name,
                    &principal.claims,
                    self.client_address(view),
                )
                .await
        {
            return refused(
                Outcome::Denied(Reason::RateLimited),
                Refusal::rate_limited(over.headers),
                route,
                Facts::limited(&principal, over.name),
            )
            .in_api(Some(api));
        }
        self.pass(view, Outcome::Allowed, api, route, Some(&principal))
    }

    /// The request's origin, for the RFC 9728 metadata URL of a challenge: built only when the
    /// challenges can carry one (`challenge.resource_metadata`).
    fn origin(&self, view: &RequestView<'_, '_>) -> Option<String> {
        self.challenges
            .serves_resource_metadata()
            .then(|| view.origin())
            .flatten()
    }

    /// A refusal of `reason`, in the shape of the door.
    fn refuse<'g>(
        &self,
        view: &RequestView<'_, '_>,
        reason: Reason,
        route: Option<&'g Route>,
        facts: Facts,
    ) -> Decision<'g> {
        if reason == Reason::KeysUnavailable && view.via == Via::ForwardAuth {
            tracing::warn!(
                "no usable signing keys: answering 401 with Retry-After (forward-auth cannot send 503 through nginx)"
            );
        }
        self.refuse_scoped(view, reason, "", route, facts)
    }

    /// A refusal of `reason` whose challenge names `scope`: what the route accepts (403
    /// `insufficient_scope`), or the authentication context it requires.
    fn refuse_scoped<'g>(
        &self,
        view: &RequestView<'_, '_>,
        reason: Reason,
        scope: &str,
        route: Option<&'g Route>,
        facts: Facts,
    ) -> Decision<'g> {
        let refusal = Refusal::for_door(
            view.via,
            reason,
            scope,
            &self.challenges,
            self.origin(view).as_deref(),
        );
        refused(Outcome::Denied(reason), refusal, route, facts)
    }

    fn refuse_limit<'g>(
        &self,
        view: &RequestView<'_, '_>,
        limit: Limit,
        route: Option<&'g Route>,
        facts: Facts,
    ) -> Decision<'g> {
        let outcome = match limit {
            Limit::BodyTooLarge => Outcome::BodyTooLarge,
            Limit::MethodNotAllowed => Outcome::MethodNotAllowed,
        };
        refused(outcome, Refusal::limit(view.via, limit), route, facts)
    }

    /// A request that may go on to `api` (`outcome`: allowed, anonymous or preflight):
    /// 13. the body limit of its route, then 14. the header edits.
    fn pass<'g>(
        &self,
        view: &RequestView<'_, '_>,
        outcome: Outcome,
        api: &'g LiveApi,
        route: Option<&'g Route>,
        principal: Option<&Arc<Principal>>,
    ) -> Decision<'g> {
        let facts = principal.map(Facts::of).unwrap_or_default();
        let body_limit = if api.any_body_limit {
            route.and_then(|r| r.max_body).unwrap_or(self.max_body)
        } else {
            None
        };
        if let Some(limit) = body_limit
            && declared_length(view.headers).is_some_and(|n| n > limit)
        {
            return self
                .refuse_limit(view, Limit::BodyTooLarge, route, facts)
                .in_api(Some(api));
        }
        let mut edits = Edits {
            set: principal.map(|p| self.identity.sets(p)).unwrap_or_default(),
            ..Edits::default()
        };
        self.identity.client_sent(view.headers, &mut edits.remove);
        match (outcome, &api.upstream_authorization) {
            // An unauthenticated preflight never carries credentials: not the client's, not
            // the gateway's own (`basic`).
            (Outcome::Preflight, _) | (_, UpstreamAuthorization::Strip) => {
                edits.remove.push(header::AUTHORIZATION);
            }
            (_, UpstreamAuthorization::Forward) => {}
            (_, UpstreamAuthorization::Basic(v)) => {
                edits.set.insert(header::AUTHORIZATION, v.clone());
            }
        }
        Decision {
            outcome,
            verdict: Verdict::Pass(Pass {
                api,
                edits,
                body_limit,
                token_exp: principal.and_then(|p| p.claims.exp),
            }),
            api: Some(api),
            route,
            facts,
            token_cache: None,
        }
    }
}

/// True when the token's `acrs` claim (Entra's satisfied authentication contexts) holds
/// `context`.
fn has_auth_context(principal: &Principal, context: &str) -> bool {
    principal
        .claims
        .values("acrs")
        .is_some_and(|v| v.contains(&context))
}

/// A refusal, counted as `outcome`.
fn refused<'g>(
    outcome: Outcome,
    refusal: Refusal,
    route: Option<&'g Route>,
    facts: Facts,
) -> Decision<'g> {
    Decision {
        outcome,
        verdict: Verdict::Refuse(refusal),
        api: None,
        route,
        facts,
        token_cache: None,
    }
}

/// The declared `Content-Length`, when it is one number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: browsers send these without
/// credentials, so they go to the upstream (which owns its CORS policy) unauthenticated.
#[must_use]
pub fn is_cors_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::keys::KeyStore;
    use http::header::HeaderName;
    use http::{HeaderValue, StatusCode};

    /// A gateway with no key sources (every token: `keys_unavailable`), for the rules that
    /// are decided before or without a token.
    fn gateway(extra: &str) -> Gateway {
        let toml = format!(
            "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"https://api.contoso.com\"]\n{extra}"
        );
        let config =
            Config::load(&toml, &[], &|_| Err(std::io::Error::other("no files"))).expect("config");
        Gateway::build(
            &config,
            Arc::new(KeyStore {
                issuers: Vec::new(),
            }),
            &Arc::new(Metrics::new()),
            false,
        )
        .expect("gateway")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    async fn decide<'g>(
        gw: &'g Gateway,
        via: Via,
        method: &str,
        target: &str,
        h: &HeaderMap,
    ) -> Decision<'g> {
        decide_from(gw, via, method, target, h, None).await
    }

    async fn decide_from<'g>(
        gw: &'g Gateway,
        via: Via,
        method: &str,
        target: &str,
        h: &HeaderMap,
        peer: Option<&str>,
    ) -> Decision<'g> {
        gw.check(&RequestView {
            via,
            method,
            target,
            readable: true,
            headers: h,
            peer: peer.and_then(|p| p.parse().ok()),
            scheme: "https",
            host: Some("api.contoso.com"),
        })
        .await
    }

    const TWO_APIS: &str = "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
        [[apis]]\nname = \"ehr\"\nprefix = \"/ehrbase\"\nupstream = { url = \"http://127.0.0.1:1\" }\nip_deny = [\"203.0.113.0/24\"]\n\
        [[apis.routes]]\npath = \"/ehrbase/admin\"\nip_allow = [\"192.0.2.0/24\"]\n\
        [[apis.routes]]\npath = \"/ehrbase/status\"\nanonymous = true\n\
        [[apis]]\nname = \"fhir\"\nprefix = \"/fhir\"\nupstream = { url = \"http://127.0.0.1:2\" }\n";

    #[tokio::test]
    async fn the_api_is_decided_before_the_route_and_carried_in_the_decision() {
        let gw = gateway(TWO_APIS);
        let none = HeaderMap::new();
        let d = decide_from(
            &gw,
            Via::Proxy,
            "GET",
            "/ehrbase/status",
            &none,
            Some("192.0.2.1"),
        )
        .await;
        assert_eq!((d.outcome, d.api_name()), (Outcome::Anonymous, Some("ehr")));
        // The route of one API does not apply to another's paths.
        let d = decide(&gw, Via::Proxy, "GET", "/fhir/ehrbase/status", &none).await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::MissingToken));
        assert_eq!(d.api_name(), Some("fhir"));
        // Matched on the normalised path.
        let d = decide_from(
            &gw,
            Via::Proxy,
            "GET",
            "/x/../ehr%62ase/status",
            &none,
            Some("192.0.2.1"),
        )
        .await;
        assert_eq!(d.api_name(), Some("ehr"));
    }

    #[tokio::test]
    async fn a_path_under_no_api_gets_the_challenge_without_a_token() {
        let gw = gateway(TWO_APIS);
        for via in [Via::Proxy, Via::ForwardAuth, Via::ExtAuthz] {
            let d = decide(&gw, via, "GET", "/elsewhere", &HeaderMap::new()).await;
            assert_eq!(d.outcome, Outcome::Denied(Reason::MissingToken));
            assert_eq!(status(&d), StatusCode::UNAUTHORIZED);
            assert_eq!(d.api_name(), None);
            // A preflight there has nowhere to go: it is not passed.
            let h = headers(&[
                ("origin", "https://app.powerbi.com"),
                ("access-control-request-method", "GET"),
            ]);
            let d = decide(&gw, via, "OPTIONS", "/elsewhere", &h).await;
            assert_eq!(d.outcome, Outcome::Denied(Reason::MissingToken));
        }
        // A token there is still checked first (here: no keys).
        let bearer = headers(&[("authorization", "Bearer a.b.c")]);
        let d = decide(&gw, Via::Proxy, "GET", "/elsewhere", &bearer).await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::Malformed));
    }

    #[tokio::test]
    async fn the_ip_filter_refuses_before_authentication() {
        let gw = gateway(TWO_APIS);
        let bearer = headers(&[("authorization", "Bearer a.b.c")]);
        // The API's ip_deny, whatever the token.
        for via in [Via::Proxy, Via::ForwardAuth, Via::ExtAuthz] {
            let d = decide_from(&gw, via, "GET", "/ehrbase/x", &bearer, Some("203.0.113.5")).await;
            assert_eq!(d.outcome, Outcome::Denied(Reason::IpDenied), "{via:?}");
            assert_eq!(status(&d), StatusCode::FORBIDDEN);
            assert_eq!(d.api_name(), Some("ehr"));
        }
        // Another address reaches the token check.
        let d = decide_from(
            &gw,
            Via::Proxy,
            "GET",
            "/ehrbase/x",
            &bearer,
            Some("198.51.100.1"),
        )
        .await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::Malformed));
        // The route's ip_allow on top of the API's.
        let d = decide_from(
            &gw,
            Via::Proxy,
            "GET",
            "/ehrbase/admin",
            &bearer,
            Some("198.51.100.1"),
        )
        .await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::IpDenied));
        let d = decide_from(
            &gw,
            Via::Proxy,
            "GET",
            "/ehrbase/admin",
            &bearer,
            Some("192.0.2.7"),
        )
        .await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::Malformed));
        // No address known: a filter fails closed.
        let d = decide(&gw, Via::ExtAuthz, "GET", "/ehrbase/admin", &bearer).await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::IpDenied));
        // The other API has no filter.
        let d = decide_from(
            &gw,
            Via::Proxy,
            "GET",
            "/fhir/x",
            &bearer,
            Some("203.0.113.5"),
        )
        .await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::Malformed));
    }

    #[tokio::test]
    async fn the_client_address_follows_the_trusted_proxy_rules() {
        let gw = gateway(TWO_APIS);
        let xff = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("x-forwarded-for", "192.0.2.9, 203.0.113.5"),
        ]);
        for (via, peer, want, why) in [
            (
                Via::Proxy,
                "10.1.1.1",
                Reason::IpDenied,
                "a trusted proxy forwards the client's",
            ),
            (
                Via::ForwardAuth,
                "10.1.1.1",
                Reason::IpDenied,
                "the ingress forwards it",
            ),
            // From anyone else the header is the client's own word: the peer counts.
            (
                Via::Proxy,
                "198.51.100.1",
                Reason::Malformed,
                "an untrusted peer's header",
            ),
            // Envoy reports the client itself (its own xff_num_trusted_hops).
            (
                Via::ExtAuthz,
                "10.1.1.1",
                Reason::Malformed,
                "Envoy's downstream address",
            ),
        ] {
            let d = decide_from(&gw, via, "GET", "/ehrbase/x", &xff, Some(peer)).await;
            assert_eq!(
                d.outcome,
                Outcome::Denied(want),
                "{via:?} from {peer}: {why}"
            );
        }
    }

    fn status(d: &Decision<'_>) -> StatusCode {
        match &d.verdict {
            Verdict::Refuse(r) => r.status,
            Verdict::Pass(_) => StatusCode::OK,
        }
    }

    #[tokio::test]
    async fn the_first_rule_that_refuses_decides() {
        let gw = gateway("");
        let bearer = headers(&[("authorization", "Bearer a.b.c")]);
        // CONNECT before anything else, even a bad path.
        let d = decide(&gw, Via::Proxy, "CONNECT", "/%2F", &bearer).await;
        assert_eq!(
            (d.outcome, status(&d)),
            (Outcome::MethodNotAllowed, StatusCode::METHOD_NOT_ALLOWED)
        );
        // A token in the header and the query, before the path.
        let d = decide(&gw, Via::ExtAuthz, "GET", "/a%2Fb?access_token=x", &bearer).await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::DuplicateAuthorization));
        // Then the path.
        let d = decide(&gw, Via::Proxy, "GET", "/a%2Fb", &bearer).await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::BadPath));
        // The same through forward-auth, in its own shape (400 is 401 there).
        let d = decide(&gw, Via::ForwardAuth, "GET", "/a%2Fb", &bearer).await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::BadPath));
        assert_eq!(status(&d), StatusCode::UNAUTHORIZED);
        // Then the token.
        let d = decide(&gw, Via::Proxy, "GET", "/a", &bearer).await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::Malformed));
        let d = decide(&gw, Via::Proxy, "GET", "/a", &HeaderMap::new()).await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::MissingToken));
        // A method no door can name.
        let d = decide(&gw, Via::ExtAuthz, "GE T", "/a", &bearer).await;
        assert_eq!(d.outcome, Outcome::Denied(Reason::BadForwardedRequest));
    }

    #[tokio::test]
    async fn a_preflight_passes_without_any_credential() {
        let gw = gateway(
            "[upstream]\nauthorization = \"basic\"\nbasic_user = \"u\"\nbasic_password = \"p\"\n",
        );
        let h = headers(&[
            ("origin", "https://app.powerbi.com"),
            ("access-control-request-method", "POST"),
            ("authorization", "Bearer x"),
            ("x-auth-subject", "spoofed"),
        ]);
        let d = decide(&gw, Via::Proxy, "OPTIONS", "/q", &h).await;
        assert_eq!(d.outcome, Outcome::Preflight);
        let Verdict::Pass(pass) = d.verdict else {
            panic!("refused")
        };
        let removed: Vec<&str> = pass.edits.removals().map(HeaderName::as_str).collect();
        assert_eq!(removed, ["x-auth-subject", "authorization"]);
        assert!(
            pass.edits.set.is_empty(),
            "no Basic credential on a preflight"
        );
    }

    #[tokio::test]
    async fn an_anonymous_route_gets_the_upstream_credential_and_loses_spoofed_identity() {
        let gw = gateway(
            "[upstream]\nauthorization = \"basic\"\nbasic_user = \"u\"\nbasic_password = \"p\"\n[[routes]]\npath = \"/status\"\nanonymous = true\nmax_body = 10\n",
        );
        let h = headers(&[("x-auth-roles", "Admin")]);
        let d = decide(&gw, Via::ExtAuthz, "GET", "/status", &h).await;
        assert_eq!(d.outcome, Outcome::Anonymous);
        assert_eq!(d.route.map(|r| r.path.as_str()), Some("/status"));
        let Verdict::Pass(pass) = d.verdict else {
            panic!("refused")
        };
        assert_eq!(pass.body_limit, Some(10));
        assert_eq!(pass.edits.remove, [HeaderName::from_static("x-auth-roles")]);
        assert_eq!(
            pass.edits.set.get(&header::AUTHORIZATION).expect("set"),
            "Basic dTpw"
        );
        // Over the route's limit, declared: 413 (403 through forward-auth).
        let h = headers(&[("content-length", "11")]);
        let d = decide(&gw, Via::Proxy, "POST", "/status", &h).await;
        assert_eq!(
            (d.outcome, status(&d)),
            (Outcome::BodyTooLarge, StatusCode::PAYLOAD_TOO_LARGE)
        );
        let d = decide(&gw, Via::ForwardAuth, "POST", "/status", &h).await;
        assert_eq!(status(&d), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn strip_removes_the_authorization_header() {
        let gw = gateway(
            "[upstream]\nauthorization = \"strip\"\n[[routes]]\npath = \"/\"\nanonymous = true\n",
        );
        let h = headers(&[("authorization", "Bearer")]);
        let d = decide(&gw, Via::ForwardAuth, "GET", "/x", &h).await;
        let Verdict::Pass(pass) = d.verdict else {
            panic!("refused")
        };
        assert_eq!(pass.edits.remove, [header::AUTHORIZATION]);
    }
}
