//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge) on one port, or HTTPS with
//! both chosen by ALPN, with the limits that keep a hostile or overloaded client from holding
//! the gateway's memory or slots.
//!
//! - a connection cap (`server.max_connections`): past it the listener stops accepting and the
//!   kernel's backlog queues new connections, so memory stays bounded;
//! - a header read timeout (`server.header_read_timeout`): a slowloris client loses its slot;
//!   with TLS the handshake must also finish within it;
//! - a header size cap (`server.max_header_bytes`): larger requests get hyper's 431;
//! - graceful shutdown: on the signal, stop accepting, let in-flight requests finish, close
//!   idle keep-alive connections.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

pub use crate::config::Limits;

mod idle;
mod trim;

pub use trim::after_bursts as trim_allocator_after_bursts;

/// What answers a listener's requests: the main listener's front service
/// ([`crate::app::Front`]: the whole stack written out in one function), or an axum
/// [`Router`] (the admin listener, the dev issuer). It gets each request with the client's
/// address.
pub trait Handler: Clone + Send + Sync + 'static {
    type Future: Future<Output = Result<http::Response<axum::body::Body>, Infallible>>
        + Send
        + Unpin
        + 'static;

    fn handle(&self, req: http::Request<axum::body::Body>, peer: SocketAddr) -> Self::Future;
}

impl Handler for Router {
    type Future = axum::routing::future::RouteFuture<Infallible>;

    /// With the client's address as axum's `ConnectInfo` extension.
    fn handle(&self, mut req: http::Request<axum::body::Body>, peer: SocketAddr) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(peer));
        self.clone().call(req)
    }
}

/// What a connection may run with, built once per listener and shared by its connections
/// (one pointer in each connection's task).
struct Shared<H> {
    handler: H,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// HTTPS: HTTP/1.1 or HTTP/2, whichever the client speaks.
    auto: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    header_read_timeout: Duration,
}

/// Serves `handler` on `listener` until `signal` turns true, then drains. With `tls`, every
/// connection is HTTPS (see [`crate::tls`]).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    signal: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    serve_with_slots(listener, handler, limits, tls, signal, slots).await;
}

/// Serves `handler` on `workers` threads, each the one worker thread of its own Tokio
/// runtime, with its own accept loop on the same listening socket (thread-per-core, as
/// nginx's worker processes): a connection, its requests and their timers stay on the worker that accepted
/// it, with no hand-over between threads. The kernel wakes the workers waiting in `accept`;
/// the first to take a connection serves it, so an idle worker takes the next one.
/// `server.max_connections` counts over all workers. Each worker has its own upstream
/// connection pools ([`crate::worker`], [`crate::upstream::Forwarder`]), so a request never
/// waits on another thread. Returns once every worker has drained after `signal`.
///
/// # Errors
/// When the listening socket cannot be shared with a worker, or a worker cannot start.
pub async fn serve_on_workers<H: Handler>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    signal: watch::Receiver<bool>,
    workers: usize,
) -> io::Result<()> {
    let listener = listener.into_std()?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let workers = workers.max(1);
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let listener = listener.try_clone()?;
        let (handler, tls, signal, slots) = (
            handler.clone(),
            tls.clone(),
            signal.clone(),
            Arc::clone(&slots),
        );
        // The multi-thread scheduler with one worker, not the current-thread one: its LIFO
        // slot runs a task woken by the running one next (a response handed back from the
        // upstream connection), so a burst of new requests does not queue in front of the
        // ones about to finish (fewer in progress at once: docs/performance.md).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("entragate-w{i}"))
            .on_thread_start(move || crate::worker::set_index(i))
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("entragate-w{i}-main"))
            // It only waits: the accept loop and the connections run on the runtime's worker.
            .spawn(move || {
                runtime.block_on(async move {
                    let serving = tokio::spawn(async move {
                        match TcpListener::from_std(listener) {
                            Ok(l) => serve_with_slots(l, handler, limits, tls, signal, slots).await,
                            Err(e) => {
                                tracing::error!(worker = i, error = %e, "worker cannot listen")
                            }
                        }
                    });
                    let _ = serving.await;
                });
            })?;
        threads.push(thread);
    }
    drop(listener);
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    joined.map_err(io::Error::other)
}

/// [`serve`], with `slots` the connection places (shared by the workers of one listener).
async fn serve_with_slots<H: Handler>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut signal: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
) {
    let shared = Arc::new(Shared {
        handler,
        h1: http1_builder(limits),
        h2: http2_builder(limits),
        auto: auto_builder(limits),
        tls: tls.map(TlsAcceptor::from),
        header_read_timeout: limits.header_read_timeout,
    });
    let graceful = GracefulShutdown::new();
    loop {
        // Wait for a free slot before accepting: over the cap, connections queue in the backlog.
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut signal) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut signal) => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            Arc::clone(&shared),
            permit,
            graceful.watcher(),
            signal.clone(),
        ));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One client connection, from its first byte to its end. This future is what each open
/// connection keeps in memory for its whole life, so the paths that are not plain HTTP/1.1
/// (HTTP/2, TLS) are boxed: they cost a pointer here and their size only when taken.
async fn connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared<H>>,
    permit: OwnedSemaphorePermit,
    watcher: Watcher,
    signal: watch::Receiver<bool>,
) {
    let service = Service {
        handler: shared.handler.clone(),
        peer,
    };
    // hyper's header timer starts with the first byte; a connection that never sends one
    // would otherwise hold its slot for ever. (With TLS the first byte is the ClientHello.)
    let result = if shared.tls.is_some() {
        Box::pin(tls_connection(stream, peer, &shared, service, signal)).await
    } else {
        // (Boxed: the wait is over at the first byte, and the future keeps no room for it.)
        let first = Box::pin(first_bytes(&stream, shared.header_read_timeout, &signal)).await;
        match first {
            Some(Ok(Version::H1)) => {
                let idle = shared.header_read_timeout;
                idle::serve(stream, &shared.h1, service, signal, idle).await
            }
            Some(Ok(Version::H2)) => h2_connection(stream, &shared, service, signal).await,
            // No request within the header read timeout, the client went away, or shutdown.
            Some(Err(_)) | None => Ok(()),
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    // The slot is free, and the drain on shutdown no longer waits for this connection.
    drop((permit, watcher));
}

/// Which protocol a plain connection speaks, once its first bytes arrive within the header
/// read timeout; `None` when they do not, or when shutdown comes first (a connection that has
/// sent nothing is closed at once: the drain waits only for requests).
async fn first_bytes(
    stream: &TcpStream,
    timeout: Duration,
    signal: &watch::Receiver<bool>,
) -> Option<io::Result<Version>> {
    let mut stop = signal.clone();
    tokio::select! {
        r = tokio::time::timeout(timeout, sniff(stream)) => r.ok(),
        () = stopped(&mut stop) => None,
    }
}

/// HTTP/2 with prior knowledge, boxed (see [`connection`]).
fn h2_connection<H: Handler>(
    stream: TcpStream,
    shared: &Shared<H>,
    service: Service<H>,
    signal: watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> {
    let conn = shared.h2.serve_connection(TokioIo::new(stream), service);
    Box::pin(drive(|| conn, signal))
}

/// HTTPS: the handshake, which must finish within the header read timeout too, then HTTP/1.1
/// or HTTP/2.
async fn tls_connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared<H>,
    service: Service<H>,
    signal: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(acceptor) = &shared.tls else {
        return Ok(());
    };
    let mut probe = [0u8; 1];
    let mut stop = signal.clone();
    let first = tokio::select! {
        r = tokio::time::timeout(shared.header_read_timeout, stream.peek(&mut probe)) => r,
        () = stopped(&mut stop) => return Ok(()),
    };
    if !matches!(first, Ok(Ok(1..))) {
        return Ok(());
    }
    match tokio::time::timeout(shared.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let auto = &shared.auto;
            let conn = || auto.serve_connection_with_upgrades(TokioIo::new(tls), service);
            drive(conn, signal).await
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            Ok(())
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            Ok(())
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4): a plain connection that starts with
/// it speaks HTTP/2 with prior knowledge, any other is HTTP/1.1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    H1,
    H2,
}

/// Which protocol a plain connection speaks, read from its first bytes without taking them
/// (`peek`, not `readable`: a fresh socket may report readiness with no data). Waits for the
/// first byte; the whole preface only when the bytes so far are a prefix of it.
async fn sniff(stream: &TcpStream) -> io::Result<Version> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let (got, want) = (buf.get(..n), H2_PREFACE.get(..n));
        if got != want {
            return Ok(Version::H1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Version::H2);
        }
        // Part of the preface: peek would return the same bytes at once, so wait a little
        // for the rest (clients send the preface in one write; this is the rare split case).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A hyper connection that can be told to finish its in-flight requests and close.
trait Graceful: Future {
    fn graceful(self: Pin<&mut Self>);
}

type Plain = TokioIo<TcpStream>;
type Tls = TokioIo<tokio_rustls::server::TlsStream<TcpStream>>;

impl<H: Handler> Graceful for http2::Connection<Plain, Service<H>, TokioExecutor> {
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<H: Handler> Graceful for auto::UpgradeableConnection<'_, Tls, Service<H>, TokioExecutor> {
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs `conn` to its end; on the shutdown signal it finishes the requests in flight and
/// closes (idle keep-alive connections at once).
/// (`make` builds the connection in place: an argument would be kept twice in this future,
/// once as the argument and once pinned.)
async fn drive<C, E>(
    make: impl FnOnce() -> C,
    mut signal: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    C: Graceful<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    let mut conn = pin!(make());
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut signal) => {
            conn.as_mut().graceful();
            conn.await
        }
    };
    result.map_err(Into::into)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection's handler and its client's address.
#[derive(Clone)]
struct Service<H> {
    handler: H,
    peer: SocketAddr,
}

impl<H: Handler> hyper::service::Service<http::Request<Incoming>> for Service<H> {
    type Response = http::Response<axum::body::Body>;
    type Error = Infallible;
    type Future = H::Future;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        self.handler
            .handle(req.map(axum::body::Body::new), self.peer)
    }
}

/// Resolves once the shutdown signal is set (the guard `wait_for` returns is dropped here, so
/// the accept loop's future stays `Send`).
async fn stopped(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}

fn http1_builder(limits: Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    b
}

fn http2_builder(limits: Limits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(Some(256));
    b
}

fn auto_builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(Some(256));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        (client, server, peer)
    }

    /// Each open connection keeps its task's future for its whole life: 10,000 of them are
    /// 10,000 times this size, before any buffer. The HTTP/2 and TLS paths are boxed, so a
    /// plain HTTP/1.1 connection pays only for its own state.
    #[tokio::test]
    async fn a_plain_connection_future_stays_small() {
        let (_client, server, peer) = pair().await;
        let limits = Limits::default();
        let shared = Arc::new(Shared {
            handler: Router::new(),
            h1: http1_builder(limits),
            h2: http2_builder(limits),
            auto: auto_builder(limits),
            tls: None,
            header_read_timeout: limits.header_read_timeout,
        });
        let permit = Arc::new(Semaphore::new(1))
            .acquire_owned()
            .await
            .expect("permit");
        let graceful = GracefulShutdown::new();
        let (_tx, rx) = watch::channel(false);
        let fut = connection(server, peer, shared, permit, graceful.watcher(), rx);
        let size = std::mem::size_of_val(&fut);
        let h1 = std::mem::size_of::<
            http1::UpgradeableConnection<TokioIo<idle::Watched>, idle::Counted<Router>>,
        >();
        let auto = std::mem::size_of::<
            auto::UpgradeableConnection<'_, Plain, Service<Router>, TokioExecutor>,
        >();
        let h2 = std::mem::size_of::<http2::Connection<Plain, Service<Router>, TokioExecutor>>();
        eprintln!("connection future {size} bytes; hyper http1 {h1}, http2 {h2}, auto {auto}");
        assert!(
            size <= 2048,
            "the connection future is {size} bytes (hyper's HTTP/1.1 connection alone {h1}), over 2 KiB"
        );
    }

    /// Thread-per-core: every worker serves from the one socket on its own thread, the
    /// connection cap counts over all of them, and the signal drains them all.
    #[tokio::test]
    async fn workers_share_the_socket_and_the_connection_cap_and_drain_together() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route(
            "/",
            axum::routing::get(|| async {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                format!("{name} {}", crate::worker::index())
            }),
        );
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(serve_on_workers(listener, router, limits, None, rx, 2));
        async fn get(stream: &mut TcpStream) -> String {
            stream
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .expect("write");
            let mut buf = vec![0u8; 1024];
            let n = stream.read(&mut buf).await.expect("read");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
        let mut first = TcpStream::connect(addr).await.expect("connect");
        let answer = get(&mut first).await;
        let body = answer.rsplit("\r\n").next().unwrap_or_default();
        let (name, index) = body.split_once(' ').expect("thread and index");
        assert_eq!(name, format!("entragate-w{index}"), "{answer}");
        assert!(index == "0" || index == "1", "{answer}");
        // The one place is taken: a second connection waits in the backlog, on any worker.
        let mut second = TcpStream::connect(addr).await.expect("connect");
        let waiting = tokio::time::timeout(Duration::from_millis(300), get(&mut second)).await;
        assert!(waiting.is_err(), "served past max_connections = 1");
        drop(first);
        let served = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = vec![0u8; 1024];
            second
                .read(&mut buf)
                .await
                .map(|n| buf.truncate(n))
                .map(|()| buf)
        })
        .await
        .expect("served once the first connection closed")
        .expect("read");
        assert!(served.starts_with(b"HTTP/1.1 200"), "{served:?}");
        tx.send(true).expect("signal");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("every worker drained")
            .expect("join")
            .expect("workers ran");
    }

    /// A connection that never sent a byte does not hold the drain on shutdown (it used to,
    /// for the whole header read timeout).
    #[tokio::test]
    async fn shutdown_does_not_wait_for_a_silent_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let limits = Limits {
            header_read_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Router::new(), limits, None, rx));
        let _silent = TcpStream::connect(addr).await.expect("connect");
        // Let the accept loop take it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(true).expect("signal");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("drained within 10 s, not the 60 s header read timeout")
            .expect("serve");
    }
}
