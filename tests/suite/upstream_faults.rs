//! Upstream faults (issue 6 item 4) that `proxy.rs` does not already cover (it has the refused
//! connection, 502, and slow response headers, 504): an upstream that resets or closes the
//! connection before or in the middle of its response, one that sends huge or too many
//! response headers, and a client that goes away mid-upload or while waiting.
//!
//! Each time the client gets a definite answer (a status, or a broken stream, never a hang and
//! never a silently truncated "complete" body), the upstream sees an aborted request rather
//! than a complete one, the in-flight gauge returns to 0, and the next request succeeds.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use common::metrics::series;
use common::{Extra, Harness};
use entragate::keys::TokenVersion;
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Longest any single exchange may take before it counts as a hang.
const BOUND: Duration = Duration::from_secs(10);
const KIB: usize = 1024;

// ---------------------------------------------------------------------------------------------
// A raw upstream that misbehaves on request, by path
// ---------------------------------------------------------------------------------------------

struct RawUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    /// Serves until the owner is dropped.
    _task: common::Task,
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind(common::loopback()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        let task = common::Task(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let _ = serve_one(stream, &counter).await;
                });
            }
        }));
        Self {
            addr,
            requests,
            _task: task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> u64 {
        self.requests.load(SeqCst)
    }
}

/// Reads one request head, then answers (or fails to) as its path says; one request per
/// connection.
async fn serve_one(mut s: TcpStream, counter: &AtomicU64) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    counter.fetch_add(1, SeqCst);
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
    let body_64k = vec![b'x'; 64 * KIB];
    match path.as_str() {
        "/reset-before-response" => reset(s),
        "/close-before-response" => s.shutdown().await?,
        "/reset-mid-body/length" | "/close-mid-body/length" => {
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1048576\r\nconnection: close\r\n\r\n").await?;
            s.write_all(&body_64k).await?;
            s.flush().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if path.starts_with("/reset") {
                reset(s);
            } else {
                s.shutdown().await?;
            }
        }
        "/reset-mid-body/chunked" | "/close-mid-body/chunked" => {
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n").await?;
            s.write_all(format!("{:x}\r\n", body_64k.len()).as_bytes())
                .await?;
            s.write_all(&body_64k).await?;
            s.write_all(b"\r\n").await?;
            s.flush().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if path.starts_with("/reset") {
                reset(s);
            } else {
                s.shutdown().await?;
            }
        }
        "/huge-header" => {
            let value = "a".repeat(1024 * KIB);
            let r = format!(
                "HTTP/1.1 200 OK\r\nx-huge: {value}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
            s.write_all(r.as_bytes()).await?;
            s.shutdown().await?;
        }
        "/many-headers" => {
            let mut r = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..1000 {
                r.push_str(&format!("x-h-{i}: v\r\n"));
            }
            r.push_str("content-length: 2\r\nconnection: close\r\n\r\nok");
            s.write_all(r.as_bytes()).await?;
            s.shutdown().await?;
        }
        "/big-header" => {
            let value = "b".repeat(16 * KIB);
            let r = format!(
                "HTTP/1.1 200 OK\r\nx-big: {value}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
            s.write_all(r.as_bytes()).await?;
            s.shutdown().await?;
        }
        _ => {
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            )
            .await?;
            s.shutdown().await?;
        }
    }
    Ok(())
}

/// Closes with a TCP RST instead of a FIN.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

// ---------------------------------------------------------------------------------------------
// Observing the gateway
// ---------------------------------------------------------------------------------------------

async fn in_flight(h: &Harness) -> u64 {
    series(
        &h.metrics_text_within(BOUND).await,
        "entragate_requests_in_flight",
    )
}

/// Polls the in-flight gauge until it reads 0; panics with the last value after `limit`.
async fn in_flight_returns_to_zero(h: &Harness, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let n = in_flight(h).await;
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: entragate_requests_in_flight is still {n} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The next ordinary request through the same gateway succeeds.
async fn still_healthy(h: &Harness, token: &str, what: &str) {
    let r = h.get_within(BOUND, "/ok", token).await;
    assert_eq!(r.status(), 200, "{what}: the next request");
    assert_eq!(r.text().await.expect("body"), "ok", "{what}: the next body");
    assert_eq!(h.admin_get_within(BOUND, "/healthz").await.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// 1. The upstream goes away before or during its response
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_reset_or_close_before_the_response_is_502() {
    let up = RawUpstream::start().await;
    let h = Harness::to_upstream(up.url(), "").await;
    let token = h.token(TokenVersion::V2);
    for path in ["/reset-before-response", "/close-before-response"] {
        let r = h.get_within(BOUND, path, &token).await;
        assert_eq!(r.status(), 502, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        assert_eq!(
            r.text().await.expect("body"),
            r#"{"error":"bad_gateway"}"#,
            "{path}"
        );
        still_healthy(&h, &token, path).await;
    }
    let text = h.metrics_text_within(BOUND).await;
    assert_eq!(
        series(
            &text,
            "entragate_requests_total{outcome=\"upstream_error\",reason=\"unreachable\"}"
        ),
        2
    );
    assert!(up.requests() >= 4, "each request reached the upstream");
    in_flight_returns_to_zero(&h, BOUND, "after 502s").await;
}

#[tokio::test]
async fn upstream_reset_or_close_mid_response_breaks_the_clients_stream_without_a_hang() {
    let up = RawUpstream::start().await;
    let h = Harness::to_upstream(up.url(), "").await;
    let token = h.token(TokenVersion::V2);
    for path in [
        "/reset-mid-body/length",
        "/reset-mid-body/chunked",
        "/close-mid-body/length",
        "/close-mid-body/chunked",
    ] {
        let started = Instant::now();
        let r = h.get_within(BOUND, path, &token).await;
        // The headers were already on their way: the status is the upstream's.
        assert_eq!(r.status(), 200, "{path}");
        let body = tokio::time::timeout(BOUND, r.bytes())
            .await
            .unwrap_or_else(|_| panic!("{path}: the client's body hung past {BOUND:?}"));
        match body {
            Err(_) => {}
            Ok(b) => panic!(
                "{path}: the client got a complete-looking body of {} bytes instead of a \
                 broken stream (a truncated response passed off as whole)",
                b.len()
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: took {:?}",
            started.elapsed()
        );
        still_healthy(&h, &token, path).await;
        in_flight_returns_to_zero(&h, BOUND, path).await;
    }
    let text = h.metrics_text_within(BOUND).await;
    assert_eq!(
        series(
            &text,
            "entragate_requests_total{outcome=\"allowed\",reason=\"none\"}"
        ),
        8,
        "four broken and four whole responses, all allowed"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Huge or too many upstream response headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_with_huge_or_too_many_response_headers_is_502() {
    let up = RawUpstream::start().await;
    let h = Harness::to_upstream(up.url(), "").await;
    let token = h.token(TokenVersion::V2);

    // A large but reasonable header passes unchanged.
    let r = h.get_within(BOUND, "/big-header", &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-big"].len(), 16 * KIB);

    for path in ["/huge-header", "/many-headers"] {
        let r = h.get_within(BOUND, path, &token).await;
        assert_eq!(r.status(), 502, "{path}");
        assert!(r.headers().get("x-huge").is_none() && r.headers().get("x-h-0").is_none());
        assert_eq!(
            r.text().await.expect("body"),
            r#"{"error":"bad_gateway"}"#,
            "{path}"
        );
        still_healthy(&h, &token, path).await;
    }
    in_flight_returns_to_zero(&h, BOUND, "after huge headers").await;
}

// ---------------------------------------------------------------------------------------------
// 3. The client goes away
// ---------------------------------------------------------------------------------------------

/// How an upload ended, as the upstream saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The whole body arrived (as far as the framing said).
    Complete(u64),
    /// The body stream failed: the gateway aborted the upstream request.
    Error(u64),
    /// The handler was dropped before the body ended.
    Dropped(u64),
}

#[derive(Default)]
struct SinkState {
    received: AtomicU64,
    endings: Mutex<Vec<Ending>>,
}

/// Records the upload's ending whatever way the handler ends.
struct Recorder {
    state: Arc<SinkState>,
    bytes: u64,
    ending: Option<Ending>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let ending = self.ending.unwrap_or(Ending::Dropped(self.bytes));
        self.state.endings.lock().expect("endings").push(ending);
    }
}

async fn sink(State(s): State<Arc<SinkState>>, req: Request) -> Response {
    let mut rec = Recorder {
        state: Arc::clone(&s),
        bytes: 0,
        ending: None,
    };
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                rec.bytes += c.len() as u64;
                s.received.fetch_add(c.len() as u64, SeqCst);
            }
            Err(_) => {
                rec.ending = Some(Ending::Error(rec.bytes));
                return (axum::http::StatusCode::BAD_REQUEST, "incomplete").into_response();
            }
        }
    }
    rec.ending = Some(Ending::Complete(rec.bytes));
    format!("{}", rec.bytes).into_response()
}

async fn start_sink() -> (SocketAddr, Arc<SinkState>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(common::loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(SinkState::default());
    let router = axum::Router::new()
        .fallback(sink)
        .with_state(Arc::clone(&state));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, state, task)
}

/// Polls until the sink recorded `n` endings; returns them.
async fn endings(state: &SinkState, n: usize, what: &str) -> Vec<Ending> {
    let deadline = Instant::now() + BOUND;
    loop {
        let e = state.endings.lock().expect("endings").clone();
        if e.len() >= n {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the upstream's request has not ended after {BOUND:?} (endings so far: {e:?})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_client_gone_mid_upload_aborts_the_upstream_request_and_leaks_no_slot() {
    let (addr, state, task) = start_sink().await;
    let h = Harness::to_upstream(format!("http://{addr}"), "").await;
    let token = h.token(TokenVersion::V2);
    const DECLARED: u64 = 16 * 1024 * 1024;

    for (n, (framing, abrupt)) in [
        ("content-length", true),
        ("chunked", false),
        ("content-length", false),
        ("chunked", true),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!(
            "{framing} upload, client {}",
            if abrupt { "reset" } else { "closed" }
        );
        let received_before = state.received.load(SeqCst);
        let mut c = TcpStream::connect(h.gw.addr).await.expect("connect");
        let length = if framing == "chunked" {
            "transfer-encoding: chunked".to_owned()
        } else {
            format!("content-length: {DECLARED}")
        };
        let head = format!(
            "PUT /upload HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n{length}\r\n\r\n"
        );
        c.write_all(head.as_bytes()).await.expect("head");
        let piece = vec![b'u'; 64 * KIB];
        for _ in 0..16 {
            if framing == "chunked" {
                c.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await
                    .expect("chunk size");
                c.write_all(&piece).await.expect("chunk");
                c.write_all(b"\r\n").await.expect("chunk end");
            } else {
                c.write_all(&piece).await.expect("body");
            }
        }
        c.flush().await.expect("flush");
        // Wait until the upload is streaming into the upstream, then vanish.
        let deadline = Instant::now() + BOUND;
        while state.received.load(SeqCst) < received_before + 256 * KIB as u64 {
            assert!(
                Instant::now() < deadline,
                "{what}: the upload never reached the upstream"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if abrupt {
            reset(c);
        } else {
            drop(c);
        }

        let ended = endings(&state, n + 1, &what).await;
        match ended[n] {
            Ending::Complete(bytes) => panic!(
                "{what}: the upstream saw a complete request of {bytes} bytes; the client sent \
                 1 MiB of {} and went away",
                if framing == "chunked" {
                    "a chunked body".to_owned()
                } else {
                    format!("{DECLARED} bytes")
                }
            ),
            Ending::Error(bytes) | Ending::Dropped(bytes) => {
                // The client sent 1 MiB of the body before it went away.
                assert!(bytes <= 1024 * 1024, "{what}: {bytes} bytes");
            }
        }
        in_flight_returns_to_zero(&h, BOUND, &what).await;
    }

    // The gateway and its upstream connections are fine: a whole upload goes through.
    let r = tokio::time::timeout(
        BOUND,
        h.client
            .put(h.url("/upload"))
            .bearer_auth(&token)
            .body(vec![b'w'; 300 * KIB])
            .send(),
    )
    .await
    .expect("in time")
    .expect("upload");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), (300 * KIB).to_string());
    let ended = endings(&state, 5, "whole upload").await;
    assert_eq!(ended[4], Ending::Complete(300 * KIB as u64));
    in_flight_returns_to_zero(&h, BOUND, "after a whole upload").await;
    // The four abandoned uploads are the clients' doing (logged 499), not upstream errors.
    let text = h.metrics_text_within(BOUND).await;
    for (series_name, n) in [
        (
            "entragate_requests_total{outcome=\"client_closed\",reason=\"none\"}",
            4,
        ),
        (
            "entragate_requests_total{outcome=\"upstream_error\",reason=\"unreachable\"}",
            0,
        ),
        (
            "entragate_requests_total{outcome=\"allowed\",reason=\"none\"}",
            1,
        ),
    ] {
        assert_eq!(series(&text, series_name), n, "{series_name}");
    }
    task.abort();
}

/// A client sends a request the upstream takes 2 s to answer, and goes away (a FIN, or an
/// RST when `abrupt`) while waiting. Whether the gateway then cancels the request or lets it
/// run to its end, afterwards the load-shedding slot (`max_in_flight = 1`) is free again and
/// the `entragate_requests_in_flight` gauge reads 0.
async fn client_gone_while_waiting(abrupt: bool) {
    let what = if abrupt {
        "client reset while waiting for the upstream"
    } else {
        "client closed while waiting for the upstream"
    };
    let h = Harness::start_with(Extra {
        server: "max_in_flight = 1".into(),
        ..Extra::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    let mut c = TcpStream::connect(h.gw.addr).await.expect("connect");
    let head =
        format!("GET /delay/2000 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n");
    c.write_all(head.as_bytes()).await.expect("head");
    let deadline = Instant::now() + BOUND;
    while h.echo.requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        in_flight(&h).await,
        1,
        "{what}: the waiting request is in flight"
    );
    let gone_at = Instant::now();
    if abrupt {
        reset(c);
    } else {
        drop(c);
    }

    // The slot is free again within the upstream's 2 s (+ margin): a request is served.
    let deadline = Instant::now() + Duration::from_secs(6);
    let served_after = loop {
        let r = h.get_within(BOUND, "/after", &token).await;
        match r.status().as_u16() {
            200 => break gone_at.elapsed(),
            503 => assert!(
                Instant::now() < deadline,
                "{what}: still shed {:?} after the client left",
                gone_at.elapsed()
            ),
            other => panic!("{what}: next request got {other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // By now the upstream has answered (or the request was cancelled) either way. (A next
    // request served well within 2 s means the waiting request was cancelled: with
    // max_in_flight = 1 its slot was free before the upstream answered.)
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(gone_at.elapsed())).await;
    let what = format!(
        "{what} (the next request was served {served_after:?} after the client left, \
         with max_in_flight = 1)"
    );
    in_flight_returns_to_zero(&h, Duration::from_secs(3), &what).await;
    // The abandoned request is counted (and logged, status 499) once, as `client_closed`;
    // the one served after it as allowed.
    let text = h.metrics_text_within(BOUND).await;
    assert_eq!(
        series(
            &text,
            "entragate_requests_total{outcome=\"client_closed\",reason=\"none\"}"
        ),
        1,
        "{what}"
    );
    assert!(
        series(
            &text,
            "entragate_requests_total{outcome=\"allowed\",reason=\"none\"}"
        ) >= 1,
        "{what}"
    );
}

#[tokio::test]
async fn a_client_closing_while_waiting_for_a_slow_upstream_leaks_no_slot() {
    client_gone_while_waiting(false).await;
}

#[tokio::test]
async fn a_client_resetting_while_waiting_for_a_slow_upstream_leaks_no_slot() {
    client_gone_while_waiting(true).await;
}
