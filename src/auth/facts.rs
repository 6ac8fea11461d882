//! What the decision log records about a request's token: `kid`, `tid`, `ver` and the client,
//! read from the verified principal or, for a refusal, from the unverified token (capped).
//! Never the token itself.

use std::sync::Arc;

use super::{Principal, Rejected};

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
    /// Accepted, then over the `[[limits]]` entry named.
    Limited(Arc<Principal>, Arc<str>),
    Rejected(Box<Rejected>),
}

impl Facts {
    /// The facts of an accepted token.
    #[must_use]
    pub fn of(p: &Arc<Principal>) -> Self {
        Self(FactsOf::Accepted(Arc::clone(p)))
    }

    /// The facts of an accepted token whose request the limit `name` refused.
    #[must_use]
    pub fn limited(p: &Arc<Principal>, name: Arc<str>) -> Self {
        Self(FactsOf::Limited(Arc::clone(p), name))
    }

    /// The `[[limits]]` entry that refused the request, if one did.
    #[must_use]
    pub fn limit(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::Limited(_, name) => Some(name),
            _ => None,
        }
    }

    /// The token header's `kid`.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::None => None,
            FactsOf::Accepted(p) | FactsOf::Limited(p, _) => Some(&p.kid),
            FactsOf::Rejected(r) => r.kid.as_deref(),
        }
    }

    /// The token's `tid`.
    #[must_use]
    pub fn tid(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::None => None,
            FactsOf::Accepted(p) | FactsOf::Limited(p, _) => p.claims.tid.as_deref(),
            FactsOf::Rejected(r) => r.tid.as_deref(),
        }
    }

    /// The token's `ver`.
    #[must_use]
    pub fn ver(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::None => None,
            FactsOf::Accepted(p) | FactsOf::Limited(p, _) => p.claims.ver.as_deref(),
            FactsOf::Rejected(r) => r.ver.as_deref(),
        }
    }

    /// The verified token's `oid` (the user or service principal); `None` for a refused
    /// token, whose claims are not believed.
    #[must_use]
    pub fn oid(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::Accepted(p) | FactsOf::Limited(p, _) => p.claims.oid.as_deref(),
            FactsOf::None | FactsOf::Rejected(_) => None,
        }
    }

    /// The token's client application (`azp`, else `appid`).
    #[must_use]
    pub fn client(&self) -> Option<&str> {
        match &self.0 {
            FactsOf::None => None,
            FactsOf::Accepted(p) | FactsOf::Limited(p, _) => p.claims.client_id(),
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
