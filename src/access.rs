//! The decision log: one structured event per request (target `entragate::access`, message
//! `request`), whichever front end decided it: the proxy, forward-auth or Envoy `ext_authz`.
//! Never the token, never the query.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::auth::Facts;
use crate::metrics::Outcome;

/// The request id header: set (or kept from the client) by the main listener's front service
/// before any door runs, so it is read from the request, never from the response (which gets
/// it only on the way out); for `ext_authz`, from the original request's headers. A
/// `HeaderName`, not text: a name given as text is parsed again at every lookup.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Which front end answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Proxy,
    ForwardAuth,
    ExtAuthz,
}

impl Via {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::ForwardAuth => "forward-auth",
            Self::ExtAuthz => "ext_authz",
        }
    }
}

/// One decided request.
#[derive(Debug)]
pub struct Entry<'a> {
    pub via: Via,
    /// The API the request was for (`[[apis]]` `name`, `default` without `[[apis]]`);
    /// `None` when it was under no API or refused before the match.
    pub api: Option<&'a str>,
    /// The method decided on (for forward-auth, the original request's).
    pub method: &'a str,
    /// The path decided on, without the query (AQL, search terms may carry personal data).
    pub path: &'a str,
    /// What the client (or the ingress) got.
    pub status: u16,
    pub outcome: Outcome,
    pub facts: &'a Facts,
    /// The TCP peer; for `ext_authz`, the downstream address Envoy reports.
    pub client_ip: Option<IpAddr>,
    pub request_id: Option<&'a str>,
    pub started: Instant,
    /// Time until the upstream's response headers, when the request was forwarded (proxy
    /// mode); `None` when it was refused or only decided on (forward-auth, `ext_authz`).
    pub upstream: Option<Duration>,
}

/// Writes the event: through [`crate::telemetry`]'s line buffers with the fixed formatter of
/// [`line`] when [`crate::telemetry::access_format`] allows it, else as a `tracing` event
/// (the same bytes, see `line`'s tests).
pub fn log(e: &Entry<'_>) {
    if !tracing::enabled!(target: "entragate::access", tracing::Level::INFO) {
        return;
    }
    let elapsed_us = u64::try_from(e.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match crate::telemetry::access_format() {
        Some(format) => crate::telemetry::sink::write_with(|buf| {
            line::write(buf, format, e, std::time::SystemTime::now(), elapsed_us);
        }),
        None => log_event(e, elapsed_us),
    }
}

/// The event as `tracing` sees it: how the line was written before [`line`], and still is
/// when it carries colours or a span.
fn log_event(e: &Entry<'_>, elapsed_us: u64) {
    let (outcome, reason) = labels(e);
    tracing::info!(
        target: "entragate::access",
        via = e.via.as_str(),
        api = e.api,
        method = %e.method,
        path = %e.path,
        status = e.status,
        auth.outcome = outcome,
        auth.reason = &*reason,
        jwt.kid = e.facts.kid(),
        jwt.tid = e.facts.tid(),
        jwt.ver = e.facts.ver(),
        jwt.client = e.facts.client(),
        client.ip = e.client_ip.map(tracing::field::display),
        request_id = e.request_id,
        upstream.ms = e.upstream.map(millis),
        elapsed_us,
        "request"
    );
}

/// The outcome and reason labels of the line; over a limit, the reason names it:
/// `rate_limited:<name>`.
fn labels<'e>(e: &'e Entry<'_>) -> (&'static str, std::borrow::Cow<'e, str>) {
    let (outcome, reason) = e.outcome.labels();
    let reason = match e.facts.limit() {
        Some(name) => std::borrow::Cow::Owned(format!("{reason}:{name}")),
        None => std::borrow::Cow::Borrowed(reason),
    };
    (outcome, reason)
}

/// Milliseconds with microsecond precision.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub mod line;
