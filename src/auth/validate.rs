//! Validating an Entra access token: header -> issuer -> key -> signature -> claims.
//!
//! Everything configurable is prepared once in [`Validator::new`]; a validation borrows the
//! token and allocates only the decoded header and claims. The order of checks is chosen so
//! the reason given is the most useful one: a token for another tenant reads `issuer_mismatch`
//! or `tenant_not_allowed`, not `bad_signature`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;

use super::Reason;
use super::cache::{Entry as CacheEntry, TokenCache};
use super::token::{self, Claims};
use crate::config::Entra;
use crate::keys::{
    IssuerMatch, IssuerPolicy, KeySource, KeyStore, Lookup, TokenVersion, trim_slash,
};

/// A verified token's identity.
#[derive(Debug, Clone)]
pub struct Principal {
    pub claims: Claims,
    /// Entra token version; `None` for `[[oidc]]` issuers.
    pub version: Option<TokenVersion>,
    pub kid: String,
    /// The token's payload segment (base64url JSON of the verified claims), kept only when
    /// the claims header is configured.
    pub payload: Option<String>,
}

/// A refusal, with what could be read of the token for the decision log (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: Reason,
    pub kid: Option<String>,
    pub tid: Option<String>,
    pub ver: Option<String>,
    pub client: Option<String>,
}

impl Rejected {
    /// A refusal decided before any claim was read.
    #[must_use]
    pub fn bare(reason: Reason) -> Self {
        Self {
            reason,
            kid: None,
            tid: None,
            ver: None,
            client: None,
        }
    }
}

/// Checks tokens against the trusted issuers and each issuer's audiences, tenants, clients.
#[derive(Debug)]
pub struct Validator {
    keys: Arc<KeyStore>,
    cache: Option<TokenCache>,
    algorithms: Vec<Algorithm>,
    clock_skew: f64,
    keep_payload: bool,
}

impl Validator {
    /// Algorithms and clock skew come from `[entra]` and apply to every issuer.
    #[must_use]
    pub fn new(entra: &Entra, keys: Arc<KeyStore>) -> Self {
        Self {
            keys,
            cache: None,
            algorithms: entra.algorithms.clone(),
            clock_skew: entra.clock_skew.as_secs_f64(),
            keep_payload: false,
        }
    }

    /// Cache verified tokens (see [`TokenCache`]).
    #[must_use]
    pub fn with_cache(mut self, cache: Option<TokenCache>) -> Self {
        self.cache = cache;
        self
    }

    /// Keep each verified token's payload segment in [`Principal::payload`].
    #[must_use]
    pub fn keep_payload(mut self, keep: bool) -> Self {
        self.keep_payload = keep;
        self
    }

    /// The key store this validator reads.
    #[must_use]
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// Validates `token` at the current time.
    ///
    /// # Errors
    /// The first failed check, with the token's `kid`/`tid`/`ver` when they could be read.
    pub async fn validate(&self, token: &str) -> Result<Arc<Principal>, Rejected> {
        let Some(cache) = &self.cache else {
            return self.verify(token).await.map(|(p, _, _)| p);
        };
        let digest = TokenCache::digest(token);
        if let Some(principal) = cache.get(&digest) {
            return Ok(principal);
        }
        let (principal, source, exp) = self.verify(token).await?;
        cache.insert(
            digest,
            CacheEntry {
                principal: Arc::clone(&principal),
                source,
                exp,
            },
        );
        Ok(principal)
    }

    /// The full validation, returning the principal, the key source that verified it and `exp`.
    async fn verify(&self, token: &str) -> Result<(Arc<Principal>, Arc<KeySource>, f64), Rejected> {
        let decoded = token::decode(token).map_err(Rejected::bare)?;
        let claims = &decoded.claims;
        let context = |reason| Rejected {
            reason,
            kid: decoded.header.kid.clone(),
            tid: claims.tid.clone(),
            ver: claims.ver.clone(),
            client: claims.client_id().map(str::to_owned),
        };

        // Header: algorithm allow-list (no `none`, no HMAC), and no extension we cannot honour.
        let alg = decoded
            .header
            .alg
            .parse::<Algorithm>()
            .ok()
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| context(Reason::AlgNotAllowed))?;
        if decoded.header.crit.is_some() {
            return Err(context(Reason::UnsupportedCrit));
        }

        // Issuer: selects the key set (v1 or v2) and, for multi-tenant, fills `{tenantid}`.
        let iss = claims
            .iss
            .as_deref()
            .ok_or_else(|| context(Reason::MissingClaim))?;
        let tid = claims.tid.as_deref();
        let (issuer, set) = match self.keys.issuer_for(iss, tid) {
            IssuerMatch::Found(issuer, set) => (issuer, set),
            IssuerMatch::Mismatch => return Err(context(Reason::IssuerMismatch)),
            IssuerMatch::Unavailable => return Err(context(Reason::KeysUnavailable)),
        };
        if set.issuer.is_template() && !tenant_allowed(&issuer.policy, tid) {
            return Err(context(Reason::TenantNotAllowed));
        }
        if let (Some(version), Some(ver)) = (issuer.version, claims.ver.as_deref())
            && ver != version.claim()
        {
            return Err(context(Reason::IssuerMismatch));
        }

        // Key: by `kid` only; keys named by the token itself (jku, x5u, jwk, x5c) are ignored.
        let kid = match decoded.header.kid.as_deref() {
            Some(k) if !k.is_empty() => k,
            _ => return Err(context(Reason::UnknownKid)),
        };
        let key = match issuer.source.lookup(kid).await {
            Lookup::Found(key) => key,
            Lookup::Unknown => return Err(context(Reason::UnknownKid)),
            Lookup::Unavailable => return Err(context(Reason::KeysUnavailable)),
        };
        if key.issuer.as_ref().is_some_and(|ki| !ki.matches(iss, tid)) {
            return Err(context(Reason::IssuerMismatch));
        }
        if key.alg.is_some_and(|ka| ka != alg) {
            return Err(context(Reason::BadSignature));
        }
        let verified = jsonwebtoken::crypto::verify(
            decoded.signature,
            decoded.signing_input.as_bytes(),
            &key.decoding,
            alg,
        )
        .unwrap_or(false);
        if !verified {
            return Err(context(Reason::BadSignature));
        }

        // Claims, now that they are known to come from the issuer.
        self.check_claims(claims, &issuer.policy).map_err(context)?;

        let kid = kid.to_owned();
        let payload = self.keep_payload.then(|| {
            let start = decoded.signing_input.find('.').map_or(0, |i| i + 1);
            decoded.signing_input[start..].to_owned()
        });
        let exp = decoded.claims.exp.unwrap_or(0.0);
        Ok((
            Arc::new(Principal {
                claims: decoded.claims,
                version: issuer.version,
                kid,
                payload,
            }),
            Arc::clone(&issuer.source),
            exp,
        ))
    }

    fn check_claims(&self, claims: &Claims, policy: &IssuerPolicy) -> Result<(), Reason> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let exp = claims.exp.ok_or(Reason::MissingClaim)?;
        if now > exp + self.clock_skew {
            return Err(Reason::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now + self.clock_skew < nbf) {
            return Err(Reason::NotYetValid);
        }
        let aud = claims.aud.as_ref().ok_or(Reason::MissingClaim)?;
        if !aud
            .iter()
            .any(|a| policy.audiences.iter().any(|ok| ok == trim_slash(a)))
        {
            return Err(Reason::AudienceMismatch);
        }
        if !policy.allowed_tenants.is_empty() && !tenant_allowed(policy, claims.tid.as_deref()) {
            return Err(Reason::TenantNotAllowed);
        }
        if !policy.allowed_client_ids.is_empty() {
            let allowed = claims.client_id().is_some_and(|c| {
                policy
                    .allowed_client_ids
                    .iter()
                    .any(|ok| ok.eq_ignore_ascii_case(c))
            });
            if !allowed {
                return Err(Reason::ClientNotAllowed);
            }
        }
        Ok(())
    }
}

fn tenant_allowed(policy: &IssuerPolicy, tid: Option<&str>) -> bool {
    tid.is_some_and(|t| {
        policy
            .allowed_tenants
            .iter()
            .any(|ok| ok.eq_ignore_ascii_case(t))
    })
}
