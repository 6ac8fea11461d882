//! The identity headers (`[identity]`): which client headers are identity headers, and what
//! the verified identity puts in them.
//!
//! Identity headers follow linkerd's rule, strip before you set: every client-sent `X-Auth-*`
//! (and every configured identity or `strip_headers` name) is removed first, so the upstream
//! can trust any `X-Auth-*` it sees.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::Principal;
use crate::config::Identity;

/// The identity headers, built once from the config.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    cfg: Identity,
}

impl IdentityHeaders {
    #[must_use]
    pub fn new(cfg: Identity) -> Self {
        Self { cfg }
    }

    /// True when the whole claim set is sent (the validator then keeps the payload).
    #[must_use]
    pub fn wants_claims(&self) -> bool {
        self.cfg.claims_header.is_some()
    }

    /// True for a header the client must not send upstream: any `X-Auth-*`, a configured
    /// identity header or a `strip_headers` entry.
    #[must_use]
    pub fn is_identity(&self, name: &HeaderName) -> bool {
        let c = &self.cfg;
        name.as_str().starts_with("x-auth-")
            || c.strip_headers.contains(name)
            || [
                &c.subject_header,
                &c.tenant_header,
                &c.client_header,
                &c.scopes_header,
                &c.roles_header,
                &c.name_header,
                &c.claims_header,
            ]
            .into_iter()
            .any(|h| h.as_ref() == Some(name))
    }

    /// The identity headers the client sent (see [`IdentityHeaders::is_identity`]), each once.
    pub(super) fn client_sent(&self, headers: &HeaderMap, into: &mut Vec<HeaderName>) {
        into.extend(headers.keys().filter(|n| self.is_identity(n)).cloned());
    }

    /// The verified identity into `set`. A claim value that is not valid header text is left
    /// out with a log line.
    pub(super) fn set(&self, set: &mut HeaderMap, principal: &Principal) {
        let c = &principal.claims;
        let cfg = &self.cfg;
        let roles = c.roles.as_ref().map(|r| r.join(","));
        let subject = c.oid.as_deref().or(c.sub.as_deref());
        for (name, value) in [
            (&cfg.subject_header, subject),
            (&cfg.tenant_header, c.tid.as_deref()),
            (&cfg.client_header, c.client_id()),
            (&cfg.scopes_header, c.scp.as_deref()),
            (&cfg.roles_header, roles.as_deref()),
            (&cfg.name_header, c.user_name()),
            (&cfg.claims_header, principal.payload.as_deref()),
        ] {
            let (Some(name), Some(value)) = (name, value) else {
                continue;
            };
            match HeaderValue::from_str(value) {
                Ok(v) => {
                    set.insert(name.clone(), v);
                }
                Err(_) => {
                    tracing::warn!(header = %name, "claim value is not valid header text; header not set");
                }
            }
        }
    }
}
