//! The shipped `config/ehrbase.example.toml`, loaded as an operator would (env overrides point
//! it at the test issuer and the echo upstream), proving each of its rules.

use crate::common;

use common::verdicts::assert_invalid_token;

use std::time::Duration;

use super::{
    AQL, AQL_Q, BASIC_USER, CDR_CLIENT_ID, CDR_URI, EHR, EHR_ID, ETL_CLIENT, ETL_SP_OID, EXAMPLE,
    PASSWORD, PBI_REFRESH, POWER_APPS, STATUS, app_claims, app_token, assert_forbidden, call,
    cdr_aud, counts, echoed_basic, example_config, missing_challenge, passed, read_secret,
    request_counts, start_example, user_token,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::wire::send_raw;
use common::{Harness, TENANT, echoed_authorization, eventually, loopback};
use entragate::config::{Config, UpstreamAuthorization};
use entragate::dev::{DevIssuer, EchoUpstream, POWER_QUERY_CLIENT_ID};
use entragate::keys::TokenVersion;
use serde_json::json;

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
    assert_invalid_token(&h, TENANT, r, "invalid token on the anonymous route").await;
    let mut expired = h.issuer.claims(TokenVersion::V1, CDR_URI);
    expired.insert("exp".into(), json!(common::now() - 3600));
    let r = call(&h, "GET", STATUS, Some(&h.issuer.mint(&expired))).await;
    assert_invalid_token(&h, TENANT, r, "expired token on the anonymous route").await;

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
