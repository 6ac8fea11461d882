//! One access record per request, whichever door it came in by: the log line, the request
//! count and the in-flight gauge, and with `[telemetry]` the request's spans (started by
//! [`AccessRecord::check`], ended with the record or, for the proxy, once the body is out).
//!
//! A door starts the record when the request arrives, tells it the decision, and finishes it
//! with the status the client (or the ingress) got. When the client goes away first (hyper
//! and tonic drop the door's future when the connection closes or the stream is reset, which
//! also aborts an upstream request), dropping the record writes it with outcome
//! `client_closed` and nginx's status 499, so abandoned requests show in the log and
//! `/metrics` too.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use super::{Decision, Gateway, RequestView, traced};
use crate::access::{self, Via};
use crate::auth::Facts;
use crate::metrics::{ApiMetrics, InFlight, Metrics, Outcome};
use crate::trace::RequestTrace;
use axum::body::Body;

/// The status logged for a request whose client went away before its answer (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

/// A request being answered. See the module docs.
pub struct AccessRecord<'a> {
    metrics: &'a Metrics,
    via: Via,
    /// The method and path decided on (for forward-auth, the original request's).
    method: &'a str,
    path: &'a str,
    peer: Option<IpAddr>,
    request_id: Option<&'a str>,
    started: Instant,
    facts: Facts,
    outcome: Outcome,
    /// The API the request was for, once decided: its name in the log, its counters.
    api: Option<Arc<ApiMetrics>>,
    _in_flight: InFlight,
    done: bool,
    /// The request's spans, when it is traced (`[telemetry]`); ended with the record, or
    /// for the proxy when the response body has been streamed.
    trace: Option<RequestTrace>,
    record_user: bool,
}

impl<'a> AccessRecord<'a> {
    /// A request has arrived at `via` with this method and path (logged as they are if the
    /// client goes away before the decision).
    #[must_use]
    pub fn start(
        metrics: &'a Metrics,
        via: Via,
        (method, path): (&'a str, &'a str),
        peer: Option<IpAddr>,
        request_id: Option<&'a str>,
    ) -> Self {
        Self {
            metrics,
            via,
            method,
            path,
            peer,
            request_id,
            started: Instant::now(),
            facts: Facts::default(),
            outcome: Outcome::ClientClosed,
            api: None,
            _in_flight: metrics.in_flight(),
            done: false,
            trace: None,
            record_user: false,
        }
    }

    /// Decides `view` with `gw` ([`Gateway::check`]) and records the decision
    /// ([`AccessRecord::decided`]). With tracing on, under the request's server span (see
    /// [`crate::trace`]); `protocol` is the HTTP version the client spoke (`1.1`, `2`),
    /// when the door knows it. With tracing off, nothing more than the check.
    pub async fn check<'g>(
        &mut self,
        gw: &'g Gateway,
        view: &RequestView<'a, '_>,
        protocol: Option<&'static str>,
    ) -> Decision<'g> {
        let Some(tracing) = &gw.tracing else {
            let decision = gw.check(view).await;
            self.decided(view, &decision);
            return decision;
        };
        let started = SystemTime::now()
            .checked_sub(self.started.elapsed())
            .unwrap_or_else(SystemTime::now);
        let (decision, trace) = traced::check(tracing, gw, view, self.via, started, protocol).await;
        self.decided(view, &decision);
        self.trace = Some(trace);
        self.record_user = tracing.record_user;
        decision
    }

    /// The decision on the request `view` shows: what it decided on, what it found and the
    /// API it was for.
    pub fn decided(&mut self, view: &RequestView<'a, '_>, decision: &Decision<'_>) {
        self.method = view.method;
        self.path = view.path();
        self.outcome = decision.outcome;
        self.facts = decision.facts.clone();
        self.api = decision.api.map(|a| Arc::clone(&a.metrics));
    }

    /// The answer went out with `status`; `outcome` replaces the decision's when something
    /// happened after it (the upstream failed, the body broke off). `upstream`: time until
    /// the upstream's response headers, when the request was forwarded.
    pub fn finish(mut self, status: u16, outcome: Option<Outcome>, upstream: Option<Duration>) {
        let status = self.settle(status, outcome);
        self.write(status, upstream);
    }

    /// [`AccessRecord::finish`] for a proxied response: the log line is written now; a
    /// traced request's spans end once `response`'s body has been streamed to the client.
    pub fn finish_streaming(
        mut self,
        response: http::Response<Body>,
        outcome: Option<Outcome>,
        upstream: Option<Duration>,
    ) -> http::Response<Body> {
        let status = self.settle(response.status().as_u16(), outcome);
        let Some(trace) = self.trace.take() else {
            self.write(status, upstream);
            return response;
        };
        if let Some(elapsed) = upstream {
            trace.upstream_answered(outcome.is_none().then_some(status), elapsed);
        }
        if !trace.is_recording() {
            // Nothing is kept of an unsampled request: no body to watch.
            trace.end(status, Vec::new());
            self.write(status, upstream);
            return response;
        }
        let closing = traced::closing(&trace, self.outcome, &self.facts, self.record_user);
        self.write(status, upstream);
        response.map(|body| Body::new(trace.wrap_body(status, closing, body)))
    }

    /// Applies `outcome` (what happened after the decision); the status to log.
    fn settle(&mut self, status: u16, outcome: Option<Outcome>) -> u16 {
        if let Some(o) = outcome {
            self.outcome = o;
        }
        // A request whose body broke off is logged as the client's doing (499), whatever a
        // client still listening is told.
        if self.outcome == Outcome::ClientClosed {
            CLIENT_CLOSED
        } else {
            status
        }
    }

    fn write(&mut self, status: u16, upstream: Option<Duration>) {
        self.done = true;
        if let Some(trace) = self.trace.take() {
            let closing = traced::closing(&trace, self.outcome, &self.facts, self.record_user);
            trace.end(status, closing);
        }
        self.metrics.record_request(self.outcome);
        if let Some(api) = &self.api {
            api.record(self.outcome);
        }
        access::log(&access::Entry {
            api: self.api.as_ref().map(|a| a.name.as_str()),
            via: self.via,
            method: self.method,
            path: self.path,
            status,
            outcome: self.outcome,
            facts: &self.facts,
            client_ip: self.peer,
            request_id: self.request_id,
            started: self.started,
            upstream,
        });
    }
}

impl Drop for AccessRecord<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.outcome = Outcome::ClientClosed;
            self.write(CLIENT_CLOSED, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_dropped_unfinished_counts_the_client_as_gone() {
        let metrics = Metrics::new();
        for via in [Via::Proxy, Via::ForwardAuth, Via::ExtAuthz] {
            let record = AccessRecord::start(&metrics, via, ("GET", "/a"), None, None);
            assert_eq!(metrics.in_flight_now(), 1);
            drop(record);
            assert_eq!(metrics.in_flight_now(), 0);
        }
        assert_eq!(metrics.requests(Outcome::ClientClosed), 3);
        let record = AccessRecord::start(&metrics, Via::ForwardAuth, ("GET", "/a"), None, None);
        record.finish(200, Some(Outcome::Allowed), None);
        assert_eq!(metrics.requests(Outcome::Allowed), 1);
        assert_eq!(metrics.requests(Outcome::ClientClosed), 3);
    }
}
