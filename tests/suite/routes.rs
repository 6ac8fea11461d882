//! Authorization and identity through real sockets (issue 3, SPEC §3 `[[routes]]`, `[[oidc]]`,
//! `[identity]`, §4 403 rows and edge cases), by theme:
//!
//! - `example`: the shipped `config/ehrbase.example.toml`, loaded as an operator would (env
//!   overrides point it at the test issuer and the echo upstream), proving each of its rules;
//! - `rules`: the rule kinds on small configs: required claims and group overage, methods, first
//!   match, segment-wise prefixes;
//! - `identity`: identity header names and the claims header;
//! - `cors`: CORS preflight;
//! - `issuers`: two issuers at once (Entra + a plain OpenID Connect issuer);
//! - `metadata`: RFC 9728 protected-resource metadata.
//!
//! This file holds what they share: the example's constants, starting gateways, tokens,
//! requests and the reason counters. Every token is minted at run time; refusals are checked
//! on the wire (status, challenge, body), at the upstream (reached or not) and in the admin
//! `/metrics` reason counters.

mod cors;
mod example;
mod identity;
mod issuers;
mod metadata;
mod rules;

use crate::common;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Extra, Harness, TENANT, config_toml, echoed_authorization, loopback};
use entragate::config::Config;
use entragate::dev::{DevIssuer, EchoUpstream};
use entragate::keys::TokenVersion;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Constants of the shipped example
// ---------------------------------------------------------------------------------------------

/// The shipped example, exactly as an operator copies it.
const EXAMPLE: &str = include_str!("../../config/ehrbase.example.toml");
/// The example's Application ID URI (v1 tokens' `aud`).
const CDR_URI: &str = "https://cdr.contoso.com";
/// The example's API client ID (v2 tokens' `aud`).
const CDR_CLIENT_ID: &str = "11111111-1111-1111-1111-111111111111";
/// Power BI Data Refresh (the Power BI service's scheduled refresh).
const PBI_REFRESH: &str = "b52893c8-bc2e-47fc-918b-77022b299bbc";
/// The example's ETL client ID placeholder.
const ETL_CLIENT: &str = "22222222-2222-2222-2222-222222222222";
/// The ETL service principal's object ID (`oid` of its app-only tokens).
const ETL_SP_OID: &str = "5d3c0a7e-9b1f-4c2d-8e6a-7f0b1c2d3e4f";
/// Power Apps / Power Automate: a real Microsoft client that the AQL route does not list.
const POWER_APPS: &str = "7ab7862c-4c57-491e-8a45-d52a7e023983";
/// Where the example reads EHRbase's Basic password from.
const PASSWORD_FILE: &str = "/run/secrets/ehrbase-password";
const PASSWORD: &str = "ehrbase s3cret:with-colon";
const BASIC_USER: &str = "ehrbase-user";

const AQL: &str = "/ehrbase/rest/openehr/v1/query/aql";
const AQL_Q: &str =
    "/ehrbase/rest/openehr/v1/query/aql?q=SELECT%20e%2Fehr_id%2Fvalue%20FROM%20EHR%20e";
const EHR: &str = "/ehrbase/rest/openehr/v1/ehr";
const EHR_ID: &str = "7d44b88c-4199-4bad-97dc-d78268e01398";
const STATUS: &str = "/ehrbase/rest/status";

// ---------------------------------------------------------------------------------------------
// Starting gateways
// ---------------------------------------------------------------------------------------------

/// `read_file` for the example: the password file holds the password and a trailing newline,
/// as a mounted secret does; any other path does not exist.
fn read_secret(path: &str) -> std::io::Result<String> {
    if path == PASSWORD_FILE {
        Ok(format!("{PASSWORD}\n"))
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{path}: no such file"),
        ))
    }
}

/// The example config, pointed at `issuer` and `echo` through the environment only.
fn example_config(issuer: &DevIssuer, echo: &EchoUpstream, more_env: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        ("ENTRAGATE_ENTRA__TENANT_ID".into(), TENANT.into()),
        (
            "ENTRAGATE_ENTRA__AUTHORITY".into(),
            issuer.authority().to_owned(),
        ),
        ("ENTRAGATE_UPSTREAM__URL".into(), echo.url()),
        ("ENTRAGATE_SERVER__LISTEN".into(), "127.0.0.1:0".into()),
        (
            "ENTRAGATE_SERVER__ADMIN_LISTEN".into(),
            "127.0.0.1:0".into(),
        ),
    ];
    env.extend(
        more_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::load(EXAMPLE, &env, &read_secret)
        .unwrap_or_else(|e| panic!("the shipped example loads: {e}"))
}

/// Issuer + echo + the gateway running the shipped example, keys loaded.
async fn start_example(more_env: &[(&str, &str)]) -> Harness {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let echo = EchoUpstream::start(loopback()).await.expect("echo");
    let config = example_config(&issuer, &echo, more_env);
    running(issuer, echo, &config).await
}

/// Starts the gateway for `config` and waits until every issuer's keys are loaded.
async fn running(issuer: DevIssuer, echo: EchoUpstream, config: &Config) -> Harness {
    let h = Harness::launch(issuer, echo, config).await;
    h.wait_ready().await;
    h
}

/// The harness's config (issuer, echo, [`AUDIENCE`]) with `extra`, then `tail` appended:
/// further plain tables (`[identity]`) and then arrays of tables (`[[routes]]`, `[[oidc]]`).
async fn start_with_tail(extra: Extra, tail: &str) -> Harness {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let echo = EchoUpstream::start(loopback()).await.expect("echo");
    let toml = format!("{}\n{tail}\n", config_toml(&issuer, &echo.url(), &extra));
    let config = common::load(&toml);
    running(issuer, echo, &config).await
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// The example's audience for a token version: Application ID URI (v1), client ID (v2).
fn cdr_aud(version: TokenVersion) -> &'static str {
    match version {
        TokenVersion::V1 => CDR_URI,
        TokenVersion::V2 => CDR_CLIENT_ID,
    }
}

/// A delegated (user) token for `aud` from client application `client` with `scp`.
fn user_token(h: &Harness, version: TokenVersion, aud: &str, client: &str, scp: &str) -> String {
    let mut c = h.issuer.claims(version, aud);
    let client_claim = match version {
        TokenVersion::V1 => "appid",
        TokenVersion::V2 => "azp",
    };
    c.insert(client_claim.into(), json!(client));
    c.insert("scp".into(), json!(scp));
    h.issuer.mint(&c)
}

/// Claims of an app-only (client-credentials) token: no `scp`, no user, `idtyp = app`,
/// the service principal's `oid`, and `roles` when given.
fn app_claims(
    h: &Harness,
    version: TokenVersion,
    aud: &str,
    client: &str,
    roles: Option<&[&str]>,
) -> Map<String, Value> {
    let mut c = h.issuer.claims(version, aud);
    for k in [
        "scp",
        "upn",
        "unique_name",
        "preferred_username",
        "name",
        "appidacr",
        "azpacr",
    ] {
        c.remove(k);
    }
    match version {
        TokenVersion::V1 => {
            c.insert("appid".into(), json!(client));
            c.insert("appidacr".into(), json!("1"));
        }
        TokenVersion::V2 => {
            c.insert("azp".into(), json!(client));
            c.insert("azpacr".into(), json!("1"));
        }
    }
    c.insert("idtyp".into(), json!("app"));
    c.insert("oid".into(), json!(ETL_SP_OID));
    c.insert("sub".into(), json!(ETL_SP_OID));
    if let Some(roles) = roles {
        c.insert("roles".into(), json!(roles));
    }
    c
}

fn app_token(
    h: &Harness,
    version: TokenVersion,
    aud: &str,
    client: &str,
    roles: Option<&[&str]>,
) -> String {
    h.issuer.mint(&app_claims(h, version, aud, client, roles))
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// `method path` through reqwest, with `Authorization: Bearer {token}` when given.
async fn call(h: &Harness, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = h
        .client
        .request(method.parse().expect("method"), h.url(path));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if matches!(method, "POST" | "PUT") {
        req = req
            .header("content-type", "application/json")
            .body(r#"{"_type":"EHR_STATUS"}"#);
    }
    req.send().await.expect("request")
}

/// A 200 from the echo upstream; returns what it saw.
async fn passed(r: reqwest::Response, what: &str) -> Value {
    let status = r.status();
    let text = r.text().await.expect("body");
    assert_eq!(status, 200, "{what}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: echo JSON ({e}): {text}"))
}

/// The 403 of SPEC §4: `Bearer error="insufficient_scope"` with `scope="{scope}"` when the rule
/// names something for this kind of token, a JSON body, nothing cached.
async fn assert_forbidden(r: reqwest::Response, scope: Option<&str>, what: &str) {
    assert_eq!(r.status(), 403, "{what}: status");
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(challenges.len(), 1, "{what}: one challenge");
    let expected = match scope {
        Some(s) => format!("Bearer error=\"insufficient_scope\", scope=\"{s}\""),
        None => "Bearer error=\"insufficient_scope\"".to_owned(),
    };
    assert_eq!(challenges[0], expected.as_str(), "{what}: challenge");
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "{what}: content type"
    );
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":"insufficient_scope"}"#,
        "{what}: body"
    );
}

/// The 401 for a request without credentials.
fn missing_challenge(h: &Harness) -> String {
    let authority = h.issuer.authority();
    format!(
        "Bearer realm={authority}/{TENANT}, authorization_uri={authority}/{TENANT}/oauth2/authorize"
    )
}

/// The example's upstream credentials as the echo shows them.
fn echoed_basic() -> String {
    echoed_authorization(&format!(
        "Basic {}",
        STANDARD.encode(format!("{BASIC_USER}:{PASSWORD}"))
    ))
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Every `entragate_requests_total{outcome,reason}` counter that is not zero.
async fn request_counts(h: &Harness) -> BTreeMap<String, u64> {
    let text = h.metrics_text().await;
    let prefix = "entragate_requests_total{outcome=\"";
    let counts: BTreeMap<String, u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|rest| {
            let (labels, value) = rest.split_once("} ").expect("counter line");
            let (outcome, reason) = labels
                .split_once("\",reason=\"")
                .expect("outcome and reason labels");
            (
                format!("{outcome}/{}", reason.trim_end_matches('"')),
                value.parse::<u64>().expect("counter value"),
            )
        })
        .collect();
    assert!(
        counts.contains_key("denied/scope_missing")
            && counts.contains_key("denied/client_not_allowed_on_route")
            && counts.contains_key("denied/groups_overage"),
        "every reason is listed: {counts:?}"
    );
    counts.into_iter().filter(|(_, v)| *v > 0).collect()
}

/// `[("denied/scope_missing", 2), ...]` as a map.
fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}
