//! Validating an Entra access token: header -> issuer -> key -> signature -> claims.
//!
//! Everything configurable is prepared once in [`Validator::new`]; a validation borrows the
//! token and allocates only the decoded header and claims. The order of checks is chosen so
//! the reason given is the most useful one: a token for another tenant reads `issuer_mismatch`
//! or `tenant_not_allowed`, not `bad_signature`.

use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Reason;
use super::cache::{Entry as CacheEntry, TokenCache};
use super::token::{self, Claims, Decoded, Header};
use crate::config::{Algorithm, Entra};
use crate::keys::{
    Issuer, IssuerMatch, IssuerPolicy, KeySource, KeyStore, Lookup, TokenVersion, trim_slash,
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
    /// The headers the identity puts on the upstream request, worked out once by the gateway
    /// that verified the token ([`crate::gateway`]'s identity headers) at its first pass: a
    /// cached token's next requests take them as they are. Empty until then.
    pub headers: OnceLock<Box<[(HeaderName, HeaderValue)]>>,
}

#[cfg(test)]
impl Principal {
    /// A principal of `claims` (a JSON object), as tests need one.
    pub(crate) fn of_claims(claims: serde_json::Value) -> Self {
        Self {
            claims: serde_json::from_value::<Claims>(claims).expect("claims"),
            version: None,
            kid: "k".into(),
            payload: None,
            headers: OnceLock::new(),
        }
    }
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
    /// `entra.max_token_lifetime`, in seconds.
    max_lifetime: f64,
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
            max_lifetime: entra.max_token_lifetime.as_secs_f64(),
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
        self.validate_noting(token, &mut None).await
    }

    /// [`Validator::validate`], noting in `cache_hit` whether the verified-token cache
    /// answered (`Some(true)`) or the signature was checked (`Some(false)`); left `None`
    /// without a cache.
    ///
    /// # Errors
    /// As [`Validator::validate`].
    pub async fn validate_noting(
        &self,
        token: &str,
        cache_hit: &mut Option<bool>,
    ) -> Result<Arc<Principal>, Rejected> {
        let now = unix_now();
        let Some(cache) = &self.cache else {
            return self.verify(token, now).await.map(|(p, _, _)| p);
        };
        let hash = cache.hash(token);
        // A cached token is held to `exp` and `nbf` again at every request.
        let in_time = |p: &Principal| self.time_failure(&p.claims, now).is_none();
        if let Some(principal) = cache.get(token, hash, now, in_time) {
            *cache_hit = Some(true);
            return Ok(principal);
        }
        *cache_hit = Some(false);
        let (principal, source, exp) = self.verify(token, now).await?;
        cache.insert(
            hash,
            CacheEntry {
                token: token.into(),
                principal: Arc::clone(&principal),
                source,
                until: exp + self.clock_skew,
            },
            now,
        );
        Ok(principal)
    }

    /// The full validation, returning the principal, the key source that verified it and `exp`.
    async fn verify(
        &self,
        token: &str,
        now: f64,
    ) -> Result<(Arc<Principal>, Arc<KeySource>, f64), Rejected> {
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
        if let Some(reason) = self.header_failures(&decoded.header).next() {
            return Err(context(reason));
        }
        let alg = self
            .allowed_alg(&decoded.header)
            .ok_or_else(|| context(Reason::AlgNotAllowed))?;

        // Issuer: selects the key set (v1 or v2) and, for multi-tenant, fills `{tenantid}`.
        let issuer = self.issuer(claims).map_err(context)?;

        // Key and signature: by `kid` only; keys named by the token itself are ignored.
        let kid = self
            .verify_signature(&decoded, issuer, alg)
            .await
            .map_err(context)?
            .to_owned();

        // Claims, now that they are known to come from the issuer.
        if let Some(reason) = self.claim_failures(claims, &issuer.policy, now).next() {
            return Err(context(reason));
        }

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
                headers: OnceLock::new(),
            }),
            Arc::clone(&issuer.source),
            exp,
        ))
    }

    /// The header's `alg`, when it is one of `entra.algorithms`.
    pub(crate) fn allowed_alg(&self, header: &Header) -> Option<Algorithm> {
        Algorithm::from_name(&header.alg).filter(|a| self.algorithms.contains(a))
    }

    /// Every way the header fails, in the order [`Validator::validate`] checks them.
    pub(crate) fn header_failures<'a>(
        &'a self,
        header: &'a Header,
    ) -> impl Iterator<Item = Reason> + 'a {
        let alg = self.allowed_alg(header).is_none();
        let crit = header.crit.is_some();
        [
            alg.then_some(Reason::AlgNotAllowed),
            crit.then_some(Reason::UnsupportedCrit),
        ]
        .into_iter()
        .flatten()
    }

    /// The trusted issuer whose (filled) issuer value is the token's `iss`, with its tenant
    /// and `ver` agreeing.
    ///
    /// # Errors
    /// `missing_claim`, `issuer_mismatch`, `tenant_not_allowed` or `keys_unavailable`.
    pub(crate) fn issuer(&self, claims: &Claims) -> Result<&Issuer, Reason> {
        let iss = claims.iss.as_deref().ok_or(Reason::MissingClaim)?;
        let tid = claims.tid.as_deref();
        let (issuer, set) = match self.keys.issuer_for(iss, tid) {
            IssuerMatch::Found(issuer, set) => (issuer, set),
            IssuerMatch::Mismatch => return Err(Reason::IssuerMismatch),
            IssuerMatch::Unavailable => return Err(Reason::KeysUnavailable),
        };
        check_issuer_agrees(issuer, set.issuer.is_template(), claims)?;
        Ok(issuer)
    }

    /// Looks up the token's `kid` in `issuer`'s keys (refetching once when unknown) and
    /// verifies the signature. Returns the `kid`.
    ///
    /// # Errors
    /// `unknown_kid`, `keys_unavailable`, `issuer_mismatch` (the key names another issuer)
    /// or `bad_signature`.
    pub(crate) async fn verify_signature<'t>(
        &self,
        decoded: &'t Decoded<'_>,
        issuer: &Issuer,
        alg: Algorithm,
    ) -> Result<&'t str, Reason> {
        let kid = match decoded.header.kid.as_deref() {
            Some(k) if !k.is_empty() => k,
            _ => return Err(Reason::UnknownKid),
        };
        let key = match issuer.source.lookup(kid).await {
            Lookup::Found(key) => key,
            Lookup::Unknown => return Err(Reason::UnknownKid),
            Lookup::Unavailable => return Err(Reason::KeysUnavailable),
        };
        let iss = decoded.claims.iss.as_deref().unwrap_or_default();
        if key
            .issuer
            .as_ref()
            .is_some_and(|ki| !ki.matches(iss, decoded.claims.tid.as_deref()))
        {
            return Err(Reason::IssuerMismatch);
        }
        if key.alg.is_some_and(|ka| ka != alg) {
            return Err(Reason::BadSignature);
        }
        if key.verify(alg, decoded.signing_input.as_bytes(), decoded.signature) {
            Ok(kid)
        } else {
            Err(Reason::BadSignature)
        }
    }

    /// Every claim check `claims` fail against `policy` at Unix time `now`, in the order
    /// [`Validator::validate`] checks them (it stops at the first; `explain` lists all).
    pub fn claim_failures<'a>(
        &'a self,
        claims: &'a Claims,
        policy: &'a IssuerPolicy,
        now: f64,
    ) -> impl Iterator<Item = Reason> + 'a {
        ClaimCheck::ALL
            .into_iter()
            .filter_map(move |check| check.failure(claims, policy, self.limits(), now))
    }

    /// `expired` or `not_yet_valid` when `claims` are out of their time at `now`.
    fn time_failure(&self, claims: &Claims, now: f64) -> Option<Reason> {
        time_failure(claims, self.limits(), now)
    }

    /// The configured clock skew, in seconds.
    #[must_use]
    pub fn clock_skew(&self) -> f64 {
        self.clock_skew
    }

    fn limits(&self) -> Limits {
        Limits {
            clock_skew: self.clock_skew,
            max_lifetime: self.max_lifetime,
        }
    }
}

/// The time limits every token is held to, in seconds.
#[derive(Debug, Clone, Copy)]
struct Limits {
    clock_skew: f64,
    max_lifetime: f64,
}

/// The checks of a token's claims, each independent of the others.
#[derive(Debug, Clone, Copy)]
enum ClaimCheck {
    Expiry,
    NotBefore,
    Lifetime,
    Audience,
    Tenant,
    Client,
}

impl ClaimCheck {
    const ALL: [Self; 6] = [
        Self::Expiry,
        Self::NotBefore,
        Self::Lifetime,
        Self::Audience,
        Self::Tenant,
        Self::Client,
    ];

    fn failure(
        self,
        claims: &Claims,
        policy: &IssuerPolicy,
        limits: Limits,
        now: f64,
    ) -> Option<Reason> {
        let Limits {
            clock_skew,
            max_lifetime,
        } = limits;
        match self {
            Self::Expiry => match claims.exp {
                None => Some(Reason::MissingClaim),
                Some(exp) => expired(exp, clock_skew, now).then_some(Reason::Expired),
            },
            Self::NotBefore => claims
                .nbf
                .is_some_and(|nbf| not_yet(nbf, clock_skew, now))
                .then_some(Reason::NotYetValid),
            // A signed token that claims to live for years is no Entra token (60-90 minutes,
            // up to 28 hours with CAE): refused rather than honoured until its far `exp`.
            // `exp - now` allows the clock skew, as `exp` and `nbf` do; `exp - iat` is the
            // issuer's own statement and needs none.
            Self::Lifetime => claims
                .exp
                .is_some_and(|exp| {
                    exp - now > max_lifetime + clock_skew
                        || claims.iat.is_some_and(|iat| exp - iat > max_lifetime)
                })
                .then_some(Reason::LifetimeTooLong),
            Self::Audience => match &claims.aud {
                None => Some(Reason::MissingClaim),
                Some(aud) => (!aud
                    .iter()
                    .any(|a| policy.audiences.iter().any(|ok| ok == trim_slash(a))))
                .then_some(Reason::AudienceMismatch),
            },
            Self::Tenant => (!policy.allowed_tenants.is_empty()
                && !tenant_allowed(policy, claims.tid.as_deref()))
            .then_some(Reason::TenantNotAllowed),
            Self::Client => {
                let allowed = policy.allowed_client_ids.is_empty()
                    || claims.client_id().is_some_and(|c| {
                        policy
                            .allowed_client_ids
                            .iter()
                            .any(|ok| ok.eq_ignore_ascii_case(c))
                    });
                (!allowed).then_some(Reason::ClientNotAllowed)
            }
        }
    }
}

fn expired(exp: f64, clock_skew: f64, now: f64) -> bool {
    now > exp + clock_skew
}

fn not_yet(nbf: f64, clock_skew: f64, now: f64) -> bool {
    now + clock_skew < nbf
}

/// The time checks alone, for a token taken from the cache.
fn time_failure(claims: &Claims, limits: Limits, now: f64) -> Option<Reason> {
    let skew = limits.clock_skew;
    match claims.exp {
        None => Some(Reason::MissingClaim),
        Some(exp) if expired(exp, skew, now) => Some(Reason::Expired),
        Some(_) => claims
            .nbf
            .is_some_and(|nbf| not_yet(nbf, skew, now))
            .then_some(Reason::NotYetValid),
    }
}

/// A template issuer (multi-tenant) needs an allowed `tid`; Entra's `ver` must match the
/// metadata the issuer came from.
pub(crate) fn check_issuer_agrees(
    issuer: &Issuer,
    is_template: bool,
    claims: &Claims,
) -> Result<(), Reason> {
    if is_template && !tenant_allowed(&issuer.policy, claims.tid.as_deref()) {
        return Err(Reason::TenantNotAllowed);
    }
    if let (Some(version), Some(ver)) = (issuer.version, claims.ver.as_deref())
        && ver != version.claim()
    {
        return Err(Reason::IssuerMismatch);
    }
    Ok(())
}

/// Now, in (fractional) Unix seconds.
#[must_use]
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn tenant_allowed(policy: &IssuerPolicy, tid: Option<&str>) -> bool {
    tid.is_some_and(|t| {
        policy
            .allowed_tenants
            .iter()
            .any(|ok| ok.eq_ignore_ascii_case(t))
    })
}
