//! Envoy `ext_authz` gRPC in process, with a tonic client sending `CheckRequest`s the way
//! Envoy does: allowed requests get identity headers to set and client identity headers to
//! remove; refusals carry the proxy mode's status, challenge and body. Real Envoy is in
//! `tests/suite/ingress/`.

use crate::common;

use common::ext_authz::{allowed, denied, request, with_raw_headers};
use common::{Extra, Harness};
use entragate::keys::TokenVersion;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};

async fn start(extra: Extra) -> Harness {
    Harness::start_with(Extra {
        server: format!("ext_authz_listen = \"127.0.0.1:0\"\n{}", extra.server),
        tail: common::ROUTES.into(),
        ..extra
    })
    .await
}

async fn check(h: &Harness, req: CheckRequest) -> CheckResponse {
    common::ext_authz::check(h.gw.ext_authz_addr.expect("ext_authz listener"), req).await
}

fn www_authenticate(headers: &[(String, String)]) -> Vec<&str> {
    headers
        .iter()
        .filter(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn refusals_carry_the_proxy_answer() {
    let h = start(Extra::default()).await;
    let uri = format!(
        "{}/{}/oauth2/authorize",
        h.issuer.authority(),
        h.issuer.tenant_id()
    );

    // Power Query's probe.
    let r = check(&h, request("GET", "/data", &[("authorization", "Bearer")])).await;
    assert_eq!(
        r.status.as_ref().map(|s| s.code),
        Some(16),
        "UNAUTHENTICATED"
    );
    let (status, headers, body) = denied(&r);
    assert_eq!(status, 401);
    assert_eq!(
        www_authenticate(&headers),
        [format!("Bearer authorization_uri={uri}")]
    );
    assert!(body.contains("\"unauthorized\""), "{body}");

    // An invalid token.
    let wrong = h
        .issuer
        .mint(&h.issuer.claims(TokenVersion::V1, "https://other.example"));
    let r = check(
        &h,
        request(
            "GET",
            "/data",
            &[("authorization", &format!("Bearer {wrong}"))],
        ),
    )
    .await;
    let (status, headers, body) = denied(&r);
    assert_eq!(status, 401);
    assert_eq!(
        www_authenticate(&headers),
        [format!(
            "Bearer authorization_uri={uri}, error=\"invalid_token\""
        )]
    );
    assert_eq!(body, r#"{"error":"invalid_token"}"#);
    assert!(headers.contains(&("content-type".into(), "application/json".into())));

    // A missing scope, judged on the request's path (the query is not part of it).
    let bearer = format!("Bearer {}", h.token(TokenVersion::V2));
    let r = check(
        &h,
        request(
            "GET",
            "/admin/users?x=/public",
            &[("authorization", &bearer)],
        ),
    )
    .await;
    assert_eq!(
        r.status.as_ref().map(|s| s.code),
        Some(7),
        "PERMISSION_DENIED"
    );
    let (status, headers, _) = denied(&r);
    assert_eq!(status, 403);
    assert_eq!(
        www_authenticate(&headers),
        ["Bearer error=\"insufficient_scope\", scope=\"admin.write\""]
    );

    // Envoy passes any status: a bad path is 400 as in proxy mode.
    let r = check(
        &h,
        request("GET", "/a/%2F/b", &[("authorization", &bearer)]),
    )
    .await;
    assert_eq!(denied(&r).0, 400);

    // With encode_raw_headers, two Authorization headers stay two: 400 invalid_request.
    let req = with_raw_headers(
        request("GET", "/data", &[]),
        &[("authorization", &bearer), ("authorization", &bearer)],
    );
    let (status, headers, _) = denied(&check(&h, req).await);
    assert_eq!(status, 400);
    assert_eq!(
        www_authenticate(&headers),
        [format!(
            "Bearer authorization_uri={uri}, error=\"invalid_request\""
        )]
    );

    // A CheckRequest of the network (L4) filter has nothing to decide on.
    let r = check(&h, CheckRequest::default()).await;
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(7));
    assert!(r.http_response.is_none());
}

#[tokio::test]
async fn allowed_sets_identity_and_removes_client_identity_headers() {
    let h = start(Extra::default()).await;
    let claims = h.claims(TokenVersion::V1);
    let bearer = format!("Bearer {}", h.issuer.mint(&claims));
    let r = check(
        &h,
        request(
            "POST",
            "/data?q=1",
            &[
                ("authorization", &bearer),
                ("x-auth-subject", "spoofed"),
                ("x-auth-roles", "Admin"),
                ("x-auth-whatever", "x"),
                ("x-request-id", "req-1"),
            ],
        ),
    )
    .await;
    let (set, mut removed) = allowed(&r);
    assert_eq!(set["x-auth-subject"], claims["oid"].as_str().expect("oid"));
    assert_eq!(set["x-auth-tenant"], h.issuer.tenant_id());
    assert_eq!(set["x-auth-scopes"], "user_impersonation");
    assert_eq!(set["x-auth-name"], "adele@contoso.example");
    assert!(
        !set.contains_key("authorization"),
        "forwarded as is by default"
    );
    removed.sort_unstable();
    assert_eq!(removed, ["x-auth-roles", "x-auth-whatever"]);

    // Anonymous route without a token: allowed, spoofed identity removed.
    let r = check(
        &h,
        request("GET", "/public/x", &[("x-auth-subject", "spoofed")]),
    )
    .await;
    let (set, removed) = allowed(&r);
    assert!(set.is_empty());
    assert_eq!(removed, ["x-auth-subject"]);

    // CORS preflight.
    let r = check(
        &h,
        request(
            "OPTIONS",
            "/admin",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
        ),
    )
    .await;
    allowed(&r);
}

#[tokio::test]
async fn upstream_authorization_policy_applies() {
    let h = start(Extra {
        upstream: "authorization = \"strip\"".into(),
        ..Default::default()
    })
    .await;
    let bearer = format!("Bearer {}", h.token(TokenVersion::V2));
    let (_, removed) =
        allowed(&check(&h, request("GET", "/data", &[("authorization", &bearer)])).await);
    assert_eq!(removed, ["authorization"]);
}

#[tokio::test]
async fn no_usable_keys_is_503_with_retry_after() {
    let (h, _) = Harness::start_without_keys(Extra {
        server: "ext_authz_listen = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    })
    .await;
    let bearer = format!("Bearer {}", h.token(TokenVersion::V2));
    let r = check(&h, request("GET", "/data", &[("authorization", &bearer)])).await;
    let (status, headers, body) = denied(&r);
    assert_eq!(status, 503);
    assert!(headers.contains(&("retry-after".into(), "5".into())));
    assert!(www_authenticate(&headers).is_empty());
    assert_eq!(body, r#"{"error":"temporarily_unavailable"}"#);
}
