//! Idle HTTP/1.1 keep-alive connections without hyper's buffers.
//!
//! hyper keeps a read buffer (8 KiB, reserved before every read) and a write buffer (8 KiB,
//! from the start) for as long as a connection lives, and its server has no option to drop
//! them between requests. Most keep-alive connections are idle most of the time (a Power BI
//! refresh opens many and leaves them), so 10,000 of them would hold 160 MiB of empty
//! buffers. Here, once a connection has been idle for [`PARK_AFTER`] (every response written
//! and flushed, every request body read to its end, nothing read since the last request,
//! hyper waiting for the next one, and no request served in that time), hyper's connection is
//! taken apart ([`http1::UpgradeableConnection::into_parts`]): the buffers go, the socket and
//! the service stay, and a new hyper connection is made for the socket when its next request
//! arrives. Bytes hyper had read and not used (a pipelined request) are handed to the new
//! connection first.
//!
//! The wait before parking is what keeps a busy connection cheap: a client that sends its
//! next request within it (a load balancer's pool, a refresh running its queries) keeps its
//! hyper connection, with no new buffers, no peek at the socket and no new timer per request.
//! One timer per connection checks every [`PARK_AFTER`] whether any request came since it was
//! set, so a connection parks between one and two [`PARK_AFTER`]s after its last request.
//!
//! Whatever is unsure keeps the connection as it is: a request body left unread (hyper may
//! still be draining it), an upgrade (WebSocket), bytes read since the last request.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{BoxError, Graceful, Handler, Service, stopped};

/// How long an idle connection keeps its hyper connection (and buffers) before it is parked.
/// Long enough for a client that sends its requests one after another (each as soon as the
/// last answer is in: a load balancer's pool, a report's queries), short enough that a
/// connection used every few seconds holds its buffers for a small part of the time (at
/// 10,000 connections each used every 2 s, about 500 of them).
pub(super) const PARK_AFTER: Duration = Duration::from_millis(100);

/// What the connection's parts tell each other: the socket, the service and the bodies.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Requests whose response hyper has not finished sending (its body not yet dropped).
    in_flight: AtomicUsize,
    /// Requests whose body has not been read to its end.
    open_bodies: AtomicUsize,
    /// Bytes read from the socket since the last request boundary.
    read_since_mark: AtomicBool,
    /// Bytes written and not yet flushed.
    unflushed: AtomicBool,
    /// hyper's last read found nothing to read.
    read_pending: AtomicBool,
    /// A request body was left unread, or a request asked for an upgrade: never parked again.
    sticky: AtomicBool,
    /// Requests served since the connection was last (re)made.
    served: AtomicUsize,
    /// Times hyper's connection was taken apart while idle.
    parked: AtomicUsize,
}

impl Activity {
    fn idle(&self) -> bool {
        self.served.load(Ordering::Acquire) > 0
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.open_bodies.load(Ordering::Acquire) == 0
            && !self.read_since_mark.load(Ordering::Acquire)
            && !self.unflushed.load(Ordering::Acquire)
            && self.read_pending.load(Ordering::Acquire)
            && !self.sticky.load(Ordering::Acquire)
    }
}

/// The socket as hyper sees it (through [`TokioIo`]): bytes left over from the previous
/// hyper connection first, and every read and write noted in [`Activity`].
pub(super) struct Watched {
    stream: TcpStream,
    prefix: Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(this.prefix.get(..n).unwrap_or_default());
            this.prefix.advance(n);
            this.prefix = unshared(std::mem::take(&mut this.prefix));
            this.activity.read_pending.store(false, Ordering::Release);
            this.activity.read_since_mark.store(true, Ordering::Release);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => {
                this.activity.read_pending.store(true, Ordering::Release);
                Poll::Pending
            }
            Poll::Ready(r) => {
                this.activity.read_pending.store(false, Ordering::Release);
                if buf.filled().len() != before {
                    this.activity.read_since_mark.store(true, Ordering::Release);
                }
                Poll::Ready(r)
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.unflushed.store(true, Ordering::Release);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.unflushed.store(true, Ordering::Release);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.activity.unflushed.store(false, Ordering::Release);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The service of a plain HTTP/1.1 connection: [`Service`] with its requests and responses
/// counted in [`Activity`].
#[derive(Clone)]
pub(super) struct Counted<H> {
    inner: Service<H>,
    activity: Arc<Activity>,
}

impl<H: Handler> hyper::service::Service<http::Request<Incoming>> for Counted<H> {
    type Response = http::Response<CountedBody<axum::body::Body>>;
    type Error = std::convert::Infallible;
    type Future = CountedFuture<H::Future>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let a = &self.activity;
        a.served.fetch_add(1, Ordering::AcqRel);
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        if req.headers().contains_key(http::header::UPGRADE)
            || req.method() == http::Method::CONNECT
        {
            a.sticky.store(true, Ordering::Release);
        }
        let (parts, body) = req.into_parts();
        let body = if body.is_end_stream() {
            // The head was the whole request: what is read from here on is the next one.
            a.read_since_mark.store(false, Ordering::Release);
            RequestBody {
                inner: body,
                activity: None,
            }
        } else {
            a.open_bodies.fetch_add(1, Ordering::AcqRel);
            RequestBody {
                inner: body,
                activity: Some(Arc::clone(a)),
            }
        };
        let req = http::Request::from_parts(parts, body);
        CountedFuture {
            inner: self
                .inner
                .handler
                .handle(req.map(axum::body::Body::new), self.inner.peer),
            activity: Some(Arc::clone(a)),
        }
    }
}

/// The handler's answer, its body counted.
pub(super) struct CountedFuture<F> {
    inner: F,
    activity: Option<Arc<Activity>>,
}

impl<F> std::future::Future for CountedFuture<F>
where
    F: std::future::Future<
            Output = Result<http::Response<axum::body::Body>, std::convert::Infallible>,
        > + Unpin,
{
    type Output = Result<http::Response<CountedBody<axum::body::Body>>, std::convert::Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(res)) => Poll::Ready(Ok(res.map(|body| CountedBody {
                inner: body,
                activity: this.activity.take(),
            }))),
            Poll::Ready(Err(e)) => match e {},
        }
    }
}

impl<F> Drop for CountedFuture<F> {
    fn drop(&mut self) {
        // Dropped before it answered (the connection is ending): the request is over.
        if let Some(a) = self.activity.take() {
            a.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A response body: the request is over when hyper drops it (sent, or the connection ends).
pub(super) struct CountedBody<B> {
    inner: B,
    activity: Option<Arc<Activity>>,
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        if let Some(a) = self.activity.take() {
            a.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body: read to its end, the next bytes on the socket are the next request's.
pub(super) struct RequestBody {
    inner: Incoming,
    /// Until the end is seen.
    activity: Option<Arc<Activity>>,
}

impl RequestBody {
    fn ended(&mut self) {
        if let Some(a) = self.activity.take() {
            a.open_bodies.fetch_sub(1, Ordering::AcqRel);
            a.read_since_mark.store(false, Ordering::Release);
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // Dropped unread: hyper may drain the rest, and from outside it cannot be told when
        // that is done. The connection keeps its buffers from now on.
        if let Some(a) = self.activity.take() {
            a.sticky.store(true, Ordering::Release);
            a.open_bodies.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<H: Handler> Graceful for http1::UpgradeableConnection<TokioIo<Watched>, Counted<H>> {
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves a plain HTTP/1.1 connection to its end, without hyper's buffers while it is idle.
pub(super) async fn serve<H: Handler>(
    stream: TcpStream,
    h1: &http1::Builder,
    service: Service<H>,
    signal: watch::Receiver<bool>,
    idle_timeout: Duration,
) -> Result<(), BoxError> {
    let activity = Arc::new(Activity::default());
    let times = Times {
        idle_timeout,
        park_after: PARK_AFTER,
    };
    serve_with(stream, h1, service, signal, times, activity).await
}

/// The waits of [`serve_with`].
#[derive(Debug, Clone, Copy)]
struct Times {
    /// Bounds the wait for the next request's first byte once parked (hyper's header read
    /// timer, which covers an idle connection it holds, is gone with it).
    idle_timeout: Duration,
    /// [`PARK_AFTER`].
    park_after: Duration,
}

/// The timer of a connection that has served a request: when it fires and no request was
/// served since it was set (`mark`, [`Activity::served`] then), an idle connection is parked.
struct ParkTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    mark: usize,
}

impl ParkTimer {
    /// True when an idle connection has waited long enough to be parked; otherwise the timer
    /// is (re)set and will wake the connection's task.
    fn due(timer: &mut Option<Self>, served: usize, after: Duration, cx: &mut Context<'_>) -> bool {
        let t = timer.get_or_insert_with(|| Self {
            sleep: Box::pin(tokio::time::sleep(after)),
            mark: served,
        });
        loop {
            if t.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if t.mark == served {
                return true;
            }
            // Requests came since: another wait from now.
            t.mark = served;
            t.sleep.as_mut().reset(tokio::time::Instant::now() + after);
        }
    }
}

/// [`serve`], with its waits given.
async fn serve_with<H: Handler>(
    stream: TcpStream,
    h1: &http1::Builder,
    service: Service<H>,
    mut signal: watch::Receiver<bool>,
    times: Times,
    activity: Arc<Activity>,
) -> Result<(), BoxError> {
    let service = Counted {
        inner: service,
        activity: Arc::clone(&activity),
    };
    let mut io = Some(Watched {
        stream,
        prefix: Bytes::new(),
        activity: Arc::clone(&activity),
    });
    loop {
        let Some(watched) = io.take() else {
            return Ok(());
        };
        activity.served.store(0, Ordering::Release);
        activity.read_pending.store(false, Ordering::Release);
        let mut conn = Some(
            h1.serve_connection(TokioIo::new(watched), service.clone())
                .with_upgrades(),
        );
        let mut stopping = false;
        let mut park: Option<ParkTimer> = None;
        // Until the connection ends, or has been idle for `park_after`.
        let parts = loop {
            let step = std::future::poll_fn(|cx| {
                let Some(c) = conn.as_mut() else {
                    return Poll::Ready(Some(Ok(())));
                };
                match Pin::new(c).poll(cx) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    Poll::Pending
                        if !stopping
                            && activity.idle()
                            && ParkTimer::due(
                                &mut park,
                                activity.served.load(Ordering::Acquire),
                                times.park_after,
                                cx,
                            ) =>
                    {
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            });
            let stop = async {
                if stopping {
                    std::future::pending::<()>().await;
                }
                stopped(&mut signal).await;
            };
            tokio::select! {
                r = step => match r {
                    Some(r) => return r.map_err(Into::into),
                    None => match conn.take().and_then(http1::UpgradeableConnection::into_parts) {
                        Some(parts) => break parts,
                        None => return Ok(()),
                    },
                },
                () = stop => {
                    stopping = true;
                    if let Some(c) = conn.as_mut() {
                        Pin::new(c).graceful();
                    }
                }
            }
        };
        activity.parked.fetch_add(1, Ordering::AcqRel);
        let mut watched = parts.io.into_inner();
        watched.prefix = unshared(parts.read_buf);
        drop(parts.service);
        if watched.prefix.is_empty() {
            // Idle, without buffers: wait for the next request's first byte, the client's
            // close, or shutdown (which closes an idle connection at once).
            if !Box::pin(next_request(
                &watched.stream,
                times.idle_timeout,
                &mut signal,
            ))
            .await
            {
                return Ok(());
            }
        }
        io = Some(watched);
    }
}

/// `rest`, or no buffer at all when it is empty. hyper's leftover bytes are a view of its
/// whole read buffer: kept empty, they would keep that buffer (8 KiB) alive for as long as
/// the connection is parked.
fn unshared(rest: Bytes) -> Bytes {
    if rest.is_empty() { Bytes::new() } else { rest }
}

/// Waits for a parked connection's next request: true at its first byte; false when the
/// client closes, the connection stays idle past `idle_timeout`, or shutdown comes.
/// (Boxed by its caller: the timer it holds is needed only while parked, and the
/// connection's future keeps no room for it.)
async fn next_request(
    stream: &TcpStream,
    idle_timeout: Duration,
    signal: &mut watch::Receiver<bool>,
) -> bool {
    let mut probe = [0u8; 1];
    tokio::select! {
        r = tokio::time::timeout(idle_timeout, stream.peek(&mut probe)) => matches!(r, Ok(Ok(1..))),
        () = stopped(signal) => false,
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn an_empty_rest_keeps_no_buffer() {
        let buffer = Bytes::from(vec![b'x'; 8192]);
        let mut rest = buffer.clone();
        rest.advance(8192);
        assert!(!buffer.is_unique(), "the empty view still holds the buffer");
        assert!(unshared(rest).is_empty());
        assert!(
            buffer.is_unique(),
            "nothing but the buffer's own handle is left"
        );

        let mut rest = buffer.clone();
        rest.advance(8000);
        let kept = unshared(rest);
        assert_eq!(kept.len(), 192, "bytes not yet read are kept");
        assert!(!buffer.is_unique());
    }

    /// A connection served by [`serve_with`] with a router that answers `GET /` with "hi"
    /// and echoes the body of `POST /echo`; the client's end and the activity to inspect.
    async fn start() -> (TcpStream, Arc<Activity>, watch::Sender<bool>) {
        start_with(Duration::from_secs(10)).await
    }

    async fn start_with(idle: Duration) -> (TcpStream, Arc<Activity>, watch::Sender<bool>) {
        start_times(Times {
            idle_timeout: idle,
            park_after: Duration::from_millis(20),
        })
        .await
    }

    async fn start_times(times: Times) -> (TcpStream, Arc<Activity>, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        let router = Router::new()
            .route("/", get(|| async { "hi" }))
            .route("/echo", post(|body: String| async move { body }));
        let activity = Arc::new(Activity::default());
        let (tx, rx) = watch::channel(false);
        let a = Arc::clone(&activity);
        tokio::spawn(async move {
            let h1 = http1::Builder::new();
            let service = Service {
                handler: router,
                peer,
            };
            let _ = serve_with(server, &h1, service, rx, times, a).await;
        });
        (client, activity, tx)
    }

    /// Reads until `n` complete responses (`hi` or an echoed body ending in `!`) arrived.
    async fn read_responses(client: &mut TcpStream, n: usize) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&got)
            .matches("HTTP/1.1 200 OK")
            .count()
            < n
            || !(got.ends_with(b"hi") || got.ends_with(b"!"))
        {
            let k = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("a response within 5 s")
                .expect("read");
            assert!(k > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(buf.get(..k).unwrap_or_default());
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn parked_at_least(activity: &Activity, n: usize) {
        for _ in 0..500 {
            if activity.parked.load(Ordering::Acquire) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!(
            "parked {} times, expected {n}",
            activity.parked.load(Ordering::Acquire)
        );
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

    #[tokio::test]
    async fn an_idle_connection_is_parked_and_serves_its_next_request() {
        let (mut client, activity, _stop) = start().await;
        client.write_all(GET).await.expect("write");
        assert!(read_responses(&mut client, 1).await.ends_with("hi"));
        parked_at_least(&activity, 1).await;
        client.write_all(GET).await.expect("write");
        assert!(read_responses(&mut client, 1).await.ends_with("hi"));
        parked_at_least(&activity, 2).await;
    }

    #[tokio::test]
    async fn a_busy_connection_keeps_its_hyper_connection_until_it_rests() {
        let (mut client, activity, _stop) = start_times(Times {
            idle_timeout: Duration::from_secs(10),
            park_after: Duration::from_millis(300),
        })
        .await;
        // Twenty requests 30 ms apart (600 ms in all, two waits' worth): each one comes
        // before the wait is over, so the connection is never parked between them.
        for _ in 0..20 {
            client.write_all(GET).await.expect("write");
            assert!(read_responses(&mut client, 1).await.ends_with("hi"));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(
            activity.parked.load(Ordering::Acquire),
            0,
            "parked while busy"
        );
        // Then it rests, and is parked within two waits.
        parked_at_least(&activity, 1).await;
        assert_eq!(activity.parked.load(Ordering::Acquire), 1);
        client.write_all(GET).await.expect("write");
        assert!(read_responses(&mut client, 1).await.ends_with("hi"));
    }

    #[tokio::test]
    async fn pipelined_requests_and_a_split_head_survive_parking() {
        let (mut client, activity, _stop) = start().await;
        let mut two = GET.to_vec();
        two.extend_from_slice(GET);
        client.write_all(&two).await.expect("write");
        let got = read_responses(&mut client, 2).await;
        assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
        parked_at_least(&activity, 1).await;
        // The next head in two pieces, with a pause between: no parking in the middle.
        let (a, b) = GET.split_at(10);
        client.write_all(a).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b).await.expect("write");
        assert!(read_responses(&mut client, 1).await.ends_with("hi"));
    }

    #[tokio::test]
    async fn a_request_body_is_read_whole_before_parking() {
        let (mut client, activity, _stop) = start().await;
        client
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nab")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            activity.parked.load(Ordering::Acquire),
            0,
            "parked mid-body"
        );
        client.write_all(b"cd!!").await.expect("write");
        assert!(read_responses(&mut client, 1).await.ends_with("abcd!!"));
        parked_at_least(&activity, 1).await;
        client.write_all(GET).await.expect("write");
        assert!(read_responses(&mut client, 1).await.ends_with("hi"));
    }

    #[tokio::test]
    async fn shutdown_closes_a_parked_connection() {
        let (mut client, activity, stop) = start().await;
        client.write_all(GET).await.expect("write");
        read_responses(&mut client, 1).await;
        parked_at_least(&activity, 1).await;
        stop.send(true).expect("signal");
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("closed within 5 s")
            .expect("read");
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_parked_connection_is_closed_after_the_idle_timeout() {
        let (mut client, activity, _stop) = start_with(Duration::from_millis(200)).await;
        client.write_all(GET).await.expect("write");
        read_responses(&mut client, 1).await;
        parked_at_least(&activity, 1).await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("closed within 5 s")
            .expect("read");
        assert_eq!(
            n, 0,
            "the parked connection stays open past its idle timeout"
        );
    }
}
