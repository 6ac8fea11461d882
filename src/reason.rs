//! Why a request was refused: one name per condition, each with a stable code for logs and
//! metrics. Turning a reason into a response happens in one place,
//! [`crate::gateway::Refusal`]. A leaf: the vocabulary that auth, the gateway, the log and the
//! metrics share.

/// A refusal's cause. The code (`as_str`) is a stable interface: dashboards and alerts use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No `Authorization` header, or a non-Bearer scheme.
    MissingToken,
    /// `Authorization: Bearer` with no token (Power Query's probe).
    EmptyBearer,
    /// More than one `Authorization` header.
    DuplicateAuthorization,
    /// Not a compact JWS: wrong part count, bad base64url, bad JSON, wrong claim types.
    Malformed,
    /// `alg` outside `entra.algorithms` (including `none` and HMAC).
    AlgNotAllowed,
    /// A `crit` header parameter this gateway does not understand (RFC 7515 §4.1.11).
    UnsupportedCrit,
    /// A required claim (`iss`, `aud`, `exp`) is absent.
    MissingClaim,
    /// The signature does not verify with the key named by `kid`.
    BadSignature,
    /// No published key has this `kid`, even after a refetch.
    UnknownKid,
    /// `exp` + clock skew is in the past.
    Expired,
    /// `nbf` - clock skew is in the future.
    NotYetValid,
    /// `exp - iat`, or `exp` - now (beyond the clock skew), is longer than
    /// `entra.max_token_lifetime`.
    LifetimeTooLong,
    /// `iss` is not an issuer of the configured tenant (or disagrees with `ver` or the key).
    IssuerMismatch,
    /// `aud` is none of `entra.audiences`.
    AudienceMismatch,
    /// `tid` is not an allowed tenant.
    TenantNotAllowed,
    /// `appid`/`azp` is not in `entra.allowed_client_ids`.
    ClientNotAllowed,
    /// No usable keys for the issuer (never loaded, or older than `jwks_max_stale`).
    KeysUnavailable,
    /// The path does not decode to clean segments (400).
    BadPath,
    /// A delegated token lacks every scope (and app role) the route accepts (403).
    ScopeMissing,
    /// An app-only token lacks every role the route accepts (403).
    RoleMissing,
    /// The client application is not among the route's `clients` (403).
    ClientNotAllowedOnRoute,
    /// A claim the route requires is absent or holds none of the required values (403).
    ClaimMissing,
    /// The route requires `groups` but the token carries the overage marker
    /// (`_claim_names.groups`, more than 200 groups) instead (403).
    GroupsOverage,
    /// Forward-auth only: the original method or URI headers from the ingress disagree with
    /// each other or cannot be read (a client added one the ingress did not overwrite).
    BadForwardedRequest,
    /// Over a `[[limits]]` entry (429); the log names the limit: `rate_limited:<name>`.
    RateLimited,
    /// The token's `oid`, client, `tid` or `jti` is on the revocation list (401).
    Revoked,
    /// The path is under no `[[apis]]` prefix (404 once authenticated).
    NoApi,
    /// The client address is refused by an API's or a route's `ip_allow` / `ip_deny` (403).
    IpDenied,
    /// The route's `auth_context` is not in the token's `acrs` (401, Entra's claims
    /// challenge).
    AuthContextRequired,
}

impl Reason {
    /// The stable reason code.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::EmptyBearer => "empty_bearer",
            Self::DuplicateAuthorization => "duplicate_authorization",
            Self::Malformed => "malformed",
            Self::AlgNotAllowed => "alg_not_allowed",
            Self::UnsupportedCrit => "unsupported_crit",
            Self::MissingClaim => "missing_claim",
            Self::BadSignature => "bad_signature",
            Self::UnknownKid => "unknown_kid",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::AudienceMismatch => "audience_mismatch",
            Self::TenantNotAllowed => "tenant_not_allowed",
            Self::ClientNotAllowed => "client_not_allowed",
            Self::KeysUnavailable => "keys_unavailable",
            Self::BadPath => "bad_path",
            Self::ScopeMissing => "scope_missing",
            Self::RoleMissing => "role_missing",
            Self::ClientNotAllowedOnRoute => "client_not_allowed_on_route",
            Self::ClaimMissing => "claim_missing",
            Self::GroupsOverage => "groups_overage",
            Self::BadForwardedRequest => "bad_forwarded_request",
            Self::RateLimited => "rate_limited",
            Self::Revoked => "revoked",
            Self::NoApi => "no_api",
            Self::IpDenied => "ip_denied",
            Self::AuthContextRequired => "auth_context_required",
        }
    }

    /// Every reason, for metrics that list each one from the start.
    pub const ALL: [Self; 29] = [
        Self::MissingToken,
        Self::EmptyBearer,
        Self::DuplicateAuthorization,
        Self::Malformed,
        Self::AlgNotAllowed,
        Self::UnsupportedCrit,
        Self::MissingClaim,
        Self::BadSignature,
        Self::UnknownKid,
        Self::Expired,
        Self::NotYetValid,
        Self::LifetimeTooLong,
        Self::IssuerMismatch,
        Self::AudienceMismatch,
        Self::TenantNotAllowed,
        Self::ClientNotAllowed,
        Self::KeysUnavailable,
        Self::BadPath,
        Self::ScopeMissing,
        Self::RoleMissing,
        Self::ClientNotAllowedOnRoute,
        Self::ClaimMissing,
        Self::GroupsOverage,
        Self::BadForwardedRequest,
        Self::RateLimited,
        Self::Revoked,
        Self::NoApi,
        Self::IpDenied,
        Self::AuthContextRequired,
    ];

    /// True for refusals of a valid token that may not do this (403 `insufficient_scope`).
    #[must_use]
    pub const fn is_forbidden(self) -> bool {
        matches!(
            self,
            Self::ScopeMissing
                | Self::RoleMissing
                | Self::ClientNotAllowedOnRoute
                | Self::ClaimMissing
                | Self::GroupsOverage
        )
    }

    /// Position in [`Reason::ALL`].
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r}");
        }
    }
}
