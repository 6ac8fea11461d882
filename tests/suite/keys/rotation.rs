//! Key rotation (one JWKS fetch of the token's source, the background refresh, concurrent
//! requests sharing one fetch) and unknown-`kid` floods held by the refetch cooldown.

use crate::common;

use std::time::{Duration, Instant};

use super::{
    IdpMode, assert_all_401, denied, entra, fetches, flood, flood_client, fresh,
    harness_behind_proxy, metrics_text, signed_by, status, unknown_kid_tokens,
};
use common::{Harness, eventually};
use entragate::keys::TokenVersion;

// ---------------------------------------------------------------------------------------------
// Rotation

#[tokio::test]
async fn rotated_key_is_accepted_after_one_jwks_fetch_of_the_tokens_source() {
    let h = Harness::start_with(entra("jwks_min_refetch = \"0s\"")).await;
    let old_key = h.issuer.signing_key();
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V1)).await,
        200
    );
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V2)).await,
        200
    );

    let new_kid = h.issuer.rotate();
    assert_ne!(new_kid, old_key.kid);

    // v2 first: only the v2 key set is fetched again, once.
    let jwks = h.issuer.jwks_fetches();
    let (v1, v2) = (fetches(&h, "entra-v1"), fetches(&h, "entra-v2"));
    let new_v2 = fresh(&h, TokenVersion::V2);
    assert_eq!(status(&h, &new_v2).await, 200, "v2 token with the new kid");
    assert_eq!(h.issuer.jwks_fetches(), jwks + 1, "exactly one JWKS fetch");
    assert_eq!(fetches(&h, "entra-v2"), v2 + 1);
    assert_eq!(
        fetches(&h, "entra-v1"),
        v1,
        "the v1 keys were not refetched"
    );

    // The new key is cached now: more v2 tokens signed with it cost nothing.
    for _ in 0..5 {
        assert_eq!(status(&h, &fresh(&h, TokenVersion::V2)).await, 200);
    }
    assert_eq!(h.issuer.jwks_fetches(), jwks + 1);

    // Then v1: its own key set learns the new key, with one fetch of its own.
    let new_v1 = fresh(&h, TokenVersion::V1);
    assert_eq!(status(&h, &new_v1).await, 200, "v1 token with the new kid");
    assert_eq!(
        h.issuer.jwks_fetches(),
        jwks + 2,
        "one more JWKS fetch, for v1"
    );
    assert_eq!(fetches(&h, "entra-v1"), v1 + 1);
    assert_eq!(fetches(&h, "entra-v2"), v2 + 1);
    for _ in 0..5 {
        assert_eq!(status(&h, &fresh(&h, TokenVersion::V1)).await, 200);
    }

    // Tokens signed with the previous key stay valid: Entra keeps publishing it.
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V1)).await,
        200
    );
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V2)).await,
        200
    );
    assert_eq!(
        h.issuer.jwks_fetches(),
        jwks + 2,
        "known kids never refetch"
    );
}

#[tokio::test]
async fn background_refresh_learns_a_rotated_key_while_unknown_kids_wait_out_the_cooldown() {
    let h = Harness::start_with(entra("jwks_refresh = \"2s\"\njwks_min_refetch = \"1h\"")).await;
    let startup = h.issuer.jwks_fetches();
    h.issuer.rotate();
    let new_v1 = fresh(&h, TokenVersion::V1);
    let new_v2 = fresh(&h, TokenVersion::V2);
    let early = status(&h, &new_v2).await;
    if h.issuer.jwks_fetches() == startup {
        // No refresh yet, and the startup fetch is within the cooldown: no refetch either.
        assert_eq!(early, 401, "unknown kid within the cooldown");
    }

    eventually(
        Duration::from_secs(10),
        "a background refresh of both sources",
        || {
            let n = h.issuer.jwks_fetches();
            async move { n >= startup + 2 }
        },
    )
    .await;
    eventually(Duration::from_secs(5), "the rotated key", || async {
        status(&h, &new_v1).await == 200 && status(&h, &new_v2).await == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_a_just_rotated_kid_share_one_fetch_and_are_all_accepted() {
    const COOLDOWN: Duration = Duration::from_secs(1);
    let (h, proxy) = harness_behind_proxy("jwks_min_refetch = \"1s\"").await;
    let cooled_at = Instant::now() + COOLDOWN;
    h.issuer.rotate();
    let client = flood_client();
    let mut tokens: Vec<String> = (0..250).map(|_| fresh(&h, TokenVersion::V1)).collect();
    tokens.extend((0..250).map(|_| fresh(&h, TokenVersion::V2)));
    // A slow identity provider (1.5 s for metadata + keys): the requests arrive while the one
    // fetch is under way.
    proxy.set_mode(IdpMode::Slow(Duration::from_millis(750)));
    tokio::time::sleep_until(cooled_at.into()).await;

    let jwks = h.issuer.jwks_fetches();
    let (v1, v2) = (fetches(&h, "entra-v1"), fetches(&h, "entra-v2"));
    let statuses = flood(&client, &h, &tokens).await;
    let refused = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(
        refused, 0,
        "requests arriving while the new key is being fetched wait for that fetch"
    );
    assert_eq!(
        fetches(&h, "entra-v1"),
        v1 + 1,
        "one v1 fetch for 250 requests"
    );
    assert_eq!(
        fetches(&h, "entra-v2"),
        v2 + 1,
        "one v2 fetch for 250 requests"
    );
    assert_eq!(h.issuer.jwks_fetches(), jwks + 2);
    assert_eq!(h.echo.requests(), 500);
}

// ---------------------------------------------------------------------------------------------
// Unknown-kid floods

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kid_flood_right_after_startup_fetches_nothing() {
    // The startup fetch starts the cooldown too (SPEC §4: "whatever started it").
    let h = Harness::start_with(entra("jwks_min_refetch = \"1h\"")).await;
    let jwks = h.issuer.jwks_fetches();
    let metadata = h.issuer.metadata_fetches();
    let client = flood_client();
    let mut tokens = unknown_kid_tokens(&h, TokenVersion::V1, 500);
    tokens.extend(unknown_kid_tokens(&h, TokenVersion::V2, 500));

    assert_all_401(&flood(&client, &h, &tokens).await, "flood");
    assert_eq!(h.issuer.jwks_fetches(), jwks, "no JWKS fetch");
    assert_eq!(h.issuer.metadata_fetches(), metadata, "no metadata fetch");
    assert_eq!(denied(&metrics_text(&h).await, "unknown_kid"), 1000);
    assert_eq!(h.echo.requests(), 0);
    // Valid tokens were never held up.
    assert_eq!(status(&h, &fresh(&h, TokenVersion::V2)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kid_flood_refetches_each_source_at_most_once_per_cooldown() {
    const COOLDOWN: Duration = Duration::from_secs(3);
    let h = Harness::start_with(entra("jwks_min_refetch = \"3s\"")).await;
    // The startup fetches began before readiness, so they are at least this old then.
    let cooled_at = Instant::now() + COOLDOWN;

    let client = flood_client();
    let mut first = unknown_kid_tokens(&h, TokenVersion::V1, 500);
    first.extend(unknown_kid_tokens(&h, TokenVersion::V2, 500));
    let mut second = unknown_kid_tokens(&h, TokenVersion::V1, 500);
    second.extend(unknown_kid_tokens(&h, TokenVersion::V2, 500));
    let v2_only = unknown_kid_tokens(&h, TokenVersion::V2, 200);
    tokio::time::sleep_until(cooled_at.into()).await;

    let jwks = h.issuer.jwks_fetches();
    let (v1, v2) = (fetches(&h, "entra-v1"), fetches(&h, "entra-v2"));
    let rise = || (fetches(&h, "entra-v1") - v1, fetches(&h, "entra-v2") - v2);
    let started = Instant::now();
    assert_all_401(&flood(&client, &h, &first).await, "first flood");
    let after_first = rise();
    assert!(
        after_first.0 >= 1 && after_first.1 >= 1,
        "the cooldown had passed, so the first unknown kid of each source refetches: \
         (v1, v2) fetches {after_first:?}"
    );

    // Straight after: refused, with no fetch beyond what the cooldown allows (none at all,
    // unless this machine took longer than the cooldown for the floods).
    assert_all_401(&flood(&client, &h, &second).await, "second flood");
    let v1_now = fetches(&h, "entra-v1");
    assert_all_401(&flood(&client, &h, &v2_only).await, "v2-only flood");
    assert_eq!(
        fetches(&h, "entra-v1"),
        v1_now,
        "v2 tokens never fetch v1 keys"
    );
    let elapsed = started.elapsed();
    let windows = elapsed.as_millis() / COOLDOWN.as_millis();
    let allowed = 1 + u64::try_from(windows).expect("small");
    let total = rise();
    assert!(
        total.0 <= allowed && total.1 <= allowed,
        "(v1, v2) fetches {total:?} in {elapsed:?} of unknown-kid floods with a {COOLDOWN:?} \
         cooldown: at most {allowed} per source"
    );
    assert_eq!(h.issuer.jwks_fetches() - jwks, total.0 + total.1);
    assert_eq!(denied(&metrics_text(&h).await, "unknown_kid"), 2200);
    assert_eq!(h.echo.requests(), 0);
}
