//! Power Query's probe and the other challenges (SPEC §4), through real sockets.

use crate::common;

use common::{Harness, TENANT};
use entragate::keys::TokenVersion;

#[tokio::test]
async fn challenge_matrix() {
    let h = Harness::start().await;
    let authority = h.issuer.authority().to_owned();
    let authorize = format!("{authority}/{TENANT}/oauth2/authorize");
    let probe = format!("Bearer authorization_uri={authorize}");
    let missing = format!("Bearer realm={authority}/{TENANT}, authorization_uri={authorize}");

    // Any path, any method, any case of the scheme, blanks after it.
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];
    let paths = ["/", "/ehrbase/rest/openehr/v1/ehr", "/x/y?z=1", "/%71uery"];
    let values = ["Bearer", "bearer", "BEARER", "Bearer ", "Bearer \t "];
    for method in methods {
        for path in paths {
            for value in values {
                let r = h
                    .client
                    .request(method.parse().expect("method"), h.url(path))
                    .header("authorization", value)
                    .header(
                        "user-agent",
                        "Microsoft.Data.Mashup (https://go.microsoft.com/fwlink/?LinkID=304225)",
                    )
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 401, "{method} {path} {value:?}");
                let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
                assert_eq!(challenges.len(), 1);
                assert_eq!(challenges[0], probe.as_str(), "{method} {path} {value:?}");
            }
            // No header at all, and a non-Bearer scheme: realm + authorization_uri, no error.
            for auth in [None, Some("Basic dXNlcjpwYXNz")] {
                let mut req = h
                    .client
                    .request(method.parse().expect("method"), h.url(path));
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let r = req.send().await.expect("request");
                assert_eq!(r.status(), 401);
                assert_eq!(r.headers()["www-authenticate"], missing.as_str());
            }
        }
    }
    assert_eq!(
        h.echo.requests(),
        0,
        "the upstream never sees an unauthenticated request"
    );
}

#[tokio::test]
async fn invalid_token_and_invalid_request() {
    let h = Harness::start().await;
    let authorize = format!("{}/{TENANT}/oauth2/authorize", h.issuer.authority());

    let r = h.get_with_token("/data", "not-a-jwt").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer authorization_uri={authorize}, error=\"invalid_token\"").as_str()
    );
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":"invalid_token"}"#
    );

    let token = h.token(TokenVersion::V2);
    let r = h
        .client
        .get(h.url("/data"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("error=\"invalid_request\"")
    );
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":"invalid_request"}"#
    );
    assert_eq!(h.echo.requests(), 0);
}

#[tokio::test]
async fn cors_preflight_passes_without_token() {
    let h = Harness::start().await;
    let r = h
        .client
        .request(
            reqwest::Method::OPTIONS,
            h.url("/ehrbase/rest/openehr/v1/ehr"),
        )
        .header("origin", "https://app.powerbi.com")
        .header("access-control-request-method", "POST")
        .header("x-auth-subject", "spoofed")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.expect("echo json");
    assert_eq!(seen["method"], "OPTIONS");
    assert!(seen["headers"].get("x-auth-subject").is_none());

    // OPTIONS without the preflight headers is an ordinary request and needs a token.
    let r = h
        .client
        .request(reqwest::Method::OPTIONS, h.url("/x"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn resource_metadata_when_enabled() {
    let h = Harness::start_with(common::Extra {
        challenge: "resource_metadata = true".into(),
        server: "public_url = \"https://api.contoso.example\"".into(),
        ..Default::default()
    })
    .await;
    let r = h.client.get(h.url("/x")).send().await.expect("request");
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().expect("ascii").ends_with(
        ", resource_metadata=\"https://api.contoso.example/.well-known/oauth-protected-resource\""
    ));
    let r = h
        .client
        .get(h.url("/x"))
        .header("authorization", "Bearer")
        .send()
        .await
        .expect("request");
    assert!(
        !r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("resource_metadata")
    );
    let doc: serde_json::Value = h
        .client
        .get(h.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["resource"], "https://api.contoso.example");
    assert_eq!(
        doc["authorization_servers"][0],
        format!("{}/{TENANT}/v2.0", h.issuer.authority())
    );
}
