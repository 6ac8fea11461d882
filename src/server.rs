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
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

pub use crate::config::Limits;

/// Serves `router` on `listener` until `signal` turns true, then drains. With `tls`, every
/// connection is HTTPS (see [`crate::tls`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut signal: watch::Receiver<bool>,
) {
    let builder = builder(limits);
    let tls = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        let service = router
            .clone()
            .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            })
            .map_err(|e: Infallible| match e {});
        let service = TowerToHyperService::new(service);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte = limits.header_read_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte; a connection that never sends
            // one would otherwise hold its slot for ever. (With TLS the first byte is the
            // ClientHello.)
            // (`peek`, not `readable`: a fresh socket may report readiness with no data.)
            let mut probe = [0u8; 1];
            if !matches!(
                tokio::time::timeout(first_byte, stream.peek(&mut probe)).await,
                Ok(Ok(1..))
            ) {
                drop(permit);
                return;
            }
            let result = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                // The handshake, too, must finish within the header read timeout.
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                            watcher.watch(conn.into_owned()).await
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
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Resolves once the shutdown signal is set (the guard `wait_for` returns is dropped here, so
/// the accept loop's future stays `Send`).
async fn stopped(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}

fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
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
