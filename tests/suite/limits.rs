//! Rate limits and the kill switch across replicas, with a real Redis 7: two gateways (each
//! its own listeners, token cache, Redis connections and revocation copy) sharing one
//! `redis-server` enforce one combined limit, follow `limits_store.on_error` while Redis is
//! down and resume when it is back, and refuse a revoked identity within a second, cached
//! tokens included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use entragate::app::Running;
use entragate::keys::TokenVersion;
use serde_json::json;

use crate::common::process::{Proc, TempFile};
use crate::common::redis::Redis;
use crate::common::tokens::with;
use crate::common::{self, Extra, Harness};

/// A second gateway with the same issuer and upstream as `h`, and `extra`.
async fn replica(h: &Harness, extra: &Extra) -> Running {
    let toml = common::config_toml(&h.issuer, &h.echo.url(), extra);
    let gw = entragate::app::start(&common::load(&toml))
        .await
        .expect("second gateway");
    for _ in 0..400 {
        if gw.keys().is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gw.keys().is_ready(), "second gateway has keys");
    gw
}

fn limits(redis: &Redis, on_error: &str, rate: &str, burst: u64) -> Extra {
    Extra {
        tail: format!(
            "[[limits]]\nname = \"per-client\"\nkey = \"client\"\nrate = \"{rate}\"\nburst = {burst}\n\n[limits_store]\nurl = \"{}\"\non_error = \"{on_error}\"\n",
            redis.url()
        ),
        ..Extra::default()
    }
}

async fn status(client: &reqwest::Client, url: &str, token: &str) -> u16 {
    client
        .get(url)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_enforce_one_combined_limit() {
    let redis = Redis::start().await;
    // 40/s with a burst of 10, counted per client: both gateways see the same client.
    let mut extra = limits(&redis, "allow", "40/s", 10);
    // This test is about one combined count, not about a slow Redis: a loaded machine
    // (the whole suite in parallel) must not turn counted requests into uncounted ones
    // through limits_store.timeout and on_error = "allow".
    extra.tail.push_str("timeout = \"1s\"\n");
    let h = Harness::start_with(extra.clone()).await;
    let b = replica(&h, &extra).await;
    let token = h.token(TokenVersion::V2);
    let urls = [
        format!("http://{}/data", h.gw.addr),
        format!("http://{}/data", b.addr),
    ];
    let allowed = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let run = Duration::from_secs(10);
    let started = Instant::now();
    let mut tasks = Vec::new();
    // Four clients per gateway, each as fast as it can go: far above 40/s in total.
    for url in urls.iter().flat_map(|u| std::iter::repeat_n(u.clone(), 4)) {
        let (client, token) = (h.client.clone(), token.clone());
        let (allowed, limited, other) = (allowed.clone(), limited.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < run {
                match status(&client, &url, &token).await {
                    200 => allowed.fetch_add(1, Relaxed),
                    429 => limited.fetch_add(1, Relaxed),
                    _ => other.fetch_add(1, Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (allowed, limited, other) = (
        allowed.load(Relaxed),
        limited.load(Relaxed),
        other.load(Relaxed),
    );
    #[allow(clippy::cast_precision_loss)]
    let got = allowed as f64;
    let want = 40.0 * elapsed + 10.0;
    eprintln!(
        "combined limit: {allowed} allowed, {limited} refused in {elapsed:.2} s (want {want:.0})"
    );
    assert_eq!(other, 0, "only 200 and 429");
    for (name, m) in [("a", &h.gw.metrics), ("b", &b.metrics)] {
        assert_eq!(m.limits.store_errors(), 0, "gateway {name}: Redis errors");
    }
    assert!(
        limited > allowed,
        "the clients ran far above the limit ({limited} refused)"
    );
    assert!(
        (got - want).abs() <= want * 0.05,
        "{allowed} allowed in {elapsed:.2} s across both gateways; one combined limit allows {want:.0} (±5%)"
    );
    // Both gateways took part, and both refused.
    for (name, m) in [("a", &h.gw.metrics), ("b", &b.metrics)] {
        assert!(
            m.limits.rate_limited("per-client") > 0,
            "gateway {name} refused none"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_requests_follow_on_error_and_limits_resume_after() {
    let mut redis = Redis::start().await;
    let h = Harness::start_with(limits(&redis, "allow", "2/s", 2)).await;
    let deny = replica(&h, &limits(&redis, "deny", "2/s", 2)).await;
    let token = h.token(TokenVersion::V2);
    let (allow_url, deny_url) = (h.url("/data"), format!("http://{}/data", deny.addr));
    let burst = |url: String| {
        let (client, token) = (h.client.clone(), token.clone());
        async move {
            let mut seen = Vec::new();
            for _ in 0..8 {
                let t = Instant::now();
                seen.push(status(&client, &url, &token).await);
                assert!(
                    t.elapsed() < Duration::from_secs(2),
                    "an answer took {:?}",
                    t.elapsed()
                );
            }
            seen
        }
    };
    // Background load on both gateways through the whole test, Redis killed and restarted
    // under it: every answer is a 200 or a 429, none slow.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Another client application: counted apart from the bursts below.
    let other_client = h.issuer.mint(&with(
        h.claims(TokenVersion::V2),
        "azp",
        json!("0e1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"),
    ));
    let load = {
        let (client, token, stop) = (h.client.clone(), other_client, stop.clone());
        let urls = [allow_url.clone(), deny_url.clone()];
        tokio::spawn(async move {
            let (mut seen, mut slowest) = (std::collections::BTreeMap::new(), Duration::ZERO);
            while !stop.load(Relaxed) {
                for url in &urls {
                    let t = Instant::now();
                    *seen
                        .entry(status(&client, url, &token).await)
                        .or_insert(0u64) += 1;
                    slowest = slowest.max(t.elapsed());
                }
            }
            (seen, slowest)
        })
    };
    // Up: the limit holds (2 at once, then 429).
    let up = burst(allow_url.clone()).await;
    assert!(up.contains(&429), "limited while Redis is up: {up:?}");

    redis.kill();
    // Down: `allow` passes everything, `deny` refuses everything with 429; never a 5xx.
    let allow_down = burst(allow_url.clone()).await;
    assert!(
        allow_down.iter().all(|s| *s == 200),
        "on_error = allow: {allow_down:?}"
    );
    let deny_down = burst(deny_url.clone()).await;
    assert!(
        deny_down.iter().all(|s| *s == 429),
        "on_error = deny: {deny_down:?}"
    );
    assert!(h.gw.metrics.limits.store_errors() > 0);
    let text = h
        .client
        .get(format!("http://{}/metrics", h.gw.admin_addr))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("entragate_limits_store_errors_total{kind="),
        "{text}"
    );

    redis.restart().await;
    // Back (the client reconnects on its own, after its backoff): limited again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = burst(allow_url.clone()).await;
        assert!(seen.iter().all(|s| *s == 200 || *s == 429), "{seen:?}");
        if seen.contains(&429) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "limits did not resume after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = burst(deny_url.clone()).await;
        if seen.contains(&200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deny gateway did not resume: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Relaxed);
    let (seen, slowest) = load.await.expect("load task");
    eprintln!("under load while Redis died and came back: {seen:?}, slowest answer {slowest:?}");
    assert!(
        seen.keys().all(|s| *s == 200 || *s == 429),
        "only 200 and 429: {seen:?}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "an answer took {slowest:?}"
    );
}

/// The config file the `revoke` commands read: the harness's TOML with `extra`.
fn config_file(h: &Harness, extra: &Extra) -> TempFile {
    TempFile::with(
        "config.toml",
        &common::config_toml(&h.issuer, &h.echo.url(), extra),
    )
}

async fn command(args: &[&str]) -> (i32, String, String) {
    let mut p = Proc::spawn(args, &[]);
    let status = p
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("command ends");
    (status.code().unwrap_or(-1), p.stdout(), p.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_oid_is_refused_by_both_replicas_within_a_second() {
    let redis = Redis::start().await;
    let extra = Extra {
        tail: format!("[limits_store]\nurl = \"{}\"\n", redis.url()),
        ..Extra::default()
    };
    let h = Harness::start_with(extra.clone()).await;
    let b = replica(&h, &extra).await;
    let victim = "6f1e7b2a-0000-4000-8000-00000000dead";
    let token = h
        .issuer
        .mint(&with(h.claims(TokenVersion::V2), "oid", json!(victim)));
    let bystander = h.token(TokenVersion::V2);
    let urls = [h.url("/data"), format!("http://{}/data", b.addr)];
    // In both caches.
    for url in &urls {
        for _ in 0..2 {
            assert_eq!(status(&h.client, url, &token).await, 200);
        }
    }
    let cache_hits = h.gw.metrics.token_cache().0 + b.metrics.token_cache().0;
    assert!(cache_hits >= 2, "the token is cached on both");

    let file = config_file(&h, &extra);
    let (code, out, err) = command(&[
        "revoke",
        "--config",
        file.as_str(),
        "--oid",
        &victim.to_uppercase(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let revoked_at = Instant::now();
    let mut refused = [None, None];
    while refused.iter().any(Option::is_none) && revoked_at.elapsed() < Duration::from_secs(3) {
        for (i, url) in urls.iter().enumerate() {
            if refused[i].is_none() && status(&h.client, url, &token).await == 401 {
                refused[i] = Some(revoked_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, r) in refused.iter().enumerate() {
        let took = r.unwrap_or_else(|| panic!("replica {i} still accepts the revoked oid"));
        assert!(
            took < Duration::from_secs(1),
            "replica {i} refused it after {took:?}"
        );
    }
    // The refusal: 401 invalid_token, counted as revoked by kind; others pass.
    let r = h.get_with_token("/data", &token).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":"invalid_token"}"#
    );
    assert!(h.gw.metrics.limits.revoked("oid") > 0);
    assert!(
        h.gw.metrics.requests(entragate::metrics::Outcome::Denied(
            entragate::auth::Reason::Revoked
        )) > 0
    );
    for url in &urls {
        assert_eq!(status(&h.client, url, &bystander).await, 200);
    }
    // Listed, with its default expiry (now + entra.max_token_lifetime, 28 h).
    let (code, out, err) = command(&["revoked", "--config", file.as_str()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("oid={victim} until=")), "{out}");
    assert!(out.contains("# 1 entry in force in Redis"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("oid="))
        .expect("entry line");
    let until = line
        .split("until=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("until");
    let until = humantime::parse_rfc3339(until).expect("RFC 3339");
    let left = until
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(
        left > Duration::from_secs(27 * 3600) && left <= Duration::from_secs(28 * 3600),
        "{left:?}"
    );

    // Unrevoked: accepted again on both.
    let (code, out, err) = command(&["unrevoke", "--config", file.as_str(), "--oid", victim]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed 1 entry"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(2);
    for url in &urls {
        while status(&h.client, url, &token).await != 200 {
            assert!(
                Instant::now() < deadline,
                "{url} still refuses after unrevoke"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_file_store_revoke_writes_the_file_the_gateway_reloads() {
    let list = TempFile::path("revoked.txt");
    let extra = Extra {
        tail: format!("[revocation]\nfile = \"{}\"\n", list.as_str()),
        ..Extra::default()
    };
    let h = Harness::start_with(extra.clone()).await;
    let claims = with(h.claims(TokenVersion::V1), "iat", json!(common::now() - 10));
    let client_id = claims["appid"].as_str().expect("appid").to_owned();
    let token = h.issuer.mint(&claims);
    assert_eq!(h.get_with_token("/data", &token).await.status(), 200);
    let file = config_file(&h, &extra);
    // Only tokens issued before a time: this one was issued a moment ago.
    let (code, out, err) = command(&[
        "revoke",
        "--config",
        file.as_str(),
        "--client",
        &client_id,
        "--issued-before",
        "now",
        "--until",
        "1h",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        list.read().contains(&format!("client={client_id} until=")),
        "{}",
        list.read()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while h.get_with_token("/data", &token).await.status() != 401 {
        assert!(
            Instant::now() < deadline,
            "the file's entry is not in force"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.gw.metrics.limits.revoked("client"), 1);
    // A token issued after the entry's time passes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = h
        .issuer
        .mint(&with(claims.clone(), "iat", json!(common::now())));
    assert_eq!(h.get_with_token("/data", &fresh).await.status(), 200);
    let (code, out, _) = command(&[
        "unrevoke",
        "--config",
        file.as_str(),
        "--client",
        &client_id,
    ])
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("removed 1 entry"), "{out}");

    // No store at all: the commands refuse, naming the keys.
    let none = TempFile::with(
        "config.toml",
        &common::config_toml(&h.issuer, &h.echo.url(), &Extra::default()),
    );
    let (code, _, err) = command(&["revoke", "--config", none.as_str(), "--oid", "x"]).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("limits_store.url") && err.contains("revocation.file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_explain_describe_limits_and_revocations() {
    let redis = Redis::start().await;
    let list = TempFile::with(
        "revoked.txt",
        "oid=6f1e7b2a-0000-4000-8000-00000000beef until=2100-01-01T00:00:00Z\nbad line\n",
    );
    let extra = Extra {
        tail: format!(
            "[[limits]]\nname = \"per-client\"\nkey = \"client\"\nrate = \"600/min\"\n\n[[limits]]\nname = \"aql\"\nkey = \"user\"\nrate = \"100/day\"\nkind = \"quota\"\npaths = [\"/query\"]\n\n[limits_store]\nurl = \"{}\"\n\n[revocation]\nfile = \"{}\"\n",
            redis.url(),
            list.as_str()
        ),
        ..Extra::default()
    };
    let h = Harness::start_with(extra.clone()).await;
    let file = config_file(&h, &extra);
    let (_, out, err) = command(&["check", "--config", file.as_str()]).await;
    for want in [
        "limit per-client: 600/min per client application (azp/appid), burst 10 (GCRA) on every path; counted shared in Redis",
        "limit aql: quota of 100/day per user (oid) (fixed window) on /query",
        "answers (",
        "1 line(s) ignored",
    ] {
        assert!(
            out.contains(want),
            "check does not say {want:?}:\n{out}{err}"
        );
    }
    let token = h.issuer.mint(&with(
        h.claims(TokenVersion::V2),
        "oid",
        json!("6f1e7b2a-0000-4000-8000-00000000beef"),
    ));
    let (code, out, err) = command(&[
        "explain",
        "--config",
        file.as_str(),
        "--offline",
        "--path",
        "/query/x",
        &token,
    ])
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("revoked"), "{out}");
    assert!(
        out.contains("limits: per-client (600/min per client = "),
        "{out}"
    );
    assert!(
        out.contains("aql (100/day per user = 6f1e7b2a-0000-4000-8000-00000000beef)"),
        "{out}"
    );
}

/// The decision log of the real binary names the limit: `auth.reason=rate_limited:<name>`;
/// a revoked identity is `revoked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_log_names_the_limit_and_the_revocation() {
    let (issuer, echo) = crate::common::process::start_upstreams().await;
    let list = TempFile::with(
        "revoked.txt",
        "oid=6f1e7b2a-0000-4000-8000-00000000f00d until=2100-01-01T00:00:00Z\n",
    );
    let tail = format!(
        "\n[[limits]]\nname = \"per-user\"\nkey = \"user\"\nrate = \"1/h\"\n\n[revocation]\nfile = \"{}\"\n",
        list.as_str()
    );
    let mut gw = crate::common::process::Gateway::start_with(
        &issuer,
        &echo.url(),
        "",
        &tail,
        &[],
        &["--log-format", "json"],
    )
    .await;
    let client = common::client();
    let token = issuer.mint(&issuer.claims(TokenVersion::V2, common::AUDIENCE));
    let revoked = issuer.mint(&with(
        issuer.claims(TokenVersion::V2, common::AUDIENCE),
        "oid",
        json!("6f1e7b2a-0000-4000-8000-00000000f00d"),
    ));
    for (t, want) in [(&token, 200), (&token, 429), (&revoked, 401)] {
        // One connection per request: the client's pool may open a spare connection that
        // never sends a byte, which holds a graceful stop for server.header_read_timeout.
        let r = client
            .get(gw.url("/data"))
            .header("connection", "close")
            .bearer_auth(t)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), want);
    }
    assert!(gw.stop(Duration::from_secs(10)).await.success());
    // Lines of different worker threads are written in batches: compare them as a set.
    let mut lines: Vec<(u64, String)> = gw
        .proc
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["target"] == "entragate::access")
        .map(|e| {
            (
                e["status"].as_u64().unwrap_or(0),
                e["auth.reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            (200, "none".to_owned()),
            (401, "revoked".to_owned()),
            (429, "rate_limited:per-user".to_owned())
        ]
    );
}

/// Only requests that would pass are counted: refusals by the route rules or of the token
/// leave the limit whole, and anonymous routes are never limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_requests_that_would_pass_are_counted() {
    let h = Harness::start_with(Extra {
        tail: "[[routes]]\npath = \"/query\"\nscopes = [\"aql.read\"]\n\n[[routes]]\npath = \"/public\"\nanonymous = true\n\n[[limits]]\nname = \"per-user\"\nkey = \"user\"\nrate = \"1/h\"\n".into(),
        ..Extra::default()
    })
    .await;
    let token = h.token(TokenVersion::V1);
    for _ in 0..3 {
        assert_eq!(h.get_with_token("/query/x", &token).await.status(), 403);
        assert_eq!(h.get_with_token("/data", "not.a.token").await.status(), 401);
        assert_eq!(
            h.client
                .get(h.url("/public/x"))
                .send()
                .await
                .expect("request")
                .status(),
            200
        );
    }
    assert_eq!(h.get_with_token("/data", &token).await.status(), 200);
    let r = h.get_with_token("/data", &token).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"per-user\";q=1;w=3600");
    // Another user has a limit of their own.
    let other = h.issuer.mint(&with(
        h.claims(TokenVersion::V1),
        "oid",
        json!("6f1e7b2a-0000-4000-8000-00000000cafe"),
    ));
    assert_eq!(h.get_with_token("/data", &other).await.status(), 200);
}
