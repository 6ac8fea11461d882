//! Authorization and identity through real sockets (issue 3, SPEC §3 `[[routes]]`, `[[oidc]]`,
//! `[identity]`, §4 403 rows and edge cases):
//!
//! 1. the shipped `config/ehrbase.example.toml`, loaded as an operator would (env overrides point
//!    it at the test issuer and the echo upstream), proving each of its rules;
//! 2. the rule kinds on small configs: required claims and group overage, methods, first match,
//!    segment-wise prefixes, identity header names, CORS preflight;
//! 3. two issuers at once (Entra + a plain OpenID Connect issuer);
//! 4. RFC 9728 protected-resource metadata.
//!
//! Every token is minted at run time; refusals are checked on the wire (status, challenge,
//! body), at the upstream (reached or not) and in the admin `/metrics` reason counters.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::wire::send_raw;
use common::{
    API_CLIENT_ID, AUDIENCE, Extra, Harness, TENANT, config_toml, echoed_authorization, eventually,
    loopback,
};
use entragate::config::{Config, UpstreamAuthorization};
use entragate::dev::{DevIssuer, EchoUpstream, POWER_QUERY_CLIENT_ID, sign_jwt};
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

/// A tenant for the plain OpenID Connect issuer (not the gateway's Entra tenant).
const OIDC_TENANT: &str = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const OIDC_AUDIENCE: &str = "cdr-api";

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

/// The 401 `invalid_token` answer for the harness's tenant.
async fn assert_invalid_token(h: &Harness, r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 401, "{what}: status");
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Bearer authorization_uri={}/{TENANT}/oauth2/authorize, error=\"invalid_token\"",
            h.issuer.authority()
        )
        .as_str(),
        "{what}: challenge"
    );
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":"invalid_token"}"#,
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

// =============================================================================================
// 1. The shipped EHRbase example
// =============================================================================================

#[test]
fn example_loads_as_shipped_with_its_placeholders() {
    let config = Config::load(EXAMPLE, &[], &read_secret)
        .unwrap_or_else(|e| panic!("the example loads without any environment: {e}"));
    assert_eq!(
        config.entra.tenant_id,
        "00000000-0000-0000-0000-000000000000"
    );
    assert_eq!(config.entra.audiences, [CDR_URI, CDR_CLIENT_ID]);
    assert_eq!(config.upstream.origin.as_str(), "127.0.0.1:8080");
    let expected_basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{BASIC_USER}:{PASSWORD}"))
    );
    match &config.upstream.authorization {
        UpstreamAuthorization::Basic(v) => assert_eq!(v, expected_basic.as_str()),
        other => panic!("upstream.authorization is basic, not {other:?}"),
    }
    let rules: Vec<(&str, Vec<&str>, bool)> = config
        .routes
        .iter()
        .map(|r| {
            (
                r.path.as_str(),
                r.methods.iter().map(http::Method::as_str).collect(),
                r.anonymous,
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            (STATUS, vec!["GET", "HEAD"], true),
            (
                "/ehrbase/rest/openehr/v1/query",
                vec!["GET", "HEAD", "POST"],
                false
            ),
            (EHR, vec!["POST", "PUT", "DELETE"], false),
            (
                "/ehrbase/rest/openehr/v1/definition",
                vec!["POST", "PUT", "DELETE"],
                false
            ),
            (EHR, vec!["GET", "HEAD"], false),
        ]
    );
    let aql = &config.routes[1];
    assert_eq!(aql.scopes, ["AQL.Read"]);
    assert_eq!(aql.roles, ["AQL.Read.All"]);
    assert_eq!(
        aql.clients,
        [POWER_QUERY_CLIENT_ID, PBI_REFRESH, ETL_CLIENT]
    );
    for write in &config.routes[2..4] {
        assert!(write.scopes.is_empty(), "no delegated scope can write");
        assert_eq!(write.roles, ["CDR.Write.All"]);
    }
    assert_eq!(config.routes[4].scopes, ["EHR.Read"]);
    assert_eq!(config.routes[4].roles, ["EHR.Read.All"]);
    assert!(config.oidc.is_empty());
}

#[tokio::test]
async fn example_status_is_anonymous_but_an_invalid_token_is_still_refused() {
    let h = start_example(&[]).await;

    // No token: EHRbase's status answers, with the gateway's Basic credentials and no identity.
    let r = h
        .client
        .get(h.url(STATUS))
        .header("x-auth-subject", "spoofed")
        .send()
        .await
        .expect("request");
    let seen = passed(r, "status without a token").await;
    assert_eq!(seen["uri"], STATUS);
    assert_eq!(seen["headers"]["authorization"], echoed_basic().as_str());
    assert!(seen["headers"].get("x-auth-subject").is_none(), "{seen}");

    // A token that is present but invalid is refused even here.
    let r = call(&h, "GET", STATUS, Some("not-a-jwt")).await;
    assert_invalid_token(&h, r, "invalid token on the anonymous route").await;
    let mut expired = h.issuer.claims(TokenVersion::V1, CDR_URI);
    expired.insert("exp".into(), json!(common::now() - 3600));
    let r = call(&h, "GET", STATUS, Some(&h.issuer.mint(&expired))).await;
    assert_invalid_token(&h, r, "expired token on the anonymous route").await;

    // The rule lists GET and HEAD only: a POST there is an ordinary request.
    let r = call(&h, "POST", STATUS, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        missing_challenge(&h).as_str()
    );

    assert_eq!(h.echo.requests(), 1);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("anonymous/none", 1),
            ("denied/malformed", 1),
            ("denied/expired", 1),
            ("denied/missing_token", 1),
        ])
    );
}

#[tokio::test]
async fn example_power_bi_users_with_aql_read_may_query_and_upstream_gets_basic_not_the_token() {
    let h = start_example(&[]).await;
    let cases = [
        (TokenVersion::V1, POWER_QUERY_CLIENT_ID, "GET"),
        (TokenVersion::V1, PBI_REFRESH, "POST"),
        (TokenVersion::V2, POWER_QUERY_CLIENT_ID, "POST"),
        (TokenVersion::V2, PBI_REFRESH, "GET"),
    ];
    for (version, client, method) in cases {
        let what = format!("{} {client} {method}", version.claim());
        let token = user_token(
            &h,
            version,
            cdr_aud(version),
            client,
            "user_impersonation AQL.Read",
        );
        let path = if method == "GET" { AQL_Q } else { AQL };
        let seen = passed(call(&h, method, path, Some(&token)).await, &what).await;
        assert_eq!(seen["method"], method, "{what}");
        assert_eq!(seen["uri"], path, "{what}");
        // EHRbase sees the gateway's Basic credentials, never the bearer token.
        assert_eq!(
            seen["headers"]["authorization"],
            echoed_basic().as_str(),
            "{what}"
        );
        assert_ne!(
            seen["headers"]["authorization"],
            echoed_authorization(&format!("Bearer {token}")).as_str()
        );
        assert_eq!(seen["headers"]["x-auth-client"], client, "{what}");
        assert_eq!(
            seen["headers"]["x-auth-scopes"], "user_impersonation AQL.Read",
            "{what}"
        );
        assert_eq!(
            seen["headers"]["x-auth-subject"],
            "00000000-0000-4000-8000-00000000a11e"
        );
    }
    // HEAD is covered by the rule as well.
    let token = user_token(
        &h,
        TokenVersion::V1,
        CDR_URI,
        POWER_QUERY_CLIENT_ID,
        "AQL.Read",
    );
    let r = call(&h, "HEAD", AQL_Q, Some(&token)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.echo.requests(), 5);
    assert_eq!(request_counts(&h).await, counts(&[("allowed/none", 5)]));
}

#[tokio::test]
async fn example_aql_without_the_scope_is_403_insufficient_scope_naming_aql_read() {
    let h = start_example(&[]).await;
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let token = user_token(
            &h,
            version,
            cdr_aud(version),
            POWER_QUERY_CLIENT_ID,
            "user_impersonation EHR.Read",
        );
        for method in ["GET", "POST"] {
            let r = call(&h, method, AQL_Q, Some(&token)).await;
            assert_forbidden(
                r,
                Some("AQL.Read"),
                &format!("{} {method}", version.claim()),
            )
            .await;
        }
        // A scope is matched exactly: case and prefixes do not count.
        let near = user_token(
            &h,
            version,
            cdr_aud(version),
            POWER_QUERY_CLIENT_ID,
            "aql.read AQL.ReadX AQL",
        );
        let r = call(&h, "GET", AQL_Q, Some(&near)).await;
        assert_forbidden(r, Some("AQL.Read"), "near misses").await;
    }
    let token = user_token(&h, TokenVersion::V1, CDR_URI, POWER_QUERY_CLIENT_ID, "x");
    let r = call(&h, "HEAD", AQL_Q, Some(&token)).await;
    assert_eq!(r.status(), 403, "HEAD");
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"insufficient_scope\", scope=\"AQL.Read\""
    );
    assert_eq!(
        h.echo.requests(),
        0,
        "a refused query never reaches EHRbase"
    );
    assert_eq!(
        request_counts(&h).await,
        counts(&[("denied/scope_missing", 7)])
    );
}

#[tokio::test]
async fn example_aql_path_variants_reach_the_same_rule() {
    let h = start_example(&[]).await;
    let with_scope = format!(
        "Bearer {}",
        user_token(
            &h,
            TokenVersion::V1,
            CDR_URI,
            POWER_QUERY_CLIENT_ID,
            "AQL.Read"
        )
    );
    let without_scope = format!(
        "Bearer {}",
        user_token(
            &h,
            TokenVersion::V2,
            CDR_CLIENT_ID,
            POWER_QUERY_CLIENT_ID,
            "user_impersonation"
        )
    );
    let q = "?q=SELECT%20c%20FROM%20EHR%20e%20CONTAINS%20COMPOSITION%20c";
    let variants = [
        format!("{AQL}{q}"),
        format!("/ehrbase/rest/openehr/v1/%71uery/aql{q}"),
        format!("/ehrbase/rest/openehr/v1/%71%75%65%72%79/aql{q}"),
        format!("/ehrbase/%72est/openehr/v1/query/aql{q}"),
        format!("/x/../ehrbase/rest/openehr/v1/query/aql{q}"),
        format!("/ehrbase/rest/openehr/v1/ehr/../query/aql{q}"),
        format!("/ehrbase/rest/openehr/v1/%2e%2e/v1/query/aql{q}"),
        format!("/ehrbase/./rest/openehr/v1/query/aql{q}"),
        format!("//ehrbase//rest//openehr/v1/query/aql{q}"),
        format!("//ehrbase//rest/openehr/v1//query//aql/{q}"),
        "/ehrbase/rest/openehr/v1/query".to_owned(),
        "/ehrbase/rest/openehr/v1/query/".to_owned(),
    ];
    for target in &variants {
        let r = send_raw(
            h.gw.addr,
            "GET",
            target,
            &[("authorization", &without_scope)],
            b"",
        )
        .await;
        assert_eq!(r.status, 403, "{target}: {r:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"insufficient_scope\", scope=\"AQL.Read\""),
            "{target}"
        );
        assert_eq!(r.json(), json!({"error": "insufficient_scope"}), "{target}");
    }
    assert_eq!(h.echo.requests(), 0);

    // With the scope each form passes, and EHRbase receives it exactly as sent.
    for target in &variants {
        let r = send_raw(
            h.gw.addr,
            "GET",
            target,
            &[("authorization", &with_scope)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(r.json()["uri"], target.as_str(), "{target}");
    }
    // A path that cannot be normalised is refused before any rule.
    let r = send_raw(
        h.gw.addr,
        "GET",
        "/ehrbase/rest/openehr/v1/query%2Faql",
        &[("authorization", &with_scope)],
        b"",
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let n = u64::try_from(variants.len()).expect("count");
    assert_eq!(h.echo.requests(), n);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("allowed/none", n),
            ("denied/scope_missing", n),
            ("denied/bad_path", 1),
        ])
    );
}

/// Tomcat and Jetty drop `;parameters` from every path segment before routing, and Spring's
/// path matching ignores them too: behind such a server `/query;x=1/aql` is the AQL endpoint
/// and `/ehrbase;v=1/rest/...` is under `/ehrbase`. The gateway must not let such a path past
/// the rule of its plain form (refusing it with 400 would do as well). EHRbase's own Spring
/// Security firewall happens to reject `;` by default; the gateway must not rely on that.
#[tokio::test]
async fn example_path_parameters_do_not_slip_past_a_rule() {
    let h = start_example(&[]).await;
    let reader = format!(
        "Bearer {}",
        user_token(
            &h,
            TokenVersion::V1,
            CDR_URI,
            POWER_QUERY_CLIENT_ID,
            "user_impersonation"
        )
    );
    let mut answers = Vec::new();
    for (method, target) in [
        (
            "GET",
            "/ehrbase/rest/openehr/v1/query;x=1/aql?q=SELECT%20c%20FROM%20EHR%20e",
        ),
        (
            "GET",
            "/ehrbase/rest/openehr/v1/query;/aql?q=SELECT%20c%20FROM%20EHR%20e",
        ),
        ("DELETE", "/ehrbase;v=1/rest/openehr/v1/ehr/x/composition/y"),
        ("PUT", "/ehrbase/rest/openehr/v1/ehr;a/x/ehr_status"),
    ] {
        let r = send_raw(
            h.gw.addr,
            method,
            target,
            &[("authorization", &reader)],
            b"",
        )
        .await;
        answers.push((method, target, r.status));
    }
    assert!(
        answers.iter().all(|(_, _, s)| *s == 403 || *s == 400),
        "each must be refused (403 by the rule of its plain form, or 400); got {answers:?}"
    );
    assert_eq!(h.echo.requests(), 0, "none may reach EHRbase");
}

#[tokio::test]
async fn example_aql_app_only_needs_the_role_and_the_403_names_the_routes_roles() {
    let h = start_example(&[]).await;
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let aud = cdr_aud(version);
        let ok = app_token(&h, version, aud, ETL_CLIENT, Some(&["AQL.Read.All"]));
        let seen = passed(
            call(&h, "POST", AQL, Some(&ok)).await,
            &format!("{} app-only with AQL.Read.All", version.claim()),
        )
        .await;
        assert_eq!(seen["headers"]["x-auth-client"], ETL_CLIENT);
        assert_eq!(seen["headers"]["x-auth-roles"], "AQL.Read.All");
        assert_eq!(seen["headers"]["x-auth-subject"], ETL_SP_OID);
        assert!(seen["headers"].get("x-auth-scopes").is_none(), "{seen}");
        assert_eq!(seen["headers"]["authorization"], echoed_basic().as_str());

        // Other roles, or none at all: 403 whose scope= lists the route's roles.
        for roles in [Some(&["EHR.Read.All", "CDR.Write.All"][..]), None] {
            let t = app_token(&h, version, aud, ETL_CLIENT, roles);
            let r = call(&h, "GET", AQL_Q, Some(&t)).await;
            assert_forbidden(
                r,
                Some("AQL.Read.All"),
                &format!("{} app-only with {roles:?}", version.claim()),
            )
            .await;
        }
        // A scope-named role does not stand in for the role.
        let t = app_token(&h, version, aud, ETL_CLIENT, Some(&["AQL.Read"]));
        assert_forbidden(
            call(&h, "GET", AQL_Q, Some(&t)).await,
            Some("AQL.Read.All"),
            "role named like the scope",
        )
        .await;
    }
    // Without idtyp (the optional claim not configured) a token without scp is app-only too.
    let mut no_idtyp = app_claims(
        &h,
        TokenVersion::V2,
        CDR_CLIENT_ID,
        ETL_CLIENT,
        Some(&["AQL.Read.All"]),
    );
    no_idtyp.remove("idtyp");
    passed(
        call(&h, "GET", AQL_Q, Some(&h.issuer.mint(&no_idtyp))).await,
        "app-only without idtyp",
    )
    .await;
    assert_eq!(h.echo.requests(), 3);
    assert_eq!(
        request_counts(&h).await,
        counts(&[("allowed/none", 3), ("denied/role_missing", 6)])
    );
}

#[tokio::test]
async fn example_aql_from_a_client_not_on_the_route_is_403_client_not_allowed_on_route() {
    let h = start_example(&[]).await;
    // Power Apps is a real Microsoft client, and the tenant accepts it (allowed_client_ids is
    // empty), but the AQL rule lists only Power Query, Power BI Data Refresh and the ETL job.
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let t = user_token(&h, version, cdr_aud(version), POWER_APPS, "AQL.Read");
        assert_forbidden(
            call(&h, "GET", AQL_Q, Some(&t)).await,
            Some("AQL.Read"),
            &format!("{} Power Apps user", version.claim()),
        )
        .await;
        let t = app_token(
            &h,
            version,
            cdr_aud(version),
            POWER_APPS,
            Some(&["AQL.Read.All"]),
        );
        assert_forbidden(
            call(&h, "POST", AQL, Some(&t)).await,
            Some("AQL.Read.All"),
            &format!("{} other app", version.claim()),
        )
        .await;
    }
    // The same client may still use paths without a client rule.
    let t = user_token(&h, TokenVersion::V2, CDR_CLIENT_ID, POWER_APPS, "EHR.Read");
    passed(
        call(&h, "GET", &format!("{EHR}/{EHR_ID}"), Some(&t)).await,
        "Power Apps reading an EHR",
    )
    .await;
    assert_eq!(h.echo.requests(), 1);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("allowed/none", 1),
            ("denied/client_not_allowed_on_route", 4)
        ])
    );
}

#[tokio::test]
async fn example_only_the_etl_service_principal_may_write() {
    let h = start_example(&[]).await;
    let etl = app_token(
        &h,
        TokenVersion::V2,
        CDR_CLIENT_ID,
        ETL_CLIENT,
        Some(&["CDR.Write.All"]),
    );
    let etl_v1 = app_token(
        &h,
        TokenVersion::V1,
        CDR_URI,
        ETL_CLIENT,
        Some(&["CDR.Write.All", "EHR.Read.All"]),
    );
    let composition = format!("{EHR}/{EHR_ID}/composition/8849182c-82ad-4088-a07f-48ead4180515");
    let writes = [
        ("POST", EHR.to_owned()),
        ("PUT", format!("{EHR}/{EHR_ID}/ehr_status")),
        ("POST", format!("{EHR}/{EHR_ID}/composition")),
        ("PUT", composition.clone()),
        ("DELETE", composition.clone()),
        (
            "POST",
            "/ehrbase/rest/openehr/v1/definition/template/adl1.4".to_owned(),
        ),
        (
            "PUT",
            "/ehrbase/rest/openehr/v1/definition/query/org.contoso::vitals/1.0.0".to_owned(),
        ),
    ];
    for (method, path) in &writes {
        for token in [&etl, &etl_v1] {
            let seen = passed(
                call(&h, method, path, Some(token.as_str())).await,
                &format!("ETL {method} {path}"),
            )
            .await;
            assert_eq!(seen["method"], *method);
            assert_eq!(seen["headers"]["authorization"], echoed_basic().as_str());
        }
    }
    let allowed = u64::try_from(writes.len() * 2).expect("count");
    assert_eq!(h.echo.requests(), allowed);

    // A Power BI user with every delegated scope: no delegated scope can write. The rule names
    // no scopes, so the reason is role_missing and the challenge carries no scope=.
    let user = user_token(
        &h,
        TokenVersion::V1,
        CDR_URI,
        POWER_QUERY_CLIENT_ID,
        "user_impersonation AQL.Read EHR.Read",
    );
    for (method, path) in &writes {
        assert_forbidden(
            call(&h, method, path, Some(&user)).await,
            None,
            &format!("Power BI user {method} {path}"),
        )
        .await;
    }
    // Service principals with read roles only: 403 naming CDR.Write.All.
    let reader = app_token(
        &h,
        TokenVersion::V2,
        CDR_CLIENT_ID,
        ETL_CLIENT,
        Some(&["AQL.Read.All", "EHR.Read.All"]),
    );
    for (method, path) in &writes {
        assert_forbidden(
            call(&h, method, path, Some(&reader)).await,
            Some("CDR.Write.All"),
            &format!("reader {method} {path}"),
        )
        .await;
    }
    assert_eq!(
        h.echo.requests(),
        allowed,
        "no refused write reached EHRbase"
    );
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("allowed/none", allowed),
            (
                "denied/role_missing",
                2 * u64::try_from(writes.len()).expect("count")
            ),
        ])
    );
}

#[tokio::test]
async fn example_ehr_reads_need_ehr_read_or_ehr_read_all() {
    let h = start_example(&[]).await;
    let paths = [
        format!("{EHR}/{EHR_ID}"),
        format!("{EHR}?subject_id=123&subject_namespace=mrn"),
        format!("{EHR}/{EHR_ID}/composition/8849182c-82ad-4088-a07f-48ead4180515::local::1"),
    ];
    let user = user_token(
        &h,
        TokenVersion::V2,
        CDR_CLIENT_ID,
        PBI_REFRESH,
        "user_impersonation EHR.Read",
    );
    let app = app_token(
        &h,
        TokenVersion::V1,
        CDR_URI,
        ETL_CLIENT,
        Some(&["EHR.Read.All"]),
    );
    for path in &paths {
        for token in [&user, &app] {
            let seen = passed(call(&h, "GET", path, Some(token.as_str())).await, path).await;
            assert_eq!(seen["uri"], path.as_str());
        }
    }
    // AQL.Read alone does not read EHRs; CDR.Write.All alone does not either.
    let aql_user = user_token(
        &h,
        TokenVersion::V1,
        CDR_URI,
        POWER_QUERY_CLIENT_ID,
        "user_impersonation AQL.Read",
    );
    let writer = app_token(
        &h,
        TokenVersion::V2,
        CDR_CLIENT_ID,
        ETL_CLIENT,
        Some(&["CDR.Write.All"]),
    );
    for path in &paths {
        assert_forbidden(
            call(&h, "GET", path, Some(&aql_user)).await,
            Some("EHR.Read"),
            path,
        )
        .await;
        assert_forbidden(
            call(&h, "GET", path, Some(&writer)).await,
            Some("EHR.Read.All"),
            path,
        )
        .await;
    }
    // No rule covers GET /definition: a valid token suffices, no token does not.
    let templates = "/ehrbase/rest/openehr/v1/definition/template/adl1.4";
    passed(
        call(&h, "GET", templates, Some(&aql_user)).await,
        "templates",
    )
    .await;
    let r = call(&h, "GET", templates, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        missing_challenge(&h).as_str()
    );
    assert_eq!(h.echo.requests(), 7);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("allowed/none", 7),
            ("denied/scope_missing", 3),
            ("denied/role_missing", 3),
            ("denied/missing_token", 1),
        ])
    );
}

/// `Connection` names headers that end at the first hop. A client naming the identity headers
/// or `Authorization` there must not strip what the gateway itself set for the upstream.
#[tokio::test]
async fn connection_header_cannot_remove_the_verified_identity_or_the_upstream_credentials() {
    let h = start_example(&[]).await;
    let token = user_token(
        &h,
        TokenVersion::V1,
        CDR_URI,
        POWER_QUERY_CLIENT_ID,
        "AQL.Read",
    );
    let auth = format!("Bearer {token}");
    let r = send_raw(
        h.gw.addr,
        "GET",
        AQL_Q,
        &[
            ("authorization", &auth),
            (
                "connection",
                "close, X-Auth-Subject, X-Auth-Client, Authorization",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.json();
    assert_eq!(
        seen["headers"]["x-auth-subject"], "00000000-0000-4000-8000-00000000a11e",
        "the verified subject reaches the upstream: {seen}"
    );
    assert_eq!(
        seen["headers"]["x-auth-client"], POWER_QUERY_CLIENT_ID,
        "{seen}"
    );
    assert_eq!(
        seen["headers"]["authorization"],
        echoed_basic().as_str(),
        "the gateway's Basic credentials reach EHRbase: {seen}"
    );
}

// =============================================================================================
// 2. Rule kinds on small configs
// =============================================================================================

#[tokio::test]
async fn required_claims_allow_deny_and_group_overage() {
    let h = start_with_tail(
        Extra::default(),
        r#"
[[routes]]
path = "/reports"
claims = { groups = ["g-analysts", "g-admins"] }

[[routes]]
path = "/wards"
claims = { department = "cardiology", groups = ["g-clinicians"] }
"#,
    )
    .await;
    let mint = |f: &dyn Fn(&mut Map<String, Value>), version| {
        let mut c = h.claims(version);
        f(&mut c);
        h.issuer.mint(&c)
    };
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let v = version.claim();
        // Allowed: the claim holds one of the values (array claim).
        let t = mint(
            &|c| {
                c.insert("groups".into(), json!(["g-other", "g-admins"]));
            },
            version,
        );
        passed(call(&h, "GET", "/reports/q1", Some(&t)).await, v).await;
        // Denied: none of the values, or no claim at all.
        let t = mint(
            &|c| {
                c.insert("groups".into(), json!(["g-other", "G-ADMINS"]));
            },
            version,
        );
        assert_forbidden(call(&h, "GET", "/reports", Some(&t)).await, None, v).await;
        assert_forbidden(
            call(&h, "GET", "/reports", Some(&h.token(version))).await,
            None,
            v,
        )
        .await;
        // Group overage: more than 200 groups, only a reference in _claim_names.
        let overage = mint(
            &|c| {
                c.insert("_claim_names".into(), json!({"groups": "src1"}));
                c.insert(
                    "_claim_sources".into(),
                    json!({"src1": {"endpoint": format!("https://graph.windows.net/{TENANT}/users/x/getMemberObjects")}}),
                );
            },
            version,
        );
        assert_forbidden(call(&h, "GET", "/reports", Some(&overage)).await, None, v).await;
        // The same token is fine where no rule needs groups.
        passed(call(&h, "GET", "/elsewhere", Some(&overage)).await, v).await;
    }
    // Several claims: each must hold one of its values; a string claim compares as one value.
    let both = |dept: Value, groups: Value| {
        mint(
            &|c| {
                c.insert("department".into(), dept.clone());
                c.insert("groups".into(), groups.clone());
            },
            TokenVersion::V2,
        )
    };
    passed(
        call(
            &h,
            "GET",
            "/wards/7",
            Some(&both(json!("cardiology"), json!(["g-clinicians"]))),
        )
        .await,
        "both claims",
    )
    .await;
    passed(
        call(
            &h,
            "GET",
            "/wards/7",
            Some(&both(
                json!(["oncology", "cardiology"]),
                json!(["g-clinicians"]),
            )),
        )
        .await,
        "array department",
    )
    .await;
    for (dept, groups) in [
        (json!("oncology"), json!(["g-clinicians"])),
        (json!("cardiology"), json!(["g-analysts"])),
        (json!(42), json!(["g-clinicians"])),
        (json!("Cardiology"), json!(["g-clinicians"])),
    ] {
        assert_forbidden(
            call(&h, "GET", "/wards", Some(&both(dept, groups))).await,
            None,
            "wards",
        )
        .await;
    }
    // An app-only token meets the same claim rules.
    let mut app = app_claims(&h, TokenVersion::V2, API_CLIENT_ID, ETL_CLIENT, None);
    app.insert("groups".into(), json!(["g-analysts"]));
    passed(
        call(&h, "GET", "/reports", Some(&h.issuer.mint(&app))).await,
        "app-only with the group",
    )
    .await;

    assert_eq!(h.echo.requests(), 7);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("allowed/none", 7),
            ("denied/claim_missing", 8),
            ("denied/groups_overage", 2),
        ])
    );
}

#[tokio::test]
async fn methods_filter_and_the_first_matching_rule_wins() {
    let h = start_with_tail(
        Extra::default(),
        r#"
[[routes]]
path = "/api/public"
anonymous = true

[[routes]]
path = "/api/items"
methods = ["post", "DELETE"]
roles = ["Items.Write"]

[[routes]]
path = "/api"
scopes = ["Api.Read"]
roles = ["Api.Read.All"]

[[routes]]
path = "/api/open"
anonymous = true
"#,
    )
    .await;
    let reader = user_token(
        &h,
        TokenVersion::V2,
        API_CLIENT_ID,
        POWER_QUERY_CLIENT_ID,
        "Api.Read",
    );
    let nobody = user_token(
        &h,
        TokenVersion::V1,
        AUDIENCE,
        POWER_QUERY_CLIENT_ID,
        "user_impersonation",
    );
    let writer = app_token(
        &h,
        TokenVersion::V2,
        API_CLIENT_ID,
        ETL_CLIENT,
        Some(&["Items.Write"]),
    );
    let app_reader = app_token(
        &h,
        TokenVersion::V1,
        AUDIENCE,
        ETL_CLIENT,
        Some(&["Api.Read.All"]),
    );

    // The first rule: anonymous.
    passed(
        call(&h, "GET", "/api/public/x", None).await,
        "anonymous rule",
    )
    .await;
    // A later anonymous rule under /api is never reached: /api matched first.
    let r = call(&h, "GET", "/api/open", None).await;
    assert_eq!(r.status(), 401, "/api/open is decided by /api");
    assert_forbidden(
        call(&h, "GET", "/api/open", Some(&nobody)).await,
        Some("Api.Read"),
        "/api/open without Api.Read",
    )
    .await;
    passed(
        call(&h, "GET", "/api/open", Some(&reader)).await,
        "/api/open with Api.Read",
    )
    .await;

    // /api/items: POST and DELETE fall under the write rule, GET and PUT under /api.
    passed(
        call(&h, "GET", "/api/items", Some(&reader)).await,
        "GET items",
    )
    .await;
    passed(
        call(&h, "PUT", "/api/items/7", Some(&app_reader)).await,
        "PUT is not in the first rule's methods",
    )
    .await;
    assert_forbidden(
        call(&h, "GET", "/api/items", Some(&nobody)).await,
        Some("Api.Read"),
        "GET items without Api.Read",
    )
    .await;
    assert_forbidden(
        call(&h, "POST", "/api/items", Some(&reader)).await,
        None,
        "user token on the role-only write rule",
    )
    .await;
    assert_forbidden(
        call(&h, "DELETE", "/api/items/7", Some(&app_reader)).await,
        Some("Items.Write"),
        "app-only reader on the write rule",
    )
    .await;
    passed(
        call(&h, "POST", "/api/items", Some(&writer)).await,
        "POST items",
    )
    .await;
    passed(
        call(&h, "DELETE", "/api/items/7", Some(&writer)).await,
        "DELETE item",
    )
    .await;
    assert_forbidden(
        call(&h, "GET", "/api/items", Some(&writer)).await,
        Some("Api.Read.All"),
        "the writer cannot read through /api",
    )
    .await;

    // No rule: a valid token suffices, and is still required.
    passed(
        call(&h, "GET", "/other", Some(&nobody)).await,
        "no rule, valid token",
    )
    .await;
    let r = call(&h, "GET", "/other", None).await;
    assert_eq!(r.status(), 401);

    assert_eq!(h.echo.requests(), 7);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("anonymous/none", 1),
            ("allowed/none", 6),
            ("denied/missing_token", 2),
            ("denied/scope_missing", 2),
            ("denied/role_missing", 3),
        ])
    );
}

#[tokio::test]
async fn a_rules_path_is_a_segment_wise_prefix() {
    let h = start_with_tail(
        Extra::default(),
        r#"
[[routes]]
path = "/ehr/"
scopes = ["EHR.Read"]
"#,
    )
    .await;
    let token = h.token(TokenVersion::V2);
    for path in [
        "/ehr",
        "/ehr/",
        "/ehr/123",
        "/ehr/123/composition",
        "/ehr?x=1",
    ] {
        assert_forbidden(
            call(&h, "GET", path, Some(&token)).await,
            Some("EHR.Read"),
            path,
        )
        .await;
    }
    for path in [
        "/ehrx",
        "/ehr.json",
        "/ehr-archive/1",
        "/ehrbase/ehr",
        "/x/ehr",
    ] {
        let seen = passed(call(&h, "GET", path, Some(&token)).await, path).await;
        assert_eq!(seen["uri"], path);
    }
    assert_eq!(
        request_counts(&h).await,
        counts(&[("allowed/none", 5), ("denied/scope_missing", 5)])
    );
}

#[tokio::test]
async fn identity_headers_renamed_disabled_stripped_and_the_claims_header() {
    let h = start_with_tail(
        Extra::default(),
        r#"
[identity]
subject_header = "X-User-Id"
roles_header = "X-User-Roles"
name_header = ""
claims_header = "X-Auth-Claims"
strip_headers = ["X-User", "X-Remote-User"]

[[routes]]
path = "/public"
anonymous = true
"#,
    )
    .await;
    let spoofed_claims = URL_SAFE_NO_PAD.encode(r#"{"oid":"evil","roles":["Admin"]}"#);
    let spoofs: Vec<(&str, &str)> = vec![
        ("X-User-Id", "spoofed-admin"),
        ("X-User-Roles", "Admin"),
        ("X-User", "root"),
        ("x-remote-user", "root"),
        ("X-Auth-Subject", "spoofed"),
        ("X-Auth-Name", "root@contoso.example"),
        ("X-Auth-Roles", "Admin"),
        ("X-Auth-Claims", &spoofed_claims),
        ("X-Auth-Anything", "1"),
        ("X-Userx", "kept"),
    ];
    let send = |path: &'static str, token: Option<String>| {
        let mut req = h.client.get(h.url(path));
        for (n, v) in &spoofs {
            req = req.header(*n, *v);
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    let headers_of = |seen: &Value| -> BTreeMap<String, String> {
        seen["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .filter(|(k, _)| k.starts_with("x-"))
            .filter(|(k, _)| !k.starts_with("x-forwarded-") && *k != "x-request-id")
            .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
            .collect()
    };

    // A v2 token without roles: the renamed roles header must vanish, not carry the spoof.
    let mut claims = h.claims(TokenVersion::V2);
    claims.insert("oid".into(), json!("3f2504e0-4f89-41d3-9a0c-0305e82c3301"));
    let token = h.issuer.mint(&claims);
    let seen = passed(
        send("/data", Some(token.clone())).await.expect("request"),
        "v2",
    )
    .await;
    let got = headers_of(&seen);
    let encoded = got.get("x-auth-claims").cloned().unwrap_or_default();
    let decoded: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(encoded.as_bytes())
            .expect("base64url claims header"),
    )
    .expect("claims header is JSON");
    assert_eq!(decoded["oid"], "3f2504e0-4f89-41d3-9a0c-0305e82c3301");
    assert_eq!(
        decoded,
        Value::Object(claims.clone()),
        "the verified claims"
    );
    assert_eq!(
        encoded,
        token.split('.').nth(1).expect("payload"),
        "the token's own payload segment"
    );
    let mut without_claims = got.clone();
    without_claims.remove("x-auth-claims");
    assert_eq!(
        without_claims,
        counts_s(&[
            ("x-user-id", "3f2504e0-4f89-41d3-9a0c-0305e82c3301"),
            ("x-auth-tenant", TENANT),
            ("x-auth-client", POWER_QUERY_CLIENT_ID),
            ("x-auth-scopes", "user_impersonation"),
            ("x-userx", "kept"),
        ]),
        "renamed, disabled and stripped headers"
    );

    // With roles, the renamed header carries them, comma-joined.
    let mut claims = h.claims(TokenVersion::V1);
    claims.insert("roles".into(), json!(["EHR.Read.All", "AQL.Read.All"]));
    let seen = passed(
        send("/data", Some(h.issuer.mint(&claims)))
            .await
            .expect("request"),
        "v1 with roles",
    )
    .await;
    let got = headers_of(&seen);
    assert_eq!(got["x-user-roles"], "EHR.Read.All,AQL.Read.All");
    assert_eq!(got["x-user-id"], "00000000-0000-4000-8000-00000000a11e");
    assert!(!got.contains_key("x-auth-name"), "{got:?}");
    assert!(!got.contains_key("x-auth-subject"), "{got:?}");

    // Anonymous route without a token: every spoof removed, nothing set.
    let seen = passed(send("/public", None).await.expect("request"), "anonymous").await;
    assert_eq!(
        headers_of(&seen),
        counts_s(&[("x-userx", "kept")]),
        "anonymous"
    );

    // A preflight: the same.
    let mut req = h
        .client
        .request(reqwest::Method::OPTIONS, h.url("/data"))
        .header("origin", "https://app.powerbi.com")
        .header("access-control-request-method", "GET");
    for (n, v) in &spoofs {
        req = req.header(*n, *v);
    }
    let seen = passed(req.send().await.expect("request"), "preflight").await;
    assert_eq!(seen["method"], "OPTIONS");
    assert_eq!(
        headers_of(&seen),
        counts_s(&[("x-userx", "kept")]),
        "preflight"
    );
    assert_eq!(h.echo.requests(), 4);
}

fn counts_s(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_claim_that_is_not_header_text_is_left_out_not_a_500() {
    let h = Harness::start().await;
    for (upn, why) in [
        ("a@b\r\nX-Injected: 1", "CR LF"),
        ("a@b\nX-Injected: 1", "LF"),
        ("a@b\u{7f}", "DEL"),
        ("a@b\u{0}", "NUL"),
    ] {
        let mut claims = h.claims(TokenVersion::V1);
        claims.insert("upn".into(), json!(upn));
        let seen = passed(
            call(&h, "GET", "/data", Some(&h.issuer.mint(&claims))).await,
            why,
        )
        .await;
        assert!(
            seen["headers"].get("x-auth-name").is_none(),
            "{why}: {seen}"
        );
        assert!(seen["headers"].get("x-injected").is_none(), "{why}: {seen}");
        assert_eq!(seen["headers"]["x-auth-tenant"], TENANT, "{why}");
    }
    // Non-ASCII is not dropped: it travels as its UTF-8 bytes (RFC 9110 obs-text).
    let mut claims = h.claims(TokenVersion::V2);
    claims.insert("preferred_username".into(), json!("adèle@contoso.example"));
    let seen = passed(
        call(&h, "GET", "/data", Some(&h.issuer.mint(&claims))).await,
        "non-ASCII",
    )
    .await;
    assert_eq!(seen["headers"]["x-auth-name"], "adèle@contoso.example");
    assert_eq!(h.echo.requests(), 5);
}

#[tokio::test]
async fn cors_preflight_off_needs_a_token_and_the_actual_request_always_does() {
    for preflight_passes in [true, false] {
        let h = start_with_tail(
            Extra {
                server: format!("cors_preflight = {preflight_passes}"),
                ..Default::default()
            },
            r#"
[[routes]]
path = "/api"
scopes = ["Api.Read"]
"#,
        )
        .await;
        let what = format!("cors_preflight = {preflight_passes}");
        let preflight = || {
            h.client
                .request(reqwest::Method::OPTIONS, h.url("/api/items"))
                .header("origin", "https://app.powerbi.com")
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization")
        };
        let r = preflight().send().await.expect("request");
        if preflight_passes {
            let seen = passed(r, &what).await;
            assert_eq!(seen["method"], "OPTIONS");
        } else {
            assert_eq!(r.status(), 401, "{what}");
            assert_eq!(
                r.headers()["www-authenticate"],
                missing_challenge(&h).as_str()
            );
            // With a token the OPTIONS is an ordinary request under the route's rule.
            let with_scope = user_token(
                &h,
                TokenVersion::V2,
                API_CLIENT_ID,
                POWER_QUERY_CLIENT_ID,
                "Api.Read",
            );
            let r = preflight()
                .bearer_auth(&with_scope)
                .send()
                .await
                .expect("request");
            let seen = passed(r, &what).await;
            assert_eq!(seen["method"], "OPTIONS");
            let r = preflight()
                .bearer_auth(h.token(TokenVersion::V1))
                .send()
                .await
                .expect("request");
            assert_forbidden(r, Some("Api.Read"), &what).await;
        }
        // The actual cross-origin request needs a token either way.
        let r = h
            .client
            .get(h.url("/api/items"))
            .header("origin", "https://app.powerbi.com")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401, "{what}: actual request");
        let r = h
            .client
            .get(h.url("/api/items"))
            .header("origin", "https://app.powerbi.com")
            .bearer_auth(user_token(
                &h,
                TokenVersion::V1,
                AUDIENCE,
                POWER_QUERY_CLIENT_ID,
                "Api.Read",
            ))
            .send()
            .await
            .expect("request");
        passed(r, &what).await;

        let expected = if preflight_passes {
            counts(&[
                ("preflight/none", 1),
                ("allowed/none", 1),
                ("denied/missing_token", 1),
            ])
        } else {
            counts(&[
                ("allowed/none", 2),
                ("denied/missing_token", 2),
                ("denied/scope_missing", 1),
            ])
        };
        assert_eq!(request_counts(&h).await, expected, "{what}");
    }
}

/// SPEC §4: "a path whose decoding yields `/`, `\`, NUL or invalid UTF-8 inside a segment is
/// refused with 400", with no exception for CORS preflights.
#[tokio::test]
async fn a_preflight_to_a_path_that_cannot_be_normalised_is_refused_with_400() {
    let h = Harness::start().await;
    let mut answers = Vec::new();
    for target in ["/api%2Fitems", "/a%5Cb", "/a%00b", "/%FF", "/.."] {
        let r = send_raw(
            h.gw.addr,
            "OPTIONS",
            target,
            &[
                ("origin", "https://app.powerbi.com"),
                ("access-control-request-method", "GET"),
            ],
            b"",
        )
        .await;
        answers.push((target, r.status));
    }
    assert!(
        answers.iter().all(|(_, s)| *s == 400),
        "each refused with 400; got {answers:?}"
    );
    assert_eq!(h.echo.requests(), 0);
}

// =============================================================================================
// 3. Two issuers at once
// =============================================================================================

/// The harness (Entra, tenant [`TENANT`]) plus a second issuer configured as a plain OpenID
/// Connect issuer with audience [`OIDC_AUDIENCE`].
async fn start_two_issuers(entra: &str) -> (Harness, DevIssuer) {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let oidc = DevIssuer::start(loopback(), OIDC_TENANT)
        .await
        .expect("oidc issuer");
    let echo = EchoUpstream::start(loopback()).await.expect("echo");
    let base = format!("{}/{OIDC_TENANT}/v2.0", oidc.authority());
    let toml = format!(
        r#"{}
[[oidc]]
issuer = "{base}"
discovery_url = "{base}/.well-known/openid-configuration"
audiences = ["{OIDC_AUDIENCE}"]
"#,
        config_toml(
            &issuer,
            &echo.url(),
            &Extra {
                entra: entra.to_owned(),
                ..Default::default()
            }
        )
    );
    let config = common::load(&toml);
    assert_eq!(config.oidc.len(), 1);
    (running(issuer, echo, &config).await, oidc)
}

/// A Keycloak-shaped access token of the OIDC issuer: no Entra `tid`/`ver`/`oid`/`scp`, a
/// non-GUID client, `scope` as a string.
fn oidc_claims(oidc: &DevIssuer, aud: &str) -> Map<String, Value> {
    let mut c = oidc.claims(TokenVersion::V2, aud);
    for k in ["tid", "ver", "oid", "scp", "azpacr", "name"] {
        c.remove(k);
    }
    c.insert("azp".into(), json!("cdr-etl"));
    c.insert("sub".into(), json!("service-account-cdr-etl"));
    c.insert(
        "preferred_username".into(),
        json!("service-account-cdr-etl"),
    );
    c.insert("scope".into(), json!("profile email"));
    c.insert("realm_access".into(), json!({"roles": ["offline_access"]}));
    c
}

#[tokio::test]
async fn entra_and_oidc_tokens_are_each_accepted_only_for_their_own_audience() {
    let (h, oidc) = start_two_issuers("").await;

    // Each issuer's token for its own audience.
    for (version, aud) in [
        (TokenVersion::V1, AUDIENCE),
        (TokenVersion::V2, API_CLIENT_ID),
    ] {
        let t = h.issuer.mint(&h.issuer.claims(version, aud));
        let seen = passed(call(&h, "GET", "/data", Some(&t)).await, aud).await;
        assert_eq!(seen["headers"]["x-auth-tenant"], TENANT);
    }
    let seen = passed(
        call(
            &h,
            "GET",
            "/data",
            Some(&oidc.mint(&oidc_claims(&oidc, OIDC_AUDIENCE))),
        )
        .await,
        "oidc token",
    )
    .await;
    assert_eq!(seen["headers"]["x-auth-subject"], "service-account-cdr-etl");
    assert_eq!(seen["headers"]["x-auth-client"], "cdr-etl");
    assert_eq!(seen["headers"]["x-auth-name"], "service-account-cdr-etl");
    assert!(seen["headers"].get("x-auth-tenant").is_none(), "{seen}");

    // Each issuer's token for the other's audience.
    let entra_for_oidc_aud = h
        .issuer
        .mint(&h.issuer.claims(TokenVersion::V2, OIDC_AUDIENCE));
    assert_invalid_token(
        &h,
        call(&h, "GET", "/data", Some(&entra_for_oidc_aud)).await,
        "Entra token with aud cdr-api",
    )
    .await;
    for aud in [AUDIENCE, API_CLIENT_ID] {
        let t = oidc.mint(&oidc_claims(&oidc, aud));
        assert_invalid_token(&h, call(&h, "GET", "/data", Some(&t)).await, aud).await;
    }

    // Keys are not shared either: each issuer's claims signed with the other's key.
    let entra_key = h.issuer.signing_key();
    let oidc_key = oidc.signing_key();
    let forged_oidc = sign_jwt(
        &entra_key,
        &json!({"typ": "JWT", "alg": "RS256", "kid": entra_key.kid}),
        &Value::Object(oidc_claims(&oidc, OIDC_AUDIENCE)),
    );
    let forged_entra = sign_jwt(
        &oidc_key,
        &json!({"typ": "JWT", "alg": "RS256", "kid": oidc_key.kid}),
        &Value::Object(h.issuer.claims(TokenVersion::V2, API_CLIENT_ID)),
    );
    // The other issuer's key id with this issuer's claims, signed by the other's key.
    let swapped_kid = sign_jwt(
        &oidc_key,
        &json!({"typ": "JWT", "alg": "RS256", "kid": entra_key.kid}),
        &Value::Object(h.issuer.claims(TokenVersion::V2, API_CLIENT_ID)),
    );
    for (t, what) in [
        (&forged_oidc, "OIDC claims, Entra key"),
        (&forged_entra, "Entra claims, OIDC key"),
        (&swapped_kid, "Entra claims and kid, OIDC key"),
    ] {
        assert_invalid_token(&h, call(&h, "GET", "/data", Some(t.as_str())).await, what).await;
    }

    assert_eq!(h.echo.requests(), 3);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("allowed/none", 3),
            ("denied/audience_mismatch", 3),
            ("denied/unknown_kid", 2),
            ("denied/bad_signature", 1),
        ])
    );
}

#[tokio::test]
async fn an_unknown_kid_flood_against_one_issuer_fetches_no_keys_of_the_other() {
    // No cooldown, so that a flood does refetch its own issuer's keys: the test can then see
    // that it touches only that issuer.
    let (h, oidc) = start_two_issuers(r#"jwks_min_refetch = "0s""#).await;
    let flood = |signer: &DevIssuer, claims: &Map<String, Value>, tag: &str| -> Vec<String> {
        let key = signer.signing_key();
        (0..10)
            .map(|i| {
                sign_jwt(
                    &key,
                    &json!({"typ": "JWT", "alg": "RS256", "kid": format!("{tag}-{i}")}),
                    &Value::Object(claims.clone()),
                )
            })
            .collect()
    };

    // Against the OIDC issuer.
    let entra_before = h.issuer.jwks_fetches();
    let oidc_before = oidc.jwks_fetches();
    for t in flood(&oidc, &oidc_claims(&oidc, OIDC_AUDIENCE), "oidc-flood") {
        assert_invalid_token(&h, call(&h, "GET", "/data", Some(&t)).await, "oidc flood").await;
    }
    assert!(
        oidc.jwks_fetches() > oidc_before,
        "the flood refetched its own issuer's keys ({} -> {})",
        oidc_before,
        oidc.jwks_fetches()
    );
    assert_eq!(
        h.issuer.jwks_fetches(),
        entra_before,
        "no Entra key fetch for an OIDC issuer's kids"
    );

    // Against Entra (v1 and v2).
    let entra_before = h.issuer.jwks_fetches();
    let oidc_before = oidc.jwks_fetches();
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let claims = h.issuer.claims(version, AUDIENCE);
        for t in flood(&h.issuer, &claims, "entra-flood") {
            assert_invalid_token(&h, call(&h, "GET", "/data", Some(&t)).await, "entra flood").await;
        }
    }
    assert!(h.issuer.jwks_fetches() > entra_before);
    assert_eq!(
        oidc.jwks_fetches(),
        oidc_before,
        "no OIDC key fetch for Entra's kids"
    );

    // Both issuers' good tokens still pass.
    passed(
        call(
            &h,
            "GET",
            "/data",
            Some(&oidc.mint(&oidc_claims(&oidc, OIDC_AUDIENCE))),
        )
        .await,
        "oidc after floods",
    )
    .await;
    passed(
        call(&h, "GET", "/data", Some(&h.token(TokenVersion::V2))).await,
        "entra after floods",
    )
    .await;
    assert_eq!(
        request_counts(&h).await,
        counts(&[("allowed/none", 2), ("denied/unknown_kid", 30)])
    );
    assert_eq!(oidc.jwks_fetches(), oidc_before, "known kids fetch nothing");
}

/// Okta's access tokens carry `scp` as a JSON array (`["openid", "cdr.read"]`); SPEC and issue 3
/// name Okta among the `[[oidc]]` providers, so a valid Okta token must not be refused as
/// malformed.
#[tokio::test]
async fn okta_shaped_token_with_an_array_scp_is_accepted_from_an_oidc_issuer() {
    let (h, oidc) = start_two_issuers("").await;
    let mut claims = oidc_claims(&oidc, OIDC_AUDIENCE);
    claims.remove("scope");
    claims.insert("scp".into(), json!(["openid", "cdr.read"]));
    claims.insert("cid".into(), json!("0oa1b2c3d4e5f6g7h8i9"));
    let r = call(&h, "GET", "/data", Some(&oidc.mint(&claims))).await;
    let status = r.status();
    let counts_now = request_counts(&h).await;
    assert_eq!(
        status, 200,
        "an Okta token from a configured [[oidc]] issuer; counters: {counts_now:?}"
    );
}

// =============================================================================================
// 4. RFC 9728 protected-resource metadata
// =============================================================================================

const METADATA_URL: &str = "https://cdr.contoso.com/.well-known/oauth-protected-resource/ehrbase";

async fn start_example_with_metadata() -> Harness {
    start_example(&[
        ("ENTRAGATE_CHALLENGE__RESOURCE_METADATA", "true"),
        (
            "ENTRAGATE_SERVER__PUBLIC_URL",
            "https://cdr.contoso.com/ehrbase",
        ),
    ])
    .await
}

#[tokio::test]
async fn resource_metadata_is_advertised_in_challenges_and_served_path_inserted() {
    let h = start_example_with_metadata().await;
    let authority = h.issuer.authority().to_owned();
    let authorize = format!("{authority}/{TENANT}/oauth2/authorize");

    let r = call(&h, "GET", AQL_Q, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Bearer realm={authority}/{TENANT}, authorization_uri={authorize}, resource_metadata=\"{METADATA_URL}\""
        )
        .as_str()
    );
    let r = call(&h, "GET", AQL_Q, Some("not-a-jwt")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Bearer authorization_uri={authorize}, error=\"invalid_token\", resource_metadata=\"{METADATA_URL}\""
        )
        .as_str()
    );
    // Power Query's probe: exactly as Microsoft documents it, nothing added.
    for probe in ["Bearer", "Bearer ", "bearer"] {
        let r = h
            .client
            .get(h.url(AQL_Q))
            .header("authorization", probe)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401);
        let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
        assert_eq!(
            challenges,
            [format!("Bearer authorization_uri={authorize}").as_str()],
            "{probe:?}"
        );
    }

    // The document at the path-inserted URL, without a token, never proxied.
    let r = h
        .client
        .get(h.url("/.well-known/oauth-protected-resource/ehrbase"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.expect("metadata JSON");
    assert_eq!(
        doc,
        json!({
            "resource": "https://cdr.contoso.com/ehrbase",
            "authorization_servers": [format!("{authority}/{TENANT}/v2.0")],
            "scopes_supported": ["https://cdr.contoso.com/AQL.Read", "https://cdr.contoso.com/EHR.Read"],
            "bearer_methods_supported": ["header"],
        })
    );
    assert_eq!(h.echo.requests(), 0);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("denied/missing_token", 1),
            ("denied/malformed", 1),
            ("denied/empty_bearer", 3),
        ])
    );
}

/// SPEC §4: with `challenge.resource_metadata`, `resource_metadata="…"` is added to every
/// challenge except the answer to Power Query's empty-bearer probe; a 403's challenge is one.
#[tokio::test]
async fn insufficient_scope_challenge_also_advertises_resource_metadata() {
    let h = start_example_with_metadata().await;
    let token = user_token(
        &h,
        TokenVersion::V1,
        CDR_URI,
        POWER_QUERY_CLIENT_ID,
        "user_impersonation",
    );
    let r = call(&h, "GET", AQL_Q, Some(&token)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"AQL.Read\", resource_metadata=\"{METADATA_URL}\""
        )
        .as_str()
    );
}

/// The example's readiness comes only from its own keys: until they load, a request with a
/// token is 503 and the status route stays anonymous.
#[tokio::test]
async fn example_status_answers_while_keys_load_and_tokens_wait_for_them() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    issuer.set_up(false);
    let echo = EchoUpstream::start(loopback()).await.expect("echo");
    let config = example_config(&issuer, &echo, &[]);
    let h = Harness::launch(issuer, echo, &config).await;
    let seen = passed(call(&h, "GET", STATUS, None).await, "status, no keys").await;
    assert_eq!(seen["headers"]["authorization"], echoed_basic().as_str());
    let token = user_token(
        &h,
        TokenVersion::V1,
        CDR_URI,
        POWER_QUERY_CLIENT_ID,
        "AQL.Read",
    );
    let r = call(&h, "GET", AQL_Q, Some(&token)).await;
    assert_eq!(r.status(), 503);
    h.issuer.set_up(true);
    eventually(
        Duration::from_secs(15),
        "keys load after the outage",
        || {
            let ready = h.gw.keys().is_ready();
            async move { ready }
        },
    )
    .await;
    passed(call(&h, "GET", AQL_Q, Some(&token)).await, "after keys").await;
}
