//! One fault at a time, met by unknown-kid refetches of each source or by the background
//! refresh: the last good keys survive, and exactly that failure is counted.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::idp::Fault;
use super::{SOURCES, admin_status, call, changed, key_fetches, start, status, unknown_kid, valid};
use common::{TENANT, eventually};
use entragate::keys::{MAX_DOCUMENT_BYTES, TokenVersion};

// ---------------------------------------------------------------------------------------------
// One fault, met by unknown-kid refetches of each source
// ---------------------------------------------------------------------------------------------

/// Loads good keys, switches the IdP to `fault`, makes each source refetch once (an unknown
/// kid), and checks: 401 `invalid_token` promptly, exactly one fetch counted as `result` for
/// that source and nothing else, the last good keys still in service, ready and healthy; then
/// the IdP recovers and a rotated key is learnt.
async fn last_good_keys_survive(fault: Fault, result: &'static str) {
    let (h, idp) = start("jwks_min_refetch = \"0s\"\nmetadata_timeout = \"5s\"").await;
    let old = h.issuer.signing_key();
    for v in [TokenVersion::V1, TokenVersion::V2] {
        assert_eq!(
            status(&h, &valid(&h, &old, v)).await,
            200,
            "good keys loaded"
        );
    }

    idp.set(fault);
    for (version, source) in [
        (TokenVersion::V1, "entra-v1"),
        (TokenVersion::V2, "entra-v2"),
    ] {
        let before = key_fetches(&h).await;
        let started = Instant::now();
        let r = call(&h, &unknown_kid(&h, version)).await;
        assert_eq!(r.status(), 401, "{fault:?} {source}: unknown kid");
        assert_eq!(
            r.headers()["www-authenticate"],
            format!(
                "Bearer authorization_uri={}/{TENANT}/oauth2/authorize, error=\"invalid_token\"",
                idp.authority
            )
            .as_str(),
            "{fault:?} {source}: challenge"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{fault:?} {source}: answered after {:?}",
            started.elapsed()
        );
        let after = key_fetches(&h).await;
        assert_eq!(
            changed(&before, &after),
            BTreeMap::from([((source, result), 1)]),
            "{fault:?} {source}: one fetch, counted as {result}"
        );
        for v in [TokenVersion::V1, TokenVersion::V2] {
            assert_eq!(
                status(&h, &valid(&h, &old, v)).await,
                200,
                "{fault:?} after the {source} fetch: last good {} keys",
                v.claim()
            );
        }
        assert_eq!(admin_status(&h, "/readyz").await, 200, "{fault:?}: ready");
        assert_eq!(
            admin_status(&h, "/healthz").await,
            200,
            "{fault:?}: healthy"
        );
    }

    if matches!(fault, Fault::MetadataEndless | Fault::JwksEndless) {
        // The endless body was abandoned at the cap, not read on and on.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let streamed = idp.streamed();
        assert!(
            streamed > MAX_DOCUMENT_BYTES as u64 && streamed < 2 * 32 * 1024 * 1024,
            "{fault:?}: the IdP produced {streamed} bytes for two fetches"
        );
    }

    // The IdP recovers; a key rotated meanwhile is learnt at the next unknown-kid fetch.
    idp.set(Fault::None);
    h.issuer.rotate();
    idp.load_keys_from(&h.issuer).await;
    let new = h.issuer.signing_key();
    for v in [TokenVersion::V1, TokenVersion::V2] {
        assert_eq!(
            status(&h, &valid(&h, &new, v)).await,
            200,
            "{fault:?}: new {} key after recovery",
            v.claim()
        );
        assert_eq!(status(&h, &valid(&h, &old, v)).await, 200);
    }
    assert_eq!(h.echo.requests(), 2 + 2 * 2 + 2 * 2);
}

#[tokio::test]
async fn huge_metadata_with_content_length_is_too_large() {
    last_good_keys_survive(Fault::MetadataHugeLength, "too_large").await;
}

#[tokio::test]
async fn endless_chunked_metadata_is_too_large_and_abandoned() {
    last_good_keys_survive(Fault::MetadataEndless, "too_large").await;
}

#[tokio::test]
async fn huge_jwks_with_content_length_is_too_large() {
    last_good_keys_survive(Fault::JwksHugeLength, "too_large").await;
}

#[tokio::test]
async fn endless_chunked_jwks_is_too_large_and_abandoned() {
    last_good_keys_survive(Fault::JwksEndless, "too_large").await;
}

#[tokio::test]
async fn jwks_of_exactly_max_document_bytes_is_accepted_with_content_length() {
    last_good_keys_survive(Fault::JwksAtLimitLength, "ok").await;
}

#[tokio::test]
async fn jwks_of_exactly_max_document_bytes_is_accepted_chunked() {
    last_good_keys_survive(Fault::JwksAtLimitChunked, "ok").await;
}

#[tokio::test]
async fn jwks_one_byte_over_max_document_bytes_is_too_large_with_content_length() {
    last_good_keys_survive(Fault::JwksOverLimitLength, "too_large").await;
}

#[tokio::test]
async fn jwks_one_byte_over_max_document_bytes_is_too_large_chunked() {
    last_good_keys_survive(Fault::JwksOverLimitChunked, "too_large").await;
}

#[tokio::test]
async fn metadata_that_is_not_json_is_bad_json() {
    last_good_keys_survive(Fault::MetadataNotJson, "bad_json").await;
}

#[tokio::test]
async fn metadata_without_jwks_uri_is_bad_json() {
    last_good_keys_survive(Fault::MetadataWithoutJwksUri, "bad_json").await;
}

#[tokio::test]
async fn jwks_that_is_not_json_is_bad_json() {
    last_good_keys_survive(Fault::JwksNotJson, "bad_json").await;
}

#[tokio::test]
async fn jwks_without_keys_member_is_bad_json() {
    last_good_keys_survive(Fault::JwksWithoutKeys, "bad_json").await;
}

#[tokio::test]
async fn jwks_with_null_keys_is_bad_json() {
    last_good_keys_survive(Fault::JwksKeysNull, "bad_json").await;
}

#[tokio::test]
async fn jwks_with_only_ec_oct_and_okp_keys_is_no_keys() {
    last_good_keys_survive(Fault::JwksUnsupportedKty, "no_keys").await;
}

#[tokio::test]
async fn metadata_500_is_bad_status() {
    last_good_keys_survive(Fault::Metadata500, "bad_status").await;
}

#[tokio::test]
async fn jwks_503_is_bad_status() {
    last_good_keys_survive(Fault::Jwks503, "bad_status").await;
}

#[tokio::test]
async fn metadata_redirect_loop_is_http_error() {
    last_good_keys_survive(Fault::MetadataRedirectLoop, "http_error").await;
}

#[tokio::test]
async fn jwks_uri_on_a_closed_port_is_http_error() {
    last_good_keys_survive(Fault::JwksClosedPort, "http_error").await;
}

#[tokio::test]
async fn jwks_uri_that_does_not_resolve_is_http_error() {
    last_good_keys_survive(Fault::JwksDnsFailure, "http_error").await;
}

#[tokio::test]
async fn jwks_uri_with_tls_to_a_plain_http_port_is_http_error() {
    last_good_keys_survive(Fault::JwksTlsToPlainPort, "http_error").await;
}

#[tokio::test]
async fn jwks_body_cut_off_mid_stream_is_http_error() {
    last_good_keys_survive(Fault::JwksTruncated, "http_error").await;
}

// ---------------------------------------------------------------------------------------------
// The background refresh meets a fault
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn background_refresh_into_an_endless_jwks_backs_off_and_keeps_the_last_good_keys() {
    // Background refresh every 4 s; unknown kids cannot refetch (5 min cooldown). After a
    // failure the retry waits 1 s, 2 s, then 4 s (capped at jwks_refresh), each + up to 25 %.
    let (h, idp) = start("jwks_refresh = \"4s\"").await;
    let old = h.issuer.signing_key();
    let before = key_fetches(&h).await;
    idp.set(Fault::JwksEndless);
    let set_at = Instant::now();

    eventually(
        Duration::from_secs(20),
        "three failed background fetches per source",
        || {
            let h = &h;
            let before = &before;
            async move {
                let now = key_fetches(h).await;
                SOURCES
                    .iter()
                    .all(|s| now[&(*s, "too_large")] >= before[&(*s, "too_large")] + 3)
            }
        },
    )
    .await;
    // Meanwhile and afterwards: last good keys, ready.
    for v in [TokenVersion::V1, TokenVersion::V2] {
        assert_eq!(status(&h, &valid(&h, &old, v)).await, 200);
    }
    assert_eq!(admin_status(&h, "/readyz").await, 200);
    let after = key_fetches(&h).await;
    for source in SOURCES {
        assert_eq!(
            after[&(source, "ok")],
            before[&(source, "ok")],
            "{source}: no success"
        );
        for result in ["http_error", "bad_status", "bad_json", "no_keys"] {
            assert_eq!(
                after[&(source, result)],
                before[&(source, result)],
                "{source} {result}"
            );
        }
    }

    // Backoff: the gaps between failed fetches grow (1 s + jitter, then 2 s + jitter).
    for suffix in ["/discovery/keys", "/discovery/v2.0/keys"] {
        let failed: Vec<Instant> = idp
            .jwks_arrivals(suffix)
            .into_iter()
            .filter(|at| *at >= set_at)
            .collect();
        assert!(
            failed.len() >= 3,
            "{suffix}: {} failed fetches",
            failed.len()
        );
        let gap1 = failed[1] - failed[0];
        let gap2 = failed[2] - failed[1];
        assert!(
            gap1 >= Duration::from_millis(950) && gap1 <= Duration::from_millis(1800),
            "{suffix}: first retry after {gap1:?}"
        );
        assert!(
            gap2 >= Duration::from_millis(1950) && gap2 <= Duration::from_millis(3300),
            "{suffix}: second retry after {gap2:?}"
        );
    }
    let streamed = idp.streamed();
    assert!(
        streamed < 6 * 32 * 1024 * 1024,
        "the IdP produced {streamed} bytes for six failed fetches"
    );
    assert_eq!(h.echo.requests(), 2);
}
