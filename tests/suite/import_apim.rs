//! `entragate import-apim` on policies written after the structure of Microsoft's documented
//! examples (tests/fixtures/apim/): each converts to TOML the gateway's own loader accepts,
//! with the values in the right keys and a comment for everything without an equivalent;
//! malformed XML is a clear error (exit 2); and a converted policy run by the gateway lets
//! through what APIM would and refuses what it would.

use crate::common;

use common::process::Proc;
use common::{AUDIENCE, TENANT, loopback};
use entragate::config::Config;
use entragate::dev::{DevIssuer, EchoUpstream};
use entragate::keys::TokenVersion;
use entragate::ops::import_apim::{self, Converted, ImportError};
use serde_json::json;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/apim/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn convert(name: &str) -> Converted {
    import_apim::convert(&fixture(name), name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The converted TOML must load as it is.
fn load(c: &Converted) -> Config {
    Config::load(&c.toml, &[], &|p| std::fs::read_to_string(p))
        .unwrap_or_else(|e| panic!("does not load: {e}\n{}", c.toml))
}

fn mentions(c: &Converted, text: &str) {
    assert!(c.toml.contains(text), "{text:?} not in:\n{}", c.toml);
}

#[test]
fn entra_single_tenant_validate_jwt() {
    let c = convert("validate-jwt-entra-single-tenant.xml");
    let config = load(&c);
    assert_eq!(
        config.entra.tenant_id,
        "6c3f6b2e-1d2a-4b8e-9a51-0e5c2f7d9a10"
    );
    assert_eq!(config.entra.authority, "https://login.microsoftonline.com");
    // <audiences> narrowed by the required aud claim, as APIM checks both.
    assert_eq!(
        config.entra.audiences,
        ["11111111-2222-4333-8444-555555555555"]
    );
    assert_eq!(config.entra.clock_skew.as_secs(), 0, "APIM's default skew");
    assert_eq!(config.upstream.origin.as_str(), "ehrbase.internal:8080");
    assert_eq!(config.upstream.base_path, "/ehrbase");
    mentions(&c, "failed-validation-error-message=\"Unauthorized.");
    mentions(&c, "accepts both Entra forms");
    mentions(&c, "<cors>");
    assert!(
        c.warnings.iter().all(|w| !w.starts_with("to edit")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn auth0_like_validate_jwt_becomes_an_oidc_issuer() {
    let c = convert("validate-jwt-auth0.xml");
    let config = load(&c);
    assert_eq!(config.oidc.len(), 1);
    let o = &config.oidc[0];
    assert_eq!(o.issuer, "https://contoso-dev.eu.auth0.com/");
    assert_eq!(
        o.discovery_url,
        "https://contoso-dev.eu.auth0.com/.well-known/openid-configuration"
    );
    assert_eq!(o.audiences, ["https://cdr.contoso.example/api"]);
    // A space-separated claim other than scp cannot be expressed: kept, commented out.
    mentions(
        &c,
        "# NOT CONVERTED, separator=\" \" (entragate splits only scp, at spaces): claims.scope = [\"read:compositions\"]",
    );
    assert!(config.routes.iter().all(|r| r.claims.is_empty()));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("[entra] holds placeholders")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn required_claims_match_any_all_and_separator() {
    let c = convert("validate-jwt-required-claims.xml");
    let config = load(&c);
    let e = &config.entra;
    assert_eq!(e.clock_skew.as_secs(), 30);
    assert_eq!(
        e.allowed_client_ids,
        [
            "a672d62c-fc7b-4e81-a576-e60dc46e951d",
            "b52893c8-bc2e-47fc-918b-77022b299bbc"
        ]
    );
    assert_eq!(e.allowed_tenants, ["6c3f6b2e-1d2a-4b8e-9a51-0e5c2f7d9a10"]);
    let route = &config.routes[0];
    assert_eq!(route.path, "/");
    assert_eq!(route.scopes, ["user_impersonation", "aql.read"]);
    let claims: Vec<(&str, Vec<&str>)> = route
        .claims
        .iter()
        .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
        .collect();
    assert!(claims.contains(&(
        "groups",
        vec![
            "6a0b7e2c-0000-4000-8000-00000000f1a0",
            "6a0b7e2c-0000-4000-8000-00000000f1a1"
        ]
    )));
    // match="all" with one value is the same as any.
    assert!(claims.contains(&("ctry", vec!["NL"])));
    // Neither "all of several" nor a "," separator can be expressed: not converted, said so.
    assert_eq!(claims.len(), 2, "{claims:?}");
    mentions(&c, "# NOT CONVERTED, match=\"all\" with several values");
    mentions(&c, "claims.wids");
    mentions(&c, "# NOT CONVERTED, separator=\",\"");
    mentions(&c, "failed-validation-httpcode=\"403\"");
    mentions(&c, "output-token-variable-name=\"jwt\"");
}

#[test]
fn validate_azure_ad_token_client_and_backend_application_ids() {
    let c = convert("validate-azure-ad-token-simple.xml");
    let config = load(&c);
    assert_eq!(
        config.entra.tenant_id,
        "6c3f6b2e-1d2a-4b8e-9a51-0e5c2f7d9a10"
    );
    assert_eq!(
        config.entra.audiences,
        ["11111111-2222-4333-8444-555555555555"]
    );
    assert_eq!(
        config.entra.allowed_client_ids,
        [
            "a672d62c-fc7b-4e81-a576-e60dc46e951d",
            "b52893c8-bc2e-47fc-918b-77022b299bbc"
        ]
    );
    mentions(&c, "add the Application ID URI too");
}

#[test]
fn validate_azure_ad_token_sovereign_cloud_expression_and_condition() {
    let c = convert("validate-azure-ad-token-claims.xml");
    let config = load(&c);
    assert_eq!(config.entra.tenant_id, "contoso.onmicrosoft.us");
    assert_eq!(config.entra.authority, "https://login.microsoftonline.us");
    assert_eq!(config.entra.audiences, ["https://api.contoso.example"]);
    assert_eq!(
        config.routes[0].claims,
        [("ctry".to_owned(), vec!["US".to_owned()])]
    );
    mentions(
        &c,
        "audience @(context.Request.OriginalUrl.Host): a policy expression",
    );
    mentions(&c, "inside <when condition=");
    // The policy's <rate-limit> (per subscription) is converted too.
    mentions(&c, "[[limits]]");
    assert_eq!(config.limits[0].rate.as_config(), "800/h");
    mentions(&c, "failed-validation-error-message=\"Access denied\"");
}

#[test]
fn named_values_and_signing_keys_are_left_for_the_operator() {
    let c = convert("named-values.xml");
    mentions(
        &c,
        "APIM named values left in place, to replace with their values (API Management -> Named values): {{aad-tenant-id}}, {{aad-client-application-id}}",
    );
    let err = Config::load(&c.toml, &[], &|p| std::fs::read_to_string(p))
        .expect_err("placeholders do not load");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["entra.tenant_id", "entra.allowed_client_ids"]);
    for w in ["{{aad-tenant-id}}", "to edit before use: entra.tenant_id"] {
        assert!(
            c.warnings.iter().any(|x| x.contains(w)),
            "{w} not in {:?}",
            c.warnings
        );
    }

    let c = convert("validate-jwt-signing-keys.xml");
    mentions(
        &c,
        "<issuer-signing-keys>: keys come only from the issuer's published metadata",
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("entra.tenant_id: must not be empty")),
        "{:?}",
        c.warnings
    );
}

/// `upstream.url` as `serve` reads it back.
fn upstream_url(config: &Config) -> String {
    let u = &config.upstream;
    format!("{}://{}{}", u.scheme, u.origin, u.base_path)
}

#[test]
fn an_https_backend_is_carried_into_upstream_url() {
    let c = convert("validate-azure-ad-token-https-backend.xml");
    let config = load(&c);
    assert_eq!(
        upstream_url(&config),
        "https://ehrbase.internal:8443/ehrbase"
    );
    mentions(
        &c,
        "url = \"https://ehrbase.internal:8443/ehrbase\"   # from <set-backend-service base-url>",
    );
    assert!(!c.toml.contains("plain http"), "{}", c.toml);
    assert!(
        c.warnings.iter().all(|w| !w.contains("upstream.url")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn an_arm_export_brings_the_apis_service_url() {
    let c = convert("arm-export-service-url.json");
    let config = load(&c);
    assert_eq!(
        upstream_url(&config),
        "https://ehrbase.internal:8443/ehrbase"
    );
    mentions(&c, "# from the API's service URL (serviceUrl)");
    assert_eq!(config.entra.audiences, ["https://cdr.contoso.example"]);
    assert_eq!(
        config.entra.allowed_client_ids,
        ["a672d62c-fc7b-4e81-a576-e60dc46e951d"]
    );
    // The policy's own backend wins over the API's, as in APIM.
    let export = fixture("arm-export-service-url.json").replace(
        "</validate-azure-ad-token>",
        "</validate-azure-ad-token>\\n<set-backend-service base-url=\\\"http://other.internal:8080\\\" />",
    );
    let c = import_apim::convert(&export, "export").expect("converts");
    assert_eq!(upstream_url(&load(&c)), "http://other.internal:8080");
}

#[test]
fn without_a_backend_the_placeholder_names_the_key() {
    let c = convert("validate-azure-ad-token-simple.xml");
    load(&c);
    mentions(&c, "Fill in upstream.url (http:// or https://).");
    mentions(
        &c,
        "url = \"http://127.0.0.1:8081\"   # placeholder: fill in upstream.url",
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("upstream.url: not in the input")),
        "{:?}",
        c.warnings
    );
    // A backend that is a named value cannot be used as it is: placeholder and a warning.
    let named = fixture("validate-azure-ad-token-https-backend.xml")
        .replace("https://ehrbase.internal:8443/ehrbase", "{{ehrbase-url}}");
    let c = import_apim::convert(&named, "named").expect("converts");
    mentions(&c, "APIM's backend is {{ehrbase-url}}");
    mentions(&c, "set upstream.url to the API behind the gateway");
}

#[test]
fn malformed_or_unrelated_xml_is_refused() {
    match import_apim::convert(&fixture("malformed.xml"), "m") {
        Err(ImportError::Xml(msg)) => assert!(msg.contains("7:"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        import_apim::convert(&fixture("no-validation.xml"), "n"),
        Err(ImportError::NoPolicy)
    ));
    match import_apim::convert("{\"resources\": 1}", "j") {
        Err(ImportError::Export(msg)) => assert!(msg.contains("ARM template"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // APIM's lenient expression quoting is named as the likely cause.
    let lenient = r#"<policies><inbound><choose><when condition="@(context.Request.Method == "POST")"><validate-jwt /></when></choose></inbound></policies>"#;
    match import_apim::convert(lenient, "l") {
        Err(ImportError::Xml(msg)) => assert!(msg.contains("&quot;"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_binary_prints_toml_on_stdout_and_exits_2_on_malformed_xml() {
    let dir = format!("{}/tests/fixtures/apim", env!("CARGO_MANIFEST_DIR"));
    let out = Proc::run(
        &[
            "import-apim",
            &format!("{dir}/validate-jwt-required-claims.xml"),
        ],
        &[],
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    Config::load(&out.stdout, &[], &|p| std::fs::read_to_string(p)).expect("stdout loads");
    assert!(
        out.stderr.contains("no equivalent: required claim wids"),
        "{}",
        out.stderr
    );

    let out = Proc::run(
        &["import-apim", "-"],
        &[],
        Some(&fixture("validate-azure-ad-token-simple.xml")),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("from <validate-azure-ad-token> in standard input")
    );

    for (file, what) in [
        ("malformed.xml", "not well-formed XML"),
        (
            "no-validation.xml",
            "no <validate-jwt> or <validate-azure-ad-token>",
        ),
        ("does-not-exist.xml", "cannot read"),
    ] {
        let out = Proc::run(&["import-apim", &format!("{dir}/{file}")], &[], None).await;
        assert_eq!(out.code, Some(2), "{file}: {}", out.stderr);
        assert!(out.stderr.contains(what), "{file}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{file}: no TOML on failure");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_policy_admits_and_refuses_as_apim_would() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let echo = EchoUpstream::start(loopback()).await.expect("echo");
    let policy = format!(
        r#"<policies><inbound>
  <validate-azure-ad-token tenant-id="{TENANT}" authentication-endpoint="{authority}">
    <client-application-ids><application-id>a672d62c-fc7b-4e81-a576-e60dc46e951d</application-id></client-application-ids>
    <audiences><audience>{AUDIENCE}</audience></audiences>
    <required-claims><claim name="scp" match="any" separator=" "><value>user_impersonation</value></claim></required-claims>
  </validate-azure-ad-token>
  <set-backend-service base-url="{upstream}" />
</inbound></policies>"#,
        authority = issuer.authority(),
        upstream = echo.url(),
    );
    let c = import_apim::convert(&policy, "inline").expect("converts");
    let env = [
        (
            "ENTRAGATE_SERVER__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        (
            "ENTRAGATE_SERVER__ADMIN_LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
    ];
    let config = Config::load(&c.toml, &env, &|p| std::fs::read_to_string(p))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
    let gw = entragate::app::start(&config).await.expect("starts");
    for _ in 0..400 {
        if gw.keys().is_ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let client = common::client();
    let send = |token: String| {
        let client = client.clone();
        let url = format!("http://{}/ehr", gw.addr);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    let good = issuer.claims(TokenVersion::V1, AUDIENCE);
    assert_eq!(send(issuer.mint(&good)).await, 200);
    let mut other_client = good.clone();
    other_client.insert(
        "appid".into(),
        json!("7ab7862c-4c57-491e-8a45-d52a7e023983"),
    );
    assert_eq!(send(issuer.mint(&other_client)).await, 401);
    let mut no_scope = good.clone();
    no_scope.insert("scp".into(), json!("other.scope"));
    assert_eq!(send(issuer.mint(&no_scope)).await, 403);
    let mut other_aud = good;
    other_aud.insert("aud".into(), json!("https://elsewhere.example"));
    assert_eq!(send(issuer.mint(&other_aud)).await, 401);
    assert_eq!(
        echo.requests(),
        1,
        "only the good token reached the backend"
    );
}

#[test]
fn rate_limits_and_quotas_become_limits() {
    use entragate::config::{LimitKey, LimitKind};
    let c = convert("rate-limits-and-quotas.xml");
    let config = load(&c);
    let got: Vec<(String, LimitKey, String, LimitKind, u64)> = config
        .limits
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                l.key.clone(),
                l.rate.as_config(),
                l.kind,
                l.burst,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "rate-limit-1".into(),
                LimitKey::Client,
                "800/h".into(),
                LimitKind::Rate,
                20
            ),
            (
                "rate-limit-by-key-2".into(),
                LimitKey::Ip,
                "10/min".into(),
                LimitKind::Rate,
                10
            ),
            (
                "rate-limit-by-key-3".into(),
                LimitKey::User,
                "100/s".into(),
                LimitKind::Rate,
                100
            ),
            (
                "quota-by-key-4".into(),
                LimitKey::Client,
                "10000/day".into(),
                LimitKind::Quota,
                10_000
            ),
            (
                "quota-by-key-5".into(),
                LimitKey::Claim("team".into()),
                "500/h".into(),
                LimitKind::Quota,
                500
            ),
        ]
    );
    // What has no equivalent is named.
    mentions(
        &c,
        "counter-key \"@(context.Request.Headers.GetValueOrDefault(\\\"X-Api-Key\\\",\\\"\\\"))\" is neither",
    );
    mentions(&c, "1000 calls per 604800 s cannot be written");
    mentions(
        &c,
        "remaining-calls-header-name=\"x-remaining\" has no equivalent",
    );
    assert!(!c.toml.contains("other policies in the file"), "{}", c.toml);
}

#[test]
fn an_export_with_several_apis_becomes_apis() {
    let c = convert("arm-export-several-apis.json");
    let config = load(&c);
    let apis: Vec<(&str, &str, String)> = config
        .apis
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.prefix.as_str(),
                format!(
                    "{}://{}{}",
                    a.upstream.scheme, a.upstream.origin, a.upstream.base_path
                ),
            )
        })
        .collect();
    assert_eq!(
        apis,
        [
            (
                "ehrbase",
                "/ehrbase",
                "https://ehrbase.internal:8443/ehrbase".to_owned()
            ),
            // The policy's <set-backend-service> wins over the API's serviceUrl.
            (
                "fhir",
                "/fhir/r4",
                "http://fhir.internal:8080/fhir".to_owned()
            ),
            (
                "status-page",
                "/status",
                "http://status.internal:8080".to_owned()
            ),
        ]
    );
    // [entra] from the first API's policy; another API's own audiences are its own.
    assert_eq!(
        config.entra.tenant_id,
        "6c3f6b2e-1d2a-4b8e-9a51-0e5c2f7d9a10"
    );
    assert_eq!(config.entra.audiences, ["https://cdr.contoso.example"]);
    assert_eq!(config.apis[0].audiences, None);
    assert_eq!(
        config.apis[1].audiences.as_deref(),
        Some(&["api://fhir.contoso.example".to_owned()][..])
    );
    // Its <required-claims> is a rule on its prefix.
    let rule = &config.apis[1].routes[0];
    assert_eq!(rule.path, "/fhir/r4");
    assert!(config.routes.is_empty());
    assert!(
        !rule.claims.is_empty() || !rule.roles.is_empty(),
        "{rule:?}"
    );
    // The API without a token policy is named.
    mentions(&c, "API status-page: it has no <validate-jwt> in APIM");
    // Its <rate-limit> is a limit scoped to it.
    let limits: Vec<(&str, &[String], String)> = config
        .limits
        .iter()
        .map(|l| (l.name.as_str(), l.apis.as_slice(), l.rate.as_config()))
        .collect();
    assert_eq!(
        limits,
        [(
            "fhir-rate-limit-1",
            &["fhir".to_owned()][..],
            "100/min".to_owned()
        )]
    );
    assert!(!c.toml.contains("other policies in the file"), "{}", c.toml);
    assert!(
        c.warnings
            .iter()
            .all(|w| !w.starts_with("to edit before use")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn a_sovereign_authentication_endpoint_becomes_entra_cloud() {
    for (endpoint, cloud, authority) in [
        (
            "https://login.partner.microsoftonline.cn",
            "china",
            "https://login.partner.microsoftonline.cn",
        ),
        (
            "https://login.microsoftonline.us/",
            "usgov",
            "https://login.microsoftonline.us",
        ),
    ] {
        let xml = format!(
            r#"<policies><inbound><validate-azure-ad-token tenant-id="6c3f6b2e-1d2a-4b8e-9a51-0e5c2f7d9a10" authentication-endpoint="{endpoint}"><audiences><audience>api://x</audience></audiences></validate-azure-ad-token></inbound></policies>"#
        );
        let c = import_apim::convert(&xml, "p").expect("converts");
        mentions(&c, &format!("cloud = \"{cloud}\""));
        assert!(!c.toml.contains("authority ="), "{}", c.toml);
        let config = load(&c);
        assert_eq!(config.entra.authority, authority);
    }
}
