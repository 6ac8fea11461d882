//! Live reload of the real binary with `kill -HUP`: a valid config replaces audiences, routes,
//! issuers and upstream in place, over connections that stay open and with in-flight requests
//! finishing; an invalid one is refused with a log line naming every problem while the old
//! config keeps serving; a new listener address is logged as needing a restart. Forward-auth
//! and the Envoy `ext_authz` listener read the reloaded config exactly as the proxy does.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ext_authz;
use common::process::{Gateway, start_upstreams};
use common::{AUDIENCE, TENANT, loopback};
use entragate::dev::{DevIssuer, EchoUpstream};
use entragate::keys::TokenVersion;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;

const NEW_AUDIENCE: &str = "https://new-api.contoso.example";

/// One HTTP/1.1 connection, kept open across requests.
struct Connection {
    sender: http1::SendRequest<Empty<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    async fn get(&mut self, path: &str, token: &str) -> (u16, Bytes) {
        self.sender
            .ready()
            .await
            .expect("the connection is still open");
        let req = http::Request::get(path)
            .header("host", "gateway.test")
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .expect("request");
        let r = self.sender.send_request(req).await.expect("response");
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }
}

/// Rewrites the gateway's config, sends SIGHUP, and waits for the log line that ends the
/// reload (`reloaded` or `refused`); returns stderr.
async fn reload(gw: &Gateway, text: &str, outcome: &str) -> String {
    let before = gw.proc.stderr().matches(outcome).count();
    gw.config.write(text);
    gw.proc.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let err = gw.proc.stderr();
        if err.matches(outcome).count() > before {
            return err;
        }
        assert!(
            Instant::now() < deadline,
            "no {outcome:?} after SIGHUP:\n{err}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `audiences` line of the harness's config.
fn audiences_line() -> String {
    format!(r#"audiences = ["{AUDIENCE}", "{}"]"#, common::API_CLIENT_ID)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_audiences_routes_and_upstream_on_open_connections() {
    let (issuer, echo) = start_upstreams().await;
    let second = EchoUpstream::start(loopback())
        .await
        .expect("second upstream");
    let mut gw = Gateway::start(&issuer, &echo.url(), "", &[]).await;
    let pid = gw.proc.pid();
    let token = issuer.mint(&issuer.claims(TokenVersion::V2, AUDIENCE));
    let new_aud = issuer.mint(&issuer.claims(TokenVersion::V1, NEW_AUDIENCE));

    let mut conn = Connection::open(gw.addr).await;
    assert_eq!(conn.get("/a", &token).await.0, 200);
    assert_eq!(conn.get("/a", &new_aud).await.0, 401, "not an audience yet");

    // A slow request is under way across the reload.
    let slow = {
        let url = gw.url("/delay/1500");
        let token = token.clone();
        tokio::spawn(async move {
            let r = common::client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("the in-flight request is answered");
            r.status().as_u16()
        })
    };
    while echo.requests() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let text = gw
        .config
        .read()
        .replace(
            &audiences_line(),
            &format!(r#"audiences = ["{AUDIENCE}", "{NEW_AUDIENCE}"]"#),
        )
        .replace(&echo.url(), &second.url())
        + "\n[[routes]]\npath = \"/admin\"\nroles = [\"Admin\"]\n";
    let log = reload(&gw, &text, "configuration reloaded").await;
    assert!(!log.contains("refused"), "{log}");

    // Same connection, new rules: the new audience passes, the new route forbids, and
    // requests now reach the new upstream.
    let (status, body) = conn.get("/b", &new_aud).await;
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_slice(&body).expect("echo JSON");
    assert_eq!(seen["uri"], "/b");
    assert_eq!(second.requests(), 1, "the new upstream answered");
    assert_eq!(conn.get("/admin/x", &token).await.0, 403);

    assert_eq!(
        slow.await.expect("task"),
        200,
        "the in-flight request finished"
    );
    assert_eq!(
        echo.requests(),
        2,
        "the old upstream got only what was sent before"
    );
    assert_eq!(gw.proc.pid(), pid);
    let status = gw.stop(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", gw.proc.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_refused_by_key_and_the_old_one_keeps_serving() {
    let (issuer, echo) = start_upstreams().await;
    let mut gw = Gateway::start(&issuer, &echo.url(), "", &[]).await;
    let token = issuer.mint(&issuer.claims(TokenVersion::V1, AUDIENCE));
    let mut conn = Connection::open(gw.addr).await;
    assert_eq!(conn.get("/a", &token).await.0, 200);

    let good = gw.config.read();
    let bad = good.replace(&audiences_line(), "audiences = []\ncolour = \"blue\"");
    assert_ne!(bad, good);
    let log = reload(&gw, &bad, "configuration reload refused").await;
    let line = log
        .lines()
        .find(|l| l.contains("configuration reload refused"))
        .expect("the refusal line");
    assert!(
        line.contains("entra.audiences") && line.contains("entra.colour"),
        "every problem named by key: {line}"
    );
    assert!(
        line.contains("running configuration stays in force"),
        "{line}"
    );

    assert_eq!(conn.get("/b", &token).await.0, 200, "the old config serves");
    assert!(gw.proc.exited().is_none());

    // Broken TOML is refused the same way.
    let log = reload(&gw, "[entra\n", "configuration reload refused").await;
    assert!(log.contains("not valid TOML"), "{log}");
    assert_eq!(conn.get("/c", &token).await.0, 200);

    // Fixed again: accepted.
    reload(&gw, &good, "configuration reloaded").await;
    assert_eq!(conn.get("/d", &token).await.0, 200);
    gw.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_is_trusted_after_reload_and_a_new_listener_needs_a_restart() {
    let (issuer, echo) = start_upstreams().await;
    let other_tenant = "0f0e0d0c-0b0a-4909-8807-060504030201";
    let other = DevIssuer::start(loopback(), other_tenant)
        .await
        .expect("second issuer");
    let mut gw = Gateway::start(&issuer, &echo.url(), "", &[]).await;
    let mut conn = Connection::open(gw.addr).await;
    let old_token = issuer.mint(&issuer.claims(TokenVersion::V2, AUDIENCE));
    let new_token = other.mint(&other.claims(TokenVersion::V2, AUDIENCE));
    assert_eq!(conn.get("/a", &old_token).await.0, 200);
    assert_eq!(conn.get("/a", &new_token).await.0, 401);

    // Another tenant and authority, and a listener address that cannot change in place.
    let [port] = common::process::free_ports::<1>();
    let text = gw
        .config
        .read()
        .replace(issuer.authority(), other.authority())
        .replace(TENANT, other_tenant)
        .replace(
            &format!("listen = \"{}\"", gw.addr),
            &format!("listen = \"127.0.0.1:{port}\""),
        );
    let log = reload(&gw, &text, "configuration reloaded").await;
    assert!(
        log.contains(&format!(
            "server.listen changed: it takes effect only after a restart; still using {}",
            gw.addr
        )),
        "{log}"
    );

    // The new issuer's keys were fetched before the swap: no 503 in between.
    assert_eq!(conn.get("/b", &new_token).await.0, 200);
    assert_eq!(conn.get("/b", &old_token).await.0, 401);
    let ready = common::client()
        .get(format!("http://{}/readyz", gw.admin))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nothing listens on the new address before a restart"
    );

    // Metrics keep counting across the reload.
    let metrics = common::client()
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let allowed = metrics
        .lines()
        .find(|l| l.starts_with("entragate_requests_total{outcome=\"allowed\""))
        .expect("allowed series");
    assert!(allowed.ends_with(" 2"), "{allowed}");
    gw.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reload_poll_a_changed_file_is_reloaded_without_a_signal() {
    let (issuer, echo) = start_upstreams().await;
    let mut gw = Gateway::start(&issuer, &echo.url(), r#"reload_poll = "200ms""#, &[]).await;
    let new_aud = issuer.mint(&issuer.claims(TokenVersion::V2, NEW_AUDIENCE));
    let mut conn = Connection::open(gw.addr).await;
    assert_eq!(conn.get("/a", &new_aud).await.0, 401);

    let text = gw.config.read().replace(
        &audiences_line(),
        &format!(r#"audiences = ["{AUDIENCE}", "{NEW_AUDIENCE}"]"#),
    );
    gw.config.write(&text);
    let log = gw.proc.wait_for_stderr("configuration reloaded").await;
    assert!(log.contains("config file changed"), "{log}");
    assert_eq!(conn.get("/b", &new_aud).await.0, 200);

    // An invalid edit is refused once and not retried until the file changes again.
    gw.config
        .write(&text.replace("[upstream]", "[upstream]\nspeed = 1"));
    let log = gw
        .proc
        .wait_for_stderr("configuration reload refused")
        .await;
    assert!(log.contains("upstream.speed"), "{log}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        gw.proc
            .stderr()
            .matches("configuration reload refused")
            .count(),
        1
    );
    assert_eq!(conn.get("/c", &new_aud).await.0, 200);
    gw.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_and_ext_authz_see_the_reloaded_audiences_and_routes() {
    let (issuer, echo) = start_upstreams().await;
    let [grpc_port] = common::process::free_ports::<1>();
    let grpc = SocketAddr::from(([127, 0, 0, 1], grpc_port));
    let server = format!(
        "mode = \"forward-auth\"\ntrusted_proxies = [\"127.0.0.1\"]\next_authz_listen = \"{grpc}\""
    );
    let mut gw = Gateway::start(&issuer, &echo.url(), &server, &[]).await;
    let token = format!(
        "Bearer {}",
        issuer.mint(&issuer.claims(TokenVersion::V2, AUDIENCE))
    );
    let new_aud = format!(
        "Bearer {}",
        issuer.mint(&issuer.claims(TokenVersion::V1, NEW_AUDIENCE))
    );
    // The ingress asks about the original request named in its headers.
    let forward_auth = |bearer: &str, uri: &str| {
        let req = common::client()
            .get(gw.url("/auth"))
            .header("authorization", bearer)
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", uri);
        async move { req.send().await.expect("forward-auth").status().as_u16() }
    };
    let ext_authz = |bearer: &str, path: &str| {
        let req = ext_authz::request("GET", path, &[("authorization", bearer)]);
        async move { ext_authz::status(&ext_authz::check(grpc, req).await) }
    };

    assert_eq!(forward_auth(&token, "/admin/x").await, 200);
    assert_eq!(
        forward_auth(&new_aud, "/a").await,
        401,
        "not an audience yet"
    );
    assert_eq!(ext_authz(&token, "/admin/x").await, 200);
    assert_eq!(ext_authz(&new_aud, "/a").await, 401);

    // A new audience and a new route; the mode cannot change in place.
    let text = gw
        .config
        .read()
        .replace(
            &audiences_line(),
            &format!(r#"audiences = ["{AUDIENCE}", "{NEW_AUDIENCE}"]"#),
        )
        .replace("mode = \"forward-auth\"", "mode = \"proxy\"")
        + "\n[[routes]]\npath = \"/admin\"\nroles = [\"Admin\"]\n";
    let log = reload(&gw, &text, "configuration reloaded").await;
    assert!(
        log.contains(
            "server.mode changed: it takes effect only after a restart; still using forward-auth"
        ),
        "{log}"
    );

    assert_eq!(forward_auth(&new_aud, "/a").await, 200);
    assert_eq!(forward_auth(&token, "/admin/x").await, 403);
    assert_eq!(ext_authz(&new_aud, "/a").await, 200);
    assert_eq!(ext_authz(&token, "/admin/x").await, 403);
    assert_eq!(
        echo.requests(),
        0,
        "still forward-auth: nothing is forwarded"
    );
    gw.stop(Duration::from_secs(10)).await;
}
