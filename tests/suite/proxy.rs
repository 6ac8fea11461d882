//! What the upstream receives and what the client gets back (SPEC §4, "anything else"):
//! the request target and body unchanged, header hygiene, the upstream `Authorization`
//! policy, HTTP/2 from the client, 502/504, and streamed bodies. In-process, real sockets.
//!
//! reqwest is built here without its `http2` and `stream` features, so HTTP/2 with prior
//! knowledge and streamed uploads go through hyper-util's client (a dependency of the crate).

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::process::TempFile;
use common::wire::{send_raw, streamed_body};
use common::{Extra, Harness, echoed_authorization, loopback};
use entragate::dev::EchoUpstream;
use entragate::keys::TokenVersion;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const MIB: u64 = 1024 * 1024;

/// A GET with a valid token through reqwest; returns what the echo saw.
async fn echo_get(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Value {
    let mut req = h.client.get(h.url(path)).header(
        "authorization",
        format!("Bearer {}", h.token(TokenVersion::V2)),
    );
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().await.expect("request");
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.expect("echo JSON")
}

/// An upstream that answers with the request body it received, byte for byte.
async fn start_mirror() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind mirror");
    let addr = listener.local_addr().expect("mirror addr");
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap_or_default()
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

#[tokio::test]
async fn method_path_query_and_body_reach_the_upstream_exactly_as_sent() {
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.token(TokenVersion::V2));
    let targets = [
        "/ehrbase/rest/openehr/v1/query/aql?q=SELECT%20e%2Fehr_id%2Fvalue%20FROM%20EHR%20e&x=1&x=2&empty=&flag",
        "//double//slashes/",
        "/a%20b/%7Euser/caf%C3%A9",
        "/a/./b/../c",
        "/Mixed/CASE%2a?Q=%2F%26%3D",
        "/",
    ];
    let body = b"{\"ehr_status\":\"x\"}\n\x00\xff\xfe binary tail";
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        for target in targets {
            let sent: &[u8] = if matches!(method, "POST" | "PUT" | "PATCH") {
                body
            } else {
                b""
            };
            let r = send_raw(h.gw.addr, method, target, &[("authorization", &auth)], sent).await;
            assert_eq!(r.status, 200, "{method} {target}: {r:?}");
            let seen = r.json();
            assert_eq!(seen["method"], method, "{method} {target}");
            assert_eq!(seen["uri"], target, "{method} {target}");
            assert_eq!(seen["body_bytes"], sent.len(), "{method} {target}");
            assert_eq!(seen["body_error"], false, "{method} {target}");
        }
    }

    // The bytes themselves, not only their number: an upstream that mirrors the body.
    let (mirror, _task) = start_mirror().await;
    let h = Harness::start_with(Extra {
        upstream_url: Some(format!("http://{mirror}")),
        ..Default::default()
    })
    .await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(1_000_003).collect();
    let auth = format!("Bearer {}", h.token(TokenVersion::V2));
    for method in ["POST", "PUT", "PATCH"] {
        let r = send_raw(
            h.gw.addr,
            method,
            "/upload?x=1",
            &[("authorization", &auth)],
            &payload,
        )
        .await;
        assert_eq!(r.status, 200, "{method}");
        assert!(r.body == payload, "{method}: the mirrored body differs");
    }
}

#[tokio::test]
async fn path_decoding_to_a_separator_nul_or_invalid_utf8_inside_a_segment_is_refused_with_400() {
    // SPEC §4: "a path whose decoding yields `/`, `\`, NUL or invalid UTF-8 inside a segment is
    // refused with 400."
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.token(TokenVersion::V2));
    let mut answers = Vec::new();
    for target in [
        "/a%2Fb",
        "/a%2fb/c",
        "/a%5Cb",
        "/a%00b",
        "/a%FFb",
        "/x/%C3%28",
    ] {
        let r = send_raw(h.gw.addr, "GET", target, &[("authorization", &auth)], b"").await;
        answers.push((target, r.status));
    }
    assert!(
        answers.iter().all(|(_, status)| *status == 400),
        "every such path must be refused with 400; got {answers:?}"
    );
    assert_eq!(
        h.echo.requests(),
        0,
        "a refused path never reaches the upstream"
    );
}

#[tokio::test]
async fn upstream_base_path_prefixes_the_request_path() {
    let echo = EchoUpstream::start(loopback()).await.expect("echo");
    for base in ["/base", "/base/", "/deep/er/base"] {
        let h = Harness::start_with(Extra {
            upstream_url: Some(format!("{}{base}", echo.url())),
            ..Default::default()
        })
        .await;
        let prefix = base.trim_end_matches('/');
        let auth = format!("Bearer {}", h.token(TokenVersion::V2));
        for target in ["/x/y?z=1&z=%2F", "/", "//double", "/a%20b"] {
            let r = send_raw(h.gw.addr, "GET", target, &[("authorization", &auth)], b"").await;
            assert_eq!(r.status, 200, "{base} {target}");
            assert_eq!(
                r.json()["uri"],
                format!("{prefix}{target}"),
                "{base} {target}"
            );
        }
        assert_eq!(
            h.echo.requests(),
            0,
            "the harness's own echo is not the upstream"
        );
    }
    assert_eq!(echo.requests(), 12);
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded_but_end_to_end_headers_are() {
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.token(TokenVersion::V2));
    let r = send_raw(
        h.gw.addr,
        "POST",
        "/hop",
        &[
            ("authorization", &auth),
            ("connection", "close, X-Conn-Named"),
            ("connection", "x-other-named"),
            ("x-conn-named", "secret-1"),
            ("x-other-named", "secret-2"),
            ("keep-alive", "timeout=5, max=100"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic cHJveHk6cGFzcw=="),
            ("proxy-connection", "keep-alive"),
            ("x-end-to-end", "kept"),
            ("accept", "application/json"),
        ],
        b"hop body",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.json();
    let headers = seen["headers"].as_object().expect("headers object");
    for name in [
        "connection",
        "x-conn-named",
        "x-other-named",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {headers:?}"
        );
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["accept"], "application/json");
    assert_eq!(seen["body_bytes"], 8);
}

#[tokio::test]
async fn x_forwarded_headers_are_set_and_an_untrusted_peers_chain_is_replaced() {
    let h = Harness::start().await;
    let gateway_host = h.gw.addr.to_string();

    let seen = echo_get(&h, "/fwd", &[]).await;
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], gateway_host.as_str());

    let seen = echo_get(
        &h,
        "/fwd",
        &[
            ("x-forwarded-for", "203.0.113.9, 198.51.100.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=203.0.113.9;proto=https"),
        ],
    )
    .await;
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], gateway_host.as_str());
    assert!(seen["headers"].get("forwarded").is_none());
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_is_appended_to() {
    let h = Harness::start_with(Extra {
        server: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        ..Default::default()
    })
    .await;
    let seen = echo_get(
        &h,
        "/fwd",
        &[("x-forwarded-for", "203.0.113.9, 198.51.100.7")],
    )
    .await;
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        "203.0.113.9, 198.51.100.7, 127.0.0.1"
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(
        seen["headers"]["x-forwarded-host"],
        h.gw.addr.to_string().as_str()
    );

    let seen = echo_get(&h, "/fwd", &[]).await;
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn upstream_authorization_forward_passes_the_clients_bearer_unchanged() {
    let h = Harness::start_with(Extra {
        upstream: r#"authorization = "forward""#.into(),
        ..Default::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    let r = h.get_with_token("/auth", &token).await;
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.expect("echo JSON");
    assert_eq!(
        seen["headers"]["authorization"],
        echoed_authorization(&format!("Bearer {token}")).as_str()
    );
}

#[tokio::test]
async fn upstream_authorization_strip_removes_the_clients_bearer() {
    let h = Harness::start_with(Extra {
        upstream: r#"authorization = "strip""#.into(),
        ..Default::default()
    })
    .await;
    let r = h.get_with_token("/auth", &h.token(TokenVersion::V2)).await;
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.expect("echo JSON");
    assert!(
        seen["headers"].get("authorization").is_none(),
        "{}",
        seen["headers"]
    );
    assert_eq!(seen["headers"]["x-auth-tenant"], common::TENANT);
}

#[tokio::test]
async fn upstream_authorization_basic_replaces_the_bearer_with_the_gateways_credentials() {
    let password = "s3cret pass:with colon";
    let file = TempFile::with("basic-password", &format!("{password}\n"));
    let h = Harness::start_with(Extra {
        upstream: format!(
            "authorization = \"basic\"\nbasic_user = \"ehrbase-user\"\nbasic_password_file = '{}'",
            file.0.display()
        ),
        ..Default::default()
    })
    .await;
    let r = h.get_with_token("/auth", &h.token(TokenVersion::V2)).await;
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.expect("echo JSON");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ehrbase-user:{password}"))
    );
    assert_eq!(
        seen["headers"]["authorization"],
        echoed_authorization(&expected).as_str(),
        "Basic base64(user:password), without the file's trailing newline"
    );
    // Still authenticated: no token, no Basic credentials upstream.
    let r = h.client.get(h.url("/auth")).send().await.expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(h.echo.requests(), 1);
}

#[tokio::test]
async fn http2_with_prior_knowledge_reaches_the_http1_upstream() {
    let h = Harness::start().await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let auth = format!("Bearer {}", h.token(TokenVersion::V2));

    let req = http::Request::get(h.url("/h2/path%20x?q=1&q=2"))
        .header("authorization", &auth)
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = client.request(req).await.expect("h2 request");
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.expect("body").to_bytes();
    let seen: Value = serde_json::from_slice(&body).expect("echo JSON");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["uri"], "/h2/path%20x?q=1&q=2");
    assert_eq!(seen["headers"]["x-end-to-end"], "kept");
    assert_eq!(
        seen["headers"]["x-forwarded-host"],
        h.gw.addr.to_string().as_str()
    );
    assert_eq!(
        seen["headers"]["authorization"],
        echoed_authorization(&auth).as_str()
    );

    let payload = Bytes::from(vec![b'h'; 300_000]);
    let req = http::Request::post(h.url("/h2/upload"))
        .header("authorization", &auth)
        .body(Full::new(payload))
        .expect("request");
    let r = client.request(req).await.expect("h2 request");
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.expect("body").to_bytes();
    let seen: Value = serde_json::from_slice(&body).expect("echo JSON");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_bytes"], 300_000);

    // Refusals come back over HTTP/2 too.
    let req = http::Request::get(h.url("/h2/path"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = client.request(req).await.expect("h2 request");
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 401);
    assert_eq!(h.echo.requests(), 2);
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_with_a_json_body() {
    let h = Harness::start_with(Extra {
        upstream_url: Some(format!("http://127.0.0.1:{}", common::free_port())),
        ..Default::default()
    })
    .await;
    let r = h.get_with_token("/down", &h.token(TokenVersion::V2)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.expect("JSON body");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn slow_upstream_is_a_504_with_a_json_body_after_upstream_timeout() {
    let h = Harness::start_with(Extra {
        upstream: r#"timeout = "300ms""#.into(),
        ..Default::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    let started = Instant::now();
    let r = h.get_with_token("/delay/2000", &token).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.expect("JSON body");
    assert!(body["error"].is_string(), "{body}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1200),
        "answered after {elapsed:?}"
    );

    // A fast answer within the timeout is unaffected.
    let r = h.get_with_token("/delay/10", &token).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_64_mib_streamed_upload_reaches_the_upstream_complete() {
    let h = Harness::start().await;
    let client: Client<HttpConnector, BoxBody<Bytes, Infallible>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::put(h.url("/upload/large"))
        .header(
            "authorization",
            format!("Bearer {}", h.token(TokenVersion::V2)),
        )
        .body(streamed_body(64 * MIB))
        .expect("request");
    let r = tokio::time::timeout(Duration::from_secs(120), client.request(req))
        .await
        .expect("upload within 120s")
        .expect("upload");
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.expect("body").to_bytes();
    let seen: Value = serde_json::from_slice(&body).expect("echo JSON");
    assert_eq!(seen["body_bytes"], 64 * MIB);
    assert_eq!(seen["body_error"], false);
    assert!(
        seen["headers"].get("content-length").is_none(),
        "sent chunked, so no length"
    );
}

#[tokio::test]
async fn a_64_mib_download_arrives_complete() {
    let h = Harness::start().await;
    let n = 64 * MIB;
    let mut r = h
        .get_with_token(&format!("/bytes/{n}"), &h.token(TokenVersion::V2))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(n));
    let mut received: u64 = 0;
    let mut wrong = 0usize;
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        received += chunk.len() as u64;
        wrong += chunk.iter().filter(|b| **b != b'x').count();
    }
    assert_eq!(received, n);
    assert_eq!(wrong, 0);
}

/// A raw keep-alive upstream: answers each request after `delay`; with `answers_per_conn`,
/// closes a connection unanswered when the request past that number arrives (what a pooled
/// connection looks like when the upstream's keep-alive timeout ends just as the gateway sends
/// on it). Counts the connections open to it and the requests it read.
struct RawUpstream {
    addr: SocketAddr,
    open: std::sync::Arc<AtomicUsize>,
    /// The most connections open at once.
    most: std::sync::Arc<AtomicUsize>,
    /// The most requests being answered at once.
    most_busy: std::sync::Arc<AtomicUsize>,
    seen: std::sync::Arc<AtomicUsize>,
}

async fn raw_upstream(delay: Duration, answers_per_conn: Option<usize>) -> RawUpstream {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let up = RawUpstream {
        addr: listener.local_addr().expect("addr"),
        open: std::sync::Arc::default(),
        most: std::sync::Arc::default(),
        most_busy: std::sync::Arc::default(),
        seen: std::sync::Arc::default(),
    };
    let (open, most, seen) = (
        std::sync::Arc::clone(&up.open),
        std::sync::Arc::clone(&up.most),
        std::sync::Arc::clone(&up.seen),
    );
    let most_busy = std::sync::Arc::clone(&up.most_busy);
    let busy = std::sync::Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (open, seen) = (std::sync::Arc::clone(&open), std::sync::Arc::clone(&seen));
            let (busy, most_busy) = (
                std::sync::Arc::clone(&busy),
                std::sync::Arc::clone(&most_busy),
            );
            most.fetch_max(open.fetch_add(1, SeqCst) + 1, SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                'conn: for answered in 0.. {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break 'conn,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    head.clear();
                    seen.fetch_add(1, SeqCst);
                    if answers_per_conn.is_some_and(|n| answered >= n) {
                        break; // dropped: closed with this request unanswered
                    }
                    most_busy.fetch_max(busy.fetch_add(1, SeqCst) + 1, SeqCst);
                    tokio::time::sleep(delay).await;
                    busy.fetch_sub(1, SeqCst);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(ok).await.is_err() {
                        break;
                    }
                }
                open.fetch_sub(1, SeqCst);
            });
        }
    });
    up
}

/// `n` GETs sent at once, each answered 200.
async fn all_200_at_once(h: &Harness, token: &str, n: usize) {
    let paths: Vec<String> = (0..n).map(|i| format!("/at-once/{i}")).collect();
    let requests = paths.iter().map(|p| h.get_with_token(p, token));
    for r in futures_util::future::join_all(requests).await {
        assert_eq!(r.status(), 200);
    }
}

/// Waits (at most `within`) for `count` to reach `expected`; returns its value then.
async fn settles_at(count: &AtomicUsize, expected: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    while count.load(SeqCst) != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    count.load(SeqCst)
}

/// A burst of concurrent requests opens as many upstream connections as it needs; once it is
/// over, at most `upstream.max_idle_connections` stay open (the rest would otherwise idle for
/// 90 s each, holding their buffers: thousands after a burst of thousands). With one worker
/// exactly that many stay; with two, each keeps its share and the sum stays within it.
#[tokio::test]
async fn idle_upstream_connections_are_capped_after_a_burst() {
    const BURST: usize = 12;
    for workers in [1usize, 2] {
        for max_idle in [3usize, BURST] {
            let RawUpstream { addr, open, .. } =
                raw_upstream(Duration::from_millis(300), None).await;
            let h = Harness::start_with(Extra {
                server: format!("workers = {workers}"),
                upstream_url: Some(format!("http://{addr}")),
                upstream: format!("max_idle_connections = {max_idle}"),
                ..Extra::default()
            })
            .await;
            let token = h.token(TokenVersion::V2);
            all_200_at_once(&h, &token, BURST).await;
            // The burst needed a connection per request; the pools keep `max_idle` of them.
            let what = format!(
                "after a burst of {BURST}, max_idle_connections = {max_idle}, {workers} workers"
            );
            if workers == 1 {
                assert_eq!(
                    settles_at(&open, max_idle, Duration::from_secs(5)).await,
                    max_idle,
                    "{what}"
                );
            } else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let left = open.load(SeqCst);
                assert!((1..=max_idle).contains(&left), "{left} open {what}");
            }
            // And they are used again.
            let before = open.load(SeqCst);
            let r = h.get_with_token("/again", &token).await;
            assert_eq!(r.status(), 200);
            if workers == 1 {
                assert_eq!(open.load(SeqCst), before, "{what}");
            }
        }
    }
}

/// A bodiless GET that meets a pooled connection the upstream has just closed is sent once
/// more on a new connection and succeeds; a POST with a body is never sent twice: 502.
#[tokio::test]
async fn a_get_on_a_connection_the_upstream_closed_is_retried_once_a_post_is_not() {
    let RawUpstream { addr, seen, .. } = raw_upstream(Duration::ZERO, Some(1)).await;
    let h = Harness::to_upstream(format!("http://{addr}"), "").await;
    let token = h.token(TokenVersion::V2);
    let r = h.get_with_token("/first", &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(seen.load(SeqCst), 1);
    // Sent on the pooled connection (closed unanswered), then on a new one (answered).
    let r = h.get_with_token("/second", &token).await;
    assert_eq!(r.status(), 200, "GET on a stale pooled connection");
    assert_eq!(seen.load(SeqCst), 3);
    // The new connection is pooled; a POST on it is closed unanswered and not repeated.
    let r = h
        .client
        .post(h.url("/write"))
        .header("authorization", format!("Bearer {token}"))
        .body("x")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 502, "POST on a stale pooled connection");
    assert_eq!(seen.load(SeqCst), 4, "the POST reached the upstream once");
}

/// A pooled upstream connection is closed by the gateway once it has idled for
/// `upstream.idle_timeout`, before an upstream with a longer keep-alive timeout would.
#[tokio::test]
async fn idle_upstream_connections_are_closed_after_idle_timeout() {
    let RawUpstream { addr, open, .. } = raw_upstream(Duration::ZERO, None).await;
    let h = Harness::to_upstream(format!("http://{addr}"), "idle_timeout = \"1s\"").await;
    let token = h.token(TokenVersion::V2);
    let r = h.get_with_token("/once", &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(open.load(SeqCst), 1, "kept alive after the response");
    assert_eq!(
        settles_at(&open, 0, Duration::from_secs(10)).await,
        0,
        "idle connection still open after 10 s"
    );
}

/// At most `upstream.max_connections` requests are with the upstream at once: a wave of
/// concurrent requests waits for slots instead of opening a connection each.
#[tokio::test]
async fn concurrent_upstream_requests_are_capped_by_max_connections() {
    const WAVE: usize = 8;
    let RawUpstream {
        addr,
        most_busy,
        seen,
        ..
    } = raw_upstream(Duration::from_millis(200), None).await;
    let h = Harness::to_upstream(format!("http://{addr}"), "max_connections = 2").await;
    let token = h.token(TokenVersion::V2);
    all_200_at_once(&h, &token, WAVE).await;
    assert_eq!(seen.load(SeqCst), WAVE);
    assert_eq!(
        most_busy.load(SeqCst),
        2,
        "requests with the upstream at once"
    );
}
