//! An echo upstream on loopback, for `entragate dev` and the tests: it answers with what it
//! received (method, target, headers, body size), so the proxying can be seen.
//!
//! - any request: consumes the body as a stream and answers JSON
//!   `{"method", "uri", "headers", "body_bytes"}`; `Authorization` is shown only as a SHA-256
//!   digest, so a demo never prints a token;
//! - `GET /bytes/{n}`: streams `n` bytes, for download tests;
//! - `/delay/{ms}`: waits that long before answering, for timeout tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};

#[derive(Default)]
struct EchoState {
    requests: AtomicU64,
}

/// A running echo upstream.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    state: Arc<EchoState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoUpstream {
    /// Starts on `addr` (port 0 for any).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(EchoState::default());
        let router = Router::new()
            .route("/bytes/{n}", get(bytes))
            .route("/delay/{ms}", any(delay))
            .fallback(echo)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:port`
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.state.requests.load(SeqCst)
    }
}

async fn echo(State(s): State<Arc<EchoState>>, req: Request) -> Response {
    s.requests.fetch_add(1, SeqCst);
    describe(req).await.into_response()
}

async fn delay(State(s): State<Arc<EchoState>>, Path(ms): Path<u64>, req: Request) -> Response {
    s.requests.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    describe(req).await.into_response()
}

async fn describe(req: Request) -> axum::Json<Value> {
    let (parts, body) = req.into_parts();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let shown = if name == http::header::AUTHORIZATION {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
            let scheme = value
                .to_str()
                .ok()
                .and_then(|v| v.split(' ').next())
                .unwrap_or("");
            format!("{scheme} sha256:{}", hex(digest.as_ref()))
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&shown);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), json!(shown));
            }
        }
    }
    let mut stream = body.into_data_stream();
    let mut body_bytes: u64 = 0;
    let mut body_error = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => body_bytes += c.len() as u64,
            Err(_) => {
                body_error = true;
                break;
            }
        }
    }
    axum::Json(json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
        "body_error": body_error,
    }))
}

/// Lower-case hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

async fn bytes(State(s): State<Arc<EchoState>>, Path(n): Path<u64>) -> Response {
    s.requests.fetch_add(1, SeqCst);
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            Some((
                Ok::<_, std::io::Error>(chunk.slice(..take)),
                left - take as u64,
            ))
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
    r
}
