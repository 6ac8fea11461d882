//! The way to the upstream: the pooled client that sends an allowed request on and streams
//! the answer back ([`forward`]), and the header hygiene of that hop ([`headers`]). It knows
//! nothing of tokens or rules: the proxy hands it a request whose header edits the decision
//! already applied.

pub mod forward;
pub mod headers;

pub use forward::{Forwarder, UpstreamError};
