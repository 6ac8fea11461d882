//! The access log as the real binary writes it: every line there after a graceful stop,
//! in the shipped format, and a defined answer when stderr blocks (a full pipe nobody reads)
//! or is closed: requests are still answered, lost lines are counted in `/metrics`
//! (`entragate_log_lines_dropped_total`), and SIGTERM still ends the process.

use crate::common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{BIN, Gateway, TempFile, config_text, free_ports, start_upstreams};
use common::{AUDIENCE, TENANT};
use entragate::keys::TokenVersion;
use serde_json::Value;

/// `entragate serve` whose stderr is the write end of a pipe; the test holds the read end
/// (`None`: closed at once).
struct PipedGateway {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    _config: TempFile,
    _stderr: Option<std::process::ChildStderr>,
}

impl Drop for PipedGateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn piped_gateway(
    upstream: &str,
    issuer: &entragate::dev::DevIssuer,
    keep_reader: bool,
) -> PipedGateway {
    let [port, admin_port] = free_ports::<2>();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let config = TempFile::with(
        "config.toml",
        &config_text(
            addr,
            admin,
            issuer,
            upstream,
            r#"shutdown_grace = "2s""#,
            "",
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.as_str()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn entragate");
    let stderr = child.stderr.take();
    let stderr = if keep_reader { stderr } else { None };
    let client = common::client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("entragate exited early with {status}");
        }
        if let Ok(r) = client.get(format!("http://{admin}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "not ready within 20s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    PipedGateway {
        child,
        addr,
        admin,
        _config: config,
        _stderr: stderr,
    }
}

async fn dropped_lines(admin: SocketAddr) -> u64 {
    let text = common::client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("entragate_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no entragate_log_lines_dropped_total in:\n{text}"))
        .trim()
        .parse()
        .expect("a count")
}

/// SIGTERM, then the process must end within `within` (a blocked stderr must not hold it).
async fn stops_within(child: &mut Child, within: Duration) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still running {within:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_line_is_written_by_a_graceful_stop_in_text_and_json() {
    let (issuer, echo) = start_upstreams().await;
    let token = issuer.mint(&issuer.claims(TokenVersion::V2, AUDIENCE));
    for json in [false, true] {
        let extra = if json { r#"log_format = "json""# } else { "" };
        let mut gw = Gateway::start(&issuer, &echo.url(), extra, &[]).await;
        let client = common::client();
        // More than one 64 KiB batch and less: the tail stays in the threads' buffers until
        // the stop.
        let n = 700;
        for i in 0..n {
            let mut req = client.get(gw.url(&format!("/line/{i}/\u{e9}\"q\"")));
            if i % 2 == 0 {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let status = req.send().await.expect("request").status();
            assert_eq!(status, if i % 2 == 0 { 200 } else { 401 });
        }
        let status = gw.stop(Duration::from_secs(15)).await;
        assert!(status.success(), "exit {status}");
        let stderr = gw.proc.stderr();
        let access: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("entragate::access"))
            .collect();
        assert_eq!(
            access.len(),
            n,
            "one access line per request, none lost:\n{stderr}"
        );
        // Each request's line exactly once (lines of different worker threads may come in
        // another order than the requests).
        for i in 0..n {
            let path = format!("/line/{i}/");
            let found = access.iter().filter(|l| l.contains(&path)).count();
            assert_eq!(found, 1, "{found} lines for request {i}");
        }
        for line in &access {
            let i: usize = line
                .split("/line/")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no request number in {line}"));
            if json {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                assert_eq!(v["target"], "entragate::access");
                assert_eq!(v["message"], "request");
                assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
                assert!(v["path"].as_str().is_some(), "{line}");
                assert_eq!(
                    v["status"],
                    if i.is_multiple_of(2) { 200 } else { 401 },
                    "{line}"
                );
                assert_eq!(
                    v["jwt.tid"].as_str(),
                    i.is_multiple_of(2).then_some(TENANT),
                    "{line}"
                );
            } else {
                let (stamp, rest) = line.split_once(' ').unwrap_or_default();
                assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");
                assert!(
                    rest.starts_with(
                        " INFO entragate::access: request via=\"proxy\" api=\"default\" method=GET path="
                    ),
                    "{line}"
                );
                assert!(line.contains(" status="), "{line}");
                assert!(line.contains(" elapsed_us="), "{line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_holds_up_no_request_and_the_lost_lines_are_counted() {
    let (issuer, echo) = start_upstreams().await;
    let mut gw = piped_gateway(&echo.url(), &issuer, true).await;
    let client = common::client();
    // 16 KiB paths: 16 MiB of queued lines (the limit) in about a thousand requests.
    let long = "p".repeat(16 * 1024);
    let url = format!("http://{}/{long}", gw.addr);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut answered = 0;
    for _ in 0..1500 {
        let status = tokio::time::timeout(Duration::from_secs(10), client.get(&url).send())
            .await
            .expect("answered while stderr blocks")
            .expect("request")
            .status();
        assert_eq!(status, 401);
        answered += 1;
        assert!(
            Instant::now() < deadline,
            "only {answered} answered in 120s"
        );
    }
    // The writer takes the threads' buffers every 100 ms; wait for it to give up on them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut dropped = 0;
    while dropped == 0 {
        dropped = dropped_lines(gw.admin).await;
        assert!(Instant::now() < deadline, "no dropped line counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dropped < 1500,
        "{dropped} lines dropped: the queue held none?"
    );
    stops_within(&mut gw.child, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_holds_up_no_request_and_the_lost_lines_are_counted() {
    let (issuer, echo) = start_upstreams().await;
    let mut gw = piped_gateway(&echo.url(), &issuer, false).await;
    let client = common::client();
    let url = format!("http://{}/closed", gw.addr);
    for _ in 0..50 {
        let status = tokio::time::timeout(Duration::from_secs(10), client.get(&url).send())
            .await
            .expect("answered with stderr closed")
            .expect("request")
            .status();
        assert_eq!(status, 401);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dropped = dropped_lines(gw.admin).await;
        if dropped >= 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {dropped} of 50 lost lines counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stops_within(&mut gw.child, Duration::from_secs(20)).await;
}
