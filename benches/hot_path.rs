//! Micro-benchmarks of the request's hot path: finding the bearer token, validating it
//! (from the verified-token cache, in full: RS256-2048 signature and claims, and the cold
//! path: in full with the cache on and every token new), and rewriting the headers for the
//! upstream.
//!
//! `cargo bench --bench hot_path`; CI runs each once with `cargo test --benches` so they
//! keep compiling and working. The side-by-side benchmark is `bench/run.sh`.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use entragate::access::Via;
use entragate::app::idp_client;
use entragate::auth::cache::TokenCache;
use entragate::auth::{Validator, bearer};
use entragate::config::Config;
use entragate::dev::{DevIssuer, POWER_QUERY_CLIENT_ID};
use entragate::gateway::{Gateway, RequestView, Verdict};
use entragate::keys::{KeyStore, TokenVersion};
use entragate::metrics::Metrics;
use entragate::path;
use entragate::upstream::headers::{remove_hop_by_hop, set_forwarded};
use http::header::{self, HeaderMap, HeaderValue};

const TENANT: &str = "6c3f6b2e-1d2a-4b8e-9a51-0e5c2f7d9a10";
const AUDIENCE: &str = "https://api.contoso.example";

/// An issuer on loopback, a key store that has loaded its keys, and a realistic token.
struct Setup {
    rt: tokio::runtime::Runtime,
    _issuer: DevIssuer,
    config: Config,
    keys: Arc<KeyStore>,
    token: String,
    /// Distinct tokens of the same shape, for the cold path (each differs in `uti`).
    cold: Vec<String>,
}

/// Tokens for the cold-path benchmark: more than its cache holds, so every lookup misses.
const COLD_TOKENS: usize = 512;
const COLD_CACHE_ENTRIES: u64 = 64;

#[allow(clippy::expect_used)]
fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let issuer = rt.block_on(DevIssuer::start(any, TENANT)).expect("issuer");
    let toml = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[entra]\ntenant_id = \"{TENANT}\"\nauthority = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n",
        issuer.authority()
    );
    let config = Config::load(&toml, &[], &|p| std::fs::read_to_string(p)).expect("config");
    let client = idp_client(Duration::from_secs(5)).expect("client");
    let keys = Arc::new(KeyStore::new(
        &config.entra,
        &config.oidc,
        &client,
        &Metrics::new(),
    ));
    rt.block_on(async {
        let refreshers = keys.spawn_refresh();
        while !keys.is_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for r in refreshers {
            r.abort();
        }
    });
    let mut claims = issuer.claims(TokenVersion::V2, AUDIENCE);
    // The size of a real Entra v2 token from Power Query (about 1.3 KB).
    for (k, v) in [
        (
            "aio",
            "AWQAm/8YAAAAbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmark==",
        ),
        ("rh", "1.AQkAbenchmarkbenchmarkbenchmarkbenchmarkAAA."),
        ("sid", "00000000-0000-4000-9000-000000000001"),
        ("uti", "benchmark0000000001"),
        ("azp", POWER_QUERY_CLIENT_ID),
    ] {
        claims.insert(k.into(), v.into());
    }
    let token = issuer.mint(&claims);
    let cold = (0..COLD_TOKENS)
        .map(|i| {
            claims.insert("uti".into(), format!("benchmark{i:010}").into());
            issuer.mint(&claims)
        })
        .collect();
    Setup {
        rt,
        _issuer: issuer,
        config,
        keys,
        token,
        cold,
    }
}

/// The headers Power Query sends with a request.
fn request_headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::HOST,
        HeaderValue::from_static("api.contoso.example"),
    );
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static(
            "Microsoft.Data.Mashup (https://go.microsoft.com/fwlink/?LinkID=304225)",
        ),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip, deflate"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::try_from(format!("Bearer {token}")).unwrap_or(HeaderValue::from_static("")),
    );
    h
}

fn bearer_extraction(c: &mut Criterion, s: &Setup) {
    let headers = request_headers(&s.token);
    c.bench_function("bearer/extract", |b| {
        b.iter(|| bearer::extract(black_box(&headers)));
    });
}

fn path_normalisation(c: &mut Criterion) {
    c.bench_function("path/normalize plain", |b| {
        b.iter(|| {
            path::normalize(black_box(
                "/ehrbase/rest/openehr/v1/ehr/7d44b88c/composition",
            ))
        });
    });
    c.bench_function("path/normalize encoded", |b| {
        b.iter(|| path::normalize(black_box("/ehrbase/rest/openehr/v1/%71uery/./aql;x=1")));
    });
}

#[allow(clippy::expect_used)]
fn validation(c: &mut Criterion, s: &Setup) {
    let uncached = Validator::new(&s.config.entra, Arc::clone(&s.keys));
    let cached = Validator::new(&s.config.entra, Arc::clone(&s.keys))
        .with_cache(Some(TokenCache::new(10_000, Arc::new(Metrics::new()))));
    s.rt.block_on(cached.validate(&s.token))
        .expect("the token is valid");
    s.rt.block_on(uncached.validate(&s.token))
        .expect("the token is valid");
    c.bench_function("validate/cached", |b| {
        b.to_async(&s.rt)
            .iter(|| cached.validate(black_box(&s.token)));
    });
    c.bench_function("validate/uncached RS256-2048", |b| {
        b.to_async(&s.rt)
            .iter(|| uncached.validate(black_box(&s.token)));
    });
    // The cold path as served: the cache on, every token new to it (a cycle through more
    // tokens than it holds), so each validation is the full check plus an insert that
    // evicts.
    let cold = Validator::new(&s.config.entra, Arc::clone(&s.keys)).with_cache(Some(
        TokenCache::new(COLD_CACHE_ENTRIES, Arc::new(Metrics::new())),
    ));
    for token in &s.cold {
        s.rt.block_on(cold.validate(token))
            .expect("every cold token is valid");
    }
    let mut next = s.cold.iter().cycle();
    c.bench_function(
        "validate/cold RS256-2048 (cache on, every token new)",
        |b| {
            b.to_async(&s.rt).iter(|| {
                let token = next.next().map_or("", String::as_str);
                cold.validate(black_box(token))
            });
        },
    );
}

/// The whole decision on a cached token (`Gateway::check`: path, route, bearer, cache,
/// claims, edits), then what the proxy does with it: hop-by-hop removal, the edits,
/// `X-Forwarded-*`.
#[allow(clippy::expect_used)]
fn decision_and_headers(c: &mut Criterion, s: &Setup) {
    let gw = Gateway::build(
        &s.config,
        Arc::clone(&s.keys),
        &Arc::new(Metrics::new()),
        false,
    )
    .expect("gateway");
    let headers = request_headers(&s.token);
    let peer: IpAddr = [10, 1, 2, 3].into();
    fn view(h: &HeaderMap, peer: IpAddr) -> RequestView<'static, '_> {
        RequestView {
            via: Via::Proxy,
            method: "GET",
            target: "/ehrbase/rest/openehr/v1/ehr?x=1",
            readable: true,
            headers: h,
            peer: Some(peer),
            scheme: "http",
            host: Some("api.contoso.com"),
        }
    }
    let first = s.rt.block_on(gw.check(&view(&headers, peer)));
    assert!(matches!(first.verdict, Verdict::Pass(_)), "{first:?}");
    c.bench_function("check/cached token + edits + hop-by-hop + forwarded", |b| {
        b.to_async(&s.rt).iter_batched(
            || headers.clone(),
            |mut h| {
                let gw = &gw;
                async move {
                    let decision = gw.check(&view(&h, peer)).await;
                    remove_hop_by_hop(&mut h);
                    if let Verdict::Pass(pass) = decision.verdict {
                        pass.edits.apply(&mut h);
                    }
                    let host = h.get(header::HOST).cloned();
                    set_forwarded(&mut h, peer, false, "http", host);
                    h
                }
            },
            BatchSize::SmallInput,
        );
    });
}

fn benches(c: &mut Criterion) {
    let s = setup();
    bearer_extraction(c, &s);
    path_normalisation(c);
    validation(c, &s);
    decision_and_headers(c, &s);
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
