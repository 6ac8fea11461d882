//! Identity-provider outages after startup (cached keys served, ready kept) and at startup
//! (unready, then recovering without a restart), keys past `jwks_max_stale`, and the key-fetch
//! metrics per source and result.

use crate::common;

use std::time::{Duration, Instant};

use super::{
    REQUEST_BOUND, admin_status, call, denied, entra, flood, flood_client, fresh, key_fetches,
    metrics_text, signed_by, status, unknown_kid_tokens,
};
use common::{Extra, Harness, TENANT, eventually};
use entragate::config::Config;
use entragate::dev::{DevIssuer, EchoUpstream};
use entragate::keys::TokenVersion;

// ---------------------------------------------------------------------------------------------
// Identity-provider outage after startup

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
// Identity provider down at startup

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
// Key-fetch metrics

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
