//! What a refused request gets back: the one match that turns a [`Reason`] into a status, a
//! challenge and a body (SPEC §4), and the two shapes of it. [`crate::gateway::Gateway::check`]
//! picks the shape for the door the request came in by; the doors only render it.
//!
//! - [`Refusal::proxy`] is the full answer: 400, 401, 403 or 503. The proxy listener sends it,
//!   and so does the Envoy `ext_authz` gRPC front end, since Envoy passes any status on.
//! - [`Refusal::forward_auth`] is what an ingress can carry: nginx `auth_request` (and so
//!   ingress-nginx `auth-url`) turns any status but 401 and 403 into a 500, so 400 becomes 401
//!   `error="invalid_request"` and 503 (no usable signing keys) becomes 401 `invalid_token`
//!   with `Retry-After` and a `temporarily_unavailable` body. Traefik and Envoy's HTTP flavour
//!   pass status, headers and body on; nginx passes only the status and, on a 401, the one
//!   `WWW-Authenticate`.
//!
//! The reason itself never reaches the client; it goes to the decision log and the metrics.

use axum::body::Body;
use http::header::{self, HeaderName};
use http::{HeaderValue, Response, StatusCode};

use crate::access::Via;
use crate::auth::Reason;
use crate::auth::challenge::{Challenges, Kind};

const NO_TOKEN: &str = r#"{"error":"unauthorized","error_description":"a Microsoft Entra ID bearer token is required"}"#;
const INVALID_TOKEN: &str = r#"{"error":"invalid_token"}"#;
const INVALID_REQUEST: &str = r#"{"error":"invalid_request"}"#;
const BAD_PATH: &str =
    r#"{"error":"invalid_request","error_description":"the request path cannot be normalised"}"#;
const INSUFFICIENT_SCOPE: &str = r#"{"error":"insufficient_scope"}"#;
const UNAVAILABLE: &str = r#"{"error":"temporarily_unavailable"}"#;
const PAYLOAD_TOO_LARGE: &str = r#"{"error":"payload_too_large"}"#;
const METHOD_NOT_ALLOWED: &str = r#"{"error":"method_not_allowed"}"#;
const RATE_LIMITED: &str = r#"{"error":"rate_limited"}"#;
const NOT_FOUND: &str = r#"{"error":"not_found"}"#;
const FORBIDDEN: &str = r#"{"error":"forbidden"}"#;

/// Seconds a client is asked to wait when no signing keys are usable.
const RETRY_AFTER_SECS: &str = "5";

/// A refusal as the client sees it, before it is rendered for a front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// The one `WWW-Authenticate` value, when the refusal carries a challenge.
    pub challenge: Option<HeaderValue>,
    /// `Retry-After` (seconds), for a refusal that is temporary.
    pub retry_after: Option<&'static str>,
    /// `application/json`, never naming the reason.
    pub body: &'static str,
    /// Further headers (a 429's `Retry-After`, `RateLimit-Policy` and `RateLimit`).
    pub extra: Vec<(HeaderName, HeaderValue)>,
}

/// A refusal that is no token matter: the request itself is outside what the gateway passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The declared body is over the route's (or `server.max_body`) limit: 413.
    BodyTooLarge,
    /// `CONNECT`: a gateway in front of one API opens no tunnels: 405.
    MethodNotAllowed,
}

impl Refusal {
    /// The answer to `reason` in the shape the door `via` can carry: forward-auth's for
    /// forward-auth, the full proxy answer for the proxy and Envoy `ext_authz` (which passes
    /// any status on).
    #[must_use]
    pub fn for_door(
        via: Via,
        reason: Reason,
        scope: &str,
        challenges: &Challenges,
        origin: Option<&str>,
    ) -> Self {
        match via {
            Via::ForwardAuth => Self::forward_auth(reason, scope, challenges, origin),
            Via::Proxy | Via::ExtAuthz => Self::proxy(reason, scope, challenges, origin),
        }
    }

    /// The answer to a [`Limit`]: 413 or 405 with a JSON body and no challenge (a sign-in
    /// would not help). Forward-auth answers 403 instead, since nginx turns any status but
    /// 401 and 403 into a 500; the body still names the condition.
    #[must_use]
    pub fn limit(via: Via, limit: Limit) -> Self {
        let (status, body) = match limit {
            Limit::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, PAYLOAD_TOO_LARGE),
            Limit::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED),
        };
        Self {
            status: if via == Via::ForwardAuth {
                StatusCode::FORBIDDEN
            } else {
                status
            },
            challenge: None,
            retry_after: None,
            body,
            extra: Vec::new(),
        }
    }

    /// Over a `[[limits]]` entry: 429 `{"error":"rate_limited"}` with `headers`
    /// (`Retry-After`, `RateLimit-Policy`, `RateLimit`), and no challenge (a new token
    /// would not help). The same through every door: Traefik, Caddy and Envoy pass a
    /// forward-auth 429 and its headers on.
    #[must_use]
    pub fn rate_limited(headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            challenge: None,
            retry_after: None,
            body: RATE_LIMITED,
            extra: headers,
        }
    }

    /// The proxy-mode answer (SPEC §4). `scope` lists what the route accepts (403s), or
    /// names the authentication context a route requires (`auth_context_required`);
    /// `origin` (`scheme://host`) feeds an RFC 9728 metadata URL that follows the request.
    #[must_use]
    pub fn proxy(
        reason: Reason,
        scope: &str,
        challenges: &Challenges,
        origin: Option<&str>,
    ) -> Self {
        let challenge = |kind| Some(challenges.get(kind, origin));
        if reason.is_forbidden() {
            return Self {
                status: StatusCode::FORBIDDEN,
                challenge: Some(challenges.insufficient_scope(scope, origin)),
                retry_after: None,
                body: INSUFFICIENT_SCOPE,
                extra: Vec::new(),
            };
        }
        let (status, challenge, retry_after, body) = match reason {
            Reason::MissingToken => (
                StatusCode::UNAUTHORIZED,
                challenge(Kind::Missing),
                None,
                NO_TOKEN,
            ),
            Reason::EmptyBearer => (
                StatusCode::UNAUTHORIZED,
                challenge(Kind::EmptyBearer),
                None,
                NO_TOKEN,
            ),
            Reason::DuplicateAuthorization | Reason::BadForwardedRequest => (
                StatusCode::BAD_REQUEST,
                challenge(Kind::InvalidRequest),
                None,
                INVALID_REQUEST,
            ),
            // Not a token problem: no challenge, so a client does not start a sign-in.
            Reason::BadPath => (StatusCode::BAD_REQUEST, None, None, BAD_PATH),
            // Decided with its headers by `rate_limited`; this is the bare shape.
            Reason::RateLimited => (StatusCode::TOO_MANY_REQUESTS, None, None, RATE_LIMITED),
            // After authentication: nothing here, and no list of what is.
            Reason::NoApi => (StatusCode::NOT_FOUND, None, None, NOT_FOUND),
            // The address, not the token: a sign-in would not help.
            Reason::IpDenied => (StatusCode::FORBIDDEN, None, None, FORBIDDEN),
            // Step-up: Entra's claims challenge names the context to sign in with.
            Reason::AuthContextRequired => (
                StatusCode::UNAUTHORIZED,
                Some(challenges.insufficient_claims(scope, origin)),
                None,
                INVALID_TOKEN,
            ),
            // Not the token's fault either: retry later rather than prompt a new sign-in.
            Reason::KeysUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                Some(RETRY_AFTER_SECS),
                UNAVAILABLE,
            ),
            _ => (
                StatusCode::UNAUTHORIZED,
                challenge(Kind::InvalidToken),
                None,
                INVALID_TOKEN,
            ),
        };
        Self {
            status,
            challenge,
            retry_after,
            body,
            extra: Vec::new(),
        }
    }

    /// The forward-auth answer: only 401 or 403, each with exactly one `WWW-Authenticate`.
    /// What the proxy answers with 400 is 401 `error="invalid_request"`; 503 (no usable
    /// keys) is 401 `error="invalid_token"` with `Retry-After` and the
    /// `temporarily_unavailable` body, the closest an ingress can carry.
    #[must_use]
    pub fn forward_auth(
        reason: Reason,
        scope: &str,
        challenges: &Challenges,
        origin: Option<&str>,
    ) -> Self {
        let full = Self::proxy(reason, scope, challenges, origin);
        match full.status {
            StatusCode::BAD_REQUEST => Self {
                status: StatusCode::UNAUTHORIZED,
                challenge: Some(challenges.get(Kind::InvalidRequest, origin)),
                ..full
            },
            StatusCode::SERVICE_UNAVAILABLE => Self {
                status: StatusCode::UNAUTHORIZED,
                challenge: Some(challenges.get(Kind::InvalidToken, origin)),
                ..full
            },
            // nginx turns a 404 into a 500: 403, the body still saying `not_found`.
            StatusCode::NOT_FOUND => Self {
                status: StatusCode::FORBIDDEN,
                ..full
            },
            _ => full,
        }
    }

    /// Every response header of the refusal, in order.
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        [
            Some((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )),
            Some((header::CACHE_CONTROL, HeaderValue::from_static("no-store"))),
            self.challenge
                .clone()
                .map(|c| (header::WWW_AUTHENTICATE, c)),
            self.retry_after
                .map(|s| (header::RETRY_AFTER, HeaderValue::from_static(s))),
        ]
        .into_iter()
        .flatten()
        .chain(self.extra.iter().cloned())
    }

    /// The refusal as an HTTP response.
    #[must_use]
    pub fn into_response(self) -> Response<Body> {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        for (name, value) in self.headers() {
            h.insert(name, value);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Challenge;

    fn challenges() -> Challenges {
        Challenges::new(
            &Challenge {
                authorization_uri: "https://login.microsoftonline.com/t/oauth2/authorize".into(),
                realm: "https://login.microsoftonline.com/t".into(),
                resource_metadata: false,
            },
            None,
        )
        .expect("valid")
    }

    #[test]
    fn forward_auth_answers_only_401_and_403() {
        let c = challenges();
        for reason in Reason::ALL {
            if reason == Reason::RateLimited {
                // 429 on every door: an ingress that passes it on (Traefik, Caddy, Envoy)
                // gives the client its Retry-After.
                continue;
            }
            let r = Refusal::forward_auth(reason, "s", &c, None);
            assert!(
                matches!(r.status.as_u16(), 401 | 403),
                "{reason}: {}",
                r.status
            );
            // nginx copies a challenge only from a 401; a 403 of the address or of no API
            // carries none (a sign-in would not help).
            if r.status == StatusCode::UNAUTHORIZED || reason.is_forbidden() {
                assert!(r.challenge.is_some(), "{reason} has no challenge");
            }
        }
    }

    #[test]
    fn no_api_ip_denied_and_auth_context_answers() {
        let c = challenges();
        let r = Refusal::proxy(Reason::NoApi, "", &c, None);
        assert_eq!((r.status.as_u16(), r.body), (404, NOT_FOUND));
        assert!(r.challenge.is_none());
        let r = Refusal::forward_auth(Reason::NoApi, "", &c, None);
        assert_eq!((r.status.as_u16(), r.body), (403, NOT_FOUND));
        for r in [
            Refusal::proxy(Reason::IpDenied, "", &c, None),
            Refusal::forward_auth(Reason::IpDenied, "", &c, None),
        ] {
            assert_eq!((r.status.as_u16(), r.body), (403, FORBIDDEN));
            assert!(r.challenge.is_none());
        }
        for r in [
            Refusal::proxy(Reason::AuthContextRequired, "c1", &c, None),
            Refusal::forward_auth(Reason::AuthContextRequired, "c1", &c, None),
        ] {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            assert_eq!(r.challenge, Some(c.insufficient_claims("c1", None)));
        }
    }

    #[test]
    fn forward_auth_maps_400_and_503() {
        let c = challenges();
        let r = Refusal::forward_auth(Reason::DuplicateAuthorization, "", &c, None);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(
            r.challenge
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.ends_with("error=\"invalid_request\""))
        );
        let r = Refusal::forward_auth(Reason::BadPath, "", &c, None);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body, BAD_PATH);
        let r = Refusal::forward_auth(Reason::KeysUnavailable, "", &c, None);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.retry_after, Some("5"));
        assert_eq!(r.body, UNAVAILABLE);
        assert!(
            r.challenge
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.ends_with("error=\"invalid_token\""))
        );
    }

    #[test]
    fn limits_are_413_and_405_but_403_through_forward_auth() {
        let r = Refusal::limit(Via::Proxy, Limit::BodyTooLarge);
        assert_eq!((r.status.as_u16(), r.body), (413, PAYLOAD_TOO_LARGE));
        let r = Refusal::limit(Via::ExtAuthz, Limit::MethodNotAllowed);
        assert_eq!((r.status.as_u16(), r.body), (405, METHOD_NOT_ALLOWED));
        for limit in [Limit::BodyTooLarge, Limit::MethodNotAllowed] {
            let r = Refusal::limit(Via::ForwardAuth, limit);
            assert_eq!(r.status, StatusCode::FORBIDDEN);
            assert!(r.challenge.is_none());
        }
    }

    #[test]
    fn a_rate_limited_refusal_carries_its_headers_and_no_challenge() {
        let r = Refusal::rate_limited(vec![(header::RETRY_AFTER, HeaderValue::from_static("7"))]);
        assert_eq!((r.status.as_u16(), r.body), (429, RATE_LIMITED));
        let names: Vec<String> = r.headers().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["content-type", "cache-control", "retry-after"]);
        let c = challenges();
        let r = Refusal::proxy(Reason::Revoked, "", &c, None);
        assert_eq!((r.status.as_u16(), r.body), (401, INVALID_TOKEN));
    }

    #[test]
    fn the_probe_answer_is_the_same_in_both_shapes() {
        let c = challenges();
        let expected =
            "Bearer authorization_uri=https://login.microsoftonline.com/t/oauth2/authorize";
        for r in [
            Refusal::proxy(Reason::EmptyBearer, "", &c, None),
            Refusal::forward_auth(Reason::EmptyBearer, "", &c, None),
        ] {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            assert_eq!(r.challenge.expect("challenge"), expected);
        }
    }
}
