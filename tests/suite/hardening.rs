//! Hostile HTTP: body and header limits, slow clients, overload, smuggling shapes and odd
//! request targets. Raw TCP where a client library would tidy the request up.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Extra, Harness};
use entragate::keys::TokenVersion;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Writes `raw` and reads until the peer closes (or `wait` passes); returns what came back.
async fn exchange(addr: SocketAddr, raw: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

async fn with_routes(extra: Extra, routes: &str) -> Harness {
    Harness::start_with(Extra {
        tail: routes.to_owned(),
        ..extra
    })
    .await
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_declared_or_streamed() {
    let h = with_routes(
        Extra {
            server: "max_body = \"1KiB\"".into(),
            ..Default::default()
        },
        "[[routes]]\npath = \"/uploads\"\nmax_body = \"1MiB\"\n",
    )
    .await;
    let token = h.token(TokenVersion::V2);
    let auth = format!("Bearer {token}");

    // Declared Content-Length over the limit: refused before the upstream is asked.
    let r = h
        .client
        .post(h.url("/small"))
        .header("authorization", &auth)
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
    assert_eq!(h.echo.requests(), 0);

    // Under the limit: passes.
    let r = h
        .client
        .post(h.url("/small"))
        .header("authorization", &auth)
        .body(vec![b'x'; 1000])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);

    // Chunked, no Content-Length: cut off at the limit while streaming.
    let head = format!(
        "POST /small HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let mut raw = head.into_bytes();
    for _ in 0..4 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b'y'; 0x400]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = exchange(h.gw.addr, &raw, Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), 413, "{answer}");

    // The route's own, larger limit applies there.
    let r = h
        .client
        .post(h.url("/uploads/x"))
        .header("authorization", &auth)
        .body(vec![b'x'; 512 * 1024])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.expect("json");
    assert_eq!(seen["body_bytes"], 512 * 1024);
}

#[tokio::test]
async fn a_token_longer_than_the_header_limit_is_431_and_the_gateway_carries_on() {
    let h = Harness::start_with(Extra {
        server: "max_header_bytes = 16384".into(),
        ..Default::default()
    })
    .await;
    let huge = "a".repeat(32 * 1024);
    let raw = format!("GET / HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {huge}\r\n\r\n");
    let answer = exchange(h.gw.addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert!(!answer.contains(&huge[..64]), "the token was echoed");
    let token = h.token(TokenVersion::V1);
    assert_eq!(h.get_with_token("/ok", &token).await.status(), 200);
}

#[tokio::test]
async fn a_slow_client_loses_its_connection_after_the_header_read_timeout() {
    let h = Harness::start_with(Extra {
        server: "header_read_timeout = \"500ms\"".into(),
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(h.gw.addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 5s");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(h.echo.requests(), 0);
}

#[tokio::test]
async fn past_max_in_flight_requests_are_shed_with_503_and_retry_after() {
    let h = Harness::start_with(Extra {
        server: "max_in_flight = 1".into(),
        ..Default::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    let slow = {
        let client = h.client.clone();
        let url = h.url("/delay/1500");
        let token = token.clone();
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
    };
    // Wait until the slow request holds the only slot.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.echo.requests() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = h.get_with_token("/x", &token).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let slow = slow.await.expect("task").expect("slow request");
    assert_eq!(slow.status(), 200);
    assert_eq!(h.get_with_token("/x", &token).await.status(), 200);
}

#[tokio::test]
async fn past_max_connections_new_connections_wait_for_a_free_slot() {
    let h = Harness::start_with(Extra {
        server: "max_connections = 1".into(),
        ..Default::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    // Hold the only slot with an idle keep-alive connection.
    let mut first = TcpStream::connect(h.gw.addr).await.expect("connect");
    let req = format!("GET /one HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n");
    first.write_all(req.as_bytes()).await.expect("write");
    let mut buf = [0u8; 4096];
    let n = first.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let second = {
        let token = token.clone();
        let addr = h.gw.addr;
        tokio::spawn(async move {
            let raw = format!(
                "GET /two HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
            );
            exchange(addr, raw.as_bytes(), Duration::from_secs(10)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served past the cap"
    );
    drop(first);
    let answer = second.await.expect("task");
    assert_eq!(status_of(&answer), 200, "{answer}");
}

/// CL + TE is framed by Transfer-Encoding (RFC 9112 §6.3), forwarded chunked without the
/// Content-Length, and the client connection is closed after the answer, so the bytes "hidden"
/// after the chunked body are never read as a request; malformed framings are 400. Either way the upstream
/// never sees a request it was not meant to, and its pooled connection stays in step.
#[tokio::test]
async fn smuggling_shapes_never_reach_or_desync_the_upstream() {
    let h = Harness::start().await;
    let token = h.token(TokenVersion::V2);
    let auth = format!("authorization: Bearer {token}\r\n");
    let smuggled = "GET /smuggled HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

    let cl_te = format!(
        "POST /a HTTP/1.1\r\nhost: x\r\n{auth}content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let answer = exchange(h.gw.addr, cl_te.as_bytes(), Duration::from_secs(5)).await;
    let statuses: Vec<u16> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| status_of(&answer[i..]))
        .collect();
    assert_eq!(statuses, [200], "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        !answer.contains("\"content-length\""),
        "CL forwarded next to TE: {answer}"
    );
    assert!(answer.contains("\"uri\":\"/a\""), "{answer}");
    assert!(
        answer.contains("\"body_bytes\":0"),
        "the hidden request went upstream as body: {answer}"
    );
    assert_eq!(h.echo.requests(), 1);

    for raw in [
        // An obfuscated Transfer-Encoding next to a Content-Length.
        format!(
            "POST /a HTTP/1.1\r\nhost: x\r\n{auth}transfer-encoding: xchunked\r\ncontent-length: 3\r\n\r\nabc"
        ),
        // Two different Content-Length values.
        format!(
            "POST /a HTTP/1.1\r\nhost: x\r\n{auth}content-length: 5\r\ncontent-length: 40\r\n\r\nhello{smuggled}"
        ),
    ] {
        let answer = exchange(h.gw.addr, raw.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), 400, "{raw:?} -> {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }
    assert_eq!(
        h.echo.requests(),
        1,
        "a malformed request reached the upstream"
    );

    // A bare LF is read as a line end: one ordinary request. After all of the above, the
    // pooled upstream connection still answers each request with its own response.
    let raw = format!(
        "GET /bare HTTP/1.1\r\nhost: x\r\n{auth}x-a: 1\nx-b: 2\r\nconnection: close\r\n\r\n"
    );
    let answer = exchange(h.gw.addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    for path in ["/probe1", "/probe2"] {
        let seen: serde_json::Value = h
            .get_with_token(path, &token)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(seen["uri"], path);
    }
    assert_eq!(h.echo.requests(), 4);
}

#[tokio::test]
async fn connect_and_absolute_form_targets_are_handled_safely() {
    let h = Harness::start().await;
    let token = h.token(TokenVersion::V2);
    // CONNECT is never a tunnel, with or without a token.
    for auth in [String::new(), format!("authorization: Bearer {token}\r\n")] {
        let raw = format!("CONNECT 127.0.0.1:22 HTTP/1.1\r\nhost: 127.0.0.1:22\r\n{auth}\r\n");
        let answer = exchange(h.gw.addr, raw.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), 405, "{answer}");
    }
    assert_eq!(h.echo.requests(), 0);
    // Absolute form: only the path and query go upstream, to the configured upstream.
    let raw = format!(
        "GET http://evil.example/abs?x=1 HTTP/1.1\r\nhost: evil.example\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    let answer = exchange(h.gw.addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let body = &answer[answer.find("\r\n\r\n").expect("head") + 4..];
    let start = body.find('{').expect("json body");
    let seen: serde_json::Value =
        serde_json::from_str(body[start..].trim_end_matches(|c: char| c != '}')).expect("json");
    assert_eq!(seen["uri"], "/abs?x=1");
    assert_eq!(seen["headers"]["x-forwarded-host"], "evil.example");
}

#[tokio::test]
async fn a_token_in_the_header_and_the_query_is_invalid_request() {
    let h = Harness::start().await;
    let token = h.token(TokenVersion::V2);
    let r = h
        .get_with_token(&format!("/a?x=1&access_token={token}"), &token)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":"invalid_request"}"#
    );
    // Only in the query: no credential at all.
    let r = h
        .client
        .get(h.url(&format!("/a?access_token={token}")))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(h.echo.requests(), 0);
}

#[tokio::test]
async fn a_silent_connection_loses_its_slot_after_the_header_read_timeout() {
    let h = Harness::start_with(Extra {
        server: "header_read_timeout = \"500ms\"\nmax_connections = 1".into(),
        ..Default::default()
    })
    .await;
    let mut silent = TcpStream::connect(h.gw.addr).await.expect("connect");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a silent connection kept its slot");
    let token = h.token(TokenVersion::V1);
    assert_eq!(h.get_with_token("/after", &token).await.status(), 200);
}

#[tokio::test]
async fn shed_requests_are_counted() {
    let h = Harness::start_with(Extra {
        server: "max_in_flight = 1".into(),
        ..Default::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    let slow = {
        let client = h.client.clone();
        let url = h.url("/delay/1000");
        let token = token.clone();
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.echo.requests() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.get_with_token("/x", &token).await.status(), 503);
    let _ = slow.await;
    let metrics = h.metrics_text().await;
    assert!(
        metrics.contains("entragate_requests_total{outcome=\"shed\",reason=\"overloaded\"} 1"),
        "{metrics}"
    );
}

/// The listener's `listen(2)` backlog is `server.listen_backlog`, not the 128 of
/// `TcpListener::bind`, so a burst of new connections waits in the kernel instead of being
/// dropped. Read back from the kernel with `ss` (iproute2): the Send-Q of a listening socket.
#[tokio::test]
async fn the_listen_backlog_is_the_configured_one() {
    let h = Harness::start_with(Extra {
        server: "listen_backlog = 777".to_owned(),
        ..Extra::default()
    })
    .await;
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", h.gw.addr.port())])
        .output()
        .expect("`ss` runs: install iproute2, or run `bash scripts/test.sh`, which does");
    let out = String::from_utf8_lossy(&out.stdout);
    // State Recv-Q Send-Q Local Peer
    let backlog: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(backlog, ["777"], "ss said {out:?}");
}
