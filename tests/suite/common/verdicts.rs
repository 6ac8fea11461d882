//! The gateway's verdict on one token, checked on the wire (status, challenge, body) and at
//! the echo upstream (reached or not).

use serde_json::Value;

use super::{Harness, TENANT};

/// The path the token tests send every request to.
pub const PATH: &str = "/ehrbase/rest/openehr/v1/ehr?limit=1";

/// GETs [`PATH`] with `token`; expects 200 from the echo upstream and returns what it saw.
pub async fn accepted(h: &Harness, token: &str, what: &str) -> Value {
    let before = h.echo.requests();
    let r = h.get_with_token(PATH, token).await;
    assert_eq!(r.status(), 200, "{what}: accepted");
    assert_eq!(
        h.echo.requests(),
        before + 1,
        "{what}: reached the upstream"
    );
    let seen: Value = r.json().await.expect("echo json");
    assert_eq!(seen["uri"], PATH, "{what}");
    seen
}

/// The 401 of SPEC §4 for a refused token (`Bearer {token}`, the harness's tenant).
pub async fn refused(h: &Harness, token: &str, what: &str) {
    refused_with(h, TENANT, &format!("Bearer {token}"), what).await;
}

/// The 401 `invalid_token` answer, with the one challenge for `tenant`, to a GET of [`PATH`]
/// with this `Authorization` value; the upstream is not reached.
pub async fn refused_with(h: &Harness, tenant: &str, authorization: &str, what: &str) {
    let before = h.echo.requests();
    let r = h
        .client
        .get(h.url(PATH))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    assert_invalid_token(h, tenant, r, what).await;
    assert_eq!(h.echo.requests(), before, "{what}: upstream not reached");
}

/// A 401 `invalid_token` answer: the one challenge for `tenant`, a JSON body.
pub async fn assert_invalid_token(h: &Harness, tenant: &str, r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 401, "{what}: status");
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(challenges.len(), 1, "{what}: one challenge");
    assert_eq!(
        challenges[0].to_str().expect("ascii challenge"),
        format!(
            "Bearer authorization_uri={}/{tenant}/oauth2/authorize, error=\"invalid_token\"",
            h.issuer.authority()
        ),
        "{what}: challenge"
    );
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "{what}: content type"
    );
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":"invalid_token"}"#,
        "{what}: body"
    );
}
