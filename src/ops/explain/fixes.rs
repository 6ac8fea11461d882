//! What each refusal reason means for a given token, and what to change, in the words of the
//! Entra admin center (Application ID URI, `accessTokenAcceptedVersion`, Expose an API,
//! pre-authorized clients, consent, app roles, group overage).

use std::time::Duration;

use serde_json::Value;

use super::super::{client_name, human, microsoft_resource, origin_of};
use crate::auth::diagnose::{Diagnosis, IssuerFinding, version_of};
use crate::auth::{Claims, Reason};
use crate::config::{Config, Route, is_guid};
use crate::keys::TokenVersion;

/// What a finding is judged against.
pub(super) struct Context<'a> {
    pub config: &'a Config,
    pub claims: &'a Claims,
    pub header: &'a Value,
    pub diagnosis: &'a Diagnosis,
    pub route: Option<&'a Route>,
    pub now: f64,
}

/// `(problem, fix)` for `reason`.
pub(super) fn describe(reason: Reason, cx: &Context<'_>) -> (String, String) {
    let c = cx.claims;
    let entra = &cx.config.entra;
    match reason {
        Reason::AudienceMismatch => audience(cx),
        Reason::IssuerMismatch => issuer(cx),
        Reason::MissingClaim => {
            let missing: Vec<&str> = [
                ("iss", c.iss.is_none()),
                ("aud", c.aud.is_none()),
                ("exp", c.exp.is_none()),
            ]
            .into_iter()
            .filter_map(|(n, absent)| absent.then_some(n))
            .collect();
            (
                format!("the token has no {}", missing.join(", ")),
                "Entra access tokens always carry iss, aud and exp: this is not an Entra access token (an ID token or a hand-made JWT?). Request an access token for this API's scope.".into(),
            )
        }
        Reason::Expired => {
            let exp = c.exp.unwrap_or_default();
            (
                format!(
                    "expired {} ago (exp {}, allowed clock skew {}s)",
                    human(secs(cx.now - exp)),
                    timestamp(exp),
                    secs(entra.clock_skew.as_secs_f64()).as_secs()
                ),
                "Get a new token: Entra access tokens live 60-90 minutes. Power BI renews them by itself; when scheduled refresh in the Power BI service fails this way, sign in again under the semantic model's data source credentials, and make sure the users (or an admin) consented to offline_access so a refresh token is issued.".into(),
            )
        }
        Reason::LifetimeTooLong => {
            let exp = c.exp.unwrap_or_default();
            let lifetime = c.iat.map_or(exp - cx.now, |iat| (exp - iat).max(exp - cx.now));
            (
                format!(
                    "lives {} (exp {}{}), longer than entra.max_token_lifetime {}",
                    human(secs(lifetime)),
                    timestamp(exp),
                    c.iat.map(|iat| format!(", iat {}", timestamp(iat))).unwrap_or_default(),
                    human(entra.max_token_lifetime)
                ),
                "Entra access tokens live 60-90 minutes (up to 28 hours in sessions with continuous access evaluation): a token signed for longer was not issued by Entra's token service as configured, or the issuer's key is misused. Raise entra.max_token_lifetime only for another issuer ([[oidc]]) that issues long-lived tokens on purpose.".into(),
            )
        }
        Reason::NotYetValid => {
            let nbf = c.nbf.unwrap_or_default();
            (
                format!(
                    "not valid for another {} (nbf {})",
                    human(secs(nbf - cx.now)),
                    timestamp(nbf)
                ),
                "The clocks of this machine and Entra disagree: fix time synchronisation (NTP) here and on the gateway, or raise entra.clock_skew.".into(),
            )
        }
        Reason::TenantNotAllowed => (
            format!(
                "tid {} is not in entra.allowed_tenants {:?}",
                c.tid.as_deref().unwrap_or("(absent)"),
                entra.allowed_tenants
            ),
            "If users of that tenant may call this API, add its tenant ID to entra.allowed_tenants (and an admin of that tenant must consent to the API, which creates its enterprise application there). Otherwise sign in with an account of an allowed tenant.".into(),
        ),
        Reason::ClientNotAllowed => {
            let id = c.client_id().unwrap_or("(none: the token has no appid or azp)");
            (
                format!(
                    "the client {id}{} is not in entra.allowed_client_ids",
                    name_suffix(id)
                ),
                format!(
                    "If this client may call the API, add \"{id}\" to entra.allowed_client_ids, and pre-authorize it in the API's app registration (Expose an API -> Add a client application), or users meet AADSTS650057."
                ),
            )
        }
        Reason::AlgNotAllowed => (
            format!(
                "alg {} is not one of entra.algorithms ({})",
                cx.header.get("alg").and_then(Value::as_str).unwrap_or("(absent)"),
                entra
                    .algorithms
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "Entra signs access tokens with RS256. \"none\" and HMAC (HS*) are never accepted: such a token was not issued by Entra.".into(),
        ),
        Reason::UnsupportedCrit => (
            "the header has crit, naming extensions the gateway must understand".into(),
            "Entra access tokens carry no crit header: this token was not issued by Entra.".into(),
        ),
        Reason::UnknownKid => unknown_kid(cx),
        Reason::BadSignature => (
            format!(
                "the signature does not verify with the published key {}",
                cx.header.get("kid").and_then(Value::as_str).unwrap_or("?")
            ),
            "The token was altered after signing, or signed by someone else with a borrowed kid. Get a fresh token from Entra; never edit a token's text.".into(),
        ),
        Reason::KeysUnavailable => (
            "the issuer's signing keys could not be loaded".into(),
            "Run `entragate check` to see why the metadata or keys cannot be fetched.".into(),
        ),
        Reason::ScopeMissing => {
            let route = cx.route.map(|r| r.scopes.join(" ")).unwrap_or_default();
            (
                format!(
                    "the route {} needs one of the scopes [{route}]; the token's scp is \"{}\"",
                    route_path(cx),
                    c.scp.as_deref().unwrap_or("")
                ),
                format!(
                    "Expose the scope under Expose an API -> Add a scope, have the client request it and consent to it (user or admin consent). Power Query only asks for user_impersonation: for Power BI, add user_impersonation to the route's scopes. Missing scp altogether means the scope was never consented or requested ({}). `entragate check --app` (with `az ad app show` output) compares the registration's scopes with every route.",
                    app_id_uri_hint(cx)
                ),
            )
        }
        Reason::RoleMissing => {
            let route = cx.route.map(|r| r.roles.join(" ")).unwrap_or_default();
            (
                format!(
                    "the route {} needs one of the app roles [{route}]; the token's roles are [{}]",
                    route_path(cx),
                    c.roles().collect::<Vec<_>>().join(" ")
                ),
                "Define the role under App roles in the API's registration and assign it: for an app-only (client-credentials) token, add it to the client under API permissions -> Application permissions and grant admin consent; for a user, assign it under Enterprise applications -> Users and groups. `entragate check --app` (with `az ad app show` output) compares the registration's app roles with every route.".into(),
            )
        }
        Reason::ClientNotAllowedOnRoute => {
            let id = c.client_id().unwrap_or("(none)");
            (
                format!(
                    "the client {id}{} is not among the route's clients",
                    name_suffix(id)
                ),
                "Add the client ID to the route's clients if it may use this path.".into(),
            )
        }
        Reason::ClaimMissing => claim_missing(cx),
        Reason::GroupsOverage => (
            "the user is in more than 200 groups, so Entra left groups out of the token (_claim_names.groups: group overage)".into(),
            "Require an app role assigned to the group instead of the group itself, or set groupMembershipClaims to \"ApplicationGroup\" in the API's manifest so only groups assigned to the application are emitted.".into(),
        ),
        // Forward-auth only, and about the ingress's headers, not the token.
        Reason::BadForwardedRequest => (
            "the ingress's headers naming the original request (X-Forwarded-Method/-Uri, X-Original-Method/-URL/-URI) disagree or cannot be read".into(),
            "Have the ingress set (overwrite) these headers on every auth request, and remove those of other ingresses a client may have added.".into(),
        ),
        Reason::RateLimited => (
            "a [[limits]] entry counting this token's requests is exhausted".into(),
            "Wait for the Retry-After the 429 names, or raise the limit's rate (or burst) in [[limits]].".into(),
        ),
        Reason::Revoked => (
            "the token's oid, client, tenant or jti is on the revocation list (entragate revoked lists it)".into(),
            "If the identity is safe again: entragate unrevoke with the same --oid/--client/--tenant/--jti; otherwise the user or app needs new credentials (and, with --issued-before, a token issued after that time).".into(),
        ),
        Reason::NoApi => (
            "the path is under no [[apis]] prefix".into(),
            "Call a path under one of the [[apis]] prefixes (the gateway answers 404 to a valid token elsewhere), or add an [[apis]] entry for this path.".into(),
        ),
        Reason::IpDenied => (
            "the client address is refused by ip_allow / ip_deny".into(),
            "Call from an address the API's and the route's ip_allow admit and ip_deny does not name; behind a proxy, list the proxy in server.trusted_proxies so the address it forwards is the one checked.".into(),
        ),
        Reason::AuthContextRequired => {
            let needed = cx
                .route
                .and_then(|r| r.auth_context.as_deref())
                .unwrap_or("?");
            let has = c.values("acrs").unwrap_or_default().join(" ");
            (
                format!(
                    "the route {} requires the authentication context {needed}; the token's acrs is [{has}]",
                    route_path(cx)
                ),
                format!(
                    "The gateway answers 401 with Entra's claims challenge (error=\"insufficient_claims\"): the client must pass its claims to MSAL (WithClaims / claims=) and sign in again, which runs the Conditional Access policy targeting authentication context {needed} (MFA, a compliant device). Create that context under Entra ID -> Protection -> Conditional Access -> Authentication contexts and target a policy at it. App-only tokens cannot step up: give app-only callers a route without auth_context."
                ),
            )
        }
        Reason::Malformed
        | Reason::MissingToken
        | Reason::EmptyBearer
        | Reason::DuplicateAuthorization
        | Reason::BadPath => (
            "the token is not a well-formed compact JWS".into(),
            "Pass the access token itself (three base64url parts separated by dots).".into(),
        ),
    }
}

fn audience(cx: &Context<'_>) -> (String, String) {
    let entra = &cx.config.entra;
    let auds: Vec<&str> = cx.claims.aud.iter().flat_map(|a| a.iter()).collect();
    let aud = auds.first().copied().unwrap_or("");
    let configured = format!("{:?}", entra.audiences);
    let problem = format!("aud is {aud} but entra.audiences is {configured}");
    if let Some(name) = microsoft_resource(aud) {
        return (
            format!("{problem}: this is a {name} token"),
            format!(
                "The client asked Entra for {name}, not for this API. It must request this API's scope ({}).",
                app_id_uri_hint(cx)
            ),
        );
    }
    let version = version_of(cx.claims);
    let url_audience = entra.audiences.iter().find_map(|a| origin_of(a));
    if is_guid(aud) {
        let fix = if version == Some(TokenVersion::V2) {
            format!(
                "v2 tokens always carry the API's Application (client) ID as aud; Entra issues them because the API's manifest sets accessTokenAcceptedVersion to 2. If {aud} is this API's client ID, add it to entra.audiences (keep the Application ID URI too, so v1 tokens still pass); `entragate check --app` compares the registration's appId and identifierUris with entra.audiences."
            )
        } else {
            format!(
                "A client ID as aud means the client requested the API by its client ID. If {aud} is this API's Application (client) ID, add it to entra.audiences."
            )
        };
        return (problem, fix);
    }
    let Some(origin) = origin_of(aud) else {
        return (
            problem,
            format!(
                "If this token is for this API, add \"{aud}\" to entra.audiences: it is the Application ID URI the client asked for."
            ),
        );
    };
    let mut fix = format!(
        "Power BI requests the URL's scheme+host as resource ({origin} here), and Entra writes the API's Application ID URI as aud. If this token is for this API, add \"{aud}\" to entra.audiences"
    );
    match &url_audience {
        Some(configured) if *configured != origin => fix.push_str(&format!(
            "; if users should call {configured}, they must type that host in Power BI, and the Application ID URI (Expose an API) must be exactly {configured}"
        )),
        None if version != Some(TokenVersion::V2) => fix.push_str(
            "; this is a v1 token (the API's manifest has accessTokenAcceptedVersion null or 1, the default), whose aud is the Application ID URI; entra.audiences lists no URL, only client IDs, which only v2 tokens (accessTokenAcceptedVersion 2) carry",
        ),
        _ => {}
    }
    if aud.trim_end_matches('/') != origin {
        fix.push_str(&format!(
            ". Note that the Application ID URI has a path: Power Query never asks for one, so for Power BI set it to {origin}"
        ));
    }
    fix.push('.');
    (problem, fix)
}

fn issuer(cx: &Context<'_>) -> (String, String) {
    let entra = &cx.config.entra;
    let iss = cx.claims.iss.as_deref().unwrap_or("");
    let tid = cx.claims.tid.as_deref().unwrap_or("(absent)");
    if let IssuerFinding::Mismatch { expected } = &cx.diagnosis.issuer {
        let problem = format!("iss is {iss}; this config trusts {}", expected.join(", "));
        let fix = if !entra.is_multi_tenant()
            && is_guid(&entra.tenant_id)
            && !tid.eq_ignore_ascii_case(&entra.tenant_id)
        {
            format!(
                "The token comes from tenant {tid}, the config names {}. Sign in with an account of that tenant (Power BI: the data source credentials), or set entra.tenant_id if the API belongs to {tid}.",
                entra.tenant_id
            )
        } else if iss.contains("/v2.0") || iss.starts_with("https://sts.") {
            format!(
                "The token is from Entra but another cloud or authority: set entra.authority to the authority that issued it (now {}).",
                entra.authority
            )
        } else {
            "The token comes from another identity provider: add it as an [[oidc]] issuer if it should be trusted.".into()
        };
        return (problem, fix);
    }
    let ver = cx.claims.ver.as_deref().unwrap_or("(absent)");
    (
        format!("iss {iss} and ver {ver} disagree, or the signing key is published for another issuer"),
        "Entra writes v1 tokens (accessTokenAcceptedVersion null or 1) with iss https://sts.windows.net/<tenant>/ and ver 1.0, v2 tokens with iss https://login.microsoftonline.com/<tenant>/v2.0 and ver 2.0; a mix was not issued by Entra as is.".into(),
    )
}

fn unknown_kid(cx: &Context<'_>) -> (String, String) {
    let kid = cx.header.get("kid").and_then(Value::as_str);
    let Some(kid) = kid else {
        return (
            "the header has no kid".into(),
            "Entra always names its signing key in kid: this token was not issued by Entra.".into(),
        );
    };
    let problem = format!("no key with kid {kid} is published by the issuer");
    let fix = if cx.header.get("nonce").is_some() {
        "The header has a nonce: this is a Microsoft Graph token, which only Graph can validate. The client must request a token for this API's scope instead.".into()
    } else {
        format!(
            "The token was signed by another tenant or issuer, or with an application-specific signing key (claims mapping with a custom key), which Entra publishes only at metadata URLs with ?appid=. After a key rollover, entragate refetches the keys at most every entra.jwks_min_refetch ({}s).",
            cx.config.entra.jwks_min_refetch.as_secs()
        )
    };
    (problem, fix)
}

fn claim_missing(cx: &Context<'_>) -> (String, String) {
    let Some(route) = cx.route else {
        return (
            "a claim the route requires is missing".into(),
            String::new(),
        );
    };
    let failing: Vec<String> = route
        .claims
        .iter()
        .filter(|(name, allowed)| {
            !cx.claims
                .values(name)
                .is_some_and(|v| v.iter().any(|x| allowed.iter().any(|a| a == x)))
        })
        .map(|(name, allowed)| {
            let has = cx
                .claims
                .values(name)
                .map_or_else(|| "absent".to_owned(), |v| format!("{v:?}"));
            format!("{name} is {has}, the route requires one of {allowed:?}")
        })
        .collect();
    (
        format!("on {}: {}", route_path(cx), failing.join("; ")),
        "Add the claim to the token (Token configuration -> Add optional claim / groups claim, or an app role), or change the route's claims.".into(),
    )
}

fn route_path(cx: &Context<'_>) -> String {
    cx.route.map_or_else(String::new, |r| r.path.clone())
}

/// How a client names this API's scopes: `<Application ID URI>/<scope>`.
fn app_id_uri_hint(cx: &Context<'_>) -> String {
    let uri = cx
        .config
        .entra
        .audiences
        .iter()
        .find(|a| a.contains("://"))
        .map_or("<Application ID URI>", |a| a.trim_end_matches('/'));
    format!("{uri}/user_impersonation, or {uri}/.default")
}

fn name_suffix(id: &str) -> String {
    client_name(id).map_or_else(String::new, |n| format!(" ({n})"))
}

/// Seconds as a duration; a signed token may say anything, so huge values saturate.
pub(super) fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// RFC 3339 for a NumericDate.
pub(super) fn timestamp(t: f64) -> String {
    let Ok(d) = Duration::try_from_secs_f64(t.max(0.0)) else {
        return format!("{t}");
    };
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + d).to_string()
}
