//! Forward-auth mode in process (SPEC §4, forward-auth row): only 200, 401 and 403; the
//! original method and URI from the ingress's headers, believed from trusted peers only and
//! refused when they disagree; identity headers on 200. The real ingresses are in
//! `tests/suite/ingress/`.

use crate::common;

use common::wire::challenges;
use common::{Extra, Harness};
use entragate::keys::TokenVersion;

async fn forward_auth(trusted: &str) -> Harness {
    Harness::start_with(Extra {
        server: format!("mode = \"forward-auth\"\ntrusted_proxies = [{trusted}]\n"),
        tail: common::ROUTES.into(),
        ..Default::default()
    })
    .await
}

fn authorize_uri(h: &Harness) -> String {
    format!(
        "{}/{}/oauth2/authorize",
        h.issuer.authority(),
        h.issuer.tenant_id()
    )
}

/// GET the auth endpoint `/` with `headers`.
async fn check(h: &Harness, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = h.client.get(h.url("/"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn answers_are_only_200_401_403_with_one_challenge() {
    let h = forward_auth(r#""127.0.0.1""#).await;
    let uri = authorize_uri(&h);
    let token = h.token(TokenVersion::V2);
    let bearer = format!("Bearer {token}");

    // Power Query's probe: exactly the documented challenge.
    let r = check(
        &h,
        &[("authorization", "Bearer"), ("x-forwarded-uri", "/data")],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(r.headers()),
        [format!("Bearer authorization_uri={uri}")]
    );

    // No token: realm + authorization_uri.
    let r = check(
        &h,
        &[("x-original-url", "https://api.contoso.example/data")],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(r.headers()),
        [format!(
            "Bearer realm={}/{}, authorization_uri={uri}",
            h.issuer.authority(),
            h.issuer.tenant_id()
        )]
    );

    // Invalid token.
    let wrong = h
        .issuer
        .mint(&h.issuer.claims(TokenVersion::V2, "https://other.example"));
    let r = check(&h, &[("authorization", &format!("Bearer {wrong}"))]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(r.headers()),
        [format!(
            "Bearer authorization_uri={uri}, error=\"invalid_token\""
        )]
    );
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":"invalid_token"}"#
    );

    // What the proxy answers with 400 is 401 invalid_request here.
    let r = h
        .client
        .get(h.url("/"))
        .header("authorization", &bearer)
        .header("authorization", &bearer)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(r.headers()),
        [format!(
            "Bearer authorization_uri={uri}, error=\"invalid_request\""
        )]
    );
    let r = check(
        &h,
        &[("authorization", &bearer), ("x-forwarded-uri", "/a/%2F/b")],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(r.headers()),
        [format!(
            "Bearer authorization_uri={uri}, error=\"invalid_request\""
        )]
    );

    // A valid token: 200, empty body, the identity headers.
    let r = check(
        &h,
        &[
            ("authorization", &bearer),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/data?q=1"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let claims = h.claims(TokenVersion::V2);
    assert_eq!(
        r.headers()["x-auth-subject"],
        claims["oid"].as_str().expect("oid")
    );
    assert_eq!(r.headers()["x-auth-tenant"], h.issuer.tenant_id());
    assert_eq!(r.headers()["x-auth-scopes"], "user_impersonation");
    assert_eq!(r.headers()["x-auth-name"], "adele@contoso.example");
    assert!(r.headers().get("x-auth-roles").is_none());
    assert!(challenges(r.headers()).is_empty());
    assert_eq!(r.text().await.expect("body"), "");

    // The route rule applies to the original URI: 403 with the scope it needs.
    for headers in [
        [
            ("x-forwarded-uri", "/admin/users"),
            ("x-forwarded-method", "GET"),
        ],
        [
            ("x-original-url", "https://api.contoso.example/admin?x"),
            ("x-original-method", "GET"),
        ],
        [("x-original-uri", "/admin/"), ("x-original-method", "GET")],
    ] {
        let mut all = vec![("authorization", bearer.as_str())];
        all.extend(headers);
        let r = check(&h, &all).await;
        assert_eq!(r.status(), 403, "{headers:?}");
        assert_eq!(
            challenges(r.headers()),
            ["Bearer error=\"insufficient_scope\", scope=\"admin.write\""]
        );
    }

    // Anonymous route and CORS preflight by the original request: 200 without identity.
    let r = check(
        &h,
        &[
            ("x-original-uri", "/public/x"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = check(
        &h,
        &[
            ("x-forwarded-method", "OPTIONS"),
            ("x-forwarded-uri", "/admin"),
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-auth-subject").is_none());
}

#[tokio::test]
async fn forwarded_headers_that_disagree_are_refused() {
    let h = forward_auth(r#""127.0.0.1""#).await;
    let bearer = format!("Bearer {}", h.token(TokenVersion::V2));
    // Behind nginx (X-Original-URI) a client adds Traefik's header to reach an open route.
    let r = check(
        &h,
        &[
            ("authorization", &bearer),
            ("x-original-uri", "/admin/users"),
            ("x-forwarded-uri", "/public"),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(
        challenges(r.headers())[0].ends_with("error=\"invalid_request\""),
        "{:?}",
        r.headers()
    );
    let r = check(
        &h,
        &[
            ("authorization", &bearer),
            ("x-original-uri", "/data"),
            ("x-forwarded-method", "GET"),
            ("x-original-method", "DELETE"),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    let metrics = h.metrics_text().await;
    assert!(
        metrics.contains(
            "entragate_requests_total{outcome=\"denied\",reason=\"bad_forwarded_request\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn headers_from_untrusted_peers_are_not_believed() {
    // The test client (127.0.0.1) is not in trusted_proxies.
    let h = forward_auth(r#""10.0.0.0/8""#).await;
    let bearer = format!("Bearer {}", h.token(TokenVersion::V2));
    // Decided on the request's own path `/`, where no rule applies: allowed.
    let r = check(
        &h,
        &[("authorization", &bearer), ("x-forwarded-uri", "/admin")],
    )
    .await;
    assert_eq!(r.status(), 200);
    // And an untrusted peer cannot reach the anonymous route by naming it.
    let r = check(&h, &[("x-original-uri", "/public")]).await;
    assert_eq!(r.status(), 401);
    // Disagreeing headers from an untrusted peer are simply not read.
    let r = check(
        &h,
        &[
            ("authorization", &bearer),
            ("x-original-uri", "/a"),
            ("x-forwarded-uri", "/b"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn client_identity_headers_are_listed_for_removal() {
    let h = forward_auth(r#""127.0.0.1""#).await;
    let bearer = format!("Bearer {}", h.token(TokenVersion::V2));
    let r = check(
        &h,
        &[
            ("authorization", &bearer),
            ("x-auth-subject", "spoofed"),
            ("x-auth-roles", "Admin"),
            ("x-auth-other", "x"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["x-auth-subject"], "spoofed");
    let mut removed: Vec<&str> = r.headers()["x-envoy-auth-headers-to-remove"]
        .to_str()
        .expect("ascii")
        .split(", ")
        .collect();
    removed.sort_unstable();
    // x-auth-subject is overwritten, not removed.
    assert_eq!(removed, ["x-auth-other", "x-auth-roles"]);
}

#[tokio::test]
async fn no_usable_keys_is_a_401_that_says_retry() {
    let (h, closed) = Harness::start_without_keys(Extra {
        server: "mode = \"forward-auth\"\n".into(),
        ..Default::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    let r = check(&h, &[("authorization", &format!("Bearer {token}"))]).await;
    // nginx passes only 401/403: the status says sign-in failed, Retry-After and the body
    // say it is temporary, and the log and metrics name the reason.
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(
        challenges(r.headers()),
        [format!(
            "Bearer authorization_uri=http://127.0.0.1:{closed}/{}/oauth2/authorize, error=\"invalid_token\"",
            common::TENANT
        )]
    );
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":"temporarily_unavailable"}"#
    );
    // Without a token it is still the ordinary challenge.
    let r = check(&h, &[("authorization", "Bearer")]).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("retry-after").is_none());
}

#[tokio::test]
async fn resource_metadata_is_served_when_asked_directly() {
    let h = Harness::start_with(Extra {
        server: "mode = \"forward-auth\"\ntrusted_proxies = [\"127.0.0.1\"]\npublic_url = \"https://api.contoso.example\"\n".into(),
        challenge: "resource_metadata = true".into(),
        ..Default::default()
    })
    .await;
    let r = h
        .client
        .get(h.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.expect("json");
    assert_eq!(doc["resource"], "https://api.contoso.example");
    // As an auth check about that path it is an ordinary decision.
    let r = check(
        &h,
        &[("x-forwarded-uri", "/.well-known/oauth-protected-resource")],
    )
    .await;
    assert_eq!(r.status(), 401);
    let c = challenges(r.headers());
    assert_eq!(c.len(), 1);
    assert!(
        c[0].ends_with(
            "resource_metadata=\"https://api.contoso.example/.well-known/oauth-protected-resource\""
        ),
        "{c:?}"
    );
}

#[test]
fn the_ingress_manifest_config_loads() {
    let manifest = include_str!("../../deploy/ingress/entragate.yaml");
    let marker = "entragate.toml: |\n";
    let start = manifest
        .find(marker)
        .expect("ConfigMap with entragate.toml")
        + marker.len();
    let toml: Vec<&str> = manifest[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(""))
        .collect();
    let config = entragate::config::Config::load(&toml.join("\n"), &[], &|p| {
        Err(std::io::Error::other(format!("no file {p}")))
    })
    .unwrap_or_else(|e| panic!("deploy/ingress/entragate.yaml: {e}"));
    assert_eq!(config.server.mode, entragate::config::Mode::ForwardAuth);
    assert_eq!(
        config.server.ext_authz_listen,
        Some("0.0.0.0:9191".parse().expect("addr"))
    );
    assert!(!config.server.trusted_proxies.is_empty());
}
