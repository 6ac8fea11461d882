//! What operators watch: `/metrics` scraped and parsed (every family present, values moving
//! with the traffic), and the decision log of the real binary in JSON (one event per request
//! with the documented fields), with `X-Request-Id` kept or generated, returned to the client
//! and sent to the upstream.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::process::{Gateway, start_upstreams};
use common::{Harness, TENANT, now};
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

const PQ: &str = "a672d62c-fc7b-4e81-a576-e60dc46e951d";

/// A parsed exposition: family types, and samples by `name{labels}` (labels sorted).
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut s = Self::default();
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                s.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let key = match series.split_once('{') {
                None => series.to_owned(),
                Some((name, labels)) => {
                    let mut pairs: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    pairs.sort_unstable();
                    format!("{name}{{{}}}", pairs.join(","))
                }
            };
            assert!(
                s.samples.insert(key.clone(), value).is_none(),
                "duplicate series {key}"
            );
        }
        s
    }

    /// The value of `name` with these labels (any order).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let mut pairs: Vec<String> =
                labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            pairs.sort_unstable();
            format!("{name}{{{}}}", pairs.join(","))
        };
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("no series {key}"))
    }
}

async fn scrape(h: &Harness) -> Scrape {
    let r = h
        .client
        .get(h.admin_url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    Scrape::parse(&r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_has_every_family_and_values_follow_the_traffic() {
    let h = Harness::start().await;
    let before = scrape(&h).await;
    for (family, kind) in [
        ("entragate_requests", "counter"),
        ("entragate_auth_duration_seconds", "histogram"),
        ("entragate_upstream_duration_seconds", "histogram"),
        ("entragate_upstream_responses", "counter"),
        ("entragate_requests_in_flight", "gauge"),
        ("entragate_key_fetches", "counter"),
        ("entragate_key_age_seconds", "gauge"),
        ("entragate_keys_stale_served", "counter"),
        ("entragate_token_cache_lookups", "counter"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    // Every outcome and reason is there from the start, at zero.
    assert_eq!(
        before.get(
            "entragate_requests_total",
            &[("outcome", "denied"), ("reason", "groups_overage")]
        ),
        0.0
    );
    for source in ["entra-v1", "entra-v2"] {
        assert!(
            before.get(
                "entragate_key_fetches_total",
                &[("source", source), ("result", "ok")]
            ) >= 1.0
        );
        let age = before.get("entragate_key_age_seconds", &[("source", source)]);
        assert!((0.0..60.0).contains(&age), "{source} age {age}");
        assert_eq!(
            before.get("entragate_keys_stale_served_total", &[("source", source)]),
            0.0
        );
    }

    // Traffic: three accepted, one expired, one without a token, one slow in flight.
    for v in [TokenVersion::V1, TokenVersion::V2, TokenVersion::V2] {
        let r = h.get_with_token("/ok", &h.token(v)).await;
        assert_eq!(r.status(), 200);
    }
    let mut expired = h.claims(TokenVersion::V2);
    expired.insert("exp".into(), json!(now() - 3600));
    assert_eq!(
        h.get_with_token("/x", &h.issuer.mint(&expired))
            .await
            .status(),
        401
    );
    assert_eq!(
        h.client
            .get(h.url("/x"))
            .send()
            .await
            .expect("send")
            .status(),
        401
    );
    // The same token twice: the second is a verified-token cache hit.
    let again = h.token(TokenVersion::V1);
    for _ in 0..2 {
        assert_eq!(h.get_with_token("/again", &again).await.status(), 200);
    }
    let slow = {
        let client = h.client.clone();
        let url = h.url("/delay/1200");
        let token = h.token(TokenVersion::V2);
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("slow")
                .status()
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.echo.requests() < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "slow request not upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let during = scrape(&h).await;
    assert_eq!(during.get("entragate_requests_in_flight", &[]), 1.0);
    assert_eq!(slow.await.expect("task"), 200);

    let after = scrape(&h).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        moved(
            "entragate_requests_total",
            &[("outcome", "allowed"), ("reason", "none")]
        ),
        6.0
    );
    let hits = moved("entragate_token_cache_lookups_total", &[("result", "hit")]);
    let misses = moved("entragate_token_cache_lookups_total", &[("result", "miss")]);
    assert_eq!(hits + misses, 7.0, "every well-formed token is looked up");
    assert!(hits >= 1.0, "the repeated token hit the cache");
    assert_eq!(
        moved(
            "entragate_requests_total",
            &[("outcome", "denied"), ("reason", "expired")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "entragate_requests_total",
            &[("outcome", "denied"), ("reason", "missing_token")]
        ),
        1.0
    );
    assert_eq!(moved("entragate_auth_duration_seconds_count", &[]), 8.0);
    assert_eq!(moved("entragate_upstream_duration_seconds_count", &[]), 6.0);
    assert!(
        moved("entragate_upstream_duration_seconds_sum", &[]) >= 1.2,
        "the slow request's 1.2 s is in the sum"
    );
    assert_eq!(
        after.get(
            "entragate_upstream_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        after.get("entragate_upstream_duration_seconds_count", &[])
    );
    assert_eq!(
        moved("entragate_upstream_responses_total", &[("class", "2xx")]),
        6.0
    );
    assert_eq!(
        moved("entragate_upstream_responses_total", &[("class", "5xx")]),
        0.0
    );
    assert_eq!(after.get("entragate_requests_in_flight", &[]), 0.0);
}

/// The `entragate::access` events in a JSON log.
fn access_events(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|e| e["target"] == "entragate::access")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_log_fields_and_request_ids_from_the_real_binary() {
    let (issuer, echo) = start_upstreams().await;
    // The config says text; --log-format json wins.
    let mut gw = Gateway::start_with(
        &issuer,
        &echo.url(),
        r#"log_format = "text""#,
        "",
        &[],
        &["--log-format", "json"],
    )
    .await;
    let client = common::client();
    let token = issuer.mint(&issuer.claims(TokenVersion::V2, common::AUDIENCE));

    let r = client
        .get(gw.url("/ehrbase/rest/openehr/v1/query/aql?q=SELECT+secret"))
        .bearer_auth(&token)
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-abc-123");
    let echoed: Value = r.json().await.expect("echo JSON");
    assert_eq!(
        echoed["headers"]["x-request-id"], "req-abc-123",
        "sent upstream"
    );

    let mut expired = issuer.claims(TokenVersion::V1, common::AUDIENCE);
    expired.insert("exp".into(), json!(now() - 3600));
    let r = client
        .get(gw.url("/refused"))
        .bearer_auth(issuer.mint(&expired))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let generated = r.headers()["x-request-id"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(generated.len(), 36, "a generated UUID: {generated}");

    let status = gw.stop(Duration::from_secs(10)).await;
    assert!(status.success());
    let events = access_events(&gw.proc.stderr());
    assert_eq!(events.len(), 2, "one event per request: {events:#?}");

    let ok = &events[0];
    for (field, value) in [
        ("request_id", json!("req-abc-123")),
        ("method", json!("GET")),
        ("path", json!("/ehrbase/rest/openehr/v1/query/aql")),
        ("status", json!(200)),
        ("auth.outcome", json!("allowed")),
        ("auth.reason", json!("none")),
        ("jwt.ver", json!("2.0")),
        ("jwt.tid", json!(TENANT)),
        ("jwt.client", json!(PQ)),
        ("jwt.kid", json!(issuer.signing_key().kid)),
    ] {
        assert_eq!(ok[field], value, "{field} in {ok}");
    }
    let upstream_ms = ok["upstream.ms"].as_f64().expect("upstream.ms is a number");
    assert!((0.0..5000.0).contains(&upstream_ms), "{upstream_ms}");
    assert!(!ok.to_string().contains("secret"), "no query in the log");

    let refused = &events[1];
    assert_eq!(refused["request_id"], json!(generated));
    assert_eq!(refused["status"], json!(401));
    assert_eq!(refused["auth.outcome"], json!("denied"));
    assert_eq!(refused["auth.reason"], json!("expired"));
    assert_eq!(refused["jwt.ver"], json!("1.0"));
    assert!(
        refused.get("upstream.ms").is_none(),
        "never forwarded: {refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_from_entragate_log_format_or_the_table_variable() {
    let (issuer, echo) = start_upstreams().await;
    for env in [
        ("ENTRAGATE_LOG_FORMAT", "json"),
        ("ENTRAGATE_SERVER__LOG_FORMAT", "json"),
    ] {
        let mut gw = Gateway::start(&issuer, &echo.url(), "", &[env]).await;
        let r = common::client()
            .get(gw.url("/x"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401);
        gw.stop(Duration::from_secs(10)).await;
        let events = access_events(&gw.proc.stderr());
        assert_eq!(events.len(), 1, "{env:?}");
        assert_eq!(events[0]["auth.reason"], "missing_token");
    }
}
