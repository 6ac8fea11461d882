//! The upstream's HTTP/1.1 keep-alive connections, one pool per worker.
//!
//! Each pool is a stack of idle hyper connection handles ([`http1::SendRequest`]) of the
//! worker that opened them: a request takes the most recently used one (its socket is the
//! warmest), or opens a new one; the connection comes back when the response body has been
//! read to its end, and is closed instead when the body was abandoned, the pool already holds
//! its share of `upstream.max_idle_connections`, or the connection was upgraded (a WebSocket
//! tunnel keeps it). An idle connection older than `upstream.idle_timeout` is never handed out
//! again, and a sweep every half of that closes those no request came for.
//!
//! This replaces hyper-util's pool for HTTP/1.1 upstreams: that pool keys its connections by
//! origin in a hashed map behind a lock, and sends every request through a second channel and
//! a spawned task that returns the connection; here the gateway has one origin per forwarder
//! and a pool per worker, so a `Vec` under an uncontended lock does. HTTP/2 upstreams (`h2c`,
//! or `auto` over TLS) keep hyper-util's client, which multiplexes streams on one connection.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::body::Body;
use hyper::client::conn::http1;
use tokio::time::Instant;

/// One worker's idle connections.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// The sweep task has been started (by the first connection this pool opened).
    sweeping: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl Pool {
    #[must_use]
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            sweeping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The most recently returned connection that is still open and not past the idle
    /// timeout; the ones passed over on the way are closed.
    pub fn take(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.lock();
        let now = Instant::now();
        while let Some(i) = idle.pop() {
            if self.usable(&i, now) {
                return Some(i.sender);
            }
        }
        None
    }

    /// Open, and idle for less than `idle_timeout` at `now`.
    fn usable(&self, i: &Idle, now: Instant) -> bool {
        !i.sender.is_closed() && now.duration_since(i.since) < self.idle_timeout
    }

    /// A connection whose response ended: kept for the next request, or closed (dropped)
    /// when the pool is full or the connection is closing.
    pub fn put(&self, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections held now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.lock().len()
    }

    /// Starts this pool's sweep on the current runtime (the worker's), once.
    pub fn start_sweep(self: &Arc<Self>) {
        if self
            .sweeping
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let pool = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(sweep(pool, every));
    }

    /// Closes the connections idle for `idle_timeout` or more, and the closed ones.
    fn prune(&self) {
        let now = Instant::now();
        self.lock().retain(|i| self.usable(i, now));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The list is valid whatever a panicking holder left half done.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every `every`, until the pool is gone (the forwarder was replaced by a reload).
async fn sweep(pool: Weak<Pool>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.prune();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt as _;
    use hyper::server::conn::http1 as server;
    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// An upstream answering `ok` on every connection; the count of connections accepted.
    async fn upstream() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(http::Response::new(Body::from("ok")))
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    async fn connect(addr: std::net::SocketAddr) -> http1::SendRequest<Body> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender
    }

    async fn get(sender: &mut http1::SendRequest<Body>) -> String {
        sender.ready().await.expect("ready");
        let req = http::Request::builder()
            .uri("/")
            .header("host", "x")
            .body(Body::empty())
            .expect("request");
        let res = sender.send_request(req).await.expect("response");
        let body = res.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn a_returned_connection_serves_the_next_request() {
        let (addr, accepted) = upstream().await;
        let pool = Pool::new(4, Duration::from_secs(10));
        assert!(pool.take().is_none());
        let mut c = connect(addr).await;
        assert_eq!(get(&mut c).await, "ok");
        pool.put(c);
        assert_eq!(pool.idle(), 1);
        let mut again = pool.take().expect("the idle connection");
        assert_eq!(get(&mut again).await, "ok");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::Acquire), 1);
    }

    #[tokio::test]
    async fn the_pool_keeps_no_more_than_its_share() {
        let (addr, _) = upstream().await;
        let pool = Pool::new(2, Duration::from_secs(10));
        for _ in 0..3 {
            let mut c = connect(addr).await;
            get(&mut c).await;
            pool.put(c);
        }
        assert_eq!(pool.idle(), 2);
    }

    #[tokio::test]
    async fn a_connection_past_the_idle_timeout_is_not_handed_out() {
        let (addr, _) = upstream().await;
        let pool = Pool::new(4, Duration::from_millis(50));
        let mut c = connect(addr).await;
        get(&mut c).await;
        pool.put(c);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn the_sweep_closes_idle_connections_past_the_timeout() {
        let (addr, _) = upstream().await;
        let pool = Pool::new(4, Duration::from_millis(60));
        pool.start_sweep();
        let mut c = connect(addr).await;
        get(&mut c).await;
        pool.put(c);
        assert_eq!(pool.idle(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pool.idle(), 0, "swept");
    }

    #[tokio::test]
    async fn a_closed_connection_is_neither_kept_nor_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // An upstream that answers once and closes the connection.
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(http::Response::new(Body::from("ok")))
            });
            let _ = server::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        let pool = Pool::new(4, Duration::from_secs(10));
        let mut c = connect(addr).await;
        assert_eq!(get(&mut c).await, "ok");
        // Closed by the upstream's `Connection: close`.
        for _ in 0..100 {
            if c.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pool.put(c);
        assert!(pool.take().is_none());
    }
}
