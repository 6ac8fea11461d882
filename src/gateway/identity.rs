//! The identity headers (`[identity]`): which client headers are identity headers, and what
//! the verified identity puts in them.
//!
//! Identity headers follow linkerd's rule, strip before you set: every client-sent `X-Auth-*`
//! (and every configured identity or `strip_headers` name) is removed first, so the upstream
//! can trust any `X-Auth-*` it sees.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::decision::Sets;
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

    /// The verified identity's headers, the first of a pass's set edits: worked out at the
    /// principal's first pass and kept on it ([`Principal::headers`]), so a cached token's
    /// next requests only copy them. The principal is this gateway's own (its token cache is
    /// built with its config), so what was kept follows this `[identity]`.
    pub(super) fn sets(&self, principal: &Principal) -> Sets {
        Sets::from_unique(principal.headers.get_or_init(|| self.headers_of(principal)))
    }

    /// The identity's headers, in the order of `[identity]`'s keys, each name once (two keys
    /// naming the same header: the later one's value). A claim value that is not valid header
    /// text is left out with a log line.
    fn headers_of(&self, principal: &Principal) -> Box<[(HeaderName, HeaderValue)]> {
        let c = &principal.claims;
        let cfg = &self.cfg;
        let roles = c.roles.as_ref().map(|r| r.join(","));
        let subject = c.oid.as_deref().or(c.sub.as_deref());
        let texts: Vec<(&HeaderName, &str)> = [
            (&cfg.subject_header, subject),
            (&cfg.tenant_header, c.tid.as_deref()),
            (&cfg.client_header, c.client_id()),
            (&cfg.scopes_header, c.scp.as_deref()),
            (&cfg.roles_header, roles.as_deref()),
            (&cfg.name_header, c.user_name()),
            (&cfg.claims_header, principal.payload.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.as_ref()?, value?)))
        .collect();
        // All values in one buffer, shared by the values (the principal's few allocations
        // are made together; a request's copy of a value is a count, not a new allocation).
        let mut buf = BytesMut::with_capacity(texts.iter().map(|(_, v)| v.len()).sum());
        for (_, v) in &texts {
            buf.extend_from_slice(v.as_bytes());
        }
        let buf = buf.freeze();
        let mut out = Sets::default();
        let mut start = 0;
        for (name, v) in texts {
            let end = start + v.len();
            match HeaderValue::from_maybe_shared(buf.slice(start..end)) {
                Ok(value) => out.insert(name.clone(), value),
                Err(_) => {
                    tracing::warn!(header = %name, "claim value is not valid header text; header not set");
                }
            }
            start = end;
        }
        out.into_pairs().into_boxed_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> IdentityHeaders {
        let name = |n: &'static str| Some(HeaderName::from_static(n));
        IdentityHeaders::new(Identity {
            subject_header: name("x-auth-subject"),
            tenant_header: name("x-auth-tenant"),
            client_header: None,
            scopes_header: name("x-auth-scopes"),
            roles_header: name("x-auth-roles"),
            name_header: None,
            claims_header: None,
            strip_headers: Vec::new(),
        })
    }

    fn principal(claims: serde_json::Value) -> Principal {
        Principal::of_claims(claims)
    }

    fn names_and_values(set: &Sets) -> Vec<(String, String)> {
        set.iter()
            .map(|(n, v)| (n.to_string(), v.to_str().expect("text").to_owned()))
            .collect()
    }

    #[test]
    fn the_identity_is_worked_out_once_and_kept_on_the_principal() {
        let p = principal(serde_json::json!({
            "oid": "o-1", "tid": "t-1", "scp": "read write", "roles": ["A", "B"]
        }));
        let first = identity().sets(&p);
        let expected = [
            ("x-auth-subject", "o-1"),
            ("x-auth-tenant", "t-1"),
            ("x-auth-scopes", "read write"),
            ("x-auth-roles", "A,B"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
        assert_eq!(names_and_values(&first), expected);
        assert_eq!(p.headers.get().map(|h| h.len()), Some(4));
        // What was kept is what the next pass copies (not worked out again from the claims).
        let kept = principal(serde_json::json!({"oid": "o-2"}));
        kept.headers
            .set(Box::new([(
                HeaderName::from_static("x-auth-subject"),
                HeaderValue::from_static("kept"),
            )]))
            .expect("empty");
        let next = identity().sets(&kept);
        assert_eq!(
            names_and_values(&next),
            [("x-auth-subject".to_owned(), "kept".to_owned())]
        );
    }

    #[test]
    fn the_values_share_one_buffer() {
        let p = principal(serde_json::json!({"oid": "o-1", "tid": "tenant-2", "scp": "read"}));
        identity().sets(&p);
        let kept = p.headers.get().expect("kept");
        let values: Vec<&[u8]> = kept.iter().map(|(_, v)| v.as_bytes()).collect();
        assert_eq!(values, [&b"o-1"[..], b"tenant-2", b"read"]);
        for pair in values.windows(2) {
            assert_eq!(
                pair[0].as_ptr().wrapping_add(pair[0].len()),
                pair[1].as_ptr()
            );
        }
    }

    #[test]
    fn a_claim_that_is_not_header_text_is_left_out() {
        let p = principal(serde_json::json!({"oid": "o\n1", "tid": "t-1"}));
        let set = identity().sets(&p);
        assert_eq!(
            names_and_values(&set),
            [("x-auth-tenant".to_owned(), "t-1".to_owned())]
        );
    }
}
