//! Signing keys through real sockets (SPEC §3 `jwks_refresh`/`jwks_min_refetch`, §5): rotation,
//! unknown-`kid` floods and the refetch cooldown, identity-provider outages at and after
//! startup, hanging key fetches, the key-fetch metrics, and v2 keys that name their issuer.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::metrics::series;
use common::tokens::{nonce, unique_claims};
use common::{Extra, Harness, TENANT, eventually};
use entragate::config::Config;
use entragate::dev::{DevIssuer, EchoUpstream, SigningKey, sign_jwt};
use entragate::keys::{KeySource, TokenVersion};
use serde_json::{Map, Value, json};

/// Longest any single request may take in these tests before it counts as a hang.
const REQUEST_BOUND: Duration = Duration::from_secs(10);

fn entra(lines: &str) -> Extra {
    Extra {
        entra: lines.to_owned(),
        ..Extra::default()
    }
}

/// The gateway's key source named `name` (`entra-v1` or `entra-v2`).
fn source(h: &Harness, name: &str) -> Arc<KeySource> {
    h.gw.keys()
        .issuers
        .iter()
        .find(|i| i.source.name == name)
        .map(|i| Arc::clone(&i.source))
        .unwrap_or_else(|| panic!("no key source {name}"))
}

/// Fetches (successful or not) the gateway has made of one source so far.
fn fetches(h: &Harness, name: &str) -> u64 {
    source(h, name).metrics.fetches()
}

/// A token with `claims`, signed by `key` but naming `kid` in its header (as Entra does: RS256,
/// and `x5t` too for v1).
fn mint_with(key: &SigningKey, kid: &str, claims: &Map<String, Value>) -> String {
    let header = if claims.get("ver").and_then(Value::as_str) == Some("1.0") {
        json!({"typ": "JWT", "alg": "RS256", "x5t": kid, "kid": kid})
    } else {
        json!({"typ": "JWT", "alg": "RS256", "kid": kid})
    };
    sign_jwt(key, &header, &Value::Object(claims.clone()))
}

/// A new valid token of `version`, signed with the issuer's current key.
fn fresh(h: &Harness, version: TokenVersion) -> String {
    h.issuer.mint(&unique_claims(h, version))
}

/// A new valid token of `version`, signed with `key` (e.g. one rotated out of signing).
fn signed_by(h: &Harness, key: &SigningKey, version: TokenVersion) -> String {
    mint_with(key, &key.kid, &unique_claims(h, version))
}

/// `n` otherwise valid tokens of `version`, each naming a different never-published `kid`.
fn unknown_kid_tokens(h: &Harness, version: TokenVersion, n: usize) -> Vec<String> {
    let stranger = SigningKey::generate();
    let claims = h.claims(version);
    (0..n)
        .map(|i| {
            let kid = format!("never-published-{i}-{:016x}", nonce());
            mint_with(&stranger, &kid, &claims)
        })
        .collect()
}

/// GET `/data` with `token`, bounded by [`REQUEST_BOUND`].
async fn call(h: &Harness, token: &str) -> reqwest::Response {
    h.get_within(REQUEST_BOUND, "/data", token).await
}

async fn status(h: &Harness, token: &str) -> u16 {
    call(h, token).await.status().as_u16()
}

async fn admin_status(h: &Harness, path: &str) -> u16 {
    h.admin_get_within(REQUEST_BOUND, path)
        .await
        .status()
        .as_u16()
}

/// The admin `/metrics` text, bounded by [`REQUEST_BOUND`].
async fn metrics_text(h: &Harness) -> String {
    h.metrics_text_within(REQUEST_BOUND).await
}

fn key_fetches(text: &str, source: &str, result: &str) -> u64 {
    series(
        text,
        &format!("entragate_key_fetches_total{{source=\"{source}\",result=\"{result}\"}}"),
    )
}

fn denied(text: &str, reason: &str) -> u64 {
    series(
        text,
        &format!("entragate_requests_total{{outcome=\"denied\",reason=\"{reason}\"}}"),
    )
}

/// A client for floods: its connections are kept for the next flood.
fn flood_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Sends every token at once (one connection each, reusing `client`'s idle ones) and returns
/// the statuses.
async fn flood(client: &reqwest::Client, h: &Harness, tokens: &[String]) -> Vec<u16> {
    let url = h.url("/data");
    let requests = tokens.iter().map(|t| {
        let req = client.get(&url).bearer_auth(t).send();
        async move { req.await.map(|r| r.status().as_u16()) }
    });
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("flood request failed: {e}")))
        .collect()
}

fn assert_all_401(statuses: &[u16], what: &str) {
    let other: Vec<_> = statuses.iter().filter(|s| **s != 401).collect();
    assert!(
        other.is_empty(),
        "{what}: {} of {} requests were not refused with 401: {:?}",
        other.len(),
        statuses.len(),
        &other[..other.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Rotation

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
// 2. Unknown-kid floods

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

// ---------------------------------------------------------------------------------------------
// 3. Identity-provider outage after startup

#[tokio::test]
async fn idp_outage_after_startup_serves_cached_keys_and_stays_ready() {
    // Background refreshes every second, so they fail during the outage too.
    let h = Harness::start_with(entra("jwks_min_refetch = \"0s\"\njwks_refresh = \"1s\"")).await;
    let old_key = h.issuer.signing_key();

    h.issuer.set_up(false);
    let failed = |name: &'static str| {
        let h = &h;
        async move {
            let t = metrics_text(h).await;
            key_fetches(&t, name, "bad_status") >= 2
        }
    };
    eventually(Duration::from_secs(10), "v1 refreshes failing", || {
        failed("entra-v1")
    })
    .await;
    eventually(Duration::from_secs(10), "v2 refreshes failing", || {
        failed("entra-v2")
    })
    .await;

    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V1)).await,
        200,
        "cached v1 key still serves"
    );
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V2)).await,
        200,
        "cached v2 key still serves"
    );
    assert_eq!(admin_status(&h, "/readyz").await, 200);

    // A key rotated during the outage cannot be learnt: refused, promptly.
    h.issuer.rotate();
    let new_v1 = fresh(&h, TokenVersion::V1);
    let new_v2 = fresh(&h, TokenVersion::V2);
    for (token, what) in [(&new_v1, "v1"), (&new_v2, "v2")] {
        let r = call(&h, token).await;
        assert_eq!(
            r.status(),
            401,
            "{what} token with a kid published during the outage"
        );
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .expect("ascii")
                .contains("error=\"invalid_token\"")
        );
    }
    // ... and the failed refetches did not drop the keys already known.
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V1)).await,
        200
    );
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V2)).await,
        200
    );
    assert_eq!(admin_status(&h, "/readyz").await, 200);
    assert_eq!(admin_status(&h, "/healthz").await, 200);

    h.issuer.set_up(true);
    assert_eq!(
        status(&h, &new_v2).await,
        200,
        "v2: new key once the IdP is back"
    );
    assert_eq!(
        status(&h, &new_v1).await,
        200,
        "v1: new key once the IdP is back"
    );
    assert_eq!(
        status(&h, &signed_by(&h, &old_key, TokenVersion::V1)).await,
        200
    );
    assert_eq!(admin_status(&h, "/readyz").await, 200);
}

#[tokio::test]
async fn keys_older_than_max_stale_are_refetched_not_dropped_while_the_idp_is_up() {
    // README/example config: last-known-good keys stay in use "while fetching fails", up to
    // jwks_max_stale. With a healthy identity provider the gateway must never run out of
    // keys, whatever the two durations: either the config refuses a max_stale shorter than
    // the refresh interval, or keys that age past it are fetched again.
    let issuer = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("issuer");
    let echo = EchoUpstream::start(common::loopback()).await.expect("echo");
    let extra = entra("jwks_refresh = \"1h\"\njwks_max_stale = \"1s\"");
    let toml = common::config_toml(&issuer, &echo.url(), &extra);
    let config = match Config::load(&toml, &[], &|p| std::fs::read_to_string(p)) {
        Ok(config) => config,
        Err(e) => {
            assert!(
                e.problems.iter().any(|p| p.key.contains("jwks_max_stale")),
                "refused for another reason: {e}"
            );
            return;
        }
    };
    let h = Harness::launch(issuer, echo, &config).await;
    h.wait_ready().await;
    // The keys were stored before readiness: past max_stale a little after this.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let token = status(&h, &fresh(&h, TokenVersion::V2)).await;
        let ready = admin_status(&h, "/readyz").await;
        if token == 200 && ready == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "IdP up, keys past jwks_max_stale (1s, jwks_refresh 1h): a valid token gets \
             {token} and /readyz {ready} 5s later; the IdP served {} JWKS in all",
            h.issuer.jwks_fetches()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Identity provider down at startup

#[tokio::test]
async fn idp_down_at_startup_is_unready_then_recovers_without_restart() {
    let issuer = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("issuer");
    issuer.set_up(false);
    let echo = EchoUpstream::start(common::loopback()).await.expect("echo");
    let toml = common::config_toml(&issuer, &echo.url(), &Extra::default());
    let config = common::load(&toml);
    let h = Harness::launch(issuer, echo, &config).await;

    // Two failed attempts per source: the retry loop is running.
    eventually(
        Duration::from_secs(10),
        "two failed fetches per source",
        || {
            let h = &h;
            async move {
                let t = metrics_text(h).await;
                key_fetches(&t, "entra-v1", "bad_status") >= 2
                    && key_fetches(&t, "entra-v2", "bad_status") >= 2
            }
        },
    )
    .await;
    assert_eq!(admin_status(&h, "/healthz").await, 200);
    let r = h.admin_get_within(REQUEST_BOUND, "/readyz").await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("entra-v1") && body.contains("entra-v2"),
        "{body}"
    );

    let token = fresh(&h, TokenVersion::V2);
    let r = call(&h, &token).await;
    assert_eq!(r.status(), 503, "a valid token cannot be checked yet");
    let retry_after: u64 = r
        .headers()
        .get("retry-after")
        .expect("Retry-After on the 503")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after > 0);

    // Requests do not hammer the identity provider while it is down: at most the background
    // retry (one per source) happens during a burst.
    let failures = |t: &str| {
        (
            key_fetches(t, "entra-v1", "bad_status"),
            key_fetches(t, "entra-v2", "bad_status"),
        )
    };
    let before = failures(&metrics_text(&h).await);
    let burst: Vec<String> = (0..100).map(|_| fresh(&h, TokenVersion::V1)).collect();
    let statuses = flood(&flood_client(), &h, &burst).await;
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    let after = failures(&metrics_text(&h).await);
    assert!(
        after.0 <= before.0 + 1 && after.1 <= before.1 + 1,
        "fetch attempts during a burst of 100: {before:?} -> {after:?}"
    );
    assert_eq!(h.echo.requests(), 0);

    h.issuer.set_up(true);
    // Backoff 1 s, 2 s, 4 s (+ up to 25 % jitter): the next retry is at most ~5 s away.
    eventually(
        Duration::from_secs(10),
        "/readyz 200 after the IdP came back",
        || {
            let h = &h;
            async move {
                assert_eq!(
                    admin_status(h, "/healthz").await,
                    200,
                    "the gateway stays up"
                );
                admin_status(h, "/readyz").await == 200
            }
        },
    )
    .await;
    assert_eq!(status(&h, &token).await, 200);
    assert_eq!(status(&h, &fresh(&h, TokenVersion::V1)).await, 200);
    assert_eq!(h.echo.requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// 5. Key-fetch metrics

#[tokio::test]
async fn key_fetch_metrics_count_successes_and_failures_per_source() {
    let h = Harness::start_with(entra("jwks_min_refetch = \"0s\"")).await;
    let t0 = metrics_text(&h).await;
    for source in ["entra-v1", "entra-v2"] {
        assert!(
            key_fetches(&t0, source, "ok") >= 1,
            "{source}: startup fetch"
        );
        for result in [
            "http_error",
            "bad_status",
            "too_large",
            "bad_json",
            "no_keys",
        ] {
            assert_eq!(key_fetches(&t0, source, result), 0, "{source} {result}");
        }
    }

    // A v1 token with an unknown kid during an outage: one failed v1 fetch.
    h.issuer.set_up(false);
    let stray_v1 = unknown_kid_tokens(&h, TokenVersion::V1, 2);
    assert_eq!(status(&h, &stray_v1[0]).await, 401);
    let t1 = metrics_text(&h).await;
    assert_eq!(
        key_fetches(&t1, "entra-v1", "bad_status"),
        1,
        "the failed fetch is counted under its cause"
    );
    assert_eq!(
        key_fetches(&t1, "entra-v1", "ok"),
        key_fetches(&t0, "entra-v1", "ok")
    );
    for result in ["ok", "bad_status"] {
        assert_eq!(
            key_fetches(&t1, "entra-v2", result),
            key_fetches(&t0, "entra-v2", result),
            "v2 {result} untouched"
        );
    }

    // Back up: the next unknown kid fetches successfully (and is still refused).
    h.issuer.set_up(true);
    assert_eq!(status(&h, &stray_v1[1]).await, 401);
    let t2 = metrics_text(&h).await;
    assert_eq!(
        key_fetches(&t2, "entra-v1", "ok"),
        key_fetches(&t0, "entra-v1", "ok") + 1
    );
    assert_eq!(key_fetches(&t2, "entra-v1", "bad_status"), 1);

    // Same for v2, through its own series.
    let stray_v2 = unknown_kid_tokens(&h, TokenVersion::V2, 1);
    h.issuer.set_up(false);
    assert_eq!(status(&h, &stray_v2[0]).await, 401);
    let t3 = metrics_text(&h).await;
    assert_eq!(key_fetches(&t3, "entra-v2", "bad_status"), 1);
    assert_eq!(
        key_fetches(&t3, "entra-v2", "ok"),
        key_fetches(&t0, "entra-v2", "ok")
    );
    assert_eq!(key_fetches(&t3, "entra-v1", "bad_status"), 1);
    assert_eq!(denied(&t3, "unknown_kid"), 3);
    assert!(t3.contains("entragate_key_age_seconds{source=\"entra-v1\"} "));
}

// ---------------------------------------------------------------------------------------------
// A programmable identity provider in front of the dev issuer: passes its documents through,
// pointing `jwks_uri` back at itself, and can rewrite the v2 keys' `issuer` or hang.

#[derive(Debug, Clone)]
enum IdpMode {
    Pass,
    /// Every v2 key published with this `issuer`.
    V2KeyIssuer(String),
    /// Accepts requests and never answers.
    Hang,
    /// Every JWKS (v1 and v2) answered 200 with this body instead.
    JwksBody(&'static str),
    /// Passes everything through, each answer this much later.
    Slow(Duration),
}

struct IdpState {
    upstream: String,
    own: String,
    mode: Mutex<IdpMode>,
    client: reqwest::Client,
    hung: std::sync::atomic::AtomicU64,
}

struct IdpProxy {
    authority: String,
    state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for IdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IdpProxy {
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(common::loopback())
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let authority = format!("http://{addr}");
        let state = Arc::new(IdpState {
            upstream: upstream.to_owned(),
            own: authority.clone(),
            mode: Mutex::new(IdpMode::Pass),
            client: common::client(),
            hung: std::sync::atomic::AtomicU64::new(0),
        });
        let router = axum::Router::new()
            .fallback(idp_proxy)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            authority,
            state,
            task,
        }
    }

    fn set_mode(&self, mode: IdpMode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    fn hung(&self) -> u64 {
        self.state.hung.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn idp_proxy(State(s): State<Arc<IdpState>>, uri: Uri) -> Response {
    let mode = s.mode.lock().expect("mode").clone();
    if matches!(mode, IdpMode::Hang) {
        s.hung.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    if let IdpMode::Slow(delay) = mode {
        tokio::time::sleep(delay).await;
    }
    if let IdpMode::JwksBody(body) = mode
        && uri.path().ends_with("/keys")
    {
        return ([("content-type", "application/json")], body).into_response();
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(resp) = s.client.get(format!("{}{path}", s.upstream)).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status().as_u16();
    let Ok(mut doc) = resp.json::<Value>().await else {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::BAD_GATEWAY)
            .into_response();
    };
    if let Some(Value::String(jwks_uri)) = doc.get_mut("jwks_uri") {
        *jwks_uri = jwks_uri.replacen(&s.upstream, &s.own, 1);
    }
    if let (IdpMode::V2KeyIssuer(iss), true) = (&mode, uri.path().ends_with("/v2.0/keys")) {
        for key in doc["keys"].as_array_mut().into_iter().flatten() {
            key["issuer"] = json!(iss);
        }
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        axum::Json(doc),
    )
        .into_response()
}

/// Issuer, IdP proxy, echo and a gateway whose `authority` is the proxy; ready.
async fn harness_behind_proxy(entra_lines: &str) -> (Harness, IdpProxy) {
    let issuer = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("issuer");
    let proxy = IdpProxy::start(issuer.authority()).await;
    let h = Harness::start_at(issuer, &proxy.authority, entra(entra_lines)).await;
    (h, proxy)
}

// ---------------------------------------------------------------------------------------------
// 3b. A key fetch that hangs

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
// 3c. Broken key documents

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
// 6. v2 keys that name their own issuer

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
