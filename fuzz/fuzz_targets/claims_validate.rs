//! Claim validation without signatures: the fuzzer writes a token's payload JSON (under a fixed
//! RS256 header), `entragate::auth::token::decode` reads it, and the checks that follow the
//! signature run against a fixed configuration: `Validator::claim_failures` (exp, nbf, aud,
//! allowed tenants, allowed clients), `IssuerTemplate::matches` (an exact v1 issuer and the
//! multi-tenant v2 template) and `policy::route_failures` (a route's clients, scopes, roles and
//! a `groups` claim rule).
//!
//! Each decision is compared with one computed here from the plain JSON, as the contract
//! states it (docs/fuzzing.md): a token is refused exactly when a rule says so, and for the
//! reason that rule names.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entragate::auth::Reason;
use entragate::auth::Validator;
use entragate::auth::policy::route_failures;
use entragate::auth::token::decode;
use entragate::config::{Algorithm, Entra, Route};
use entragate::keys::{IssuerPolicy, IssuerTemplate, KeyStore};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "a672d62c-fc7b-4e81-a576-e60dc46e951d";
const OTHER_CLIENT: &str = "b52893c8-bc2e-47fc-918b-77022b299bbc";
const AUDIENCES: [&str; 2] = [
    "https://api.contoso.com",
    "api://6e74172b-be56-4843-9ff4-e66a39bb12e3",
];
const NOW: f64 = 1_800_000_000.0;
const SKEW: f64 = 60.0;

fn entra() -> Entra {
    Entra {
        tenant_id: TENANT.into(),
        authority: "https://login.microsoftonline.com".into(),
        audiences: AUDIENCES.iter().map(|s| (*s).to_owned()).collect(),
        allowed_tenants: vec![TENANT.into()],
        allowed_client_ids: vec![CLIENT.into(), OTHER_CLIENT.into()],
        algorithms: vec![Algorithm::RS256],
        clock_skew: Duration::from_secs(60),
        max_token_lifetime: Duration::from_secs(28 * 3600),
        jwks_refresh: Duration::from_secs(3600),
        jwks_min_refetch: Duration::from_secs(300),
        jwks_max_stale: Duration::from_secs(86_400),
        metadata_timeout: Duration::from_secs(10),
    }
}

fn route() -> Route {
    Route {
        path: "/q".into(),
        methods: Vec::new(),
        scopes: vec!["user_impersonation".into()],
        roles: vec!["Data.Read".into()],
        clients: vec![CLIENT.into()],
        claims: vec![("groups".into(), vec!["g1".into()])],
        anonymous: false,
        max_body: None,
    }
}

fn text<'a>(p: &'a Value, name: &str) -> Option<&'a str> {
    p.get(name).and_then(Value::as_str)
}

fn guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fuzz_target!(|data: &[u8]| {
    let token = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"k"}"#),
        URL_SAFE_NO_PAD.encode(data)
    );
    let Ok(decoded) = decode(&token) else {
        return;
    };
    let p: Value = serde_json::from_slice(data).expect("an accepted payload is JSON");
    let claims = &decoded.claims;

    // Validator::claim_failures, in its order: exp, nbf, aud, tenant, client.
    let entra = entra();
    let validator = Validator::new(
        &entra,
        Arc::new(KeyStore {
            issuers: Vec::new(),
        }),
    );
    let policy = IssuerPolicy {
        audiences: AUDIENCES.iter().map(|s| (*s).to_owned()).collect(),
        allowed_client_ids: entra.allowed_client_ids.clone(),
        allowed_tenants: entra.allowed_tenants.clone(),
    };
    let got: Vec<Reason> = validator.claim_failures(claims, &policy, NOW).collect();
    let mut want = Vec::new();
    match p.get("exp").and_then(Value::as_f64) {
        None => want.push(Reason::MissingClaim),
        Some(exp) if NOW > exp + SKEW => want.push(Reason::Expired),
        Some(_) => {}
    }
    if p.get("nbf")
        .and_then(Value::as_f64)
        .is_some_and(|nbf| nbf > NOW + SKEW)
    {
        want.push(Reason::NotYetValid);
    }
    let audience_ok = |a: &str| {
        let a = a.strip_suffix('/').unwrap_or(a);
        AUDIENCES.contains(&a)
    };
    match p.get("aud") {
        None | Some(Value::Null) => want.push(Reason::MissingClaim),
        Some(Value::String(a)) if audience_ok(a) => {}
        Some(Value::Array(v)) if v.iter().filter_map(Value::as_str).any(audience_ok) => {}
        Some(_) => want.push(Reason::AudienceMismatch),
    }
    if !text(&p, "tid").is_some_and(|t| t.eq_ignore_ascii_case(TENANT)) {
        want.push(Reason::TenantNotAllowed);
    }
    let client = text(&p, "azp").or_else(|| text(&p, "appid"));
    let client_ok = |c: Option<&str>, allowed: &[&str]| {
        c.is_some_and(|c| allowed.iter().any(|ok| ok.eq_ignore_ascii_case(c)))
    };
    if !client_ok(client, &[CLIENT, OTHER_CLIENT]) {
        want.push(Reason::ClientNotAllowed);
    }
    assert_eq!(got, want, "{p}");

    // Issuers: an exact one ignores tid; the template needs a GUID tid filling it exactly.
    let iss = claims.iss.as_deref().unwrap_or("");
    let tid = claims.tid.as_deref();
    let v1 = format!("https://sts.windows.net/{TENANT}/");
    assert_eq!(IssuerTemplate::new(&v1).matches(iss, tid), iss == v1);
    let template = IssuerTemplate::new("https://login.microsoftonline.com/{tenantid}/v2.0");
    let filled = tid
        .filter(|t| guid(t))
        .is_some_and(|t| iss == format!("https://login.microsoftonline.com/{t}/v2.0"));
    assert_eq!(template.matches(iss, tid), filled, "{iss:?} {tid:?}");

    // The route: clients, then scopes/roles, then each claim rule.
    let route = route();
    let got: Vec<Reason> = route_failures(&route, claims).collect();
    let mut want = Vec::new();
    if !client_ok(client, &[CLIENT]) {
        want.push(Reason::ClientNotAllowedOnRoute);
    }
    let delegated = claims.scp.is_some() && text(&p, "idtyp") != Some("app");
    let has_scope = delegated && claims.scopes().any(|s| s == "user_impersonation");
    let has_role = match p.get("roles") {
        Some(Value::Array(r)) => r.iter().any(|r| r.as_str() == Some("Data.Read")),
        _ => false,
    };
    if !has_scope && !has_role {
        want.push(if delegated {
            Reason::ScopeMissing
        } else {
            Reason::RoleMissing
        });
    }
    let overage = p
        .get("_claim_names")
        .and_then(|n| n.get("groups"))
        .is_some();
    match p.get("groups") {
        Some(Value::String(g)) if g == "g1" => {}
        Some(Value::Array(g)) if g.iter().any(|g| g.as_str() == Some("g1")) => {}
        None if overage => want.push(Reason::GroupsOverage),
        _ => want.push(Reason::ClaimMissing),
    }
    assert_eq!(got, want, "{p}");
});
