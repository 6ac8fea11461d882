//! WebSockets through the proxy door, with a real client and server (tokio-tungstenite): echo
//! both ways, a large fragmented message with a ping between its fragments, a refused
//! handshake (401 with the challenge, never a 101), the tunnel closed with 1008 "token
//! expired" when its token expires (the client and the upstream both see the Close), the
//! idle timeout, `upstream.websocket = false`, and an upgrade to an h2c upstream.

use crate::common;

use std::time::Duration;

use common::tokens::with;
use common::{Extra, Harness, eventually, loopback};
use entragate::keys::TokenVersion;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest any step may take before it counts as a hang.
const BOUND: Duration = Duration::from_secs(20);

type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// What the echo server saw.
#[derive(Debug)]
enum Seen {
    /// A handshake, with its request headers (lower-case names).
    Opened(Vec<(String, String)>),
    /// The client's (here: the gateway's) Close.
    Closed(Option<CloseFrame>),
}

/// A tokio-tungstenite echo server on loopback: text and binary messages go back as they
/// came; what it sees is reported.
struct WsUpstream {
    url: String,
    seen: mpsc::UnboundedReceiver<Seen>,
    _task: common::Task,
}

impl WsUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind(loopback()).await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let headers_tx = tx.clone();
                    #[allow(clippy::result_large_err)] // tungstenite's callback type
                    let callback = move |req: &Request, resp: Response| {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_owned(),
                                    v.to_str().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect();
                        let _ = headers_tx.send(Seen::Opened(headers));
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
                        if let Message::Close(frame) = msg {
                            let _ = tx.send(Seen::Closed(frame));
                        } else if echo && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            url,
            seen,
            _task: common::Task(task),
        }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(BOUND, self.seen.recv())
            .await
            .expect("the upstream sees something")
            .expect("the server runs")
    }
}

/// The gateway in front of `upstream` with extra `[upstream]` lines.
async fn gateway(upstream: &WsUpstream, lines: &str) -> Harness {
    Harness::to_upstream(upstream.url.clone(), lines).await
}

/// Opens a WebSocket to the gateway's `path` with `token` (none: no `Authorization`).
async fn open(h: &Harness, path: &str, token: Option<&str>) -> Result<Client, WsError> {
    let mut req = format!("ws://{}{path}", h.gw.addr)
        .into_client_request()
        .expect("request");
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(req))
        .await
        .expect("the handshake ends")
        .map(|(ws, _)| ws)
}

/// The next message, within [`BOUND`].
async fn next(ws: &mut Client) -> Message {
    tokio::time::timeout(BOUND, ws.next())
        .await
        .expect("a message")
        .expect("the stream goes on")
        .expect("a valid message")
}

/// The next data message, skipping pings and pongs.
async fn next_data(ws: &mut Client) -> Message {
    loop {
        match next(ws).await {
            Message::Ping(_) | Message::Pong(_) => {}
            m => return m,
        }
    }
}

fn metric(text: &str, series: &str) -> u64 {
    common::metrics::series(text, series)
}

#[tokio::test]
async fn messages_echo_both_ways_including_a_large_fragmented_one() {
    let mut upstream = WsUpstream::start().await;
    let h = gateway(&upstream, "").await;
    let token = h.token(TokenVersion::V2);
    let mut ws = open(&h, "/ws/echo", Some(&token)).await.expect("opened");
    let Seen::Opened(headers) = upstream.next().await else {
        panic!("no handshake at the upstream");
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let oid = h.claims(TokenVersion::V2)["oid"]
        .as_str()
        .expect("oid")
        .to_owned();
    assert_eq!(header("x-auth-subject"), Some(oid.as_str()), "{headers:?}");
    assert_eq!(header("upgrade"), Some("websocket"), "{headers:?}");

    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(next_data(&mut ws).await, Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    assert_eq!(
        next_data(&mut ws).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );

    // 3 MiB in three fragments, a ping between the first two.
    let part = |i: u8| Bytes::from(vec![i; 1 << 20]);
    ws.send(Message::Frame(Frame::message(
        part(1),
        OpCode::Data(Data::Binary),
        false,
    )))
    .await
    .expect("fragment");
    ws.send(Message::Ping(Bytes::from_static(b"between")))
        .await
        .expect("ping");
    ws.send(Message::Frame(Frame::message(
        part(2),
        OpCode::Data(Data::Continue),
        false,
    )))
    .await
    .expect("fragment");
    ws.send(Message::Frame(Frame::message(
        part(3),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .expect("fragment");
    let Message::Binary(echoed) = next_data(&mut ws).await else {
        panic!("not the binary echo");
    };
    assert_eq!(echoed.len(), 3 << 20);
    assert!(echoed[..1 << 20].iter().all(|b| *b == 1));
    assert!(echoed[2 << 20..].iter().all(|b| *b == 3));

    ws.close(None).await.expect("close");
    assert!(matches!(upstream.next().await, Seen::Closed(_)));
    // The upstream's Close comes back, then the stream ends.
    while let Some(Ok(m)) = tokio::time::timeout(BOUND, ws.next()).await.expect("ends") {
        assert!(matches!(m, Message::Close(_)), "{m:?}");
    }
    eventually(BOUND, "the tunnel counted closed by the client", || async {
        metric(
            &h.metrics_text().await,
            "entragate_websocket_tunnels_closed_total{reason=\"client_closed\"}",
        ) == 1
    })
    .await;
    assert_eq!(
        metric(&h.metrics_text().await, "entragate_websocket_tunnels_open"),
        0
    );
}

#[tokio::test]
async fn a_handshake_without_a_token_gets_the_challenge_and_no_tunnel() {
    let mut upstream = WsUpstream::start().await;
    let h = gateway(&upstream, "").await;
    let Err(WsError::Http(resp)) = open(&h, "/ws", None).await else {
        panic!("a WebSocket opened without a token");
    };
    assert_eq!(resp.status(), 401);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.starts_with("Bearer "), "{challenge:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), upstream.seen.recv())
            .await
            .is_err(),
        "the upstream saw nothing"
    );
}

#[tokio::test]
async fn the_gateway_closes_the_tunnel_with_1008_when_its_token_expires() {
    let mut upstream = WsUpstream::start().await;
    let h = gateway(&upstream, "").await;
    let exp = common::now() + 3;
    let claims = with(h.claims(TokenVersion::V2), "exp", json!(exp));
    let token = h.issuer.mint(&claims);
    let mut ws = open(&h, "/ws", Some(&token)).await.expect("opened");
    assert!(matches!(upstream.next().await, Seen::Opened(_)));
    ws.send(Message::text("before expiry")).await.expect("send");
    assert_eq!(next_data(&mut ws).await, Message::text("before expiry"));

    // Nothing more is sent: the next thing the client reads is the gateway's Close.
    let Message::Close(Some(frame)) = next_data(&mut ws).await else {
        panic!("not a Close with a code");
    };
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert_eq!(frame.code, CloseCode::Policy, "1008");
    assert_eq!(frame.reason.as_str(), "token expired");
    #[allow(clippy::cast_precision_loss)]
    let exp_f = exp as f64;
    assert!(at >= exp_f, "closed at {at}, before exp {exp}");
    // The upstream got the gateway's Close too.
    let Seen::Closed(Some(up)) = upstream.next().await else {
        panic!("the upstream saw no Close with a code");
    };
    assert_eq!(up.code, CloseCode::Policy);
    assert_eq!(up.reason.as_str(), "token expired");
    // The client's stream ends.
    let rest = tokio::time::timeout(BOUND, ws.next())
        .await
        .expect("the stream ends");
    assert!(
        !matches!(rest, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{rest:?}"
    );

    eventually(BOUND, "counted as token_expired", || async {
        metric(
            &h.metrics_text().await,
            "entragate_websocket_tunnels_closed_total{reason=\"token_expired\"}",
        ) == 1
    })
    .await;
}

#[tokio::test]
async fn a_quiet_tunnel_is_closed_after_the_idle_timeout() {
    let mut upstream = WsUpstream::start().await;
    let h = gateway(&upstream, "websocket_idle_timeout = \"1s\"").await;
    let token = h.token(TokenVersion::V1);
    let mut ws = open(&h, "/ws", Some(&token)).await.expect("opened");
    assert!(matches!(upstream.next().await, Seen::Opened(_)));
    let Message::Close(Some(frame)) = next_data(&mut ws).await else {
        panic!("not a Close with a code");
    };
    assert_eq!(frame.code, CloseCode::Away, "1001");
    assert_eq!(frame.reason.as_str(), "idle timeout");
    assert!(matches!(upstream.next().await, Seen::Closed(Some(_))));
    eventually(BOUND, "counted as idle_timeout", || async {
        metric(
            &h.metrics_text().await,
            "entragate_websocket_tunnels_closed_total{reason=\"idle_timeout\"}",
        ) == 1
    })
    .await;
}

#[tokio::test]
async fn websocket_false_sends_the_upstream_a_plain_get() {
    let h = Harness::start_with(Extra {
        upstream: "websocket = false".into(),
        ..Extra::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    let Err(WsError::Http(resp)) = open(&h, "/ws", Some(&token)).await else {
        panic!("a WebSocket opened with upstream.websocket = false");
    };
    assert_eq!(
        resp.status(),
        200,
        "the echo upstream's answer to a plain GET"
    );
    let body: Value =
        serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).expect("echo JSON");
    let headers = body["headers"].as_object().expect("headers");
    assert!(headers.get("upgrade").is_none(), "{headers:?}");
    assert!(
        headers
            .get("connection")
            .and_then(Value::as_str)
            .is_none_or(|c| !c.to_ascii_lowercase().contains("upgrade")),
        "{headers:?}"
    );
    assert!(headers.contains_key("x-auth-subject"), "still authorized");
}

#[tokio::test]
async fn an_upgrade_to_an_h2c_upstream_gets_its_answer_without_hanging() {
    let h = Harness::start_with(Extra {
        upstream: "protocol = \"h2c\"".into(),
        ..Extra::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    let Err(WsError::Http(resp)) = open(&h, "/ws", Some(&token)).await else {
        panic!("a WebSocket opened over h2c");
    };
    assert_eq!(resp.status(), 200, "the plain request's answer");
}
