//! CORS preflight: passed without a token or not (`cors_preflight`), and a preflight to a path
//! that cannot be normalised.

use crate::common;

use super::{
    assert_forbidden, counts, missing_challenge, passed, request_counts, start_with_tail,
    user_token,
};
use common::wire::send_raw;
use common::{API_CLIENT_ID, AUDIENCE, Extra, Harness};
use entragate::dev::POWER_QUERY_CLIENT_ID;
use entragate::keys::TokenVersion;

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
