//! What a key fetch brings back, through the programmable identity provider: no answer (a
//! hang bounded by `metadata_timeout`), broken key documents, and v2 keys naming another issuer.

use crate::common;

use std::time::{Duration, Instant};

use super::{
    IdpMode, REQUEST_BOUND, admin_status, call, denied, fresh, harness_behind_proxy, key_fetches,
    metrics_text, signed_by, status,
};
use common::eventually;
use entragate::keys::TokenVersion;

// ---------------------------------------------------------------------------------------------
// A key fetch that hangs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_key_fetch_neither_blocks_known_keys_nor_outlasts_metadata_timeout() {
    let (h, proxy) =
        harness_behind_proxy("jwks_min_refetch = \"0s\"\nmetadata_timeout = \"3s\"").await;
    let old_key = h.issuer.signing_key();
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V2)).await,
        200
    );

    let timeouts = key_fetches(&metrics_text(&h).await, "entra-v2", "http_error");
    proxy.set_mode(IdpMode::Hang);
    h.issuer.rotate();
    let new_v2 = fresh(&h, TokenVersion::V2);
    let pending = {
        let client = h.client.clone();
        let url = h.url("/data");
        let token = new_v2.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = client.get(url).bearer_auth(token).send().await;
            (r.map(|r| r.status().as_u16()), started.elapsed())
        })
    };
    eventually(
        Duration::from_secs(5),
        "the refetch reaching the IdP",
        || {
            let n = proxy.hung();
            async move { n >= 1 }
        },
    )
    .await;

    // While the fetch hangs, a token with a known kid is answered at once.
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V2)).await,
        200
    );
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V1)).await,
        200
    );
    assert!(
        !pending.is_finished(),
        "the unknown-kid request should still be waiting for the hanging fetch"
    );
    assert_eq!(admin_status(&h, "/readyz").await, 200);

    let (result, took) = tokio::time::timeout(REQUEST_BOUND, pending)
        .await
        .expect("the unknown-kid request was answered")
        .expect("task");
    assert_eq!(result.expect("response"), 401);
    assert!(
        took < Duration::from_secs(8),
        "answered after {took:?}; metadata_timeout is 3s"
    );

    assert_eq!(
        key_fetches(&metrics_text(&h).await, "entra-v2", "http_error"),
        timeouts + 1,
        "the timed-out fetch is counted as http_error"
    );

    proxy.set_mode(IdpMode::Pass);
    assert_eq!(
        status(&h, &new_v2).await,
        200,
        "new key once the IdP answers"
    );
}

// ---------------------------------------------------------------------------------------------
// Broken key documents

#[tokio::test]
async fn broken_key_documents_keep_the_last_good_keys() {
    let (h, proxy) = harness_behind_proxy("jwks_min_refetch = \"0s\"").await;
    let old_key = h.issuer.signing_key();
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V2)).await,
        200
    );
    h.issuer.rotate();
    let new_v1 = fresh(&h, TokenVersion::V1);
    let new_v2 = fresh(&h, TokenVersion::V2);
    let t0 = metrics_text(&h).await;

    // An empty key set (a fetch with no usable key fails; it does not replace the keys).
    proxy.set_mode(IdpMode::JwksBody(r#"{"keys":[]}"#));
    assert_eq!(status(&h, &new_v2).await, 401);
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V2)).await,
        200,
        "v2 keys kept"
    );
    let t1 = metrics_text(&h).await;
    assert_eq!(
        key_fetches(&t1, "entra-v2", "no_keys"),
        key_fetches(&t0, "entra-v2", "no_keys") + 1
    );

    // Not JSON at all (a captive portal, a maintenance page).
    proxy.set_mode(IdpMode::JwksBody("<html>maintenance</html>"));
    assert_eq!(status(&h, &new_v1).await, 401);
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V1)).await,
        200,
        "v1 keys kept"
    );
    let t2 = metrics_text(&h).await;
    assert_eq!(
        key_fetches(&t2, "entra-v1", "bad_json"),
        key_fetches(&t0, "entra-v1", "bad_json") + 1
    );
    assert_eq!(admin_status(&h, "/readyz").await, 200);

    proxy.set_mode(IdpMode::Pass);
    assert_eq!(status(&h, &new_v1).await, 200);
    assert_eq!(status(&h, &new_v2).await, 200);
}

// ---------------------------------------------------------------------------------------------
// v2 keys that name their own issuer

#[tokio::test]
async fn v2_key_whose_issuer_differs_from_the_token_issuer_is_refused() {
    let (h, proxy) = harness_behind_proxy("jwks_min_refetch = \"0s\"").await;
    let authority = h.issuer.authority().to_owned();
    let first_key = h.issuer.signing_key();
    assert_eq!(
        status(&h, &fresh(&h, TokenVersion::V2)).await,
        200,
        "keys as the issuer publishes them"
    );

    // Entra's own shape for multi-tenant keys: a template that `tid` fills to the token's iss.
    proxy.set_mode(IdpMode::V2KeyIssuer(format!(
        "{authority}/{{tenantid}}/v2.0"
    )));
    h.issuer.rotate();
    let templated = fresh(&h, TokenVersion::V2);
    assert_eq!(
        status(&h, &templated).await,
        200,
        "key issuer template filled with tid matches"
    );

    // Now the v2 keys say they belong to another tenant; the metadata issuer still matches.
    let other = "0a0b0c0d-1111-4222-8333-444455556666";
    proxy.set_mode(IdpMode::V2KeyIssuer(format!("{authority}/{other}/v2.0")));
    h.issuer.rotate();
    let mismatched = fresh(&h, TokenVersion::V2);
    let before = denied(&metrics_text(&h).await, "issuer_mismatch");
    let r = call(&h, &mismatched).await;
    assert_eq!(r.status(), 401, "v2 key published for another issuer");
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("error=\"invalid_token\"")
    );
    // The refetch republished every v2 key with the foreign issuer: the first key's tokens too.
    assert_eq!(
        status(&h, &signed_by(&h, &first_key, TokenVersion::V2)).await,
        401
    );
    assert_eq!(
        denied(&metrics_text(&h).await, "issuer_mismatch"),
        before + 2
    );
    // v1 keys carry no issuer and are unaffected.
    assert_eq!(status(&h, &fresh(&h, TokenVersion::V1)).await, 200);
    assert_eq!(h.echo.requests(), 3);
}
