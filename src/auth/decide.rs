//! The gateway's decision on a request: authenticate, then authorize against the route rules.
//!
//! It reads only the method, path and headers, so the proxy, forward-auth and ext_authz front
//! ends can all share it and differ only in what they do with the [`Verdict`].

use std::sync::Arc;

use http::{HeaderMap, Method, header};

use super::path;
use super::policy::{self, Policy};
use super::{Bearer, Principal, Reason, Rejected, Validator, bearer};

/// What to do with a request.
#[derive(Debug)]
pub enum Verdict {
    /// A CORS preflight: pass on without a token.
    Preflight,
    /// An anonymous route and no token: pass on without identity.
    Anonymous,
    /// A valid token that may use the route.
    Allowed(Arc<Principal>),
    /// Refused; `scope` lists what the route accepts (for 403s, may be empty).
    Refused { reason: Reason, scope: String },
}

/// What the decision log records about the token; never the token itself.
///
/// Built without copying: an accepted token's facts are its (shared) principal, and only a
/// refusal, which has no principal, carries its own (capped) strings.
#[derive(Debug, Default, Clone)]
pub struct Facts(FactsOf);

#[derive(Debug, Default, Clone)]
enum FactsOf {
    /// No token was read.
    #[default]
    None,
    Accepted(Arc<Principal>),
    Rejected(Box<Rejected>),
}

impl Facts {
    fn of(p: &Arc<Principal>) -> Self {
        Self(FactsOf::Accepted(Arc::clone(p)))
    }

    /// The token header's `kid`.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::None => None,
            FactsOf::Accepted(p) => Some(&p.kid),
            FactsOf::Rejected(r) => r.kid.as_deref(),
        }
    }

    /// The token's `tid`.
    #[must_use]
    pub fn tid(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::None => None,
            FactsOf::Accepted(p) => p.claims.tid.as_deref(),
            FactsOf::Rejected(r) => r.tid.as_deref(),
        }
    }

    /// The token's `ver`.
    #[must_use]
    pub fn ver(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::None => None,
            FactsOf::Accepted(p) => p.claims.ver.as_deref(),
            FactsOf::Rejected(r) => r.ver.as_deref(),
        }
    }

    /// The token's client application (`azp`, else `appid`).
    #[must_use]
    pub fn client(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::None => None,
            FactsOf::Accepted(p) => p.claims.client_id(),
            FactsOf::Rejected(r) => r.client.as_deref(),
        }
    }
}

/// Values read from a refused (unverified) token are cut to this many bytes for the log, so
/// a hostile 60 KB `kid` cannot flood it.
const MAX_LOGGED: usize = 128;

fn capped(v: Option<String>) -> Option<String> {
    v.map(|mut s| {
        if s.len() > MAX_LOGGED {
            let mut end = MAX_LOGGED;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push('…');
        }
        s
    })
}

impl From<Rejected> for Facts {
    fn from(r: Rejected) -> Self {
        Self(FactsOf::Rejected(Box::new(Rejected {
            reason: r.reason,
            kid: capped(r.kid),
            tid: capped(r.tid),
            ver: capped(r.ver),
            client: capped(r.client),
        })))
    }
}

/// Token validation plus route rules.
#[derive(Debug)]
pub struct Authorizer {
    pub validator: Validator,
    pub policy: Policy,
    /// Pass CORS preflights without a token.
    pub cors_preflight: bool,
}

impl Authorizer {
    /// Decides on a request with this method, raw path and headers.
    pub async fn decide(
        &self,
        method: &Method,
        raw_path: &str,
        headers: &HeaderMap,
    ) -> (Verdict, Facts) {
        let refused = |reason| Verdict::Refused {
            reason,
            scope: String::new(),
        };
        // Validated on every request (a bad path is a 400 whatever the rules); borrowed, not
        // copied, when it is already normal.
        let Ok(normalized) = path::normalize(raw_path) else {
            return (refused(Reason::BadPath), Facts::default());
        };
        if self.cors_preflight && is_cors_preflight(method, headers) {
            return (Verdict::Preflight, Facts::default());
        }
        let route = self.policy.route(method, &normalized);
        let anonymous = route.is_some_and(|r| r.anonymous);
        let token = match bearer::extract(headers) {
            Bearer::Token(t) => t,
            Bearer::Missing | Bearer::Empty if anonymous => {
                return (Verdict::Anonymous, Facts::default());
            }
            Bearer::Missing => return (refused(Reason::MissingToken), Facts::default()),
            Bearer::Empty => return (refused(Reason::EmptyBearer), Facts::default()),
            Bearer::Duplicate => {
                return (refused(Reason::DuplicateAuthorization), Facts::default());
            }
            // Present but unusable: refused even on an anonymous route.
            Bearer::Malformed => return (refused(Reason::Malformed), Facts::default()),
        };
        let principal = match self.validator.validate(token).await {
            Ok(p) => p,
            Err(rejected) => return (refused(rejected.reason), Facts::from(rejected)),
        };
        let facts = Facts::of(&principal);
        if let Some(route) = route.filter(|r| !r.anonymous)
            && let Err(f) = policy::authorize(route, &principal)
        {
            return (
                Verdict::Refused {
                    reason: f.reason,
                    scope: f.scope,
                },
                facts,
            );
        }
        (Verdict::Allowed(principal), facts)
    }
}

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: browsers send these without
/// credentials, so they go to the upstream (which owns its CORS policy) unauthenticated.
#[must_use]
pub fn is_cors_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}
