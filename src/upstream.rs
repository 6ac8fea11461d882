//! The way to the upstream: the pooled client that sends an allowed request on and streams
//! the answer back ([`forward`]; its HTTP/1.1 connections in a pool per worker, [`pool`]), the header hygiene of that hop ([`headers`]) and the HTTP version spoken to the upstream
//! ([`protocol`]: HTTP/1.1, h2c, or HTTP/2 by ALPN; gRPC recognition). It knows
//! nothing of tokens or rules: the proxy hands it a request whose header edits the decision
//! already applied.

pub mod forward;
pub mod headers;
pub mod pool;
pub mod protocol;
pub mod websocket;

pub use forward::{Forwarder, UpstreamError, UpstreamUpgrade};
