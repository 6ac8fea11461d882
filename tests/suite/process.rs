//! The real binary, `entragate serve --config FILE`, as an operator runs it: exit codes and
//! messages for bad configs, logs free of token text, draining on SIGTERM, and constant memory
//! while streaming large bodies. The issuer and the echo upstream run in the test process.

use crate::common;

use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{Gateway, Proc, TempFile, config_text, free_ports, start_upstreams};
use common::wire::streamed_body;
use common::{AUDIENCE, TENANT, now};
use entragate::dev::{SigningKey, sign_jwt};
use entragate::keys::TokenVersion;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn bad_config_exits_2_and_names_every_bad_key_in_one_run() {
    let config = TempFile::with(
        "bad.toml",
        &format!(
            r#"
[server]
listen = "nope"
admin_listen = "127.0.0.1:0"
colour = "blue"

[upstream]
url = "http://127.0.0.1:8081"
timeout = "soon"

[entra]
tenant_id = "{TENANT}"
authority = "http://127.0.0.1:9"
audiences = []
"#
        ),
    );
    let path = config.0.to_str().expect("UTF-8 temp path");
    let mut p = Proc::spawn(
        &["serve", "--config", path],
        &[("ENTRAGATE_UPSTREAM__URL", "ftp://x")],
    );
    let status = p
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("a bad config ends the process");
    let stderr = p.stderr();
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    for key in [
        "server.listen",
        "server.colour",
        "upstream.timeout",
        "upstream.url",
        "entra.audiences",
    ] {
        assert!(stderr.contains(key), "{key} not named in:\n{stderr}");
    }
    let url_line = stderr
        .lines()
        .find(|l| l.contains("upstream.url"))
        .expect("a line about upstream.url");
    assert!(
        url_line.contains("ENTRAGATE_UPSTREAM__URL"),
        "the env override is named where its value is refused: {url_line}"
    );
    // Only the bad keys are named.
    for good in ["server.admin_listen", "entra.tenant_id", "entra.authority"] {
        assert!(
            !stderr.contains(good),
            "{good} is fine but named:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn missing_config_file_exits_2_naming_the_path() {
    let missing = TempFile::path("does-not-exist.toml");
    let path = missing.0.to_str().expect("UTF-8 temp path");
    let name = missing
        .0
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");

    let mut p = Proc::spawn(&["serve", "--config", path], &[]);
    let status = p
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("a missing config ends the process");
    assert_eq!(status.code(), Some(2), "stderr:\n{}", p.stderr());
    assert!(p.stderr().contains(name), "stderr:\n{}", p.stderr());

    // The same through $ENTRAGATE_CONFIG, the fallback when --config is not given.
    let mut p = Proc::spawn(&["serve"], &[("ENTRAGATE_CONFIG", path)]);
    let status = p
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("a missing config ends the process");
    assert_eq!(status.code(), Some(2), "stderr:\n{}", p.stderr());
    assert!(p.stderr().contains(name), "stderr:\n{}", p.stderr());
}

/// The parts of a compact JWS that must never be logged: the whole, the payload, the signature.
fn secret_parts(token: &str) -> Vec<String> {
    let mut parts = vec![token.to_owned()];
    let segments: Vec<&str> = token.split('.').collect();
    for s in segments.iter().skip(1) {
        if s.len() >= 16 {
            parts.push((*s).to_owned());
        }
    }
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_text_reaches_the_logs_at_debug_level() {
    let (issuer, echo) = start_upstreams().await;
    let mut gw = Gateway::start(
        &issuer,
        &echo.url(),
        r#"log_format = "json""#,
        &[("RUST_LOG", "debug")],
    )
    .await;

    let accepted_v2 = issuer.mint(&issuer.claims(TokenVersion::V2, AUDIENCE));
    let accepted_v1 = issuer.mint(&issuer.claims(TokenVersion::V1, AUDIENCE));
    let mut claims = issuer.claims(TokenVersion::V2, AUDIENCE);
    claims.insert("iat".into(), json!(now() - 7200));
    claims.insert("nbf".into(), json!(now() - 7200));
    claims.insert("exp".into(), json!(now() - 3600));
    let expired = issuer.mint(&claims);
    // Signed by another key under the issuer's kid: the signature does not verify.
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": issuer.signing_key().kid});
    let bad_signature = sign_jwt(
        &SigningKey::generate(),
        &header,
        &Value::Object(issuer.claims(TokenVersion::V2, AUDIENCE)),
    );
    // Malformed: the signature missing, and a header that is not base64url JSON.
    let mut claims = issuer.claims(TokenVersion::V2, AUDIENCE);
    claims.insert("oid".into(), json!("00000000-0000-4000-8000-0000000000b1"));
    let fresh = issuer.mint(&claims);
    let (head_and_payload, _) = fresh.rsplit_once('.').expect("three parts");
    let two_parts = head_and_payload.to_owned();
    let mut claims = issuer.claims(TokenVersion::V2, AUDIENCE);
    claims.insert("oid".into(), json!("00000000-0000-4000-8000-0000000000b2"));
    let fresh = issuer.mint(&claims);
    let (_, payload_and_signature) = fresh.split_once('.').expect("three parts");
    let bad_header = format!("not-a-header.{payload_and_signature}");

    let cases = [
        (&accepted_v2, 200, "none"),
        (&accepted_v1, 200, "none"),
        (&expired, 401, "expired"),
        (&bad_signature, 401, "bad_signature"),
        (&two_parts, 401, "malformed"),
        (&bad_header, 401, "malformed"),
    ];
    let client = common::client();
    for (token, status, _) in &cases {
        let r = client
            .get(gw.url("/ehrbase/rest/openehr/v1/ehr?x=1"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), *status);
    }
    // The same again, with the scheme in another case (a different code path for some).
    let r = client
        .get(gw.url("/again"))
        .header("authorization", format!("bearer {bad_signature}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);

    let status = gw.stop(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status}");
    let stdout = gw.proc.stdout();
    let stderr = gw.proc.stderr();
    let output = format!("{stdout}{stderr}");

    // The logs were really written, as JSON, and carry the reasons instead of the tokens.
    let events: Vec<Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    let access: Vec<&Value> = events
        .iter()
        .filter(|e| e["target"] == "entragate::access")
        .collect();
    assert_eq!(
        access.len(),
        cases.len() + 1,
        "one decision event per request"
    );
    for (_, _, reason) in &cases {
        assert!(
            access.iter().any(|e| e["auth.reason"] == *reason),
            "no decision event with auth.reason={reason}"
        );
    }
    assert!(
        events.iter().any(|e| e["level"] == "DEBUG"),
        "debug level was on"
    );

    for (token, _, reason) in &cases {
        for part in secret_parts(token) {
            assert!(
                !output.contains(&part),
                "text of a {reason} token ({} chars) found in the output",
                part.len()
            );
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_connections_and_exits_0() {
    let (issuer, echo) = start_upstreams().await;
    let grace = Duration::from_secs(5);
    let mut gw = Gateway::start(&issuer, &echo.url(), r#"shutdown_grace = "5s""#, &[]).await;
    let token = issuer.mint(&issuer.claims(TokenVersion::V2, AUDIENCE));

    let client = common::client();
    let url = gw.url("/delay/1500");
    let slow = tokio::spawn(async move {
        let r = client
            .get(url)
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("the in-flight request gets an answer");
        let status = r.status();
        let body: Value = r.json().await.expect("echo JSON");
        (status, body)
    });

    // SIGTERM only once the upstream holds the request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while echo.requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let term_at = Instant::now();
    gw.proc.sigterm();

    // New connections are refused soon, while the slow request is still open.
    loop {
        if tokio::net::TcpStream::connect(gw.addr).await.is_err() {
            break;
        }
        assert!(
            term_at.elapsed() < Duration::from_millis(1000),
            "still accepting connections 1s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !slow.is_finished(),
        "the slow request should still be in flight when the listener closes"
    );

    let (status, body) = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the in-flight request completes")
        .expect("request task");
    assert_eq!(status, 200);
    assert_eq!(body["uri"], "/delay/1500");

    let left = grace.saturating_sub(term_at.elapsed());
    let exit = gw
        .proc
        .wait_exit(left)
        .await
        .unwrap_or_else(|| panic!("still running {grace:?} after SIGTERM"));
    assert!(exit.success(), "exit {exit}\nstderr:\n{}", gw.proc.stderr());
    assert_eq!(echo.requests(), 1);
    // Log lines are written by a thread of their own; what was queued when the gateway
    // exited is written out first: the drained request's line and the last words.
    let stderr = gw.proc.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("all requests finished; bye"),
        "stderr:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("entragate::access") && l.contains("path=/delay/1500 status=200")),
        "no log line for the drained request:\n{stderr}"
    );
}

/// Peak resident set size of `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .expect("read /proc/<pid>/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line");
    kib * 1024
}

async fn upload(gw: &Gateway, token: &str, n: u64) -> Value {
    let client: Client<HttpConnector, BoxBody<Bytes, Infallible>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(gw.url("/upload"))
        .header("authorization", format!("Bearer {token}"))
        .body(streamed_body(n))
        .expect("request");
    let r = tokio::time::timeout(Duration::from_secs(300), client.request(req))
        .await
        .expect("upload within 300s")
        .expect("upload");
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("echo JSON")
}

async fn download(gw: &Gateway, token: &str, n: u64) -> u64 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client");
    let mut r = client
        .get(gw.url(&format!("/bytes/{n}")))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), 200);
    let mut received = 0;
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        received += chunk.len() as u64;
    }
    received
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_64_mib_up_and_256_mib_down_keeps_the_gateways_peak_memory_flat() {
    let (issuer, echo) = start_upstreams().await;
    let mut gw = Gateway::start(&issuer, &echo.url(), "", &[("RUST_LOG", "warn")]).await;
    let token = issuer.mint(&issuer.claims(TokenVersion::V2, AUDIENCE));
    let pid = gw.proc.pid();

    // Warm up: connection pools, buffers and the allocator's arenas exist before measuring.
    assert_eq!(upload(&gw, &token, MIB).await["body_bytes"], MIB);
    assert_eq!(download(&gw, &token, MIB).await, MIB);
    let before = peak_rss(pid);

    let up = 64 * MIB;
    let seen = upload(&gw, &token, up).await;
    assert_eq!(seen["body_bytes"], up);
    assert_eq!(seen["body_error"], false);
    let after_upload = peak_rss(pid);

    let down = 256 * MIB;
    assert_eq!(download(&gw, &token, down).await, down);
    let after = peak_rss(pid);

    eprintln!(
        "gateway VmHWM: {} KiB before, {} KiB after 64 MiB up, {} KiB after 256 MiB down",
        before / 1024,
        after_upload / 1024,
        after / 1024
    );
    let growth = after.saturating_sub(before);
    assert!(
        growth < 40 * MIB,
        "peak RSS grew by {} MiB while streaming (before {} MiB, after {} MiB)",
        growth / MIB,
        before / MIB,
        after / MIB
    );
    let status = gw.stop(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status}");
}

/// "Max open files" of a process: (soft, hard), from /proc.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let mut v = line["Max open files".len()..].split_whitespace();
    let soft = v.next().expect("soft").to_owned();
    let hard = v.next().expect("hard").to_owned();
    (soft, hard)
}

/// Started with a soft limit of 256 open files (a shell default is 1,024), `serve` raises it to
/// the hard limit; that is enough for the configured caps here, so it does not warn.
#[tokio::test]
async fn serve_raises_the_open_files_soft_limit_to_the_hard_limit() {
    let (issuer, echo) = start_upstreams().await;
    let [port, admin_port] = free_ports::<2>();
    let text = config_text(
        ([127, 0, 0, 1], port).into(),
        ([127, 0, 0, 1], admin_port).into(),
        &issuer,
        &echo.url(),
        "max_connections = 100",
        "",
    );
    let config = TempFile::with("config.toml", &text);
    let (_, hard) = open_files_limits(std::process::id());
    let mut p = Proc::spawn_under(
        &["prlimit", &format!("--nofile=256:{hard}"), "--"],
        &["serve", "--config", config.as_str()],
        &[],
        None,
    );
    // Ready means past startup, where the limit is raised (before the listeners bind).
    let client = common::client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(p.exited().is_none(), "exited early: {}", p.stderr());
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{admin_port}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "not ready: {}", p.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let limits = open_files_limits(p.pid());
    assert_eq!(limits, (hard.clone(), hard), "stderr: {}", p.stderr());
    assert!(!p.stderr().contains("open files limit"), "{}", p.stderr());
}
